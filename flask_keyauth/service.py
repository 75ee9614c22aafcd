"""The one service layer: create, verify, revoke, rotate, list, set plans.

The decorator, the views, the CLI and host code all go through
:class:`KeyService`; it knows nothing of HTTP requests. Every operation runs
in an app context (signals are sent with ``current_app`` as sender).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import threading
import weakref
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from limits import parse_many

from . import keys, signals
from .config import Settings, split_limits
from .errors import ExpiredApiKey, InvalidApiKey, KeyNotFound, StorageUnavailable
from .hashing import Hasher, VerifiedCache
from .models import (
    NAME_MAX,
    ApiKeyInfo,
    KeyEvent,
    KeyRecord,
    Tables,
    as_utc,
    isoformat,
    join_scopes,
)
from .usage import UsageBuffer

logger = logging.getLogger("flask_keyauth")

OWNER_MAX = 255
#: The longest usage history one call returns, in days.
USAGE_DAYS_MAX = 90
#: Locks that keep first uses of one key from running argon2 in parallel.
FIRST_USE_LOCKS = 64
#: The most events one call returns.
EVENTS_MAX = 500
_UNSET: Any = object()


class AttemptGate(Protocol):
    """Guards argon2 runs for keys this process has not verified yet.

    ``acquire`` is called before argon2 and may raise (too many failures
    from this address); ``release`` is called when the key turned out valid.
    """

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class Store:
    """Where the tables live: the host's Flask-SQLAlchemy ``db`` or our engine."""

    def __init__(self, tables: Tables, engine: Callable[[], sa.Engine]) -> None:
        self.tables = tables
        self._engine = engine

    @property
    def engine(self) -> sa.Engine:
        return self._engine()


@dataclass(frozen=True)
class Authenticated:
    """A key that passed verification, and the limits of its owner's plan."""

    key: ApiKeyInfo
    limits: tuple[str, ...]


def _check_owner(owner_id: Any) -> str:
    if not isinstance(owner_id, str) or not owner_id or len(owner_id) > OWNER_MAX:
        raise ValueError(f"owner_id must be a non-empty string of at most {OWNER_MAX} characters")
    return owner_id


#: The errors of a key store that cannot be reached (down, restarting, pool
#: exhausted): the views answer them with 503, not 500.
STORE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
#: Seconds a client is told to wait while the key store is unreachable.
STORE_RETRY_AFTER = 5


def is_plain_text(value: str) -> bool:
    """No control characters nor lone surrogates: what the JSON API accepts
    in a label (the service API takes anything a database can store)."""
    return not any(
        ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) <= 0xDFFF for c in value
    )


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    if len(name) > NAME_MAX:
        raise ValueError(f"name must be at most {NAME_MAX} characters, not {len(name)}")
    if "\x00" in name or any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        # What no database here can store: PostgreSQL refuses NUL, and a lone
        # surrogate cannot be encoded. Other characters, newlines and escape
        # sequences included, are stored verbatim and escaped where shown.
        raise ValueError("name must not contain NUL characters or lone surrogates")
    return name


