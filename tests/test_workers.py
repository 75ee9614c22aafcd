"""Several gunicorn workers on PostgreSQL + Redis: exact limits, instant revocation."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .conftest import make_app
from .security.servers import get as fetch
from .security.servers import gunicorn
from .services import redis_url


def get(url: str, key: str) -> tuple[int, str]:
    reply = fetch(url, {"Authorization": f"Bearer {key}"})
    return reply.status, reply.headers["x-worker-pid"]


@pytest.fixture
def served(postgres_url: str) -> Iterator[tuple[str, Any]]:
    prefix = f"w{uuid.uuid4().hex[:8]}"
    storage = redis_url()
    # The test process is "another host": it shares the database and Redis.
    app, db, keyauth = make_app(
        postgres_url, RATELIMIT_STORAGE_URI=storage, RATELIMIT_KEY_PREFIX=prefix
    )
    config = {
        "SQLALCHEMY_DATABASE_URI": postgres_url,
        "RATELIMIT_STORAGE_URI": storage,
        "RATELIMIT_KEY_PREFIX": prefix,
    }
    try:
        with gunicorn(config, workers=4) as (base, _):
            yield base, (app, keyauth)
    finally:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


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
