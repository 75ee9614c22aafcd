"""API keys for Flask APIs: created, scoped, expired, rotated and revoked by
their owners, stored as argon2 hashes, with plan-based rate limits."""

from __future__ import annotations

from .decorators import current_key, require_key
from .errors import KeyAuthError, KeyNotFound
from .extension import KeyAuth
from .models import ApiKeyInfo
from .signals import (
    auth_failed,
    key_created,
    key_expiring,
    key_leaked,
    key_revoked,
    key_rotated,
    key_rotation_due,
    rate_limited,
)
from .views import blueprint

__all__ = [
    "ApiKeyInfo",
    "KeyAuth",
    "KeyAuthError",
    "KeyNotFound",
    "auth_failed",
    "blueprint",
    "current_key",
    "key_created",
    "key_expiring",
    "key_leaked",
    "key_revoked",
    "key_rotated",
    "key_rotation_due",
    "rate_limited",
    "require_key",
]
