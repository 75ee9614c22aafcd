"""The argon2id seam and the cache of keys this process has verified.

argon2 is slow on purpose (tens of milliseconds), so each key is verified
with it once per process. After that :class:`KeyCache` remembers a MAC of
(stored hash, key text) under a random per-process key: a repeat request
costs one keyed BLAKE2b instead of one argon2 run. What the cache keeps with
it (the key's view, its owner's limits, the stamps read before its row) is
trusted only as long as the request path says (see :mod:`.auth`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .metrics import NOTHING, Metrics

if TYPE_CHECKING:
    from .models import ApiKeyInfo

#: Locks that keep first uses of one key from running argon2 in parallel.
FIRST_USE_LOCKS = 64
#: Seconds a first use waits for a parallel one of the same key.
FIRST_USE_WAIT = 2.0


class Busy(Exception):
    """As many argon2 verifications as allowed are running in this process."""


class Hasher:
    """Hash and verify secrets with argon2id at the configured cost.

    At most ``max_concurrent`` verifications run at once; one more raises
    :class:`Busy` at once instead of queueing, so no stream of forged keys
    can take every CPU.
    """

    def __init__(
        self,
        time_cost: int,
        memory_cost: int,
        parallelism: int,
        max_concurrent: int,
        metrics: Metrics = NOTHING,
    ) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._metrics = metrics
        # Verified against when a key id is unknown, so that an unknown id
        # costs the same argon2 run as a wrong secret.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(24))

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, stored_hash: str, secret: str, wait: float = 0.0) -> bool:
        """Whether ``secret`` matches ``stored_hash``. ``wait``: seconds to
        wait for a free slot (requests never wait; a leak report may)."""
        taken = self._slots.acquire(timeout=wait) if wait > 0 else self._slots.acquire(False)
        if not taken:
            self._metrics.argon2("busy")
            raise Busy()
        try:
            matched: bool = self._hasher.verify(stored_hash, secret)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            matched = False
        finally:
            self._slots.release()
        self._metrics.argon2("match" if matched else "mismatch")
        return matched

    def verify_dummy(self, secret: str) -> None:
        """Spend the time of one verification, for an id that does not exist."""
        self.verify(self._dummy, secret)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return False


class CachedKey:
    """What this process knows of one key it has verified."""

    __slots__ = ("digest", "info", "limits", "read_at", "secret_hash", "stamps")

    def __init__(
        self,
        info: ApiKeyInfo,
        limits: tuple[str, ...],
        secret_hash: str,
        digest: bytes,
        stamps: tuple[str, str] | None,
        read_at: float,
    ) -> None:
        self.info = info
        self.limits = limits
        self.secret_hash = secret_hash
        self.digest = digest
        #: The key's and its owner's stamps, read before the row was.
        self.stamps = stamps
        #: ``time.monotonic()`` when the row was read.
        self.read_at = read_at


class KeyCache:
    """A bounded, thread-safe memory of keys seen valid, by key id.

    Only a MAC of the key is kept, never the key; the MAC's key is random per
    process and never leaves it. When full, the oldest entry goes: its key
    pays one argon2 run again.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._mac_key = secrets.token_bytes(32)
        self._entries: dict[str, CachedKey] = {}
        self._max = max_entries
        self._lock = threading.Lock()
        self._first_use = tuple(threading.Lock() for _ in range(FIRST_USE_LOCKS))

    def digest(self, secret_hash: str, text: str) -> bytes:
        message = secret_hash.encode() + b"\0" + text.encode()
        return hashlib.blake2b(message, key=self._mac_key, digest_size=32).digest()

    def get(self, key_id: str) -> CachedKey | None:
        return self._entries.get(key_id)

    def verifies(self, entry: CachedKey | None, secret_hash: str, text: str) -> bool:
        """Whether ``text`` is the key verified for ``entry`` under this hash."""
        if entry is None or entry.secret_hash != secret_hash:
            return False
        return hmac.compare_digest(entry.digest, self.digest(secret_hash, text))

    def put(self, key_id: str, entry: CachedKey) -> None:
        with self._lock:
            self._entries.pop(key_id, None)
            self._entries[key_id] = entry
            while len(self._entries) > self._max:
                del self._entries[next(iter(self._entries))]

    def discard(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @contextmanager
    def first_use(self, key_id: str) -> Iterator[bool]:
        """One first use of a key at a time in this process: parallel first
        uses (a client's burst, every thread after a deploy) run argon2 once.
        Striped, so memory stays bounded whatever the number of keys; a wait
        longer than :data:`FIRST_USE_WAIT` raises :class:`Busy`, so wrong
        secrets sent for one id cannot hold threads for long. Yields whether
        this use had to wait."""
        lock = self._first_use[zlib.crc32(key_id.encode()) % FIRST_USE_LOCKS]
        waited = not lock.acquire(blocking=False)
        if waited and not lock.acquire(timeout=FIRST_USE_WAIT):
            raise Busy()
        try:
            yield waited  # whether another first use went before this one
        finally:
            lock.release()