class KeyService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        hasher: Hasher,
        cache: VerifiedCache,
        usage: UsageBuffer,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.settings = settings
        self.store = store
        self.hasher = hasher
        self.cache = cache
        self.usage = usage
        #: The time source; tests and hosts may replace it.
        self.clock = clock

    # -- checks -------------------------------------------------------------

    def check_scopes(self, scopes: Any) -> tuple[str, ...]:
        if isinstance(scopes, str) or not isinstance(scopes, Iterable):
            raise ValueError("scopes must be a list of scope names")
        scopes = tuple(scopes)
        if not scopes:
            raise ValueError("give at least one scope")
        unknown = [s for s in scopes if not isinstance(s, str) or s not in self.settings.scopes]
        if unknown:
            known = ", ".join(sorted(self.settings.scopes))
            raise ValueError(f"unknown scope {unknown[0]!r}; known scopes: {known}")
        return tuple(sorted(set(scopes)))

    def check_expiry(self, expires_at: Any) -> dt.datetime | None:
        if expires_at is None:
            return None
        if not isinstance(expires_at, dt.datetime):
            raise ValueError("expires_at must be a datetime or None")
        checked = as_utc(expires_at)
        if checked <= self.clock():
            raise ValueError("expires_at must be in the future")
        return checked

    def check_plan(self, plan: Any, limits: Any) -> tuple[str, str | None]:
        if plan not in self.settings.plans:
            known = ", ".join(self.settings.plans)
            raise ValueError(f"unknown plan {plan!r}; known plans: {known}")
        if limits is None:
            if self.settings.plans[plan] is None:
                raise ValueError(f"plan {plan!r} has no fixed limits: give limits=...")
            return plan, None
        if not isinstance(limits, str) or not limits.strip():
            raise ValueError("limits must be a string such as '5000/hour;100000/day'")
        try:
            parse_many(limits)
        except ValueError:
            raise ValueError(f"limits {limits!r} cannot be parsed") from None
        return plan, ";".join(split_limits(limits))

    # -- reading ------------------------------------------------------------

    def _owner_plan(self, conn: sa.Connection, owner_id: str) -> tuple[str, tuple[str, ...]]:
        owners = self.store.tables.owners
        row = conn.execute(
            sa.select(owners.c.plan, owners.c.limits).where(owners.c.owner_id == owner_id)
        ).first()
        return self.resolve_plan(row.plan if row else None, row.limits if row else None)

    def resolve_plan(self, plan: str | None, limits: str | None) -> tuple[str, tuple[str, ...]]:
        """The plan name and the limits that apply to an owner."""
        if limits:
            return plan or self.settings.default_plan, split_limits(limits)
        fixed = self.settings.plans.get(plan) if plan else None
        if plan and fixed is None and plan in self.settings.plans:
            logger.warning("owner on plan %r has no limits set; using the default plan", plan)
        if fixed is None:
            default = self.settings.default_plan
            return (plan or default), self.settings.plans[default] or ()
        return plan or self.settings.default_plan, fixed

    def _info(self, record: KeyRecord, plan: str) -> ApiKeyInfo:
        return record.info(
            plan,
            self.settings.expand(record.scopes),
            self.clock(),
            self.usage.pending_last_used(record.key_id),
        )

    def _record(self, conn: sa.Connection, key_id: Any) -> KeyRecord:
        if not isinstance(key_id, str) or len(key_id) != keys.ID_LENGTH:
            raise KeyNotFound(str(key_id))
        t = self.store.tables.keys
        row = conn.execute(sa.select(t).where(t.c.key_id == key_id)).first()
        if row is None:
            raise KeyNotFound(key_id)
        return KeyRecord.from_row(row)

    def get_key(self, key_id: str) -> ApiKeyInfo:
        """One key by its public id; ``KeyNotFound`` when there is none."""
        with self.store.engine.connect() as conn:
            record = self._record(conn, key_id)
            plan, _ = self._owner_plan(conn, record.owner_id)
        return self._info(record, plan)

    def list_keys(self, owner_id: str) -> list[ApiKeyInfo]:
        """An owner's keys, newest first, revoked ones included."""
        _check_owner(owner_id)
        t = self.store.tables.keys
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t)
                .where(t.c.owner_id == owner_id)
                .order_by(t.c.created_at.desc(), t.c.key_id)
            ).all()
            plan, _ = self._owner_plan(conn, owner_id)
        return [self._info(KeyRecord.from_row(row), plan) for row in rows]

    def all_keys(self) -> list[ApiKeyInfo]:
        """Every owner's keys, by owner then newest first."""
        t, owners = self.store.tables.keys, self.store.tables.owners
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t, owners.c.plan, owners.c.limits)
                .select_from(t.outerjoin(owners, owners.c.owner_id == t.c.owner_id))
                .order_by(t.c.owner_id, t.c.created_at.desc(), t.c.key_id)
            ).all()
        return [
            self._info(KeyRecord.from_row(row), self.resolve_plan(row.plan, row.limits)[0])
            for row in rows
        ]

    def daily_usage(
        self, key_id: str, days: int = 30, today: dt.date | None = None
    ) -> list[tuple[dt.date, int]]:
        """Requests per day for the last ``days`` days (1 to 90), oldest
        first, every day listed (zeros included), today last.

        Written counts plus what this process still holds in its buffer;
        other processes' buffers show up within ``KEYAUTH_LAST_USED_INTERVAL``.
        ``KeyNotFound`` when there is no such key.
        """
        with self.store.engine.connect() as conn:
            self._record(conn, key_id)
        return self.daily_usage_many([key_id], days, today)[key_id]

    def daily_usage_many(
        self, key_ids: Iterable[str], days: int = 30, today: dt.date | None = None
    ) -> dict[str, list[tuple[dt.date, int]]]:
        """:meth:`daily_usage` of several keys in one query (for a list page)."""
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= USAGE_DAYS_MAX:
            raise ValueError(f"days must be a whole number from 1 to {USAGE_DAYS_MAX}")
        wanted = list(dict.fromkeys(key_ids))
        last = today or self.clock().date()
        first = last - dt.timedelta(days=days - 1)
        counts: dict[tuple[str, dt.date], int] = {}
        if wanted:
            usage = self.store.tables.usage
            with self.store.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(usage.c.key_id, usage.c.day, usage.c.requests).where(
                        usage.c.key_id.in_(wanted), usage.c.day >= first, usage.c.day <= last
                    )
                ).all()
            counts = {(row.key_id, row.day): row.requests for row in rows}
        for key_id in wanted:
            for day, n in self.usage.pending_requests(key_id).items():
                counts[(key_id, day)] = counts.get((key_id, day), 0) + n
        range_ = [first + dt.timedelta(days=i) for i in range(days)]
        return {
            key_id: [(day, counts.get((key_id, day), 0)) for day in range_] for key_id in wanted
        }

    def events(
        self, owner_id: str, key_id: str | None = None, limit: int = EVENTS_MAX
    ) -> list[KeyEvent]:
        """An owner's audit trail, newest first (one key's with ``key_id``)."""
        _check_owner(owner_id)
        t = self.store.tables.events
        query = sa.select(t).where(t.c.owner_id == owner_id)
        if key_id is not None:
            query = query.where(t.c.key_id == key_id)
        query = query.order_by(t.c.at.desc(), t.c.id.desc()).limit(max(1, min(limit, EVENTS_MAX)))
        with self.store.engine.connect() as conn:
            return [KeyEvent.from_row(row) for row in conn.execute(query)]

    def get_plan(self, owner_id: str) -> tuple[str, tuple[str, ...]]:
        """The plan name and limits of an owner."""
        with self.store.engine.connect() as conn:
            return self._owner_plan(conn, _check_owner(owner_id))

    # -- changing -----------------------------------------------------------

    def _event(
        self,
        conn: sa.Connection,
        owner_id: str,
        key_id: str | None,
        action: str,
        actor: str | None,
        remote_addr: str | None,
        detail: str | None = None,
    ) -> None:
        conn.execute(
            sa.insert(self.store.tables.events).values(
                owner_id=owner_id,
                key_id=key_id,
                action=action,
                actor=actor,
                remote_addr=remote_addr,
                detail=detail,
                at=self.clock(),
            )
        )

    def _insert_key(
        self,
        conn: sa.Connection,
        owner_id: str,
        name: str,
        scopes: tuple[str, ...],
        environment: str,
        expires_at: dt.datetime | None,
        rotated_from: str | None = None,
    ) -> tuple[KeyRecord, str]:
        key = keys.generate(self.settings.key_prefix, environment)
        values = {
            "key_id": key.key_id,
            "owner_id": owner_id,
            "name": name,
            "prefix": key.prefix,
            "environment": environment,
            "scopes": join_scopes(scopes),
            "secret_hash": self.hasher.hash(key.secret),
            "last4": key.text[-4:],
            "created_at": self.clock(),
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
            "rotated_from": rotated_from,
        }
        conn.execute(sa.insert(self.store.tables.keys).values(**values))
        record = KeyRecord.from_row(_Row(values))
        return record, key.text

    def create_key(
        self,
        owner_id: str,
        name: str,
        scopes: Iterable[str] = ("read",),
        environment: str = "live",
        expires_at: dt.datetime | None = None,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key; return its info and the full key text.

        The text is the only copy of the secret there will ever be: show it
        to its owner once and do not store or log it.
        """
        _check_owner(owner_id)
        check_name(name)
        checked_scopes = self.check_scopes(scopes)
        if environment not in keys.ENVIRONMENTS:
            raise ValueError(f"environment must be 'live' or 'test', not {environment!r}")
        checked_expiry = self.check_expiry(expires_at)
        with self.store.engine.begin() as conn:
            record, text = self._insert_key(
                conn, owner_id, name, checked_scopes, environment, checked_expiry
            )
            self._event(conn, owner_id, record.key_id, "created", actor, remote_addr)
            plan, _ = self._owner_plan(conn, owner_id)
        info = self._info(record, plan)
        signals.key_created.send(signals.sender(), key=info)
        return info, text

    def update_key(
        self,
        key_id: str,
        *,
        name: str = _UNSET,
        expires_at: dt.datetime | None = _UNSET,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> ApiKeyInfo:
        """Rename a key or change its expiry (``None`` clears it)."""
        values: dict[str, Any] = {}
        if name is not _UNSET:
            values["name"] = check_name(name)
        if expires_at is not _UNSET:
            values["expires_at"] = self.check_expiry(expires_at)
        t = self.store.tables.keys
        with self.store.engine.begin() as conn:
            record = self._record(conn, key_id)
            if record.is_revoked and values:
                raise ValueError("a revoked key cannot be changed")
            if values:
                conn.execute(sa.update(t).where(t.c.key_id == key_id).values(**values))
            if "name" in values and values["name"] != record.name:
                self._event(conn, record.owner_id, key_id, "renamed", actor, remote_addr)
            if "expires_at" in values and values["expires_at"] != record.expires_at:
                detail = isoformat(values["expires_at"]) or "never"
                self._event(
                    conn, record.owner_id, key_id, "expiry_changed", actor, remote_addr, detail
                )
            record = self._record(conn, key_id)
            plan, _ = self._owner_plan(conn, record.owner_id)
        return self._info(record, plan)

    def revoke_key(
        self, key_id: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> ApiKeyInfo:
        """Revoke a key at once, for every process; revoking twice is a no-op."""
        t = self.store.tables.keys
        with self.store.engine.begin() as conn:
            record = self._record(conn, key_id)
            changed = False
            if not record.is_revoked:
                # The condition keeps the first revocation time: a revoked
                # key is never revoked again nor un-revoked.
                result = conn.execute(
                    sa.update(t)
                    .where(t.c.key_id == key_id, t.c.revoked_at.is_(None))
                    .values(revoked_at=self.clock())
                )
                changed = result.rowcount == 1
                if changed:
                    self._event(conn, record.owner_id, key_id, "revoked", actor, remote_addr)
                record = self._record(conn, key_id)
            plan, _ = self._owner_plan(conn, record.owner_id)
        self.cache.discard(key_id)
        info = self._info(record, plan)
        if changed:
            signals.key_revoked.send(signals.sender(), key=info)
        return info

    def rotate_key(
        self,
        key_id: str,
        grace: dt.timedelta = dt.timedelta(hours=24),  # noqa: B008 - immutable
        *,
        expires_at: dt.datetime | None = None,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Replace a key by a new one; the old one works until ``grace`` ends.

        The new key keeps the old one's owner, name, scopes and environment.
        ``grace=timedelta(0)`` revokes the old key at once.
        """
        if not isinstance(grace, dt.timedelta):
            raise ValueError("grace must be a timedelta")
        if grace < dt.timedelta(0):
            raise ValueError("grace must not be negative")
        checked_expiry = self.check_expiry(expires_at)
        t = self.store.tables.keys
        now = self.clock()
        try:
            end = now + grace
        except OverflowError:
            raise ValueError("grace is too long: it ends past the year 9999") from None
        with self.store.engine.begin() as conn:
            old = self._record(conn, key_id)
            if old.is_revoked:
                raise ValueError(f"key {key_id} is revoked and cannot be rotated")
            if old.is_expired(now):
                raise ValueError(f"key {key_id} has expired and cannot be rotated")
            if grace == dt.timedelta(0):
                change: dict[str, Any] = {"revoked_at": now}
            else:
                change = {"expires_at": min(old.expires_at, end) if old.expires_at else end}
            conn.execute(
                sa.update(t).where(t.c.key_id == key_id, t.c.revoked_at.is_(None)).values(**change)
            )
            new, text = self._insert_key(
                conn,
                old.owner_id,
                old.name,
                old.scopes,
                old.environment,
                checked_expiry,
                rotated_from=key_id,
            )
            self._event(conn, old.owner_id, key_id, "rotated", actor, remote_addr, new.key_id)
            self._event(conn, old.owner_id, new.key_id, "created", actor, remote_addr, key_id)
            old = self._record(conn, key_id)
            plan, _ = self._owner_plan(conn, old.owner_id)
        if grace == dt.timedelta(0):
            self.cache.discard(key_id)
        old_info, new_info = self._info(old, plan), self._info(new, plan)
        signals.key_rotated.send(
            signals.sender(), key=old_info, new_key=new_info
        )
        return new_info, text

    def set_plan(
        self,
        owner_id: str,
        plan: str,
        limits: str | None = None,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> None:
        """Put an owner on a plan; ``limits`` sets custom limits (enterprise)."""
        _check_owner(owner_id)
        plan, limits = self.check_plan(plan, limits)
        owners = self.store.tables.owners
        now = self.clock()
        with self.store.engine.begin() as conn:
            updated = conn.execute(
                sa.update(owners)
                .where(owners.c.owner_id == owner_id)
                .values(plan=plan, limits=limits, updated_at=now)
            )
            if updated.rowcount == 0:
                conn.execute(
                    sa.insert(owners).values(
                        owner_id=owner_id, plan=plan, limits=limits, updated_at=now
                    )
                )
            detail = plan if limits is None else f"{plan} ({limits})"
            self._event(conn, owner_id, None, "plan_changed", actor, remote_addr, detail)

    # -- verifying ----------------------------------------------------------

    def authenticate(self, key: keys.ParsedKey, gate: AttemptGate | None = None) -> Authenticated:
        """Verify a well-formed key; raise ``InvalidApiKey`` or ``ExpiredApiKey``.

        One indexed read of the key's row per call (so a revocation, an
        expiry or a plan change applies at once in every process); argon2
        runs only the first time this process sees this key, and for unknown
        ids a dummy verification takes the same time as a wrong secret.
        While the row reads exactly as it did when this process last let the
        key in, what was built from it then is reused: only the expiry, which
        depends on the time, is checked again.
        """
        if key.environment not in self.settings.environments_accepted:
            raise InvalidApiKey()
        rows = self._key_rows
        row = rows.read(key.key_id)
        if row is None:
            if gate is not None:
                gate.acquire()
            self.hasher.verify_dummy(key.secret)
            raise InvalidApiKey()
        # The checksum covers the environment and prefix, but a forger who
        # holds a key could re-checksum it under another environment: the
        # row decides.
        if row[rows.ENVIRONMENT] != key.environment or row[rows.PREFIX] != key.prefix:
            raise InvalidApiKey()
        warm: _Warm | None = self.cache.fresh(
            key.key_id, row, row[rows.HASH], key.secret
        )
        if warm is not None:
            now = self.clock()
            if warm.expires_at is not None and now >= warm.expires_at:
                raise ExpiredApiKey(details={"expired_at": isoformat(warm.expires_at)})
            if self.usage.record(key.key_id, now):
                self.usage.flush(self.store.engine, self.store.tables)
            # Set as the frozen dataclass's __init__ would, at a fraction of
            # its cost: this is every warm request's path.
            auth = object.__new__(Authenticated)
            auth.__dict__.update(
                key=warm.info.with_last_used(self.usage.pending_last_used(key.key_id)),
                limits=warm.limits,
            )
            return auth
        values = rows.values(row)
        record = KeyRecord.from_row(values)
        if self.cache.contains(record.key_id, record.secret_hash, key.secret):
            if record.is_revoked:
                raise InvalidApiKey()
        else:
            # One first use per key at a time: parallel first uses of one key
            # (a client's burst, every worker after a deploy) run argon2,
            # take a failed-auth unit and upgrade an old hash once, not once
            # each.
            lock = self._first_use_lock(record.key_id)
            waited = not lock.acquire(blocking=False)
            if waited:
                lock.acquire()
            try:
                if waited and self.cache.known(record.key_id):
                    # Verified (perhaps rehashed) while this request waited:
                    # read the row again to see the hash that was verified.
                    again = rows.read(key.key_id)
                    if again is not None:
                        fresh_values = rows.values(again)
                        fresh = KeyRecord.from_row(fresh_values)
                        if self.cache.contains(fresh.key_id, fresh.secret_hash, key.secret):
                            row, values, record = again, fresh_values, fresh
                if not self.cache.contains(record.key_id, record.secret_hash, key.secret):
                    if gate is not None:
                        gate.acquire()
                    if not self.hasher.verify(record.secret_hash, key.secret):
                        raise InvalidApiKey()
                    if record.is_revoked:
                        raise InvalidApiKey()
                    if gate is not None:
                        gate.release()
                    self._after_verify(record, key.secret)
                elif record.is_revoked:
                    raise InvalidApiKey()
            finally:
                lock.release()
        now = self.clock()
        if record.is_expired(now):
            raise ExpiredApiKey(details={"expired_at": isoformat(record.expires_at)})
        plan, limits = self.resolve_plan(values.plan, values.limits)
        if self.usage.record(record.key_id, now):
            self.usage.flush(self.store.engine, self.store.tables)
        info = self._info(record, plan)
        if record.secret_hash == row[rows.HASH]:
            # (A hash upgraded just now changes the row: the next request
            # reads the new row and builds this again, once.)
            self.cache.remember(
                record.key_id, row, _Warm(_InfoTemplate(info), limits, record.expires_at)
            )
        return Authenticated(info, limits)

    def _after_verify(self, record: KeyRecord, secret: str) -> None:
        stored_hash = record.secret_hash
        if self.hasher.needs_rehash(stored_hash):
            # Cost parameters were raised since this key was made: upgrade
            # its hash once, now that we hold the secret.
            stored_hash = self.hasher.hash(secret)
            t = self.store.tables.keys
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(
                        sa.update(t)
                        .where(t.c.key_id == record.key_id)
                        .values(secret_hash=stored_hash)
                    )
            except sa.exc.SQLAlchemyError:
                logger.warning("could not upgrade the hash of key %s", record.key_id)
                stored_hash = record.secret_hash
        self.cache.add(record.key_id, stored_hash, secret)

    @functools.cached_property
    def _key_rows(self) -> KeyRows:
        return KeyRows(self.store)

    @functools.cached_property
    def _first_use_locks(self) -> tuple[threading.Lock, ...]:
        return tuple(threading.Lock() for _ in range(FIRST_USE_LOCKS))

    def _first_use_lock(self, key_id: str) -> threading.Lock:
        # Striped: bounded memory whatever the number of keys; two keys that
        # share a stripe only wait for each other's first argon2 run.
        return self._first_use_locks[zlib.crc32(key_id.encode()) % FIRST_USE_LOCKS]

    def flush_usage(self) -> None:
        self.usage.flush(self.store.engine, self.store.tables)


class _Row:
    """Attribute access over a dict, to build a record from inserted values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


# -- the per-request read of a key's row --------------------------------------------


class _InfoTemplate:
    """A key's :class:`ApiKeyInfo` as built from its row, to stamp with the
    time of each request without building it again."""

    __slots__ = ("_fields",)

    def __init__(self, info: ApiKeyInfo) -> None:
        self._fields = dict(info.__dict__)

    def with_last_used(self, last_used_at: dt.datetime | None) -> ApiKeyInfo:
        # Field for field, as dataclasses.replace would, without running
        # __init__ again: this is on every request's path.
        info = object.__new__(ApiKeyInfo)
        fields = info.__dict__
        fields.update(self._fields)
        stored = fields["last_used_at"]
        if last_used_at is not None and (stored is None or last_used_at > stored):
            fields["last_used_at"] = last_used_at
        return info


@dataclass(frozen=True)
class _Warm:
    """What a request of a known key reuses while its row is unchanged."""

    info: _InfoTemplate
    limits: tuple[str, ...]
    expires_at: dt.datetime | None


class _Values:
    """Attribute access over one processed row."""

    def __init__(self, names: tuple[str, ...], values: Iterable[Any]) -> None:
        self.__dict__.update(zip(names, values, strict=True))

    def __getattr__(self, name: str) -> Any:  # for the type checker only
        raise AttributeError(name)


@dataclass
class _Held:
    """A connection set aside for key reads, with its cursor."""

    connection: sa.Connection
    cursor: Any
    autocommit: bool


#: Every reader, to drop (not close) their connections in a forked child.
_READERS: weakref.WeakSet[KeyRows] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reader in list(_READERS):
        reader._forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _close_quietly(connection: Any) -> None:
    # Thrown away because it is broken or no longer wanted: nothing to report.
    with contextlib.suppress(Exception):
        connection.close()


class KeyRows:
    """Reads one key's row and its owner's plan straight through the driver.

    The statement is compiled once by SQLAlchemy for the engine's dialect
    and run on a connection set aside for these reads (detached from the
    pool, so without its checkout and pre-ping round trip), in autocommit so
    that no transaction stays open between requests, on the driver's cursor
    unless statement listeners are installed on the engine. Values are converted with the column
    types' own result processors only when the row has changed. A failed
    read is tried once more on a new connection (the server may have
    restarted), then answers 503.
    """

    #: Where the prefix, the environment and the stored hash are in a raw row.
    PREFIX, ENVIRONMENT, HASH = 3, 4, 6
    #: Connections kept idle for the next reads.
    IDLE_MAX = 8

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._idle: list[_Held] = []
        _READERS.add(self)
        self._engine: sa.Engine | None = None
        self._sql = ""
        self._positional = False
        self._names: tuple[str, ...] = ()
        self._processors: list[Callable[[Any], Any] | None] = []
        self._dedicated = False
        self._errors: tuple[type[BaseException], ...] = ()

    def _prepare(self, engine: sa.Engine) -> None:
        t = self._store.tables
        k, owners = t.keys, t.owners
        columns = [
            k.c.key_id, k.c.owner_id, k.c.name, k.c.prefix, k.c.environment, k.c.scopes,
            k.c.secret_hash, k.c.last4, k.c.created_at, k.c.expires_at, k.c.revoked_at,
            k.c.last_used_at, owners.c.plan, owners.c.limits,
        ]
        statement = (
            sa.select(*columns)
            .select_from(k.outerjoin(owners, owners.c.owner_id == k.c.owner_id))
            .where(k.c.key_id == sa.bindparam("key_id"))
        )
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self._sql = compiled.string
        self._positional = bool(compiled.positional)
        self._names = tuple(column.name for column in columns)
        assert self._names[self.PREFIX : self.HASH + 1 : 3] == ("prefix", "secret_hash")
        self._processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in columns
        ]
        # Where the pool holds one connection for everyone (SQLite in
        # memory), taking it away would lose the database: borrow it instead.
        self._dedicated = isinstance(engine.pool, (sa.pool.QueuePool, sa.pool.NullPool))
        self._errors = (dialect.loaded_dbapi.Error, sa.exc.SQLAlchemyError)
        self._close_idle()
        self._engine = engine
        sa.event.listen(engine, "engine_disposed", self._on_dispose)

    def _on_dispose(self, engine: sa.Engine) -> None:
        if engine is self._engine:
            self._close_idle()

    def _close_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for held in idle:
            _close_quietly(held.connection)

    def _connect(self, engine: sa.Engine) -> _Held:
        connection = engine.connect()
        autocommit = True
        try:
            connection.execution_options(isolation_level="AUTOCOMMIT")
        except sa.exc.ArgumentError:  # a driver without autocommit: end each read
            autocommit = False
        if self._dedicated:
            connection.detach()
        dbapi_connection = connection.connection.dbapi_connection
        assert dbapi_connection is not None  # a connection just checked out
        return _Held(connection, dbapi_connection.cursor(), autocommit)

    def read(self, key_id: str) -> tuple[Any, ...] | None:
        """The key's raw row, or ``None``; ``StorageUnavailable`` when the
        key store cannot be read."""
        engine = self._store.engine
        if engine is not self._engine:
            self._prepare(engine)
        params: Any = (key_id,) if self._positional else {"key_id": key_id}
        # With statement listeners on the engine (query logs, tracing, the
        # tests' statement counts) the read goes through SQLAlchemy so that
        # they see it; otherwise straight to the driver's cursor.
        dispatch = engine.dispatch
        observed = bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute)
        for attempt in range(2):
            with self._lock:
                held = self._idle.pop() if self._idle else None
            fresh = held is None
            try:
                if held is None:
                    held = self._connect(engine)
                if observed:
                    row = held.connection.exec_driver_sql(self._sql, params).first()
                else:
                    held.cursor.execute(self._sql, params)
                    row = held.cursor.fetchone()
                if not held.autocommit or observed:
                    held.connection.rollback()
            except self._errors:
                if held is not None:
                    _close_quietly(held.connection)
                if fresh or attempt:
                    logger.exception("flask-keyauth could not read the key store")
                    raise StorageUnavailable(
                        headers=[("Retry-After", str(STORE_RETRY_AFTER))]
                    ) from None
                continue
            keep = False
            if self._dedicated:
                with self._lock:
                    if len(self._idle) < self.IDLE_MAX:
                        self._idle.append(held)
                        keep = True
            if not keep:
                held.connection.close()  # back to the pool, or closed if detached
            return row if row is None or type(row) is tuple else tuple(row)
        raise AssertionError("unreachable")

    def _forget_after_fork(self) -> None:
        # A forked worker must not use its parent's sockets (nor close them).
        self._idle = []

    def values(self, row: tuple[Any, ...]) -> Any:
        """The row with each column's type applied (datetimes in UTC)."""
        return _Values(
            self._names,
            (
                value if process is None or value is None else process(value)
                for value, process in zip(row, self._processors, strict=True)
            ),
        )
