"""``gunicorn --preload``: the app is created, and uses the database, in the
master; four workers forked from it inherit its pools. SQLAlchemy's recipe
(a connection is only ever used by the process that opened it) must keep
every worker on connections of its own: no valid key refused, no 500.

On a fresh database of the machine's PostgreSQL and the shared Redis (under
a key prefix of this test's own), neither of which is stopped or changed.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ..conftest import bearer, make_app, service_of
from ..security.servers import get, gunicorn
from ..services import postgres_database, redis_url
from .servers import until_every_worker_answers

WORKERS = 4
REQUESTS = 800


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def delete_prefixed(storage: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(storage)
    try:
        names = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("host_db", "pre_ping", "touch"),
    [
        (True, True, True),
        (True, False, True),
        (False, False, True),
        (False, True, True),
        # The usual app factory: db.create_all() in the master, and nothing
        # of flask-keyauth's own before the fork.
        (True, False, "host"),
        (True, True, "host"),
    ],
    ids=[
        "hosts-db-pre-ping", "hosts-db", "own-engine", "own-engine-pre-ping",
        "hosts-db-touched-by-host-only", "hosts-db-pre-ping-touched-by-host-only",
    ],
)
def test_preload_workers_never_share_the_masters_connections(
    database: str, host_db: bool, pre_ping: bool, touch: bool | str
) -> None:
    storage = redis_url()
    prefix = f"f{uuid.uuid4().hex[:8]}"
    app, db, keyauth = make_app(database)  # the tables, and the keys to present
    with app.app_context():
        keyauth.set_plan("acme", "enterprise", "1000000/hour")
        secrets = [keyauth.create_key("acme", f"k{i}")[1] for i in range(40)]
        db.engine.dispose()
    config: dict[str, Any] = {
        "SQLALCHEMY_DATABASE_URI": database,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True} if pre_ping else {},
        "RATELIMIT_STORAGE_URI": storage,
        "RATELIMIT_KEY_PREFIX": prefix,
        "KEYAUTH_FAILED_AUTH_LIMIT": "1000000/minute",
        "TEST_HOST_DB": host_db,
        # The master creates the tables (and a key): its pool holds a
        # connection when the workers are forked.
        "TEST_TOUCH_DATABASE": touch,
    }
    try:
        with gunicorn(config, workers=WORKERS, threads=2, extra=("--preload",)) as (base, _):
            until_every_worker_answers(base, WORKERS)
            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(
                    lambda n: get(base + "/read", bearer(secrets[n % len(secrets)]), timeout=20),
                    range(REQUESTS),
                ))
    finally:
        delete_prefixed(storage, prefix)
        service_of(app).usage.take()
    seen = Counter((r.status, r.code) for r in replies)
    assert seen[(401, "INVALID_API_KEY")] == 0, seen
    assert not [status for status, _ in seen if status == 500], seen
    assert seen == {(200, None): REQUESTS}, seen
    assert len({r.headers["x-worker-pid"] for r in replies}) == WORKERS
    # The master's key was created once, before the fork.
    with app.app_context():
        assert len(keyauth.list_keys("preload")) == (0 if touch == "host" else 1)
        db.engine.dispose()
