"""The argon2id seam and the cache of keys this process has verified.

argon2 is slow on purpose (tens of milliseconds), so each key is verified
with it once per process. After that, :class:`VerifiedCache` remembers an
HMAC of (stored hash, secret) under a random per-process key: a repeat
request costs one HMAC instead of one argon2 run. The cache never decides
whether a key is still valid: the key's row is read on every request, and
what the cache remembers alongside (the key's view, its owner's limits) is
reused only while that row reads exactly the same, so a revocation, an
expiry or a plan change applies on the very next request in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from typing import Any

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


class _Entry:
    __slots__ = ("digest", "snapshot")

    def __init__(self, digest: bytes) -> None:
        self.digest = digest
        # (row, value), replaced as a whole: a reader sees one pair or the other.
        self.snapshot: tuple[tuple[Any, ...], Any] | None = None


class VerifiedCache:
    """A bounded, thread-safe memory of (key id, hash, secret) seen valid.

    Only a MAC (keyed BLAKE2b) is kept, never the secret; its key is random
    per process and never leaves it. Each entry may also hold what was built
    from the key's row (see :meth:`remember`), valid for that row only.
    When full, the oldest entry goes: its key pays one argon2 run again.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._hmac_key = secrets.token_bytes(32)
        self._entries: dict[str, _Entry] = {}
        self._max = max_entries
        self._lock = threading.Lock()

    def _digest(self, stored_hash: str, secret: str) -> bytes:
        message = stored_hash.encode() + b"\0" + secret.encode()
        # Keyed BLAKE2b is a MAC in one C call: on every request's path.
        return hashlib.blake2b(message, key=self._hmac_key, digest_size=32).digest()

    def contains(self, key_id: str, stored_hash: str, secret: str) -> bool:
        entry = self._entries.get(key_id)
        if entry is None:
            return False
        return hmac.compare_digest(entry.digest, self._digest(stored_hash, secret))

    def known(self, key_id: str) -> bool:
        """Whether this process has verified some secret for ``key_id``."""
        return key_id in self._entries

    def add(self, key_id: str, stored_hash: str, secret: str) -> None:
        entry = _Entry(self._digest(stored_hash, secret))
        with self._lock:
            self._entries.pop(key_id, None)
            self._entries[key_id] = entry
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]

    def remember(self, key_id: str, row: tuple[Any, ...], value: Any) -> None:
        """Keep ``value``, built from ``row``, for :meth:`fresh` to return."""
        entry = self._entries.get(key_id)
        if entry is not None:
            entry.snapshot = (row, value)

    def fresh(self, key_id: str, row: tuple[Any, ...], stored_hash: str, secret: str) -> Any:
        """What :meth:`remember` kept for this key, if ``row`` is the very row
        it was built from and ``secret`` is the one verified; else ``None``."""
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        snapshot = entry.snapshot
        if snapshot is None or snapshot[0] != row:
            return None
        if not hmac.compare_digest(entry.digest, self._digest(stored_hash, secret)):
            return None
        return snapshot[1]

    def discard(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
