"""The key store: the engine flask-keyauth uses and the request path's read.

With the host's Flask-SQLAlchemy ``db`` the host's engine is used (its pool,
its limits); without it flask-keyauth builds one engine of its own, with a
bounded pool and connect and statement timeouts. Either way:

- every statement goes through SQLAlchemy's public API;
- the engine gets SQLAlchemy's documented recipe for pools and ``os.fork()``
  (a forked child drops the inherited pools without closing them), so
  ``gunicorn --preload`` is safe;
- the one read on the request path has a deadline (:data:`READ_DEADLINE`):
  a server that is down, paused or restarting answers 503 within it instead
  of hanging a worker, and a read on a connection the server dropped is
  tried once more on a new one.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from .errors import StorageUnavailable
from .models import Tables

logger = logging.getLogger("flask_keyauth")

#: Seconds the request path waits for a key read before answering 503.
READ_DEADLINE = 2.0
#: Seconds a client is told to wait while the key store is unreachable.
STORE_RETRY_AFTER = 5
#: PostgreSQL's SQLSTATE for a write refused by a read-only server (a hot
#: standby after failover, ``default_transaction_read_only``).
READ_ONLY_SQLSTATE = "25006"


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the key store cannot serve (503, not 500)."""
    if isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        return getattr(error.orig, "sqlstate", None) == READ_ONLY_SQLSTATE
    return isinstance(error, concurrent.futures.TimeoutError)


def unavailable() -> StorageUnavailable:
    return StorageUnavailable(headers=[("Retry-After", str(STORE_RETRY_AFTER))])


def owner_plan_columns(owners: sa.Table) -> tuple[sa.Label[Any], sa.Label[Any]]:
    """An owner's plan and limits, named apart from a key's own ``limits``."""
    return owners.c.plan.label("owner_plan"), owners.c.limits.label("owner_limits")


def _own_engine_options(url: sa.URL, host_options: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = dict(host_options)
    # A failed statement's message would otherwise carry its parameters,
    # argon2 hashes included, into the host's error logs.
    options["hide_parameters"] = True
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            # One shared connection, or every checkout would see a new,
            # empty in-memory database.
            options.setdefault("poolclass", sa.pool.StaticPool)
        connect_args = dict(options.get("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        connect_args.setdefault("timeout", 30)
        options["connect_args"] = connect_args
        return options
    options.setdefault("pool_size", 5)
    options.setdefault("max_overflow", 5)
    options.setdefault("pool_timeout", READ_DEADLINE)
    if url.get_backend_name() == "postgresql":
        connect_args = dict(options.get("connect_args", {}))
        # libpq's own limits: a server that does not answer the handshake,
        # and a statement stuck behind a lock, give up within seconds.
        connect_args.setdefault("connect_timeout", int(READ_DEADLINE))
        connect_args.setdefault("options", "-c statement_timeout=5000")
        options["connect_args"] = connect_args
    return options


def build_engine(uri: str, host_options: Mapping[str, Any] | None = None) -> sa.Engine:
    """flask-keyauth's own engine on ``uri``, for apps without a ``db``."""
    url = sa.make_url(uri)
    engine = sa.create_engine(url, **_own_engine_options(url, host_options or {}))
    make_fork_safe(engine)
    return engine


#: Every engine flask-keyauth uses, to give a forked child pools of its own.
_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def make_fork_safe(engine: sa.Engine) -> None:
    """SQLAlchemy's recipe for pools and ``os.fork()``: in a forked child
    (a gunicorn worker forked after ``--preload`` touched the database),
    ``engine.dispose(close=False)`` drops the parent's pooled connections
    without closing them (which would end the parent's sessions), so the
    child opens its own. It runs at the fork itself, before any checkout
    and so before any ``pool_pre_ping`` could write to a shared socket."""
    _ENGINES.add(engine)


def _dispose_in_child() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_dispose_in_child)


class Store:
    """The tables and the engine they are reached through."""

    def __init__(self, tables: Tables, engine: Callable[[], sa.Engine]) -> None:
        self.tables = tables
        self._engine = engine
        self._prepared: sa.Engine | None = None
        self._reader: sa.Engine | None = None
        self._deadline = False
        self._pool: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
        self._pool_lock = threading.Lock()
        k, owners = tables.keys, tables.owners
        self.key_query = (
            sa.select(k, *owner_plan_columns(owners))
            .select_from(k.outerjoin(owners, owners.c.owner_id == k.c.owner_id))
            .where(k.c.key_id == sa.bindparam("key_id"))
        )

    @property
    def engine(self) -> sa.Engine:
        engine = self._engine()
        if engine is not self._prepared:
            make_fork_safe(engine)
            # Reads need no transaction: in autocommit a read is one round
            # trip, with no BEGIN before it nor ROLLBACK after. (SQLite's
            # driver begins none for a SELECT, and is not over a network.)
            local = engine.dialect.name == "sqlite"
            self._reader = engine if local else engine.execution_options(
                isolation_level="AUTOCOMMIT"
            )
            self._deadline = not local
            self._prepared = engine
        return engine

    def read_key(self, key_id: str) -> Any:
        """The key's row joined with its owner's plan, or ``None``.

        Raises :class:`StorageUnavailable` when the store cannot answer
        within :data:`READ_DEADLINE` seconds.
        """
        self.engine  # noqa: B018 - prepares the reader for the current engine
        try:
            if not self._deadline:
                return self._read(key_id)
            return self._executor().submit(self._read, key_id).result(READ_DEADLINE)
        except Exception as error:
            if not is_unavailable(error):
                raise
            logger.warning("flask-keyauth could not read the key store: %s", type(error).__name__)
            raise unavailable() from None

    def _read(self, key_id: str) -> Any:
        assert self._reader is not None
        for attempt in (1, 2):
            try:
                with self._reader.connect() as conn:
                    return conn.execute(self.key_query, {"key_id": key_id}).first()
            except sa.exc.DBAPIError as error:
                # The server dropped this connection (restart, failover):
                # SQLAlchemy has invalidated the pool; once more on a new one.
                if attempt == 2 or not error.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        # Reads run on a small pool of threads so that the request can stop
        # waiting at the deadline; a forked child starts its own pool.
        pool = self._pool
        if pool is None or pool[0] != os.getpid():
            with self._pool_lock:
                pool = self._pool
                if pool is None or pool[0] != os.getpid():
                    pool = self._pool = (
                        os.getpid(),
                        concurrent.futures.ThreadPoolExecutor(8, "keyauth-read"),
                    )
        return pool[1]
