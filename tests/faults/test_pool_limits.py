"""The pool limits the host sets hold: flask-keyauth never opens a server
connection past them, nor leaves one open after the pool is disposed.

Counted by the server (``pg_stat_activity``, client backends of this test's
own fresh database on the machine's PostgreSQL), observed from a connection
to another database so the observer is not counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from ..conftest import bearer
from ..services import PG_ADMIN_URL, postgres_database
from .test_postgres_outage import Served, serve

THREADS = 24
EACH = 25
LIMIT = 2


class Connections:
    """Samples how many client connections a database has, every few ms."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self._thread = threading.Thread(target=self._run)

    def now(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = :db AND backend_type = 'client backend'"
                ),
                {"db": self.database},
            ).scalar_one())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.now())
            time.sleep(0.002)

    def __enter__(self) -> Connections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def close(self) -> None:
        self._engine.dispose()


@pytest.fixture
def database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.mark.parametrize("host_db", [True, False], ids=["hosts-db", "own-engine"])
def test_24_threads_never_open_more_connections_than_the_hosts_pool_allows(
    database: str, host_db: bool
) -> None:
    served: Served = serve(
        database,
        host_db,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": LIMIT, "max_overflow": 0},
        KEYAUTH_FAILED_AUTH_LIMIT="1000000/minute",
        # The usage writer runs alongside, on the same pool.
        KEYAUTH_LAST_USED_INTERVAL=0.1,
    )
    if host_db:
        with served.app.app_context():
            served.db.create_all()
    with served.app.app_context():
        served.keyauth.set_plan("acme", "enterprise", "1000000/hour")
    secrets = [served.create(name=f"k{i}")[1] for i in range(THREADS // 2)]
    watched = Connections(sa.make_url(database).database or "")
    statuses: list[int] = []

    def run(i: int) -> None:
        client = served.app.test_client()
        for n in range(EACH):
            response = client.get("/read", headers=bearer(secrets[(i + n) % len(secrets)]))
            statuses.append(response.status_code)

    try:
        with watched:
            threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            time.sleep(0.3)  # a flush of the usage writer, too
        assert statuses == [200] * (THREADS * EACH)
        assert watched.samples and max(watched.samples) >= 1
        assert max(watched.samples) <= LIMIT, max(watched.samples)

        # Every connection is the pool's: disposing it leaves none open.
        served.close()
        deadline = time.monotonic() + 3
        while watched.now() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watched.now() == 0
    finally:
        served.close()
        watched.close()
