"""Calling WSGI apps directly, in interleaved rounds, and counting what they do."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .apps import Target


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
    counts: dict[str, float] = field(default_factory=dict)
    _next: int = 0

    def batch(self, n: int) -> float:
        """Send ``n`` requests; return µs per request."""
        target = self.target
        n = target.batch or n
        expected = str(target.status)
        app = target.app
        if target.prepare is not None:
            spent = 0
            for _ in range(n):
                env = target.prepare()
                started = time.perf_counter_ns()
                status = call(app, env)
                spent += time.perf_counter_ns() - started
                if not status.startswith(expected):
                    raise WrongStatus(f"{self.key}: {status}, expected {expected}")
            return spent / n / 1000
        envs = target.environs
        size = len(envs)
        first = self._next
        self._next = (first + n) % size
        started = time.perf_counter_ns()
        for i in range(first, first + n):
            status = call(app, envs[i % size])
            if status[:3] != expected:
                raise WrongStatus(f"{self.key}: {status}, expected {expected}")
        return (time.perf_counter_ns() - started) / n / 1000

    def warm(self) -> None:
        """One request per distinct environ: each key is verified once."""
        target = self.target
        if target.prepare is not None:
            return
        envs = target.environs if target.batch is None else target.environs[:1]
        for env in envs:
            status = call(target.app, env)
            if not status.startswith(str(target.status)):
                raise WrongStatus(f"{self.key}: {status} while warming")


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
        for variant in variants:
            variant.samples.append(took[variant.key])
            variant.ratios.append(took[variant.key] / took[bare.key])
        if progress is not None:
            progress(number + 1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- counting what one request does ----------------------------------------------------


@contextmanager
def counting(variant: Variant) -> Iterator[dict[str, int]]:
    """Count SQL statements, limiter storage round trips and argon2 runs."""
    import redis.connection
    from limits.storage.memory import MemoryStorage

    counts = {"db": 0, "storage": 0, "argon2": 0}
    undo: list[Callable[[], None]] = []

    state = variant.target.keyauth
    if state is not None:
        engine = state.store.engine

        def on_sql(*_: Any) -> None:
            counts["db"] += 1

        sa.event.listen(engine, "before_cursor_execute", on_sql)
        undo.append(lambda: sa.event.remove(engine, "before_cursor_execute", on_sql))
        hasher = state.service.hasher
        verify = hasher.verify

        def counted_verify(stored: str, secret: str) -> bool:
            counts["argon2"] += 1
            return verify(stored, secret)

        hasher.verify = counted_verify  # type: ignore[method-assign]
        undo.append(lambda: hasher.__dict__.pop("verify", None))

    # A Redis round trip is one write of packed commands to the socket.
    send = redis.connection.AbstractConnection.send_packed_command

    def counted_send(self: Any, command: Any, check_health: bool = True) -> None:
        counts["storage"] += 1
        send(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counted_send  # type: ignore[method-assign]
    undo.append(lambda: setattr(redis.connection.AbstractConnection, "send_packed_command", send))
    # An in-memory "round trip" is a call into Flask-Limiter's memory storage.
    depth: list[int] = []
    for name in ("incr", "get", "get_expiry", "acquire_entry", "get_moving_window",
                 "acquire_sliding_window_entry", "get_sliding_window", "clear"):
        original = getattr(MemoryStorage, name, None)
        if original is None:
            continue

        def wrapper(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            # incr calls get: count the outermost call only.
            if not depth:
                counts["storage"] += 1
            depth.append(1)
            try:
                return __original(*args, **kwargs)
            finally:
                depth.pop()

        setattr(MemoryStorage, name, wrapper)
        undo.append(lambda n=name, o=original: setattr(MemoryStorage, n, o))
    try:
        yield counts
    finally:
        for step in reversed(undo):
            step()


def account(variant: Variant, n: int = 50) -> None:
    """Per-request DB statements, storage round trips and argon2 runs."""
    with counting(variant) as counts:
        sent = variant.batch(n)
        del sent
    per = variant.target.batch or n
    variant.counts = {name: value / per for name, value in counts.items()}
