"""The request path, top to bottom.

parse → throttle → cached key and stamps → argon2 once → expiry → plan.
(Scopes are checked last, by the decorator, so that a spent budget answers
429 even for a key that lacks a scope.)

A key this process has verified is known by a MAC of its text. With a
shared limiter storage that keeps stamps (Redis), a known, active key whose
row was read less than ``KEYAUTH_ROW_MAX_AGE`` seconds ago costs one round
trip: the plan script checks the stamps read before that row and, when they
hold, counts the request. Anything else (a stamp that moved or vanished, an
old or missing row, a storage without stamps) reads the row again, under
stamps read just before it, and decides the request on that fresh row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from . import keys
from .errors import (
    ExpiredApiKey,
    HttpsRequired,
    InvalidApiKey,
    IpNotAllowed,
    MissingApiKey,
    StorageUnavailable,
)
from .hashing import Busy, CachedKey, Hasher, KeyCache
from .models import ApiKeyInfo, KeyRecord, isoformat
from .ratelimit import Charge, client_address

if TYPE_CHECKING:
    from .config import Settings
    from .ratelimit import PlanLimits
    from .service import KeyService
    from .store import Store
    from .usage import UsageBuffer


@dataclass(frozen=True)
class Authenticated:
    """A key that passed verification, its owner's limits, and what counting
    this request left of them when the authentication counted it too."""

    key: ApiKeyInfo
    limits: tuple[str, ...]
    charge: Charge | None = None


#: HTTP's own whitespace (RFC 9110 OWS). ``str.strip()`` would also drop
#: control characters and non-ASCII spaces: a key wrapped in them is refused.
_OWS = " \t"
_SCHEME = re.compile(r"([^ \t]+)[ \t]+(.*)", re.DOTALL)


def pick_key(presented: Iterable[tuple[str, str]]) -> str | None:
    """The one key among ``(header name, value)`` pairs, or ``None``.

    ``Authorization`` counts only with the ``Bearer`` scheme (any case);
    an empty value, ``Bearer`` alone or another scheme is no key at all. The
    same key in several headers is one key; two different keys are refused.
    """
    found: str | None = None
    for name, raw in presented:
        value = raw.strip(_OWS)
        if name.lower() == "authorization":
            match = _SCHEME.fullmatch(value)
            if match is None or match.group(1).lower() != "bearer":
                continue
            value = match.group(2).strip(_OWS)
        if not value:
            continue
        if found is None:
            found = value
        elif value != found:
            raise InvalidApiKey()
    return found


def environ_key(name: str) -> str:
    """Where a WSGI server puts a request header in the environ."""
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def allowed_from(key: ApiKeyInfo, remote_addr: str | None) -> bool:
    """Whether the key may be used from this address (``allowed_ips``)."""
    if not key.allowed_ips:
        return True
    try:
        address = ipaddress.ip_address((remote_addr or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(block) for block in key.allowed_ips)


class Authenticator:
    """Authenticates requests of one app (``state.auth``)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        hasher: Hasher,
        limits: PlanLimits,
        usage: UsageBuffer,
        service: KeyService,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hasher = hasher
        self.cache = KeyCache()
        self.limits = limits
        self.usage = usage
        self.service = service
        self._headers = [(name, environ_key(name)) for name in settings.header_names]

    def authenticate(
        self, environ: Mapping[str, Any], secure: bool, cost: int | None
    ) -> Authenticated:
        """Verify the request's key; with ``cost``, count it against the plan
        too (the caller enforces the result). Raises a ``KeyAuthError``."""
        settings = self.settings
        if settings.require_https and not secure:
            raise HttpsRequired()
        text = pick_key((name, environ[key]) for name, key in self._headers if key in environ)
        if text is None:
            raise MissingApiKey(details={"headers": list(settings.header_names)})
        key = keys.parse(text, settings.key_prefix)
        if key is None or key.environment not in settings.environments_accepted:
            raise InvalidApiKey()  # decided without any I/O: nothing to throttle
        address = client_address(environ.get("REMOTE_ADDR"), settings.failed_auth_ipv6_prefix)

        entry = self.cache.get(key.key_id)
        verified = entry is not None and self.cache.verifies(entry, entry.secret_hash, text)
        if not verified:
            self.limits.throttle_check(address)
        elif entry is not None and entry.info.revoked_at is not None:
            self._refuse(address)  # revocation is for ever: no need to ask
        elif (
            entry is not None
            and entry.stamps is not None
            and self._trusted(entry)
            and allowed_from(entry.info, environ.get("REMOTE_ADDR"))
        ):
            fresh, counted = self.limits.check(entry.info, entry.limits, entry.stamps, cost or 0)
            if fresh:
                return self._accept(entry, counted if cost else None)

        entry = self._read(key, text, address, entry)
        if not allowed_from(entry.info, environ.get("REMOTE_ADDR")):
            raise IpNotAllowed()  # authenticated, so no failed attempt; not counted
        charge = self.limits.spend(entry.info, entry.limits, cost) if cost else None
        return self._accept(entry, charge)

    def _trusted(self, entry: CachedKey) -> bool:
        """Whether the cached row may stand, subject to its stamps."""
        expires_at = entry.info.expires_at
        return (
            entry.info.disabled_at is None
            and time.monotonic() - entry.read_at < self.settings.row_max_age
            and (expires_at is None or self.service.clock() < expires_at)
        )

    def _read(
        self, key: keys.ParsedKey, text: str, address: str, entry: CachedKey | None
    ) -> CachedKey:
        """Read the key's row (under stamps read first) and decide on it."""
        # The owner of a key never changes: a key seen before knows whose
        # stamps to read. A key never seen is decided on its row alone and
        # cached without stamps, so its next request reads them.
        stamps = self.limits.stamps(entry.info.owner_id, key.key_id) if entry else None
        read_at = time.monotonic()
        row = self.store.read_key(key.key_id)
        # The checksum covers the environment and prefix, but whoever holds
        # a key could re-checksum it under another: the row decides, and an
        # id under the wrong environment costs what an unknown id costs.
        if row is None or row.environment != key.environment or row.prefix != key.prefix:
            self._argon2(None, key.secret)
            self._refuse(address)
        secret_hash = row.secret_hash
        # A key verified once stays verified: its secret never changes (the
        # stored hash may, when it is upgraded).
        if not self.cache.verifies(entry, entry.secret_hash if entry else "", text):
            with self._busy_is_503(), self.cache.first_use(key.key_id) as waited:
                current = self.cache.get(key.key_id)
                if not self.cache.verifies(current, current.secret_hash if current else "", text):
                    if waited:  # the address may have gone over its limit meanwhile
                        self.limits.throttle_check(address)
                    if not self._argon2(secret_hash, key.secret):
                        self._refuse(address)
                    secret_hash = self.service.upgrade_hash(key.key_id, secret_hash, key.secret)
                elif current is not None:
                    secret_hash = current.secret_hash
        now = self.service.clock()
        record = KeyRecord.from_row(row)
        plan, limits = self.service.resolve_plan(row.owner_plan, row.owner_limits)
        info = record.info(plan, self.settings.expand(record.scopes), now)
        entry = CachedKey(
            info, limits, secret_hash, self.cache.digest(secret_hash, text), stamps, read_at
        )
        self.cache.put(key.key_id, entry)
        if record.is_revoked or record.disabled_at is not None:
            self._refuse(address)
        if record.is_expired(now):
            raise ExpiredApiKey(details={"expired_at": isoformat(record.expires_at)})
        return entry

    def _argon2(self, secret_hash: str | None, secret: str) -> bool:
        with self._busy_is_503():
            if secret_hash is None:
                self.hasher.verify_dummy(secret)
                return False
            return self.hasher.verify(secret_hash, secret)

    @staticmethod
    @contextlib.contextmanager
    def _busy_is_503() -> Iterator[None]:
        try:
            yield
        except Busy:
            raise StorageUnavailable(
                "Too many keys are being verified at once. Try again shortly.",
                headers=[("Retry-After", "1")],
            ) from None

    def _refuse(self, address: str) -> NoReturn:
        self.limits.throttle_fail(address)
        raise InvalidApiKey()

    def _accept(self, entry: CachedKey, charge: Charge | None) -> Authenticated:
        now = self.service.clock()
        self.usage.record(entry.info.id, now)
        info = dataclasses.replace(entry.info, last_used_at=now)
        return Authenticated(info, entry.limits, charge)
