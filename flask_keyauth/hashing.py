"""The argon2id seam and the cache of keys this process has verified.

argon2 is slow on purpose (tens of milliseconds), so each key is verified
with it once per process. After that, :class:`VerifiedCache` remembers an
HMAC of (stored hash, secret) under a random per-process key: a repeat
request costs one HMAC instead of one argon2 run. The cache never decides
whether a key is still valid: the key's row is read on every request, so a
revocation or an expiry applies on the very next request in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Hasher:
    """Hash and verify secrets with argon2id at the configured cost."""

    def __init__(self, time_cost: int, memory_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        # Verified against when a key id is unknown, so that an unknown id
        # costs the same argon2 run as a wrong secret.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str, secret: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, secret: str) -> None:
        """Spend the time of one verification, for an id that does not exist."""
        self.verify(self._dummy, secret)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return False


class VerifiedCache:
    """A bounded, thread-safe memory of (key id, hash, secret) seen valid.

    Only an HMAC is kept, never the secret; the HMAC key is random per
    process and never leaves it.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self._hmac_key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def _digest(self, stored_hash: str, secret: str) -> bytes:
        message = stored_hash.encode() + b"\0" + secret.encode()
        return hmac.new(self._hmac_key, message, hashlib.sha256).digest()

    def contains(self, key_id: str, stored_hash: str, secret: str) -> bool:
        expected = self._entries.get(key_id)
        if expected is None:
            return False
        return hmac.compare_digest(expected, self._digest(stored_hash, secret))

    def known(self, key_id: str) -> bool:
        """Whether this process has verified some secret for ``key_id``."""
        return key_id in self._entries

    def add(self, key_id: str, stored_hash: str, secret: str) -> None:
        digest = self._digest(stored_hash, secret)
        with self._lock:
            self._entries[key_id] = digest
            self._entries.move_to_end(key_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def discard(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
