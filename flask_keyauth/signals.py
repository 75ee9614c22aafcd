"""Signals, sent with the app as sender (``sender=current_app``).

>>> from flask_keyauth import auth_failed
>>> @auth_failed.connect
... def count_failures(app, reason, remote_addr, **extra):
...     ...
"""

from __future__ import annotations

from blinker import Namespace
from flask import Flask, current_app

_signals = Namespace()

#: A key was created. Keyword: ``key`` (an ``ApiKeyInfo``).
key_created = _signals.signal("keyauth.key-created")
#: A key was revoked. Keyword: ``key``.
key_revoked = _signals.signal("keyauth.key-revoked")
#: A key was rotated. Keywords: ``key`` (the old key) and ``new_key``.
key_rotated = _signals.signal("keyauth.key-rotated")
#: A request was refused with a 401 or 429 ``TOO_MANY_FAILED_ATTEMPTS``.
#: Keywords: ``reason`` (the error code) and ``remote_addr``.
auth_failed = _signals.signal("keyauth.auth-failed")
#: A request was refused because its owner's plan limit is spent.
#: Keywords: ``key`` and ``limit`` (its text, e.g. ``"100 per 1 hour"``).
rate_limited = _signals.signal("keyauth.rate-limited")
#: A key was reported found in public (a GitHub report, ``flask keys leaked``
#: or ``flask keys scan --revoke``). Keywords: ``key``, ``url`` and ``source``.
key_leaked = _signals.signal("keyauth.key-leaked")
#: An active key expires soon (``flask keys remind``). Keywords: ``key`` and
#: ``days_left``.
key_expiring = _signals.signal("keyauth.key-expiring")
#: An active key is older than ``KEYAUTH_ROTATION_REMINDER_DAYS`` (``flask
#: keys remind``). Keywords: ``key`` and ``age_days``.
key_rotation_due = _signals.signal("keyauth.key-rotation-due")


def sender() -> Flask:
    """The current app itself (not its proxy), the sender of every signal."""
    # A documented werkzeug API, despite its underscore.
    return current_app._get_current_object()  # type: ignore[attr-defined, no-any-return]  # noqa: SLF001
