"""Alerts on unusual key usage, built on flask-keyauth's signals.

The README's recipe, runnable: ``install(app, notify)`` subscribes to

- ``auth_failed``: a burst of failures from one address (someone guessing
  keys, or a client deployed with a revoked key) alerts once per burst;
- ``rate_limited``: an owner that runs into its plan alerts once per limit
  and window, a sign of a runaway script or a plan that is too small;
- ``key_revoked``: every revocation, for the security log;
- ``key_leaked``: a key found in public (GitHub's report, ``flask keys
  leaked``, ``flask keys scan --revoke``), with where it was found;
- ``key_expiring`` and ``key_rotation_due``: what ``flask keys remind``
  (from cron) finds due, once per key and kind, to pass on to the owner.

and :func:`usage_spikes` compares each key's requests today with its own
average over the previous days, for a job that runs every few minutes.
``notify`` is any callable taking one line of text: a logger, a chat webhook
or a pager. Signals are sent synchronously inside the request, so keep it
fast (hand the line to a queue when it talks to the network).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from flask import Flask

from flask_keyauth import (
    ApiKeyInfo,
    KeyAuth,
    auth_failed,
    key_expiring,
    key_leaked,
    key_revoked,
    key_rotation_due,
    rate_limited,
)

Notify = Callable[[str], None]


class Burst:
    """Counts events per subject in a sliding window and says when a count
    first reaches the threshold (once per burst, not once per event).

    Memory stays bounded: a subject keeps at most ``threshold`` times, and at
    most ``max_subjects`` subjects are tracked (the one seen longest ago goes
    first), so a flood of addresses cannot grow it without end.
    """

    def __init__(
        self,
        threshold: int,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_subjects: int = 10_000,
    ) -> None:
        self.threshold = threshold
        self.seconds = seconds
        self.clock = clock
        self.max_subjects = max_subjects
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, subject: str) -> bool:
        now = self.clock()
        seen = self._seen.pop(subject, None)
        if seen is None:
            seen = deque(maxlen=self.threshold)
        while seen and seen[0] <= now - self.seconds:
            seen.popleft()
        reached_before = len(seen) == self.threshold
        seen.append(now)
        self._seen[subject] = seen  # now the most recent subject
        while len(self._seen) > self.max_subjects:
            self._seen.popitem(last=False)
        return len(seen) == self.threshold and not reached_before

    def __len__(self) -> int:
        return len(self._seen)


def install(
    app: Flask,
    notify: Notify,
    *,
    failures: int = 20,
    failure_seconds: float = 60,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Send ``notify`` a line for each unusual event on ``app``."""
    burst = Burst(failures, failure_seconds, clock)
    # (owner, limit) -> the hour it last alerted in: one alert per limit an hour.
    limited: dict[tuple[str, str], int] = {}

    def on_auth_failed(sender: Flask, reason: str, remote_addr: str | None, **_: Any) -> None:
        if burst.hit(remote_addr or "unknown"):
            notify(
                f"{failures} failed API key attempts from {remote_addr} within "
                f"{failure_seconds:g}s (last: {reason})"
            )

    def on_rate_limited(sender: Flask, key: ApiKeyInfo, limit: str, **_: Any) -> None:
        hour = int(clock() // 3600)
        if limited.get((key.owner_id, limit)) != hour:
            limited[(key.owner_id, limit)] = hour
            notify(f"owner {key.owner_id} hit its plan limit {limit} (key {key.id})")

    def on_revoked(sender: Flask, key: ApiKeyInfo, **_: Any) -> None:
        notify(f"key {key.redacted} ({key.name!r}) of {key.owner_id} was revoked")

    def on_leaked(sender: Flask, key: ApiKeyInfo, url: str, source: str, **_: Any) -> None:
        where = url or source or "an unnamed place"
        notify(f"key {key.redacted} ({key.name!r}) of {key.owner_id} was found in {where}; "
               f"it is {key.status}")

    def on_expiring(sender: Flask, key: ApiKeyInfo, days_left: int, **_: Any) -> None:
        notify(f"key {key.redacted} ({key.name!r}) of {key.owner_id} expires in "
               f"{days_left} day(s): rotate it")

    def on_rotation_due(sender: Flask, key: ApiKeyInfo, age_days: int, **_: Any) -> None:
        notify(f"key {key.redacted} ({key.name!r}) of {key.owner_id} is {age_days} days "
               "old: rotate it")

    # weak=False: the receivers are closures that would otherwise be collected.
    auth_failed.connect(on_auth_failed, sender=app, weak=False)
    rate_limited.connect(on_rate_limited, sender=app, weak=False)
    key_revoked.connect(on_revoked, sender=app, weak=False)
    key_leaked.connect(on_leaked, sender=app, weak=False)
    key_expiring.connect(on_expiring, sender=app, weak=False)
    key_rotation_due.connect(on_rotation_due, sender=app, weak=False)


def usage_spikes(
    keyauth: KeyAuth, owner_id: str, *, factor: float = 5.0, minimum: int = 100, days: int = 8
) -> list[str]:
    """Keys of ``owner_id`` whose requests today exceed ``factor`` times their
    daily average over the previous ``days - 1`` days (and ``minimum``).
    Run it in an app context, e.g. from a scheduled job."""
    lines = []
    for key in keyauth.list_keys(owner_id):
        if key.status != "active":
            continue
        history = keyauth.service.daily_usage(key.id, days)
        *before, (_, today) = history
        average = sum(n for _, n in before) / max(1, len(before))
        if today >= minimum and today > factor * average:
            lines.append(
                f"key {key.redacted} of {owner_id}: {today} requests today, "
                f"{average:.0f} a day before"
            )
    return lines
