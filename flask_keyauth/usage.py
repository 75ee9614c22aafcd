"""Buffered last-used times and per-day request counts, written in the background.

Authenticating a key must not write to the database, so each process keeps
what it saw in memory. One daemon thread per process (started at the first
request, started again in a forked child) writes every buffer at most once
per ``KEYAUTH_LAST_USED_INTERVAL`` seconds, never inside a user's request,
and once more at a clean exit. Rows are written in one order, sorted by key
and day, so that concurrent writers never deadlock; each process's timing
carries a random jitter so that workers started together do not flush
together. A crash loses at most one interval of counts; ``last_used_at``
never moves backwards.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import random
import threading
import time
import weakref
from collections import Counter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .models import Tables

logger = logging.getLogger("flask_keyauth")

#: Dialects with INSERT … ON CONFLICT DO UPDATE.
_UPSERTS: dict[str, Any] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
#: The shortest pause of the flusher, whatever the interval.
MIN_PAUSE = 0.05


class UsageBuffer:
    """One app's pending usage, and where to write it."""

    def __init__(self, interval: float, store: Any) -> None:
        self.interval = interval
        self.store = store
        self._lock = threading.Lock()
        # Held for a whole flush: the exit flush waits for the background
        # one in progress instead of leaving its batch half-written.
        self._flushing = threading.Lock()
        self._last_used: dict[str, dt.datetime] = {}
        self._counts: Counter[tuple[str, dt.date]] = Counter()
        self._pid = os.getpid()
        self.due = 0.0

    def record(self, key_id: str, at: dt.datetime) -> None:
        """Note one request of this key."""
        if self._pid != os.getpid():
            self._forked()
        with self._lock:
            previous = self._last_used.get(key_id)
            if previous is None or at > previous:
                self._last_used[key_id] = at
            self._counts[(key_id, at.date())] += 1
        FLUSHER.watch(self)

    def _forked(self) -> None:
        # In a forked child: what was pending is the parent's to write, and
        # a lock some parent thread held would stay held here for ever.
        self._pid = os.getpid()
        self._lock, self._flushing = threading.Lock(), threading.Lock()
        self._last_used, self._counts = {}, Counter()

    def pending_last_used(self, key_id: str) -> dt.datetime | None:
        return self._last_used.get(key_id)

    def pending_requests(self, key_id: str) -> dict[dt.date, int]:
        with self._lock:
            return {day: n for (kid, day), n in self._counts.items() if kid == key_id}

    def take(self) -> tuple[dict[str, dt.datetime], Counter[tuple[str, dt.date]]]:
        with self._lock:
            last_used, counts = self._last_used, self._counts
            self._last_used, self._counts = {}, Counter()
            return last_used, counts

    def restore(
        self, last_used: dict[str, dt.datetime], counts: Counter[tuple[str, dt.date]]
    ) -> None:
        """Put back what a failed flush could not write, to try again later."""
        with self._lock:
            for key_id, at in last_used.items():
                if key_id not in self._last_used or at > self._last_used[key_id]:
                    self._last_used[key_id] = at
            self._counts.update(counts)

    def flush(self) -> None:
        """Write what is pending, now."""
        with self._flushing:
            last_used, counts = self.take()
            if not last_used and not counts:
                return
            try:
                with self.store.engine.begin() as conn:
                    write(conn, self.store.tables, last_used, counts)
            except sa.exc.SQLAlchemyError:
                logger.warning("flask-keyauth could not write key usage; will retry", exc_info=True)
                self.restore(last_used, counts)


class Flusher:
    """The one background writer of this process."""

    def __init__(self) -> None:
        self._buffers: weakref.WeakSet[UsageBuffer] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None
        self._jitter = random.Random()  # noqa: S311 - spreading timings, not a secret

    def watch(self, buffer: UsageBuffer) -> None:
        if self._pid == os.getpid() and buffer in self._buffers:
            return
        with self._lock:
            if self._pid != os.getpid():
                # First use in this process (or in a forked child, where the
                # parent's thread does not exist).
                self._pid = os.getpid()
                self._buffers = weakref.WeakSet()
                thread = threading.Thread(target=self._run, name="keyauth-usage", daemon=True)
                thread.start()
            if buffer not in self._buffers:
                buffer.due = time.monotonic() + self._pause(buffer.interval)
                self._buffers.add(buffer)
                self._wake.set()

    def _pause(self, interval: float) -> float:
        return max(MIN_PAUSE, interval * self._jitter.uniform(0.8, 1.0))

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            buffers = list(self._buffers)
            for buffer in buffers:
                if buffer.due <= now:
                    buffer.due = now + self._pause(buffer.interval)
                    self._flush(buffer)
            wait = min((b.due for b in buffers), default=now + 1.0) - time.monotonic()
            self._wake.wait(max(MIN_PAUSE, wait))
            self._wake.clear()

    @staticmethod
    def _flush(buffer: UsageBuffer) -> None:
        try:
            buffer.flush()
        except Exception:  # noqa: BLE001 - the writer must outlive any one failure
            logger.exception("flask-keyauth: writing key usage failed")

    def flush_all(self) -> None:
        """Write every buffer of this process (at exit)."""
        for buffer in list(self._buffers):
            if self._pid == os.getpid():
                self._flush(buffer)


FLUSHER = Flusher()
atexit.register(FLUSHER.flush_all)


def write(
    conn: sa.Connection,
    tables: Tables,
    last_used: dict[str, dt.datetime],
    counts: Counter[tuple[str, dt.date]],
) -> None:
    """Write pending usage: last-used times, then day counts, each in key
    order, so that two writers lock rows in the same order."""
    keys = tables.keys
    if last_used:
        conn.execute(
            sa.update(keys)
            .where(keys.c.key_id == sa.bindparam("k_id"))
            .where(
                sa.or_(keys.c.last_used_at.is_(None), keys.c.last_used_at < sa.bindparam("at"))
            )
            .values(last_used_at=sa.bindparam("at")),
            [{"k_id": key_id, "at": last_used[key_id]} for key_id in sorted(last_used)],
        )
    if not counts:
        return
    usage = tables.usage
    rows = [{"key_id": k, "day": day, "requests": counts[(k, day)]} for k, day in sorted(counts)]
    upsert = _UPSERTS.get(conn.dialect.name)
    if upsert is not None:
        # Increments, never read-modify-write: several processes add to the
        # same row without losing each other's counts.
        stmt = upsert(usage)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[usage.c.key_id, usage.c.day],
                set_={"requests": usage.c.requests + stmt.excluded.requests},
            ),
            rows,
        )
        return
    for row in rows:
        match = (usage.c.key_id == row["key_id"], usage.c.day == row["day"])
        added = usage.c.requests + row["requests"]
        if conn.execute(sa.update(usage).where(*match).values(requests=added)).rowcount == 0:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(usage).values(**row))
            except sa.exc.IntegrityError:
                conn.execute(sa.update(usage).where(*match).values(requests=added))
