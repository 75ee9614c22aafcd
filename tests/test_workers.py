"""Several gunicorn workers on PostgreSQL + Redis: exact limits, instant revocation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .security.servers import get as fetch
from .security.servers import workers_on_shared_stores


def get(url: str, key: str) -> tuple[int, str]:
    reply = fetch(url, {"Authorization": f"Bearer {key}"})
    return reply.status, reply.headers["x-worker-pid"]


@pytest.fixture
def served(postgres_url: str) -> Iterator[tuple[str, Any]]:
    # The test process is "another host": it shares the database and Redis.
    with workers_on_shared_stores(postgres_url) as served:
        yield served


def test_four_workers_serve_exactly_the_plan(served: tuple[str, Any]) -> None:
    base, (app, keyauth) = served
    with app.app_context():
        keyauth.set_plan("acme", "enterprise", "50/hour")
        info, secret = keyauth.create_key("acme", "load")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: get(base + "/read", secret), range(200)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 50, 429: 150}
    served_by = {pid for status, pid in results if status == 200}
    assert len(served_by) >= 2, "the load should have reached several workers"

    # Revoked through the service API in this process: the very next request
    # in every worker, each of which has this key in its verified cache, is 401.
    with app.app_context():
        keyauth.revoke_key(info.id)
    with ThreadPoolExecutor(max_workers=8) as pool:
        # 20, below the failed-auth throttle (30/minute from this address):
        # a revoked key counts as a failed attempt.
        after = list(pool.map(lambda _: get(base + "/read", secret), range(20)))
    assert [status for status, _ in after] == [401] * 20
    assert len({pid for _, pid in after} & served_by) >= 2


def test_four_workers_share_a_token_bucket_exactly(served: tuple[str, Any]) -> None:
    base, (app, keyauth) = served
    with app.app_context():
        # A bucket of 20 that refills one unit an hour: over this test, exactly 20.
        keyauth.set_plan("bucketco", "enterprise", "1/hour burst 20")
        _, secret = keyauth.create_key("bucketco", "load")
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda _: get(base + "/read", secret), range(120)))
    assert Counter(status for status, _ in results) == {200: 20, 429: 100}
    assert len({pid for status, pid in results if status == 200}) >= 2
