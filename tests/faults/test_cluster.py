"""Plan limits and stamps on a Redis Cluster of three masters started on
loopback ports for these tests (never the machine's shared Redis).

The storage URI is Flask-Limiter's (``limits``'):
``redis+cluster://host:port,host:port,host:port``. One owner's windows and
stamps carry the owner's hash tag, so the one script a request runs touches
one slot; owners spread over the masters.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth
from flask_keyauth._plan_script import hash_tag

from ..conftest import bearer, make_app, service_of, sql_statements
from .servers import ThrowawayRedisCluster, until_every_worker_answers

#: A plan of two windows: the script counts both, on one slot.
PLAN = "5/hour;1000/day"


@pytest.fixture
def apps(
    redis_cluster: ThrowawayRedisCluster, tmp_path: Any
) -> Iterator[list[tuple[Flask, Any, KeyAuth]]]:
    """Two hosts on the same database and the same cluster (as two servers
    of one deployment would be), with one key prefix."""
    prefix = f"c{uuid.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    made = [
        make_app(url, RATELIMIT_STORAGE_URI=redis_cluster.url, RATELIMIT_KEY_PREFIX=prefix)
        for _ in range(2)
    ]
    yield made
    for app, db, _ in made:
        service_of(app).usage.take()
        with app.app_context():
            db.engine.dispose()


def owners_on_every_master(cluster: ThrowawayRedisCluster) -> list[str]:
    """Owner ids whose hash tags live on different masters (one per master),
    and one whose id holds braces (escaped in its tag)."""
    client = cluster.client()
    try:
        found: dict[str, str] = {}
        for n in range(1000):
            owner = f"org-{n}-x"
            node = client.get_node_from_key(hash_tag(owner)).name
            found.setdefault(node, owner)
            if len(found) == len(cluster.ports):
                break
        assert len(found) == len(cluster.ports)
        return [*found.values(), "a}b{c"]
    finally:
        client.close()


def statuses(client: Any, secrets: list[str], n: int) -> list[tuple[int, str | None, str | None]]:
    found = []
    for i in range(n):
        response = client.get("/read", headers=bearer(secrets[i % len(secrets)]))
        code = response.get_json()["error"]["code"] if response.status_code != 200 else None
        found.append((response.status_code, code, response.headers.get("X-RateLimit-Remaining")))
    return found


def test_cluster_plan_of_5_per_hour_serves_exactly_5_then_429_for_owners_on_every_master(
    apps: list[tuple[Flask, Any, KeyAuth]], redis_cluster: ThrowawayRedisCluster
) -> None:
    (app, _, keyauth), _ = apps
    owners = owners_on_every_master(redis_cluster)
    client = app.test_client()
    for owner in owners:
        with app.app_context():
            keyauth.set_plan(owner, "enterprise", PLAN)
            # Two keys of one owner share its budget: first uses, re-reads
            # under stamps and steady-state scripts are all counted.
            secrets = [keyauth.create_key(owner, f"k{i}")[1] for i in range(2)]
        seen = statuses(client, secrets, 8)
        assert seen[:5] == [(200, None, str(left)) for left in (4, 3, 2, 1, 0)], (owner, seen)
        assert [s[:2] for s in seen[5:]] == [(429, "RATE_LIMIT_EXCEEDED")] * 3, (owner, seen)
        refused = client.get("/read", headers=bearer(secrets[0]))
        assert refused.status_code == 429
        assert 3000 < int(refused.headers["Retry-After"]) <= 3600

    # Every key flask-keyauth keeps for an owner carries that owner's hash
    # tag: one slot per owner, so the script never meets CROSSSLOT.
    cluster = redis_cluster.client()
    try:
        names = [k.decode() for k in cluster.keys(target_nodes=cluster.ALL_NODES)]
        for owner in owners:
            tag = hash_tag(owner)
            escaped = tag[1:-1]
            mine = [name for name in names if escaped in name]
            assert len(mine) >= 1 + len(PLAN.split(";")), (owner, mine)  # a stamp, the windows
            assert all(name.count("{") >= 1 and tag in name for name in mine), (owner, mine)
            slots = {cluster.keyslot(name) for name in mine}
            assert slots == {cluster.keyslot(tag)}, (owner, mine)
        nodes = {cluster.get_node_from_key(hash_tag(owner)).name for owner in owners}
        assert len(nodes) == len(redis_cluster.ports)
    finally:
        cluster.close()


def test_cluster_a_change_made_in_another_host_applies_on_the_next_request(
    apps: list[tuple[Flask, Any, KeyAuth]], redis_cluster: ThrowawayRedisCluster
) -> None:
    (first, _, first_keyauth), (second, _, second_keyauth) = apps
    owners = owners_on_every_master(redis_cluster)
    client = first.test_client()
    revoked, replanned = owners[0], owners[1]
    with first.app_context():
        first_keyauth.set_plan(replanned, "enterprise", "100/hour")
        doomed, doomed_secret = first_keyauth.create_key(revoked, "doomed")
        _, kept = first_keyauth.create_key(revoked, "kept")
        _, planned = first_keyauth.create_key(replanned, "planned")
    for secret in (doomed_secret, kept, planned):
        assert [client.get("/read", headers=bearer(secret)).status_code for _ in range(3)] == [
            200
        ] * 3
    # Steady state: the cached row stands on its stamps, no SQL at all.
    with sql_statements(first) as statements:
        assert client.get("/read", headers=bearer(doomed_secret)).status_code == 200
    assert statements == []

    with second.app_context():
        second_keyauth.revoke_key(doomed.id)
        second_keyauth.set_plan(replanned, "enterprise", "4/hour")
    response = client.get("/read", headers=bearer(doomed_secret))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "INVALID_API_KEY"
    assert client.get("/read", headers=bearer(kept)).status_code == 200
    # The new plan binds from the next request on (a limit of its own, so a
    # window of its own, as Flask-Limiter keeps one counter per limit).
    seen = [client.get("/read", headers=bearer(planned)) for _ in range(5)]
    assert [r.status_code for r in seen] == [200] * 4 + [429]
    assert [r.headers["X-RateLimit-Limit"] for r in seen] == ["4"] * 5


def test_cluster_workers_of_gunicorn_share_one_exact_count(
    apps: list[tuple[Flask, Any, KeyAuth]], redis_cluster: ThrowawayRedisCluster
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ..security.servers import get, gunicorn

    (app, _, keyauth), _ = apps
    owners = owners_on_every_master(redis_cluster)
    with app.app_context():
        for owner in owners:
            keyauth.set_plan(owner, "enterprise", PLAN)
        secrets = {o: [keyauth.create_key(o, f"k{i}")[1] for i in range(3)] for o in owners}
        url = str(app.config["SQLALCHEMY_DATABASE_URI"])
    config = {
        "SQLALCHEMY_DATABASE_URI": url,
        "RATELIMIT_STORAGE_URI": redis_cluster.url,
        "RATELIMIT_KEY_PREFIX": app.config["RATELIMIT_KEY_PREFIX"],
        "KEYAUTH_FAILED_AUTH_LIMIT": "1000000/minute",
    }
    requests = [(o, secrets[o][n % 3]) for n in range(12) for o in owners]
    # Sync workers, one request at a time each: both serve the 6 clients.
    with gunicorn(config, workers=2, threads=1) as (base, _), ThreadPoolExecutor(6) as pool:
        until_every_worker_answers(base, 2)
        replies = list(pool.map(lambda r: (r[0], get(base + "/read", bearer(r[1]))), requests))
    for owner in owners:
        mine = sorted(reply.status for o, reply in replies if o == owner)
        assert mine == [200] * 5 + [429] * 7, (owner, mine)
    assert len({reply.headers["x-worker-pid"] for _, reply in replies}) == 2
