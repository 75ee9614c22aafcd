"""Buffered last-used times and per-day request counts.

Authenticating a key must not write to the database, so each process keeps
what it saw in memory and writes it at most once per
``KEYAUTH_LAST_USED_INTERVAL`` (and when it exits cleanly). A crash loses at
most one interval of counts; ``last_used_at`` is never moved backwards.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .models import Tables

logger = logging.getLogger("flask_keyauth")

#: Dialects with INSERT … ON CONFLICT DO UPDATE.
_UPSERTS: dict[str, Any] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class UsageBuffer:
    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_used: dict[str, dt.datetime] = {}
        self._counts: Counter[tuple[str, dt.date]] = Counter()
        self._last_flush = clock()

    def record(self, key_id: str, at: dt.datetime) -> bool:
        """Note one request; return whether a flush is due."""
        with self._lock:
            previous = self._last_used.get(key_id)
            if previous is None or at > previous:
                self._last_used[key_id] = at
            self._counts[(key_id, at.date())] += 1
            return self._clock() - self._last_flush >= self.interval

    def pending_last_used(self, key_id: str) -> dt.datetime | None:
        return self._last_used.get(key_id)

    def pending_requests(self, key_id: str) -> dict[dt.date, int]:
        with self._lock:
            return {day: n for (kid, day), n in self._counts.items() if kid == key_id}

    def take(self) -> tuple[dict[str, dt.datetime], Counter[tuple[str, dt.date]]]:
        with self._lock:
            last_used, counts = self._last_used, self._counts
            self._last_used, self._counts = {}, Counter()
            self._last_flush = self._clock()
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

    def flush(self, engine: sa.Engine, tables: Tables) -> None:
        last_used, counts = self.take()
        if not last_used and not counts:
            return
        try:
            with engine.begin() as conn:
                write(conn, tables, last_used, counts)
        except sa.exc.SQLAlchemyError:
            logger.warning("flask-keyauth could not write key usage; will retry", exc_info=True)
            self.restore(last_used, counts)


def write(
    conn: sa.Connection,
    tables: Tables,
    last_used: dict[str, dt.datetime],
    counts: Counter[tuple[str, dt.date]],
) -> None:
    keys = tables.keys
    # One executemany per statement: a flush after a busy interval may
    # carry tens of thousands of keys.
    if last_used:
        conn.execute(
            sa.update(keys)
            .where(keys.c.key_id == sa.bindparam("k_id"))
            .where(
                sa.or_(keys.c.last_used_at.is_(None), keys.c.last_used_at < sa.bindparam("at"))
            )
            .values(last_used_at=sa.bindparam("at")),
            [{"k_id": key_id, "at": at} for key_id, at in last_used.items()],
        )
    usage = tables.usage
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql") and counts:
        # Increments, never read-modify-write: several processes add to the
        # same row without losing each other's counts.
        stmt = _UPSERTS[dialect](usage)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[usage.c.key_id, usage.c.day],
                set_={"requests": usage.c.requests + stmt.excluded.requests},
            ),
            [{"key_id": k, "day": day, "requests": n} for (k, day), n in counts.items()],
        )
        return
    for (key_id, day), n in counts.items():
        updated = conn.execute(
            sa.update(usage)
            .where(usage.c.key_id == key_id, usage.c.day == day)
            .values(requests=usage.c.requests + n)
        )
        if updated.rowcount == 0:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(usage).values(key_id=key_id, day=day, requests=n))
            except sa.exc.IntegrityError:
                conn.execute(
                    sa.update(usage)
                    .where(usage.c.key_id == key_id, usage.c.day == day)
                    .values(requests=usage.c.requests + n)
                )
