"""The one service layer: create, verify, revoke, rotate, list, set plans.

The decorator, the views, the CLI and host code all go through
:class:`KeyService`; it knows nothing of HTTP requests. Every operation runs
in an app context (signals are sent with ``current_app`` as sender).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import keys, signals
from .config import Settings
from .errors import KeyNotFound, StorageUnavailable
from .hashing import Busy, Hasher
from .models import (
    ACTOR_MAX,
    DESCRIPTION_MAX,
    NAME_MAX,
    ApiKeyInfo,
    KeyEvent,
    KeyRecord,
    as_utc,
    isoformat,
    join_scopes,
)
from .plans import check_limits, parse_limits, split_limits
from .reminders import Reminder, due_reminders
from .store import Store, owner_plan_columns
from .usage import UsageBuffer

if TYPE_CHECKING:
    from .ratelimit import PlanLimits

logger = logging.getLogger("flask_keyauth")

#: The longest owner id (SPEC: 1 to 128 printable characters).
OWNER_MAX = 128
#: The longest usage history one call returns, in days.
USAGE_DAYS_MAX = 90
#: The most events one call returns.
EVENTS_MAX = 500
_UNSET: Any = object()


#: What a change of each field is recorded as.
UPDATE_EVENTS = {
    "name": "renamed",
    "expires_at": "expiry_changed",
    "limits": "limits_changed",
    "description": "details_changed",
    "metadata": "details_changed",
    "allowed_ips": "allowed_ips_changed",
}
#: Every action an event may record.
EVENT_ACTIONS = (
    "created", *dict.fromkeys(UPDATE_EVENTS.values()), "revoked", "rotated", "disabled",
    "enabled", "plan_changed", "leaked", "reminded",
)
#: Seconds a leak report waits for a free argon2 slot (requests never wait).
LEAK_VERIFY_WAIT = 5.0
#: The longest ``detail`` an event keeps (the column's size).
DETAIL_MAX = 512


def event_detail(detail: str | None) -> str | None:
    """``detail`` as an event stores it: cut to the column, with a marker."""
    if detail is None or len(detail) <= DETAIL_MAX:
        return detail
    return detail[: DETAIL_MAX - 1] + "…"


@dataclass(frozen=True)
class LeakOutcome:
    """What a reported string turned out to be."""

    #: The key it is, or ``None`` when it is not one of this app's keys.
    key: ApiKeyInfo | None
    #: Whether this report was new (a repeat of a key and URL changes nothing).
    new: bool = False
    #: Whether this report revoked the key.
    revoked: bool = False

    @property
    def label(self) -> str:
        """GitHub's label: ``true_positive`` for one of our keys."""
        return "true_positive" if self.key is not None else "false_positive"


def _change_detail(field: str, old: Any, new: Any) -> str | None:
    """What an event of a changed field says: the old and new name, the new
    expiry, limits or networks."""
    if field == "name":
        return f"{old} → {new}"
    if field == "expires_at":
        return isoformat(new) or "never"
    if field in ("limits", "allowed_ips"):
        return new or "none"
    return field


class KeyLimitReached(ValueError):
    """The owner already holds ``KEYAUTH_MAX_KEYS_PER_OWNER`` keys."""


def _check_owner(owner_id: Any) -> str:
    if (
        not isinstance(owner_id, str)
        or not 0 < len(owner_id) <= OWNER_MAX
        or not owner_id.isprintable()
    ):
        raise ValueError(f"owner_id must be 1 to {OWNER_MAX} printable characters")
    return owner_id


def _send(signal: Any, **keywords: Any) -> None:
    """Send a signal after a commit: a receiver's error is logged and never
    undoes (nor hides the result of) the change that was committed."""
    try:
        signal.send(signals.sender(), **keywords)
    except Exception:  # noqa: BLE001 - any receiver's error, whatever it is
        logger.exception("flask-keyauth: a receiver of %s failed", signal.name)


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


#: The largest metadata, encoded as JSON.
METADATA_MAX_BYTES = 4096
#: The most addresses and networks one key may allow.
ALLOWED_IPS_MAX = 64


def check_actor(actor: Any) -> str | None:
    """An actor as recorded: any text, cut with a marker past the column."""
    if actor is None:
        return None
    text = "".join(c if c.isprintable() else "\ufffd" for c in str(actor))
    return text if len(text) <= ACTOR_MAX else text[: ACTOR_MAX - 1] + "…"


