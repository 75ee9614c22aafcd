"""Tables, the key record and its invariants, and the read-only ApiKeyInfo.

The tables are SQLAlchemy Core tables defined on a given ``MetaData``: the
host's ``db.metadata`` when it passes its Flask-SQLAlchemy ``db`` (so
``db.create_all()`` and Alembic see them), otherwise a private one.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from . import keys

UTC = dt.timezone.utc
NAME_MAX = 128
#: The longest actor recorded; longer ones are cut with a marker.
ACTOR_MAX = 255
#: The longest description of a key.
DESCRIPTION_MAX = 1000


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive datetime is read as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with ``Z``, whole seconds: ``2026-11-23T10:00:00Z``."""
    if value is None:
        return None
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every database, SQLite included.

    In the database this is a plain ``DateTime(timezone=True)``; the
    conversion to and from UTC happens in Python only. Migrations therefore
    need nothing from flask-keyauth: give Alembic :meth:`render_item` and
    autogenerate writes ``sa.DateTime(timezone=True)``, which runs as
    generated. With Flask-Migrate::

        from flask_keyauth.models import UTCDateTime

        migrate = Migrate(app, db, render_item=UTCDateTime.render_item)

    (or ``context.configure(..., render_item=UTCDateTime.render_item)`` in a
    plain Alembic ``env.py``).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    @staticmethod
    def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
        """Alembic's ``render_item`` hook: this type as the column type it
        stores, ``sa.DateTime(timezone=True)``; ``False`` (Alembic's own
        rendering) for everything else. A host with its own hook calls this
        one first and keeps its answer unless it is ``False``.
        """
        if type_ != "type" or not isinstance(obj, UTCDateTime):
            return False
        prefix = autogen_context.opts.get("sqlalchemy_module_prefix") or "sa."
        return f"{prefix}DateTime(timezone=True)"

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = as_utc(value)
        # SQLite keeps no zone: store naive UTC so that text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else as_utc(value)


@dataclass(frozen=True)
class Tables:
    keys: sa.Table
    owners: sa.Table
    events: sa.Table
    usage: sa.Table


