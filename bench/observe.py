"""What the servers see of a counted batch of requests.

* PostgreSQL: table reads (``seq_scan + idx_scan``) and row writes
  (``n_tup_ins + n_tup_upd``) of flask-keyauth's tables, from
  ``pg_stat_user_tables``, before and after the batch.
* Redis: the commands the server received from this process's connections,
  from ``MONITOR``; a command a Lua script runs inside Redis is not a round
  trip and is left out.
* SQLite has no server: its statements are counted by a SQLAlchemy
  ``before_cursor_execute`` listener, installed only while counting.
* argon2: runs of ``verify`` on the hasher the app uses.

Each observer answers ``None`` for what it could not see, which the table
prints as ``n/a``.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa

from .apps import KEYAUTH_TABLES, local_only

# -- pausing: the untimed preparation of a request (making a new key) ------------------

_paused: list[bool] = [False]


@contextmanager
def paused() -> Iterator[None]:
    """Nothing the client-side counters see in here is counted."""
    _paused[0] = True
    try:
        yield
    finally:
        _paused[0] = False


# -- SQLite: statements, counted in the client --------------------------------------


class SqliteStatements:
    """Statements run on one SQLite database file, by kind.

    Listening on the ``Engine`` class sees every engine, the app's own
    included, without reaching into the app; the statements are told apart
    by the engine's database file.
    """

    READS = ("SELECT", "WITH")
    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

    def __init__(self, database_url: str) -> None:
        self.database = sa.make_url(database_url).database
        self.reads = self.writes = 0

    def _on_sql(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if _paused[0] or conn.engine.url.database != self.database:
            return
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if verb in self.WRITES:
            self.writes += 1
        elif verb in self.READS:
            self.reads += 1

    @contextmanager
    def watching(self) -> Iterator[SqliteStatements]:
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._on_sql)
        try:
            yield self
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", self._on_sql)


# -- PostgreSQL: the server's statistics views -----------------------------------------

#: How long a PostgreSQL 15+ backend may keep its table counters to itself.
#:
#: Since 15 the statistics are in shared memory, but each backend batches
#: its own counters and publishes them at most once a second: a backend
#: going idle less than a second after its last flush publishes only after
#: ``PGSTAT_IDLE_INTERVAL`` (10 s) of idleness. Polling until the view
#: "stops changing for 0.5 s" therefore stops too early (on this machine the
#: first transaction of a batch showed at once, the other 49 ten seconds
#: later), and ``pg_stat_force_next_flush()`` acts only on the backend that
#: calls it, which is the app's, not ours. ``pg_stat_statements`` would see
#: statements as they finish, but it needs ``shared_preload_libraries`` and a
#: server restart, which a shared server does not get from a benchmark (it is
#: not loaded here). So: the batch is counted when every other backend of
#: the throwaway database has been idle for longer than this (from
#: ``pg_stat_activity.state_change``), and the view has then stopped
#: changing for half a second. A batch during which no backend of the
#: database left its idle state sent no statement: it reads as nothing at
#: once, without the wait.
PGSTAT_IDLE_INTERVAL = 10.0
SETTLE_MARGIN = 0.5
SETTLE_TIMEOUT = 40.0


@dataclass(frozen=True)
class PgCounters:
    reads: int
    writes: int


class PostgresStats:
    """``pg_stat_user_tables`` counters of flask-keyauth's tables in one database."""

    def __init__(self, database_url: str) -> None:
        self.engine = sa.create_engine(
            local_only(database_url), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        self.conn = self.engine.connect()
        version = int(self.conn.execute(sa.text("SHOW server_version_num")).scalar_one())
        if version < 150000:
            # Before 15 a backend sends its counters to a collector process
            # at its next transaction or at exit, with no idle timer: the
            # wait below would not see them. The counts are n/a there.
            self.close()
            raise LookupError(f"PostgreSQL {version}: table counts need 15 or later")

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()

    def counters(self) -> PgCounters:
        # A fresh snapshot each time (stats_fetch_consistency may cache one
        # per transaction).
        self.conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
        reads, writes = self.conn.execute(
            sa.text(
                "SELECT coalesce(sum(coalesce(seq_scan, 0) + coalesce(idx_scan, 0)), 0), "
                "coalesce(sum(n_tup_ins + n_tup_upd), 0) "
                "FROM pg_stat_user_tables WHERE relname = ANY(:tables)"
            ),
            {"tables": list(KEYAUTH_TABLES)},
        ).one()
        return PgCounters(int(reads), int(writes))

    def activity(self) -> tuple[float, float | None, bool]:
        """Server time now, the last state change of another backend, any busy."""
        now, last, busy = self.conn.execute(
            sa.text(
                "SELECT extract(epoch FROM clock_timestamp()), "
                "extract(epoch FROM max(state_change)), "
                "coalesce(bool_or(state IS DISTINCT FROM 'idle'), false) "
                "FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
        ).one()
        return float(now), (float(last) if last is not None else None), bool(busy)

    def settled(self) -> PgCounters | None:
        """The counters once every backend's own have been published."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            now, last, busy = self.activity()
            quiet_for = now - last if last is not None else float("inf")
            if not busy and quiet_for > PGSTAT_IDLE_INTERVAL + SETTLE_MARGIN:
                break
            if time.monotonic() > deadline:
                return None
            wait = PGSTAT_IDLE_INTERVAL + SETTLE_MARGIN - quiet_for if not busy else 0.2
            time.sleep(min(max(wait, 0.05), 2.0))
        seen = self.counters()
        while True:
            time.sleep(0.5)
            again = self.counters()
            if again == seen:
                return seen
            if time.monotonic() > deadline:
                return None
            seen = again

    def since(self) -> float:
        return self.activity()[0]

    def quiet_since(self, started: float) -> bool:
        """No other backend of the database left idle since ``started``."""
        _, last, busy = self.activity()
        return not busy and (last is None or last < started)


# -- Redis: MONITOR ----------------------------------------------------------------------

_LINE = re.compile(r'^\+?\d+\.\d+ \[(\d+) ([^\]]+)\] "((?:[^"\\]|\\.)*)"')


def _own_redis_peers(port: int) -> set[str]:
    """``ip:port`` of this process's TCP connections to Redis's ``port``.

    MONITOR names each command's client by address; this process's own are
    found from its file descriptors and the kernel's socket table, so that
    other users of the shared server are left out.
    """
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    try:
        with open("/proc/self/net/tcp") as table:
            next(table)
            for line in table:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if inode not in inodes or int(remote.split(":")[1], 16) != port:
                    continue
                address, local_port = local.split(":")
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
                peers.add(f"{ip}:{int(local_port, 16)}")
    except OSError:
        pass
    return peers


@dataclass
class RedisBatch:
    round_trips: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    scripted: Counter[str] = field(default_factory=Counter)
    commandstats: int | None = None


class RedisMonitor:
    """A MONITOR connection and a control connection to the shared Redis."""

    CONTROL = ("echo", "info", "client")

    def __init__(self, redis_url: str) -> None:
        import redis

        parts = urlsplit(local_only(redis_url))
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.control = redis.Redis.from_url(redis_url, socket_timeout=10)
        self.control_addr = str(self.control.client_info()["addr"])
        self.sock = socket.create_connection((self.host, self.port), timeout=10)
        self.buffer = b""
        if parts.password:
            user = unquote(parts.username) if parts.username else None
            self._send("AUTH", *((user,) if user else ()), unquote(parts.password))
            self._expect_ok()
        host, port = self.sock.getsockname()[:2]
        self.monitor_addr = f"{host}:{port}"
        self._send("MONITOR")
        self._expect_ok()

    def close(self) -> None:
        if self.sentinel is not None:
            self.control.delete(self.sentinel)
        self.sock.close()
        self.control.close()

    # The Redis is shared: another client may delete this run's keys (a
    # ``limits`` storage reset deletes every ``LIMITS*`` key of the server).
    # flask-keyauth then reads rows again, and the counts show it. A key of
    # the same form, set after warm-up, tells whether that happened.
    sentinel: str | None = None

    def mark(self, prefix: str) -> None:
        self.sentinel = f"LIMITS:LIMITER/{prefix}/bench-sentinel"
        self.control.set(self.sentinel, "1", ex=3600)

    def intact(self) -> bool:
        """The sentinel is still there (and is there again, from now on)."""
        if self.sentinel is None:
            return True
        if self.control.exists(self.sentinel):
            return True
        self.control.set(self.sentinel, "1", ex=3600)
        return False

    def _send(self, *args: str) -> None:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))

    def _line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("MONITOR connection closed")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _expect_ok(self) -> None:
        line = self._line()
        if not line.startswith("+OK"):
            raise ConnectionError(f"Redis answered {line!r}")

    def _until(self, marker: str) -> list[str]:
        """MONITOR lines up to the control connection's ``ECHO marker``.

        Redis runs commands one at a time and reports each to MONITOR as it
        runs it: every command the batch's requests sent (and had answered)
        is reported before the ECHO sent after them.
        """
        self.control.echo(marker)
        lines: list[str] = []
        while True:
            line = self._line()
            if marker in line and self.control_addr in line:
                return lines
            lines.append(line)

    def _commandstats(self) -> int:
        stats = self.control.info("commandstats")
        return sum(
            int(value["calls"]) for name, value in stats.items()
            if name.removeprefix("cmdstat_").split("|")[0] not in self.CONTROL
        )

    @contextmanager
    def watching(self) -> Iterator[RedisBatch]:
        batch = RedisBatch()
        before = self._commandstats()
        peers = _own_redis_peers(self.port)
        self._until(f"kabench-start-{uuid.uuid4().hex}")
        try:
            yield batch
        finally:
            lines = self._until(f"kabench-end-{uuid.uuid4().hex}")
            peers = (peers | _own_redis_peers(self.port)) - {self.monitor_addr, self.control_addr}
            for line in lines:
                match = _LINE.match(line)
                if match is None:
                    continue
                _, source, command = match.groups()
                command = command.upper()
                if source == "lua":
                    batch.scripted[command] += 1
                elif source in peers:
                    batch.round_trips += 1
                    batch.commands[command] += 1
            batch.commandstats = self._commandstats() - before


# -- argon2: the hasher's verify ---------------------------------------------------------


def find_hasher(app: Any) -> Any | None:
    """The hasher flask-keyauth verifies with: ``.hasher``, or ``.service.hasher``."""
    state = getattr(app, "extensions", {}).get("keyauth")
    if state is None:
        return None
    hasher = getattr(state, "hasher", None)
    if hasher is None:
        hasher = getattr(getattr(state, "service", None), "hasher", None)
    return hasher if callable(getattr(hasher, "verify", None)) else None


class Argon2Runs:
    """Calls of the hasher's ``verify`` (and ``verify_dummy``, for unknown ids)."""

    METHODS = ("verify", "verify_dummy")

    def __init__(self, app: Any) -> None:
        self.hasher = find_hasher(app)
        self.runs = 0

    @contextmanager
    def watching(self) -> Iterator[Argon2Runs | None]:
        hasher = self.hasher
        if hasher is None:
            yield None
            return
        undo: list[Callable[[], None]] = []
        depth = [0]
        try:
            for name in self.METHODS:
                original = getattr(hasher, name, None)
                if original is None:
                    continue

                def counted(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
                    # verify_dummy may call verify: one run, counted once.
                    if not depth[0] and not _paused[0]:
                        self.runs += 1
                    depth[0] += 1
                    try:
                        return __original(*args, **kwargs)
                    finally:
                        depth[0] -= 1

                had = name in getattr(hasher, "__dict__", {})
                setattr(hasher, name, counted)
                undo.append(_undo(hasher, name, original if had else None))
        except (AttributeError, TypeError):
            # A hasher with __slots__ or read-only methods cannot be wrapped.
            for step in reversed(undo):
                step()
            yield None
            return
        try:
            yield self
        finally:
            for step in reversed(undo):
                step()


def _undo(obj: Any, name: str, original: Any | None) -> Callable[[], None]:
    """Put back an instance attribute, or remove the one set over a method."""
    if original is not None:
        return lambda: setattr(obj, name, original)
    return lambda: delattr(obj, name)


# -- memory --------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process, after a full collection."""
    gc.collect()
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
