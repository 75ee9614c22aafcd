"""Usage counts written by each process's background writer: never inside a
request, within ``KEYAUTH_LAST_USED_INTERVAL`` even when no request follows,
at a clean exit, and by several workers at once without a deadlock.

The multi-worker tests run gunicorn on a throwaway PostgreSQL, whose server
log is searched for deadlocks; the in-process ones on SQLite and on a fresh
database of the machine's PostgreSQL.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from ..conftest import bearer, make_app, service_of
from ..security.servers import get, gunicorn
from ..services import postgres_database
from .servers import ThrowawayPostgres, throwaway_postgres, until_every_worker_answers
from .test_postgres_outage import Served, serve

WORKERS = 4
KEYS = 200
INTERVAL = 0.2


@pytest.fixture
def logged_postgres() -> Iterator[ThrowawayPostgres]:
    """A throwaway server that reports deadlocks fast and logs lock waits."""
    with throwaway_postgres({"deadlock_timeout": "100ms", "log_lock_waits": "on"}) as server:
        yield server


def scalar(url: str, sql: str) -> Any:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def recorded(url: str) -> int:
    return int(scalar(url, "SELECT coalesce(sum(requests), 0) FROM keyauth_usage") or 0)


def prepared(url: str, keys: int) -> list[tuple[str, str]]:
    """The tables and ``keys`` keys of a few owners with room to spare; (id, secret)."""
    app, db, keyauth = make_app(url)
    owners = [f"org{n}" for n in range(4)]
    with app.app_context():
        for owner in owners:
            keyauth.set_plan(owner, "enterprise", "10000000/hour")
        made = [keyauth.create_key(owners[i % 4], f"k{i}") for i in range(keys)]
        db.engine.dispose()
    return [(info.id, secret) for info, secret in made]


def worker_config(url: str, host_db: bool, interval: float) -> dict[str, Any]:
    return {
        "SQLALCHEMY_DATABASE_URI": url,
        "RATELIMIT_STORAGE_URI": "memory://",
        "KEYAUTH_FAILED_AUTH_LIMIT": "1000000/minute",
        "KEYAUTH_LAST_USED_INTERVAL": interval,
        "TEST_HOST_DB": host_db,
    }


HOST_DB = pytest.mark.parametrize("host_db", [True, False], ids=["hosts-db", "own-engine"])


@HOST_DB
def test_four_workers_flushing_together_never_deadlock_and_every_request_is_counted(
    logged_postgres: ThrowawayPostgres, host_db: bool
) -> None:
    url = logged_postgres.url
    keys = prepared(url, KEYS)
    served: list[int] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        # Every worker sees most keys: their flushes update the same rows.
        rng = random.Random(seed)  # noqa: S311 - spreading keys, not a secret
        while not stop.is_set():
            served.append(get(base + "/read", bearer(rng.choice(keys)[1]), timeout=20).status)

    with gunicorn(worker_config(url, host_db, INTERVAL), workers=WORKERS, threads=2) as (
        base,
        _,
    ):
        until_every_worker_answers(base, WORKERS)
        clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in clients:
            thread.start()
        time.sleep(2)
        # Written while the traffic flows, by the workers' own writers.
        during = recorded(url)
        time.sleep(2)
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
        # No request follows: the rest is written within the interval.
        time.sleep(INTERVAL + 0.5)
        idle = recorded(url)
    # gunicorn stopped (SIGTERM): every worker exited cleanly and flushed.
    total = recorded(url)
    log = logged_postgres.log
    assert "deadlock detected" not in log, log[-4000:]
    assert served and set(served) == {200}, {s: served.count(s) for s in set(served)}
    assert 0 < during < len(served)
    assert idle == len(served)
    assert total == len(served)
    assert int(scalar(url, "SELECT count(DISTINCT key_id) FROM keyauth_usage")) > KEYS // 2
    # last_used_at was written for the keys used, too.
    used = scalar(url, "SELECT count(*) FROM keyauth_api_keys WHERE last_used_at IS NOT NULL")
    assert used == scalar(url, "SELECT count(DISTINCT key_id) FROM keyauth_usage")


@HOST_DB
def test_workers_write_nothing_in_requests_and_everything_at_a_clean_exit(
    logged_postgres: ThrowawayPostgres, host_db: bool
) -> None:
    url = logged_postgres.url
    keys = prepared(url, 10)
    # An interval far longer than the test: only the exit writes.
    with gunicorn(worker_config(url, host_db, 3600), workers=WORKERS, threads=2) as (base, _):
        until_every_worker_answers(base, WORKERS)
        statuses = [get(base + "/read", bearer(keys[n % 10][1])).status for n in range(60)]
        time.sleep(0.5)
        assert recorded(url) == 0
    assert statuses == [200] * 60
    assert recorded(url) == 60


# -- one process, no request after the last one ------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'usage.db'}"
        return
    with postgres_database() as url:
        yield url


@HOST_DB
def test_counts_reach_the_database_within_the_interval_with_no_further_request(
    database: str, host_db: bool
) -> None:
    interval = 0.5
    host: Served = serve(database, host_db, KEYAUTH_LAST_USED_INTERVAL=interval)
    try:
        if host_db:
            with host.app.app_context():
                host.db.create_all()
        info, secret = host.create()
        client = host.app.test_client()
        assert [client.get("/read", headers=bearer(secret)).status_code for _ in range(3)] == [
            200
        ] * 3
        sent = time.monotonic()
        assert recorded(database) == 0  # nothing written inside the requests
        time.sleep(interval + 0.4)
        assert recorded(database) == 3, f"not written {time.monotonic() - sent:.1f}s after"
        used = scalar(database, "SELECT count(*) FROM keyauth_api_keys WHERE last_used_at IS NULL")
        assert used == 0, f"last_used_at of {info.id} not written"
    finally:
        service_of(host.app).usage.take()
        host.close()