def check_description(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("description must be a string")
    if len(value) > DESCRIPTION_MAX:
        raise ValueError(f"description must be at most {DESCRIPTION_MAX} characters")
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("description must not contain NUL characters or lone surrogates")
    return value or None


def check_metadata(value: Any) -> str | None:
    """Metadata as stored: a JSON object of string values, 4 KiB at most."""
    if value is None or value == {}:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("metadata must be an object whose keys and values are strings")
    text: str = json.dumps(dict(value), ensure_ascii=False, sort_keys=True)
    if len(text.encode()) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata must be at most {METADATA_MAX_BYTES} bytes as JSON")
    return text


def check_allowed_ips(value: Any) -> str | None:
    """Addresses and CIDR blocks as stored (space-separated, normalised)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError("allowed_ips must be a list of addresses or CIDR blocks")
    found: list[str] = []
    for entry in value:
        try:
            network = ipaddress.ip_network(str(entry).strip(), strict=False)
        except ValueError:
            raise ValueError(f"allowed_ips: {entry!r} is not an address or CIDR block") from None
        if str(network) not in found:
            found.append(str(network))
    if len(found) > ALLOWED_IPS_MAX:
        raise ValueError(f"allowed_ips holds at most {ALLOWED_IPS_MAX} entries")
    return " ".join(found) or None


class KeyService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        hasher: Hasher,
        usage: UsageBuffer,
        limits: PlanLimits,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.settings = settings
        self.store = store
        self.hasher = hasher
        self.usage = usage
        self.limits = limits
        #: The time source; tests and hosts may replace it.
        self.clock = clock
        #: Drops a key from this process's cache (set by the extension).
        self.forget: Callable[[str], None] = lambda key_id: None

    def _changed(self, owner_id: str, *key_ids: str) -> None:
        """After a commit: this process and, through the stamps, every other
        one reads the rows again on their next request."""
        for key_id in key_ids:
            self.forget(key_id)
        self.limits.bump(owner_id, key_ids)

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
        """An expiry for a new key (``None``: never, or the most that
        ``KEYAUTH_MAX_LIFETIME_DAYS`` allows)."""
        most = self.settings.max_lifetime_days
        latest = self.clock() + dt.timedelta(days=most) if most is not None else None
        if expires_at is None:
            return latest
        checked = self._check_future(expires_at)
        if latest is not None and checked > latest:
            raise ValueError(
                f"expires_at must be within {most} days (KEYAUTH_MAX_LIFETIME_DAYS)"
            )
        return checked

    def _check_future(self, expires_at: Any) -> dt.datetime:
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
        return plan, self.check_limits(limits)

    def check_limits(self, limits: Any) -> str:
        """Limits as stored: plans' notation, token buckets included, on a
        storage that can count them (``ValueError`` otherwise)."""
        checked = check_limits(limits)
        self.limits.check_countable(parse_limits(checked))
        return checked

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
                sa.select(t, *owner_plan_columns(owners))
                .select_from(t.outerjoin(owners, owners.c.owner_id == t.c.owner_id))
                .order_by(t.c.owner_id, t.c.created_at.desc(), t.c.key_id)
            ).all()
        return [
            self._info(
                KeyRecord.from_row(row), self.resolve_plan(row.owner_plan, row.owner_limits)[0]
            )
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
                actor=check_actor(actor),
                remote_addr=remote_addr,
                # The column holds 512 characters; a plan's limits may not.
                detail=event_detail(detail),
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
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[KeyRecord, keys.ParsedKey]:
        # The key stays a ParsedKey, whose repr hides the secret, until it is
        # returned: a frame an error reporter captures shows no secret.
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
            "limits": None,
            "created_by": None,
            "description": None,
            "metadata": None,
            "allowed_ips": None,
            "disabled_at": None,
            **(extra or {}),
        }
        conn.execute(sa.insert(self.store.tables.keys).values(**values))
        record = KeyRecord.from_row(_Row(values))
        return record, key

    def create_key(
        self,
        owner_id: str,
        name: str,
        scopes: Iterable[str] = ("read",),
        environment: str = "live",
        expires_at: dt.datetime | None = None,
        *,
        limits: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        allowed_ips: Iterable[str] | None = None,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key; return its info and the full key text. ``limits``
        are the key's own (plans' notation), applied beside its owner's plan.

        The text is the only copy of the secret there will ever be: show it
        to its owner once and do not store or log it.
        """
        _check_owner(owner_id)
        check_name(name)
        checked_scopes = self.check_scopes(scopes)
        if environment not in keys.ENVIRONMENTS:
            raise ValueError(f"environment must be 'live' or 'test', not {environment!r}")
        checked_expiry = self.check_expiry(expires_at)
        extra = {
            "limits": None if limits is None else self.check_limits(limits),
            "description": check_description(description),
            "metadata": check_metadata(metadata),
            "allowed_ips": check_allowed_ips(allowed_ips),
            "created_by": check_actor(actor),
        }
        actor = extra["created_by"]
        with self.store.engine.begin() as conn:
            self._check_room(conn, owner_id)
            record, key = self._insert_key(
                conn, owner_id, name, checked_scopes, environment, checked_expiry, extra=extra
            )
            self._event(conn, owner_id, record.key_id, "created", actor, remote_addr)
            plan, _ = self._owner_plan(conn, owner_id)
        info = self._info(record, plan)
        _send(signals.key_created, key=info)
        return info, key.text

    def _check_room(self, conn: sa.Connection, owner_id: str) -> None:
        t = self.store.tables.keys
        held = conn.execute(
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.owner_id == owner_id, t.c.revoked_at.is_(None))
        ).scalar_one()
        if held >= self.settings.max_keys_per_owner:
            raise KeyLimitReached(
                f"owner {owner_id!r} already holds {held} keys, the most allowed "
                f"(KEYAUTH_MAX_KEYS_PER_OWNER); revoke one first"
            )

    def update_key(
        self,
        key_id: str,
        *,
        actor: str | None = None,
        remote_addr: str | None = None,
        **changes: Any,
    ) -> ApiKeyInfo:
        """Change a key: ``name``, ``expires_at``, ``limits``, ``description``,
        ``metadata`` or ``allowed_ips`` (``None`` clears any but the name).
        A revoked, expired or disabled key cannot be changed."""
        values = self._checked_changes(changes)
        t = self.store.tables.keys
        with self.store.engine.begin() as conn:
            record = self._record(conn, key_id)
            status = record.status(self.clock())
            if values and status != "active":
                raise ValueError(f"key {key_id} is {status}: it cannot be changed")
            before = conn.execute(sa.select(t).where(t.c.key_id == key_id)).mappings().one()
            if values:
                conn.execute(sa.update(t).where(t.c.key_id == key_id).values(**values))
            details: dict[str, list[str]] = {}
            for field, value in values.items():
                if value != before.get(field):
                    detail = _change_detail(field, getattr(record, field, None), value)
                    details.setdefault(UPDATE_EVENTS[field], []).append(detail or field)
            for action, said in details.items():
                self._event(
                    conn, record.owner_id, key_id, action, actor, remote_addr, ", ".join(said)
                )
            record = self._record(conn, key_id)
            plan, _ = self._owner_plan(conn, record.owner_id)
        if values:
            self._changed(record.owner_id, key_id)
        return self._info(record, plan)

    def _checked_changes(self, changes: dict[str, Any]) -> dict[str, Any]:
        checks: dict[str, Callable[[Any], Any]] = {
            "name": check_name,
            "expires_at": self.check_expiry,
            "limits": lambda v: None if v is None else self.check_limits(v),
            "description": check_description,
            "metadata": check_metadata,
            "allowed_ips": check_allowed_ips,
        }
        unknown = set(changes) - set(checks)
        if unknown:
            raise TypeError(f"update_key() got unknown fields {sorted(unknown)}")
        return {field: checks[field](value) for field, value in changes.items()}

    def revoke_key(
        self, key_id: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> ApiKeyInfo:
        """Revoke a key at once, for every process; revoking twice is a no-op."""
        with self.store.engine.begin() as conn:
            record = self._record(conn, key_id)
            changed = False
            if not record.is_revoked:
                changed = self._revoke(conn, record, actor, remote_addr)
                record = self._record(conn, key_id)
            plan, _ = self._owner_plan(conn, record.owner_id)
        # Also when it was revoked already: a retry after a failed bump
        # tells every process again.
        self._changed(record.owner_id, key_id)
        info = self._info(record, plan)
        if changed:
            _send(signals.key_revoked, key=info)
        return info

    def _revoke(
        self, conn: sa.Connection, record: KeyRecord, actor: str | None, remote_addr: str | None
    ) -> bool:
        """Revoke a key in ``conn``'s transaction, with its event; whether
        this call did it. The condition keeps the first revocation time: a
        revoked key is never revoked again nor un-revoked."""
        t = self.store.tables.keys
        result = conn.execute(
            sa.update(t)
            .where(t.c.key_id == record.key_id, t.c.revoked_at.is_(None))
            .values(revoked_at=self.clock())
        )
        if result.rowcount != 1:
            return False
        self._event(conn, record.owner_id, record.key_id, "revoked", actor, remote_addr)
        return True

    def rotate_key(
        self,
        key_id: str,
        grace: dt.timedelta = dt.timedelta(hours=24),  # noqa: B008 - immutable
        *,
        expires_at: dt.datetime | None = _UNSET,
        actor: str | None = None,
        remote_addr: str | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        """Replace a key by a new one; the old one works until ``grace`` ends.

        The new key keeps the old one's owner, name, scopes, environment and
        lifetime (a key made to live 30 days is replaced by one that lives 30
        days) unless ``expires_at`` is given (``None``: never). A key is
        rotated once: a second rotation, even a concurrent one, is a
        ``ValueError``. ``grace=timedelta(0)`` revokes the old key at once.
        """
        if not isinstance(grace, dt.timedelta):
            raise ValueError("grace must be a timedelta")
        if grace < dt.timedelta(0):
            raise ValueError("grace must not be negative")
        checked_expiry = _UNSET if expires_at is _UNSET else self.check_expiry(expires_at)
        now = self.clock()
        try:
            end = now + grace
        except OverflowError:
            raise ValueError("grace is too long: it ends past the year 9999") from None
        try:
            with self.store.engine.begin() as conn:
                old, new, key = self._replace(conn, key_id, now, end, checked_expiry, actor)
                self._event(conn, old.owner_id, key_id, "rotated", actor, remote_addr, new.key_id)
                self._event(conn, old.owner_id, new.key_id, "created", actor, remote_addr, key_id)
                old = self._record(conn, key_id)
                plan, _ = self._owner_plan(conn, old.owner_id)
        except sa.exc.IntegrityError:
            # The unique successor: a concurrent rotation committed first.
            raise ValueError(f"key {key_id} has already been rotated") from None
        # The new key must reach its caller even when the storage cannot be
        # told: the old one's shorter life then applies everywhere within
        # KEYAUTH_ROW_MAX_AGE (logged).
        with contextlib.suppress(StorageUnavailable):
            self._changed(old.owner_id, key_id)
        old_info, new_info = self._info(old, plan), self._info(new, plan)
        _send(signals.key_rotated, key=old_info, new_key=new_info)
        return new_info, key.text

    def _replace(
        self,
        conn: sa.Connection,
        key_id: str,
        now: dt.datetime,
        end: dt.datetime,
        expires_at: dt.datetime | None,
        actor: str | None,
    ) -> tuple[KeyRecord, KeyRecord, keys.ParsedKey]:
        """Shorten (or end) the old key's life and insert its successor."""
        t = self.store.tables.keys
        old = self._record(conn, key_id)
        if old.is_revoked:
            raise ValueError(f"key {key_id} is revoked and cannot be rotated")
        if old.is_expired(now):
            raise ValueError(f"key {key_id} has expired and cannot be rotated")
        successor = conn.execute(sa.select(t.c.key_id).where(t.c.rotated_from == key_id)).first()
        if successor is not None:
            raise ValueError(f"key {key_id} has already been rotated (by {successor.key_id})")
        if expires_at is _UNSET:
            lifetime = old.expires_at - old.created_at if old.expires_at else None
            expires_at = now + lifetime if lifetime else None
            latest = self.check_expiry(None)  # KEYAUTH_MAX_LIFETIME_DAYS, if set
            if latest is not None and (expires_at is None or expires_at > latest):
                expires_at = latest
        if end == now:
            change: dict[str, Any] = {"revoked_at": now}
        else:
            change = {"expires_at": min(old.expires_at, end) if old.expires_at else end}
        conn.execute(
            sa.update(t).where(t.c.key_id == key_id, t.c.revoked_at.is_(None)).values(**change)
        )
        stored = conn.execute(sa.select(t).where(t.c.key_id == key_id)).mappings().one()
        kept = {name: stored[name] for name in ("limits", "description", "metadata",
                                                 "allowed_ips")}
        new, key = self._insert_key(
            conn, old.owner_id, old.name, old.scopes, old.environment, expires_at, key_id,
            {**kept, "created_by": check_actor(actor)},
        )
        return old, new, key

    def disable_key(
        self, key_id: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> ApiKeyInfo:
        """Switch a key off until :meth:`enable_key`: refused (401) on the next
        request in every process. Revocation, unlike this, is for ever."""
        return self._switch(key_id, True, actor, remote_addr)

    def enable_key(
        self, key_id: str, *, actor: str | None = None, remote_addr: str | None = None
    ) -> ApiKeyInfo:
        """Switch a disabled key back on, at once in every process."""
        return self._switch(key_id, False, actor, remote_addr)

    def _switch(
        self, key_id: str, off: bool, actor: str | None, remote_addr: str | None
    ) -> ApiKeyInfo:
        t = self.store.tables.keys
        with self.store.engine.begin() as conn:
            record = self._record(conn, key_id)
            if record.is_revoked:
                raise ValueError(f"key {key_id} is revoked: it cannot be switched on or off")
            if (record.disabled_at is not None) != off:
                conn.execute(
                    sa.update(t)
                    .where(t.c.key_id == key_id)
                    .values(disabled_at=self.clock() if off else None)
                )
                action = "disabled" if off else "enabled"
                self._event(conn, record.owner_id, key_id, action, actor, remote_addr)
            record = self._record(conn, key_id)
            plan, _ = self._owner_plan(conn, record.owner_id)
        # Also when nothing changed: a retry after a failed notice tells every
        # process again.
        self._changed(record.owner_id, key_id)
        return self._info(record, plan)

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
        self._changed(owner_id)

    # -- verifying ----------------------------------------------------------

    def upgrade_hash(self, key_id: str, stored_hash: str, secret: str) -> str:
        """The key's hash after a successful verification: upgraded once, now
        that the secret is at hand, when the cost parameters were raised."""
        if not self.hasher.needs_rehash(stored_hash):
            return stored_hash
        new_hash = self.hasher.hash(secret)
        t = self.store.tables.keys
        try:
            with self.store.engine.begin() as conn:
                conn.execute(sa.update(t).where(t.c.key_id == key_id).values(secret_hash=new_hash))
        except sa.exc.SQLAlchemyError:
            logger.warning("could not upgrade the hash of key %s", key_id)
            return stored_hash
        return new_hash

    def flush_usage(self) -> None:
        self.usage.flush()

    # -- leaks and reminders ------------------------------------------------

    def _once(
        self, conn: sa.Connection, record: KeyRecord, action: str, detail: str, actor: str | None
    ) -> bool:
        """Record ``action`` with ``detail`` for a key unless it already is.

        The key's row is locked first (``FOR UPDATE`` where the database has
        it), so two hosts handling the same report or reminder at once
        record, and announce, it once.
        """
        t, events = self.store.tables.keys, self.store.tables.events
        conn.execute(sa.select(t.c.key_id).where(t.c.key_id == record.key_id).with_for_update())
        stored = event_detail(detail)
        seen = conn.execute(
            sa.select(events.c.id).where(
                events.c.key_id == record.key_id,
                events.c.action == action,
                events.c.detail == stored,
            )
        ).first()
        if seen is not None:
            return False
        self._event(conn, record.owner_id, record.key_id, action, actor, None, stored)
        return True

    def _reported_key(self, text: str) -> KeyRecord | None:
        """The key that ``text`` is, verified with argon2, or ``None``.

        A string that is not of our format, or whose checksum fails, or
        whose id is unknown, costs no argon2 run: only a key id that exists
        is checked, so a forged string carrying a real id (ids are shown
        redacted on the pages) cannot get a key revoked.
        """
        parsed = keys.parse(text.strip(), self.settings.key_prefix)
        if parsed is None:
            return None
        try:
            with self.store.engine.connect() as conn:
                record = self._record(conn, parsed.key_id)
        except KeyNotFound:
            return None
        try:
            matches = self.hasher.verify(record.secret_hash, parsed.secret, LEAK_VERIFY_WAIT)
        except Busy:
            raise StorageUnavailable(
                "Too many keys are being verified at once. Try again shortly.",
                headers=[("Retry-After", "5")],
            ) from None
        return record if matches else None

    def identify(self, text: str) -> ApiKeyInfo | None:
        """The key that ``text`` is (its secret verified), or ``None``.

        For tools that find key text (``flask keys scan --check``): only an
        existing key id costs an argon2 run.
        """
        record = self._reported_key(text)
        if record is None:
            return None
        with self.store.engine.connect() as conn:
            plan, _ = self._owner_plan(conn, record.owner_id)
        return self._info(record, plan)

    def report_leak(
        self,
        text: str,
        *,
        url: str = "",
        source: str = "",
        action: str | None = None,
        actor: str | None = None,
    ) -> LeakOutcome:
        """Handle a report that ``text`` was found in public.

        When ``text`` is one of this app's keys: record a ``leaked`` event
        (its detail is ``url``, else ``source``), send ``key_leaked`` and,
        with ``action="revoke"`` (``KEYAUTH_LEAK_ACTION``'s default),
        revoke the key at once. A repeat of the same key and URL changes
        nothing and sends nothing. ``text`` is never stored nor logged.
        """
        action = action or self.settings.leak_action
        if action not in ("revoke", "notify"):
            raise ValueError(f"action must be 'revoke' or 'notify', not {action!r}")
        record = self._reported_key(text)
        if record is None:
            return LeakOutcome(None)
        with self.store.engine.begin() as conn:
            new = self._once(conn, record, "leaked", url or source or "reported", actor)
            revoked = action == "revoke" and self._revoke(conn, record, actor, None)
            record = self._record(conn, record.key_id)
            plan, _ = self._owner_plan(conn, record.owner_id)
        if action == "revoke":
            # Also on a repeat: a retry after a failed notice tells every
            # process again, as revoke_key does.
            self._changed(record.owner_id, record.key_id)
        info = self._info(record, plan)
        if new:
            _send(signals.key_leaked, key=info, url=url, source=source)
        if revoked:
            _send(signals.key_revoked, key=info)
        return LeakOutcome(info, new, revoked)

    def remind(self, days: int = 7, *, actor: str | None = None) -> list[Reminder]:
        """Send the reminders that are due, each once per key and kind.

        ``key_expiring`` (keywords ``key``, ``days_left``) goes out for active
        keys that expire within ``days`` (once per expiry: a key whose
        expiry moves is reminded again), ``key_rotation_due`` (``key``,
        ``age_days``) for active keys older than
        ``KEYAUTH_ROTATION_REMINDER_DAYS``. A key already rotated is not
        reminded: its successor is. Each reminder is recorded as a
        ``reminded`` event, which is what makes a second run, on this host
        or another, send nothing again. Returns the reminders sent.
        """
        if isinstance(days, bool) or not isinstance(days, int) or days < 0:
            raise ValueError(f"days must be a whole number of at least 0, not {days!r}")
        t = self.store.tables.keys
        with self.store.engine.connect() as conn:
            rotated = set(
                conn.execute(sa.select(t.c.rotated_from).where(t.c.rotated_from.is_not(None)))
                .scalars()
                .all()
            )
        due = due_reminders(
            (key for key in self.all_keys() if key.id not in rotated),
            self.clock(),
            days,
            self.settings.rotation_reminder_days,
        )
        sent = []
        for reminder in due:
            with self.store.engine.begin() as conn:
                record = self._record(conn, reminder.key.id)
                if not self._once(conn, record, "reminded", reminder.detail, actor):
                    continue
            sent.append(reminder)
            if reminder.kind == "key_expiring":
                _send(signals.key_expiring, key=reminder.key, days_left=reminder.days)
            else:
                _send(signals.key_rotation_due, key=reminder.key, age_days=reminder.days)
        return sent


class _Row:
    """Attribute access over a dict, to build a record from inserted values."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