def define_tables(metadata: sa.MetaData) -> Tables:
    """Define (once per metadata) and return flask-keyauth's tables."""
    if "keyauth_api_keys" in metadata.tables:
        tables = metadata.tables
        return Tables(
            tables["keyauth_api_keys"],
            tables["keyauth_owners"],
            tables["keyauth_events"],
            tables["keyauth_usage"],
        )
    api_keys = sa.Table(
        "keyauth_api_keys",
        metadata,
        # The public id, stored in clear: verification finds the row by it.
        sa.Column("key_id", sa.String(keys.ID_LENGTH), primary_key=True),
        sa.Column("owner_id", sa.String(255), nullable=False, index=True),
        sa.Column("name", sa.String(NAME_MAX), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("environment", sa.String(8), nullable=False),
        # Granted scopes, space-separated and sorted.
        sa.Column("scopes", sa.String(1024), nullable=False),
        # argon2id hash of the 32-character secret; the secret itself is
        # stored nowhere.
        sa.Column("secret_hash", sa.String(255), nullable=False),
        # Last four characters of the key (of its checksum), for display.
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        # Who created it (the actor), what it is for, and the host's labels.
        sa.Column("created_by", sa.String(ACTOR_MAX), nullable=True),
        sa.Column("description", sa.String(DESCRIPTION_MAX), nullable=True),
        sa.Column("metadata", sa.Text, nullable=True),  # a JSON object of strings
        # Addresses and networks the key may be used from (space-separated).
        sa.Column("allowed_ips", sa.String(2048), nullable=True),
        sa.Column("disabled_at", UTCDateTime(), nullable=True),
        # The key's own limits (same notation as a plan), beside its owner's.
        sa.Column("limits", sa.String(512), nullable=True),
        # The key this one replaced; unique: a key has one successor at most.
        sa.Column("rotated_from", sa.String(keys.ID_LENGTH), nullable=True, unique=True),
    )
    owners = sa.Table(
        "keyauth_owners",
        metadata,
        sa.Column("owner_id", sa.String(255), primary_key=True),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("limits", sa.String(512), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    events = sa.Table(
        "keyauth_events",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("key_id", sa.String(keys.ID_LENGTH), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(ACTOR_MAX), nullable=True),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("detail", sa.String(512), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Index("ix_keyauth_events_owner_at", "owner_id", "at"),
    )
    usage = sa.Table(
        "keyauth_usage",
        metadata,
        sa.Column("key_id", sa.String(keys.ID_LENGTH), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False, default=0),
    )
    return Tables(api_keys, owners, events, usage)


_EMPTY: Mapping[str, str] = MappingProxyType({})


def load_metadata(text: str | None) -> Mapping[str, str]:
    """A key's stored metadata as a read-only mapping."""
    if not text:
        return _EMPTY
    return MappingProxyType(json.loads(text))


def join_scopes(scopes: Iterable[str]) -> str:
    return " ".join(sorted(set(scopes)))


def split_scopes(text: str) -> tuple[str, ...]:
    return tuple(text.split())


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A read-only view of one API key, as of when it was read.

    This is what ``current_key`` is, and what the service API returns: it
    never holds the secret or its hash.
    """

    #: The 12-character public key id, the same in JSON, CLI, pages and whoami.
    id: str
    #: The owner (account or organisation) id the key belongs to.
    owner_id: str
    #: The key's label, at most 128 characters.
    name: str
    #: Every scope the key grants, implied ones included.
    scopes: frozenset[str]
    #: The scopes the key was given, as given.
    granted_scopes: tuple[str, ...]
    #: ``"live"`` or ``"test"``.
    environment: str
    #: The owner's plan when the key was read.
    plan: str
    #: The key for display, ``sk_live_<id>…<last 4>``.
    redacted: str
    #: ``"active"``, ``"expired"``, ``"revoked"`` or ``"disabled"``.
    status: str
    #: When the key was created (timezone-aware UTC, as every datetime here).
    created_at: dt.datetime
    #: The key is valid while ``now < expires_at``; ``None``: it never expires.
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    #: Its last use, written at most once per ``KEYAUTH_LAST_USED_INTERVAL``.
    last_used_at: dt.datetime | None
    #: The key's own limits (beside its owner's plan), or ``None``.
    limits: str | None = None
    #: Who created it: a person (``@keyauth.actor_loader``), ``session:<owner>``,
    #: ``key:<id>``, ``cli``, or ``None`` (host code).
    created_by: str | None = None
    #: What the key is for, at most 1,000 characters.
    description: str | None = None
    #: The host's labels: a read-only mapping of strings.
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    #: Addresses and networks the key may be used from; empty: anywhere.
    allowed_ips: tuple[str, ...] = ()
    disabled_at: dt.datetime | None = None
    #: The id of the key this one replaced (by a rotation), or ``None``.
    rotated_from: str | None = None

    def has_scopes(self, *scopes: str) -> bool:
        """Whether the key grants every one of ``scopes`` (implied ones count)."""
        return all(scope in self.scopes for scope in scopes)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of a key: no secret, no hash."""
        return {
            "id": self.id,
            "name": self.name,
            "redacted": self.redacted,
            "scopes": list(self.granted_scopes),
            "environment": self.environment,
            "status": self.status,
            "created_at": isoformat(self.created_at),
            "expires_at": isoformat(self.expires_at),
            "revoked_at": isoformat(self.revoked_at),
            "last_used_at": isoformat(self.last_used_at),
            "limits": self.limits,
            "created_by": self.created_by,
            "description": self.description,
            "metadata": dict(self.metadata),
            "allowed_ips": list(self.allowed_ips),
        }


@dataclass(frozen=True)
class KeyEvent:
    """One entry of an owner's audit trail. It never holds a secret."""

    id: int
    owner_id: str
    key_id: str | None
    #: ``created``, ``renamed``, ``expiry_changed``, ``revoked``, ``rotated``
    #: or ``plan_changed``.
    action: str
    #: Who did it: ``session:<owner>``, ``key:<key id>``, ``cli`` or ``None``
    #: (host code calling the service API).
    actor: str | None
    remote_addr: str | None
    #: What changed, where the action has more to say: the new key of a
    #: rotation, the new expiry, the plan and its limits.
    detail: str | None
    at: dt.datetime

    @classmethod
    def from_row(cls, row: Any) -> KeyEvent:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "key_id": self.key_id,
            "actor": self.actor,
            "remote_addr": self.remote_addr,
            "detail": self.detail,
            "at": isoformat(self.at),
        }


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One row of ``keyauth_api_keys`` and the rules that hold for it."""

    key_id: str
    owner_id: str
    name: str
    prefix: str
    environment: str
    scopes: tuple[str, ...]
    secret_hash: str
    last4: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    limits: str | None = None
    created_by: str | None = None
    description: str | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    allowed_ips: tuple[str, ...] = ()
    disabled_at: dt.datetime | None = None
    rotated_from: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        return cls(
            key_id=row.key_id,
            owner_id=row.owner_id,
            name=row.name,
            prefix=row.prefix,
            environment=row.environment,
            scopes=split_scopes(row.scopes),
            secret_hash=row.secret_hash,
            last4=row.last4,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            limits=getattr(row, "limits", None),
            created_by=getattr(row, "created_by", None),
            description=getattr(row, "description", None),
            metadata=load_metadata(getattr(row, "metadata", None)),
            allowed_ips=tuple((getattr(row, "allowed_ips", None) or "").split()),
            disabled_at=getattr(row, "disabled_at", None),
            rotated_from=getattr(row, "rotated_from", None),
        )

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now: dt.datetime) -> bool:
        """A key is valid while ``now < expires_at``."""
        return self.expires_at is not None and now >= self.expires_at

    def status(self, now: dt.datetime) -> str:
        if self.is_revoked:
            return "revoked"
        if self.is_expired(now):
            return "expired"
        if self.disabled_at is not None:
            return "disabled"
        return "active"

    @property
    def redacted(self) -> str:
        return keys.redact(self.prefix, self.environment, self.key_id, self.last4)

    def info(
        self,
        plan: str,
        expanded_scopes: frozenset[str],
        now: dt.datetime,
        last_used_at: dt.datetime | None = None,
    ) -> ApiKeyInfo:
        return ApiKeyInfo(
            id=self.key_id,
            owner_id=self.owner_id,
            name=self.name,
            scopes=expanded_scopes,
            granted_scopes=self.scopes,
            environment=self.environment,
            plan=plan,
            redacted=self.redacted,
            status=self.status(now),
            created_at=self.created_at,
            expires_at=self.expires_at,
            revoked_at=self.revoked_at,
            last_used_at=max(
                (t for t in (self.last_used_at, last_used_at) if t is not None), default=None
            ),
            limits=self.limits,
            created_by=self.created_by,
            description=self.description,
            metadata=self.metadata,
            allowed_ips=self.allowed_ips,
            disabled_at=self.disabled_at,
            rotated_from=self.rotated_from,
        )
