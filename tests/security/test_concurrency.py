"""Limits under concurrency (OWASP API4): bursts of parallel requests get
exactly the budget, in one process and across gunicorn workers sharing
Redis; parallel wrong keys cannot buy more argon2 runs than the failed-auth
limit; a key created under load works on its next request.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth, keys

from ..conftest import argon2_runs, bearer, make_app, service_of
from ..services import redis_url
from ..test_auth import forge
from .servers import get, workers_on_shared_stores


def burst(n: int, call: Callable[[int], Any]) -> list[Any]:
    """``call(i)`` from ``n`` threads released at once."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else redis_url()


@pytest.fixture
def limited(tmp_path: Path, storage: str) -> Iterator[tuple[Flask, KeyAuth]]:
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 'c.db'}",
        RATELIMIT_STORAGE_URI=storage,
        RATELIMIT_KEY_PREFIX=f"c{uuid.uuid4().hex[:8]}",
        KEYAUTH_PLANS={"free": "5/hour", "enterprise": None},
        KEYAUTH_FAILED_AUTH_LIMIT="5/minute",
    )
    yield app, keyauth
    with app.app_context():
        app.extensions["keyauth"].limits.limiter.reset()
        db.engine.dispose()


def verified(app: Flask, *secrets: str) -> None:
    """Verify keys once in this process, as an earlier request would have,
    without spending their owner's budget."""
    auth = app.extensions["keyauth"].auth
    with app.app_context():
        for secret in secrets:
            environ = {"HTTP_AUTHORIZATION": f"Bearer {secret}", "REMOTE_ADDR": "127.0.0.1"}
            for _ in range(2):  # the row, then the row under its stamps
                auth.authenticate(environ, True, None)


def test_100_threads_against_a_limit_of_5_serve_exactly_5(
    limited: tuple[Flask, KeyAuth],
) -> None:
    app, keyauth = limited
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
        _, sibling = keyauth.create_key("acme", "sibling")
    verified(app, secret, sibling)
    # Half the threads use another key of the same owner: one budget.
    results = burst(100, lambda i: app.test_client().get(
        "/read", headers=bearer(secret if i % 2 else sibling)))
    statuses = Counter(r.status_code for r in results)
    assert statuses == {200: 5, 429: 95}
    for response in results:
        if response.status_code == 429:
            assert response.get_json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    remaining = sorted(int(r.headers["X-RateLimit-Remaining"]) for r in results
                       if r.status_code == 200)
    assert remaining == [0, 1, 2, 3, 4]


def test_50_parallel_wrong_keys_are_throttled_and_never_hold_more_than_the_slots(
    limited: tuple[Flask, KeyAuth],
) -> None:
    app, keyauth = limited
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")

    def wrong(i: int) -> str:
        if i % 2:  # a real id with a wrong secret
            return forge("sk", "live", secret[8:20], keys.random_base62(keys.SECRET_LENGTH))
        return forge("sk", "live", keys.random_base62(keys.ID_LENGTH),
                     keys.random_base62(keys.SECRET_LENGTH))

    presented = [wrong(i) for i in range(50)]
    with argon2_runs(app) as runs:
        results = burst(50, lambda i: app.test_client().get(
            "/read", headers=bearer(presented[i])))
    hashing_verifies = len(runs)
    statuses = Counter(r.status_code for r in results)
    # A failure is counted once argon2 has said so (a valid key in flight
    # never counts); what bounds the work of a burst meanwhile is
    # KEYAUTH_ARGON2_MAX_CONCURRENT (tested with the throttle), and the
    # counted failures close the address to the rest.
    # (A verification refused at once for want of a slot is a 503.)
    assert hashing_verifies <= statuses[401] + statuses[503] and statuses[401] < 50, statuses
    assert statuses[401] + statuses[429] + statuses[503] == 50
    assert statuses[429] > 0
    late = app.test_client().get("/read", headers=bearer(wrong(1)))
    assert late.status_code == 429
    assert {r.get_json()["error"]["code"] for r in results if r.status_code == 429} == {
        "TOO_MANY_FAILED_ATTEMPTS"
    }
    # The throttle did not lock out a key this process had verified...
    with app.app_context():
        _, good = keyauth.create_key("globex", "good")
    other_addr = {"REMOTE_ADDR": "192.0.2.1"}
    assert app.test_client().get("/read", headers=bearer(good),
                                 environ_base=other_addr).status_code == 200
    assert app.test_client().get("/read", headers=bearer(good)).status_code == 200


