"""The key hygiene report behind ``flask keys audit``.

Each active key is checked for the habits that turn a leak into an
incident: keys never used (forgotten), idle for months, without expiry,
past the rotation reminder, and live keys holding ``admin``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from .models import ApiKeyInfo

#: Days without a request after which a used key counts as idle.
IDLE_DAYS = 90

NEVER_USED = "never used"
IDLE = f"idle {IDLE_DAYS}+ days"
NEVER_EXPIRES = "never expires"
ROTATE = "past the rotation reminder"
LIVE_ADMIN = "live key with admin"


@dataclass(frozen=True)
class AuditFinding:
    key: ApiKeyInfo
    problems: tuple[str, ...]


def audit_keys(
    keys: Iterable[ApiKeyInfo], now: dt.datetime, rotation_reminder_days: int
) -> list[AuditFinding]:
    """The active keys with at least one hygiene problem, oldest first."""
    findings = []
    idle_since = now - dt.timedelta(days=IDLE_DAYS)
    rotate_before = now - dt.timedelta(days=rotation_reminder_days)
    for key in sorted(keys, key=lambda k: (k.created_at, k.id)):
        if key.status != "active":
            continue
        problems = []
        if key.last_used_at is None:
            problems.append(NEVER_USED)
        elif key.last_used_at < idle_since:
            problems.append(IDLE)
        if key.expires_at is None:
            problems.append(NEVER_EXPIRES)
        if key.created_at < rotate_before:
            problems.append(ROTATE)
        if key.environment == "live" and "admin" in key.granted_scopes:
            problems.append(LIVE_ADMIN)
        if problems:
            findings.append(AuditFinding(key, tuple(problems)))
    return findings
