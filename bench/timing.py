"""Calling WSGI apps directly, in interleaved rounds, and counting what they do."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .apps import Target
from .observe import (
    Argon2Runs,
    PostgresStats,
    RedisMonitor,
    SqliteStatements,
    paused,
    rss_bytes,
)


class WrongStatus(AssertionError):
    pass


def call(app: Any, env: dict[str, Any]) -> str:
    """One request straight into the WSGI callable; its status line."""
    seen: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        seen.append(status)
        return None

    body = app(env.copy(), start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return seen[0]


@dataclass
class Variant:
    key: str
    label: str
    target: Target
    samples: list[float] = field(default_factory=list)  # µs/request per round
    ratios: list[float] = field(default_factory=list)
    #: Per request, from :func:`account`; ``None`` where it could not be seen.
    counts: dict[str, Any] = field(default_factory=dict)
    #: The slowest single request of the timed rounds, in µs.
    worst: float = 0.0
    #: Resident memory added by the warm-up, per distinct key (bytes).
    rss_per_key: float | None = None
    rss_added: int | None = None
    _next: int = 0
    _last_worst: float = 0.0

    def batch(self, n: int) -> float:
        """Send ``n`` requests; return µs per request.

        Each request is timed on its own (two clock reads, ~0.1 µs, on every
        row alike), so that the slowest one, a collection pause say, is seen.
        """
        target = self.target
        n = target.batch or n
        expected = str(target.status)[:3]
        app = target.app
        clock = time.perf_counter_ns
        spent = worst = 0
        if target.prepare is not None:
            for _ in range(n):
                with paused():
                    env = target.prepare()
                started = clock()
                status = call(app, env)
                took = clock() - started
                spent += took
                worst = max(worst, took)
                if status[:3] != expected:
                    raise WrongStatus(f"{self.key}: {status}, expected {expected}")
        else:
            envs = target.environs
            size = len(envs)
            first = self._next
            self._next = (first + n) % size
            for i in range(first, first + n):
                started = clock()
                status = call(app, envs[i % size])
                took = clock() - started
                spent += took
                if took > worst:
                    worst = took
                if status[:3] != expected:
                    raise WrongStatus(f"{self.key}: {status}, expected {expected}")
        self._last_worst = worst / 1000
        return spent / n / 1000

    def warm(self, measure_rss: bool = True) -> None:
        """Two requests per distinct environ, one pass after the other.

        The first request of a key verifies it (argon2); the second may still
        do one-time work for that key (on PostgreSQL + Redis, one more row
        read and script call were seen on the second use). Only then is the
        key in the steady state that the counts and the timed rounds are
        about; the first use is row 4's.
        """
        target = self.target
        if target.prepare is not None:
            return
        envs = target.environs if target.batch is None else target.environs[:1]
        measure_rss = measure_rss and target.measure_rss
        before = rss_bytes() if measure_rss else 0
        for _ in range(2):
            for env in envs:
                status = call(target.app, env)
                if not status.startswith(str(target.status)):
                    raise WrongStatus(f"{self.key}: {status} while warming")
        if measure_rss:
            self.rss_added = rss_bytes() - before
            self.rss_per_key = self.rss_added / len(envs)


def interleave(variants: list[Variant], rounds: int, n: int, bare: Variant,
               progress: Callable[[int], None] | None = None) -> None:
    """``rounds`` rounds; each sends one batch to every variant, in a new order."""
    rng = random.Random(1)
    for number in range(rounds):
        order = variants[:]
        rng.shuffle(order)
        took: dict[str, float] = {}
        for variant in order:
            took[variant.key] = variant.batch(n)
            variant.worst = max(variant.worst, variant._last_worst)
        for variant in variants:
            variant.samples.append(took[variant.key])
            variant.ratios.append(took[variant.key] / took[bare.key])
        if progress is not None:
            progress(number + 1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- counting what one request does, as the servers see it --------------------------------


@dataclass
class Observers:
    """The server-side observers of one run, shared by its rows."""

    redis: RedisMonitor | None = None
    postgres: dict[str, PostgresStats] = field(default_factory=dict)

    def pg(self, url: str) -> PostgresStats | None:
        if url not in self.postgres:
            try:
                self.postgres[url] = PostgresStats(url)
            except (sa.exc.SQLAlchemyError, LookupError):
                return None
        return self.postgres[url]

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        for stats in self.postgres.values():
            stats.close()


def account(variant: Variant, n: int, observers: Observers) -> None:
    """Per request: table reads and writes, Redis round trips, argon2 runs."""
    target = variant.target
    per = target.batch or n
    url = target.database_url
    backend = sa.make_url(url).get_backend_name() if url else None
    counts: dict[str, Any] = {"reads": None, "writes": None, "redis": None, "argon2": None,
                              "sql_from": None}
    if url is None:
        counts.update(reads=0.0, writes=0.0)

    with ExitStack() as stack:
        pg = pg_before = pg_started = None
        if backend == "postgresql":
            pg = observers.pg(url)  # type: ignore[arg-type]
            if pg is not None:
                pg_before = pg.settled()
                pg_started = pg.since()
        sqlite = None
        if backend == "sqlite":
            sqlite = stack.enter_context(SqliteStatements(url).watching())  # type: ignore[arg-type]
        argon2 = stack.enter_context(Argon2Runs(target.keyauth).watching()) \
            if target.keyauth is not None else None
        redis_batch = stack.enter_context(observers.redis.watching()) \
            if observers.redis is not None else None

        variant.batch(n)

    if observers.redis is not None and not observers.redis.intact():
        counts["redis_interference"] = True
    if target.keyauth is None:
        counts["argon2"] = 0.0
    elif argon2 is not None:
        counts["argon2"] = argon2.runs / per
    if redis_batch is not None:
        counts["redis"] = redis_batch.round_trips / per
        counts["redis_commands"] = {k: v / per for k, v in redis_batch.commands.items()}
        counts["redis_scripted"] = {k: v / per for k, v in redis_batch.scripted.items()}
        if redis_batch.commandstats is not None:
            counts["redis_commandstats"] = redis_batch.commandstats / per
    if sqlite is not None:
        counts.update(reads=sqlite.reads / per, writes=sqlite.writes / per, sql_from="sqlite")
    if pg is not None and pg_before is not None and pg_started is not None:
        # Nothing left idle on the database during the batch: nothing ran.
        after = pg.counters() if pg.quiet_since(pg_started) else pg.settled()
        if after is not None:
            counts.update(reads=(after.reads - pg_before.reads) / per,
                          writes=(after.writes - pg_before.writes) / per, sql_from="pg")
    variant.counts = counts