def test_a_key_created_under_load_works_on_its_next_request(
    limited: tuple[Flask, KeyAuth],
) -> None:
    app, keyauth = limited
    with app.app_context():
        keyauth.set_plan("loadco", "enterprise", "100000/hour")
        _, busy = keyauth.create_key("loadco", "busy")
    verified(app, busy)
    stop = threading.Event()
    seen: Counter[int] = Counter()

    def hammer() -> None:
        client = app.test_client()
        while not stop.is_set():
            seen[client.get("/read", headers=bearer(busy)).status_code] += 1

    workers = [threading.Thread(target=hammer) for _ in range(8)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.2)
        for n in range(10):
            with app.app_context():
                info, fresh = keyauth.create_key(f"new{n}", "fresh")
            response = app.test_client().get("/read", headers=bearer(fresh))
            assert response.status_code == 200, response.get_data(as_text=True)
            assert response.get_json()["key"] == info.id
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    assert set(seen) == {200} and sum(seen.values()) > 10
    assert len(app.extensions["keyauth"].auth.cache) >= 11


def test_parallel_first_uses_of_a_valid_key_are_not_failed_attempts(
    limited: tuple[Flask, KeyAuth],
) -> None:
    app, keyauth = limited
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    hasher = service_of(app).hasher
    verify = hasher.verify

    def slow_verify(stored_hash: str, given: str) -> bool:
        time.sleep(0.05)  # argon2 at deployment cost takes about this long
        return verify(stored_hash, given)

    hasher.verify = slow_verify  # type: ignore[method-assign]
    results = burst(20, lambda i: app.test_client().get("/read", headers=bearer(secret)))
    codes = Counter(
        r.get_json()["error"]["code"] if r.status_code != 200 else 200 for r in results
    )
    # The plan (5/hour) serves 5; the rest must be plan 429s, not failed attempts.
    assert codes == {200: 5, "RATE_LIMIT_EXCEEDED": 15}


# -- several gunicorn workers on PostgreSQL + Redis --------------------------------


@pytest.fixture
def workers(postgres_url: str) -> Iterator[tuple[str, Flask, KeyAuth]]:
    with workers_on_shared_stores(postgres_url) as (base, (app, keyauth)):
        yield base, app, keyauth


def test_4_workers_400_concurrent_requests_against_100_serve_exactly_100(
    workers: tuple[str, Flask, KeyAuth],
) -> None:
    base, app, keyauth = workers
    with app.app_context():
        keyauth.set_plan("acme", "enterprise", "100/hour")
        _, secret = keyauth.create_key("acme", "load")
    with ThreadPoolExecutor(max_workers=64) as pool:
        replies = list(pool.map(lambda _: get(base + "/read", bearer(secret)), range(400)))
    statuses = Counter(reply.status for reply in replies)
    assert statuses == {200: 100, 429: 300}
    assert len({reply.headers["x-worker-pid"] for reply in replies if reply.status == 200}) >= 2
    # Created here, under the tail of that load, it works at once there.
    with app.app_context():
        _, fresh = keyauth.create_key("globex", "fresh")
    with ThreadPoolExecutor(max_workers=8) as pool:
        after = list(pool.map(lambda _: get(base + "/read", bearer(fresh)), range(8)))
    assert [reply.status for reply in after] == [200] * 8
