"""The request path on a Redis storage: one round trip, no SQL, and every
order of change and request (SPEC §9), counted by the servers themselves:
round trips from Redis's ``MONITOR`` (commands a script runs inside Redis
are not round trips), statements from the engine's own event."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.views import MethodView
from limits import parse
from limits.storage import storage_from_string

from flask_keyauth import KeyAuth, keys, require_key
from flask_keyauth._plan_script import PlanScript
from flask_keyauth.errors import StorageUnavailable
from flask_keyauth.plans import parse_item

from .conftest import FAST_ARGON2, bearer, dispose, make_app, sql_statements
from .faults.servers import ThrowawayRedis


@contextmanager
def round_trips(port: int) -> Iterator[list[str]]:
    """The commands clients send to the Redis on ``port`` inside the block."""
    seen: list[str] = []
    marker = f"end-{uuid.uuid4().hex}"
    client = redis.Redis(port=port)
    started = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            started.set()
            while True:
                command = monitor.next_command()
                if marker in command["command"]:
                    return
                if command["client_type"] != "lua":
                    seen.append(command["command"])

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    started.wait(5)
    redis.Redis(port=port).echo("start")  # MONITOR is live once this is seen
    try:
        yield seen
    finally:
        redis.Redis(port=port).echo(marker)
        thread.join(10)
        # What the observing clients themselves sent.
        seen[:] = [c for c in seen if c.split()[0] not in ("ECHO", "HELLO", "CLIENT")]


@pytest.fixture
def shared(redis_server: ThrowawayRedis, database_url: str) -> Iterator[Any]:
    """Two apps ("processes") on one database and one Redis."""
    prefix = f"p{uuid.uuid4().hex[:8]}"
    made = [
        make_app(
            database_url,
            RATELIMIT_STORAGE_URI=redis_server.url,
            RATELIMIT_KEY_PREFIX=prefix,
            KEYAUTH_PLANS={"free": "50/hour;500/day", "big": "1000/hour", "enterprise": None},
        )
        for _ in range(2)
    ]
    yield made
    for app, db, _ in reversed(made):
        dispose(app, db)


def warm(client: Any, secret: str) -> None:
    # A first sight is decided on the row alone; the second request reads
    # the stamps and the row again, and caches both.
    for _ in range(2):
        assert client.get("/read", headers=bearer(secret)).status_code == 200


def test_a_steady_request_is_one_round_trip_and_no_sql(
    shared: Any, redis_server: ThrowawayRedis
) -> None:
    (app, _, keyauth), _ = shared
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    warm(client, secret)
    with sql_statements(app) as statements, round_trips(redis_server.port) as commands:
        for _ in range(5):
            assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert statements == []
    assert [c.split()[0] for c in commands] == ["EVALSHA"] * 5


def test_garbage_keys_cost_no_round_trip(shared: Any, redis_server: ThrowawayRedis) -> None:
    (app, _, keyauth), _ = shared
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    bad_checksum = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    with sql_statements(app) as statements, round_trips(redis_server.port) as commands:
        for text in ("nonsense", bad_checksum, "sk_live_" + "x" * 50):
            assert client.get("/read", headers=bearer(text)).status_code == 401
    assert statements == [] and commands == []


def test_a_revocation_in_another_process_applies_on_the_next_request(shared: Any) -> None:
    (app, _, keyauth), (other, _, other_keyauth) = shared
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    warm(client, secret)
    with other.app_context():
        other_keyauth.revoke_key(info.id)
    assert client.get("/read", headers=bearer(secret)).status_code == 401


def test_a_key_never_seen_by_a_process_is_decided_on_its_row(shared: Any) -> None:
    (app, _, keyauth), (other, _, other_keyauth) = shared
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    warm(app.test_client(), secret)
    with app.app_context():
        keyauth.revoke_key(info.id)
    assert other.test_client().get("/read", headers=bearer(secret)).status_code == 401


def test_a_plan_change_mid_window_applies_on_the_next_request(shared: Any) -> None:
    (app, _, keyauth), (other, _, other_keyauth) = shared
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    warm(client, secret)
    assert client.get("/read", headers=bearer(secret)).headers["X-RateLimit-Limit"] == "50"
    with other.app_context():
        other_keyauth.set_plan("acme", "big")
    assert client.get("/read", headers=bearer(secret)).headers["X-RateLimit-Limit"] == "1000"


@contextmanager
def warm_key_revoked_by_hand(url: str, **config: Any) -> Iterator[tuple[Any, str]]:
    """A warm key of an app on ``url``, then revoked in hand-written SQL
    (around flask-keyauth: no stamp moves); yield (client, key)."""
    app, db, keyauth = make_app(url, **config)
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    warm(client, secret)
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE keyauth_api_keys SET revoked_at = :now WHERE key_id = :id"),
            {"now": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), "id": info.id},
        )
    yield client, secret
    app.extensions["keyauth"].service.usage.take()


def test_hand_written_sql_applies_within_row_max_age(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    with warm_key_revoked_by_hand(
        f"sqlite:///{tmp_path / 'k.db'}",
        RATELIMIT_STORAGE_URI=redis_server.url,
        KEYAUTH_ROW_MAX_AGE=0.3,
    ) as (client, secret):
        threading.Event().wait(0.35)
        assert client.get("/read", headers=bearer(secret)).status_code == 401


def test_a_flushed_storage_sends_every_process_back_to_the_database(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    with warm_key_revoked_by_hand(
        f"sqlite:///{tmp_path / 'k.db'}", RATELIMIT_STORAGE_URI=redis_server.url
    ) as (client, secret):
        assert client.get("/read", headers=bearer(secret)).status_code == 200
        redis.Redis(port=redis_server.port).flushall()
        assert client.get("/read", headers=bearer(secret)).status_code == 401


def test_a_revocation_while_redis_is_paused_fails_the_call_and_a_retry_applies(
    shared: Any, redis_server: ThrowawayRedis
) -> None:
    (app, db, keyauth), (other, _, other_keyauth) = shared
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    warm(client, secret)
    redis_server.pause()
    try:
        with other.app_context(), pytest.raises(StorageUnavailable):
            other_keyauth.revoke_key(info.id)
    finally:
        redis_server.resume()
    with other.app_context():
        assert other_keyauth.get_key(info.id).status == "revoked"  # saved, not lost
        other_keyauth.revoke_key(info.id)  # the retry tells every process
    assert client.get("/read", headers=bearer(secret)).status_code == 401


def test_with_memory_storage_every_request_reads_the_row(app: Flask, make_key: Any) -> None:
    _, secret = make_key()
    client = app.test_client()
    client.get("/read", headers=bearer(secret))
    with sql_statements(app) as statements:
        for _ in range(3):
            assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert len(statements) == 3 and all(s.lstrip().upper().startswith("SELECT") for s in statements)


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_stacked_decorators_charge_the_plan_once(
    storage: str, redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    uri = "memory://" if storage == "memory" else redis_server.url
    app, _, keyauth = make_app(f"sqlite:///{tmp_path / 'k.db'}", RATELIMIT_STORAGE_URI=uri)

    @app.get("/twice")
    @require_key("read")
    @require_key()
    def twice() -> Any:
        return {"ok": True}

    class Items(MethodView):
        decorators = [require_key()]

        @require_key("read")
        def get(self) -> Any:
            return {"ok": True}

    app.add_url_rule("/items", view_func=Items.as_view("items"))
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    remaining = [
        int(client.get(path, headers=bearer(secret)).headers["X-RateLimit-Remaining"])
        for path in ("/twice", "/twice", "/items", "/items")
    ]
    assert remaining == [99, 98, 97, 96]


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_retry_after_is_the_latest_reset_among_spent_windows(
    storage: str, redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    uri = "memory://" if storage == "memory" else redis_server.url
    app, _, keyauth = make_app(
        f"sqlite:///{tmp_path / 'k.db'}",
        RATELIMIT_STORAGE_URI=uri,
        KEYAUTH_PLANS={"free": "2/minute;2/hour", "enterprise": None},
    )
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    assert [client.get("/read", headers=bearer(secret)).status_code for _ in range(2)] == [200] * 2
    refused = client.get("/read", headers=bearer(secret))
    assert refused.status_code == 429
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.get_json()["error"]["details"]["limit"] == 2


def test_ipv6_addresses_of_one_network_share_the_failed_auth_budget(tmp_path: Any) -> None:
    app, _, _ = make_app(f"sqlite:///{tmp_path / 'k.db'}", KEYAUTH_FAILED_AUTH_LIMIT="3/minute")
    client = app.test_client()

    def attempt(address: str) -> int:
        unknown = keys.generate("sk", "live").text  # well formed, no such key
        response = client.get(
            "/read", headers=bearer(unknown), environ_base={"REMOTE_ADDR": address}
        )
        return int(response.status_code)

    codes = [attempt(f"2001:db8:1:2::{n:x}") for n in range(1, 6)]
    assert codes == [401, 401, 401, 429, 429]
    assert attempt("2001:db8:1:3::1") == 401  # another /64
    assert attempt("192.0.2.1") == 401


def test_argon2_runs_at_most_the_configured_number_at_once(tmp_path: Any) -> None:
    config = {**FAST_ARGON2, "KEYAUTH_ARGON2_TIME_COST": 3, "KEYAUTH_ARGON2_MEMORY_COST": 65536}
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'k.db'}",
        RATELIMIT_STORAGE_URI="memory://",
        KEYAUTH_ARGON2_MAX_CONCURRENT=1,
        KEYAUTH_FAILED_AUTH_LIMIT="1000/minute",
        **config,
    )
    keyauth = KeyAuth(app)

    @app.get("/read")
    @require_key()
    def read() -> Any:
        return {}

    with app.app_context():
        made = [keyauth.create_key("acme", f"k{n}")[1] for n in range(12)]
    barrier = threading.Barrier(len(made))
    statuses: list[int] = []

    def call(secret: str) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.get("/read", headers=bearer(secret))
        statuses.append(response.status_code)
        if response.status_code == 503:
            assert response.headers["Retry-After"] == "1"

    threads = [threading.Thread(target=call, args=(s,)) for s in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(set(statuses)) == [200, 503]


def test_the_plan_script_alone(redis_server: ThrowawayRedis) -> None:
    storage = storage_from_string(redis_server.url)
    script = PlanScript(storage, "alone")
    items = [parse("2/minute"), parse("5/hour")]
    windows = [(item, script.window_key("o{1}", item)) for item in items]
    first = script.run("o{1}", "key1", windows, None, 1)
    assert first.fresh and [c[0] for c in first.counts] == [1, 1]
    stamps = (first.key_stamp, first.owner_stamp)
    # Stamps that hold: counted. Stamps that moved: nothing counted.
    assert [c[0] for c in script.run("o{1}", "key1", windows, stamps, 1).counts] == [2, 2]
    stale = script.run("o{1}", "key1", windows, ("old", "old"), 1)
    assert not stale.fresh and stale.counts == []
    # Past the first breach the windows are read, not counted.
    over = script.run("o{1}", "key1", windows, stamps, 1)
    assert [c[0] for c in over.counts] == [3, 2]
    script.bump("o{1}", ["key1"])
    again = script.run("o{1}", "key1", [], stamps, 0)
    assert not again.fresh and again.key_stamp != stamps[0] and again.owner_stamp == stamps[1]
    script.bump("o{1}")
    assert script.run("o{1}", "key1", [], None, 0).owner_stamp != stamps[1]
    # Every key of one owner shares its hash tag, whatever braces the id holds.
    tagged = [*script.stamp_keys("o{1}", "key1"), *(key for _, key in windows)]
    assert {key[key.index("{"):key.index("}") + 1] for key in tagged} == {"{o%7B1%7D}"}


def test_the_plan_script_counts_a_token_bucket(redis_server: ThrowawayRedis) -> None:
    storage = storage_from_string(redis_server.url)
    script = PlanScript(storage, "bucket")
    bucket = parse_item("10/second burst 3")
    windows = [(bucket, script.window_key("o", bucket))]
    used = [script.run("o", "k", windows, None, 1).counts[0] for _ in range(4)]
    # Three fit in the burst, the fourth does not and waits ~0.1 s for a unit.
    assert [u[0] for u in used[:3]] == [1, 2, 3]
    assert used[3][0] > 3 and 0 < used[3][2] <= 100
    threading.Event().wait(0.12)
    assert script.run("o", "k", windows, None, 1).counts[0][0] <= 3
