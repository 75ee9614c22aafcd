"""Which keys are due a reminder, behind ``flask keys remind``.

Two kinds, as the signals that carry them: ``key_expiring`` for an active
key that expires within the given number of days, and ``key_rotation_due``
for an active key older than ``KEYAUTH_ROTATION_REMINDER_DAYS``. Deciding
is pure; sending once is the service's (``KeyService.remind``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .models import ApiKeyInfo, isoformat

EXPIRING = "key_expiring"
ROTATION_DUE = "key_rotation_due"


@dataclass(frozen=True)
class Reminder:
    key: ApiKeyInfo
    #: ``key_expiring`` or ``key_rotation_due``.
    kind: str
    #: Days left before expiry, counted up (a key made to last 2 days has 2
    #: left, not 1 and 23 hours), or the key's age in whole days.
    days: int

    @property
    def detail(self) -> str:
        """What the ``reminded`` event records: the kind, and for an expiry
        the date it is for, so a moved expiry is reminded again."""
        if self.kind == EXPIRING and self.key.expires_at is not None:
            return f"{self.kind} {isoformat(self.key.expires_at)}"
        return self.kind

    def __str__(self) -> str:
        key = self.key
        if self.kind == EXPIRING:
            said = f"expires in {self.days} day(s), at {isoformat(key.expires_at)}"
        else:
            said = f"is {self.days} days old: rotate it"
        return f"{self.kind} {key.id} {key.redacted} owner {key.owner_id}: {said}"


def due_reminders(
    keys: Iterable[ApiKeyInfo], now: dt.datetime, days: int, rotation_reminder_days: int
) -> list[Reminder]:
    """The reminders due now for ``keys``, by key creation then kind."""
    due = []
    expiring_before = now + dt.timedelta(days=days)
    rotate_before = now - dt.timedelta(days=rotation_reminder_days)
    for key in sorted(keys, key=lambda k: (k.created_at, k.id)):
        if key.status != "active":
            continue
        if key.expires_at is not None and key.expires_at <= expiring_before:
            left = math.ceil((key.expires_at - now) / dt.timedelta(days=1))
            due.append(Reminder(key, EXPIRING, left))
        if key.created_at < rotate_before:
            due.append(Reminder(key, ROTATION_DUE, (now - key.created_at).days))
    return due
