"""The ``KeyAuth`` extension: ``init_app``, per-app state and hooks."""

from __future__ import annotations

import copy
import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from flask.typing import ResponseReturnValue

from . import config
from ._state import KeyAuthState, get_state
from .auth import Authenticator
from .errors import KeyAuthError
from .hashing import Hasher
from .metrics import metrics_for
from .models import ApiKeyInfo, define_tables, utcnow
from .ratelimit import PlanLimits
from .service import KeyService
from .store import Store, build_engine
from .usage import UsageBuffer

if TYPE_CHECKING:
    import datetime as dt

    from flask_limiter import Limiter
    from flask_sqlalchemy import SQLAlchemy

logger = logging.getLogger("flask_keyauth")

OwnerLoader = Callable[[], "str | None"]
ErrorHandler = Callable[[KeyAuthError], ResponseReturnValue]
OL = TypeVar("OL", bound=OwnerLoader)
EH = TypeVar("EH", bound=ErrorHandler)


def _database_uri(app: Flask) -> str:
    uri = app.config.get("SQLALCHEMY_DATABASE_URI")
    if not uri:
        os.makedirs(app.instance_path, exist_ok=True)
        uri = "sqlite:///" + os.path.join(app.instance_path, "keyauth.db")
    return str(uri)


def _host_engine(app: Flask, db: SQLAlchemy) -> Callable[[], sa.Engine]:
    """The host's engine for ``app``, also outside its app context (the
    usage writer's thread)."""

    def engine() -> sa.Engine:
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]  # noqa: SLF001 - documented
            return db.engine
        with app.app_context():
            return db.engine

    return engine


class KeyAuth:
    """API keys for a Flask app.

    >>> keyauth = KeyAuth()
    >>> keyauth.init_app(app, db=db)

    Per-app state lives in ``app.extensions["keyauth"]``, so one ``KeyAuth``
    serves several apps. ``owner_loader`` and ``error_handler`` callbacks
    apply to every app it serves.
    """

    def __init__(
        self,
        app: Flask | None = None,
        db: SQLAlchemy | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self._db = db
        self._limiter = limiter
        # Only for ``keyauth.limiter`` outside an app context (a route's
        # ``@keyauth.limiter.limit`` runs at import time): the limiter of the
        # one app this extension serves; None once it serves several.
        self._only_limiter: weakref.ref[Limiter] | None = None
        self._apps_served = 0
        self.owner_loader_callback: OwnerLoader | None = None
        self.error_handler_callback: ErrorHandler | None = None
        self.actor_loader_callback: OwnerLoader | None = None
        self.role_loader_callback: OwnerLoader | None = None
        if app is not None:
            self.init_app(app, db=db, limiter=limiter)

    def init_app(
        self,
        app: Flask,
        db: SQLAlchemy | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        """Set up flask-keyauth on ``app``.

        With ``db`` (the host's Flask-SQLAlchemy instance) the tables are put
        on its metadata, for ``db.create_all()`` and migrations to create;
        without it flask-keyauth opens its own engine on
        ``SQLALCHEMY_DATABASE_URI`` (or ``instance/keyauth.db``) and creates
        its tables itself. With ``limiter`` it uses the host's Flask-Limiter.
        """
        if "keyauth" in app.extensions:
            raise RuntimeError(
                "flask-keyauth is already initialised on this app. Call init_app once per "
                "app; to reach it elsewhere, import the KeyAuth instance you created."
            )
        db = db if db is not None else self._db
        limiter = limiter if limiter is not None else self._limiter
        for name, default in config.DEFAULTS.items():
            app.config.setdefault(name, copy.deepcopy(default))
        settings = config.load(app.config)

        if db is not None:
            tables = define_tables(db.metadata)
            store = Store(tables, _host_engine(app, db))
            if "sqlalchemy" in app.extensions:
                store.engine  # noqa: B018 - the fork recipe, before any connection
        else:
            tables = define_tables(sa.MetaData())
            engine = build_engine(
                _database_uri(app), app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {}
            )
            tables.keys.metadata.create_all(engine)
            store = Store(tables, lambda: engine)

        metrics = metrics_for(settings.metrics_registry)
        hasher = Hasher(
            settings.argon2_time_cost,
            settings.argon2_memory_cost,
            settings.argon2_parallelism,
            settings.argon2_max_concurrent,
            metrics,
        )
        limits = PlanLimits(app, settings, limiter)
        usage = UsageBuffer(settings.last_used_interval, store)
        service = KeyService(settings, store, hasher, usage, limits, clock=utcnow)
        auth = Authenticator(settings, store, hasher, limits, usage, service)
        service.forget = auth.cache.discard
        app.extensions["keyauth"] = KeyAuthState(
            self, settings, store, hasher, service, limits, auth, metrics
        )
        self._apps_served += 1
        self._only_limiter = weakref.ref(limits.limiter) if self._apps_served == 1 else None

        from .cli import keys_cli

        app.cli.add_command(keys_cli)

        from .views import exempt_from_csrf

        exempt_from_csrf(app)

    # -- hooks ---------------------------------------------------------------

    def owner_loader(self, callback: OL) -> OL:
        """Register the function that returns the owner id of this browser
        session (from the host's login), or ``None``.

        >>> @keyauth.owner_loader
        ... def current_owner():
        ...     return session.get("org_id")
        """
        self.owner_loader_callback = callback
        return callback

    def actor_loader(self, callback: OL) -> OL:
        """Register the function that returns the person acting in this
        browser session (e.g. ``current_user.email``), or ``None``: events
        record them as ``actor`` and keys as ``created_by``.

        >>> @keyauth.actor_loader
        ... def who():
        ...     return current_user.email
        """
        self.actor_loader_callback = callback
        return callback

    def role_loader(self, callback: OL) -> OL:
        """Register the function that returns ``"manager"`` (the default) or
        ``"viewer"`` for this browser session: a viewer sees keys, usage and
        events but changes nothing (403 ``FORBIDDEN`` from the API)."""
        self.role_loader_callback = callback
        return callback

    def current_actor(self) -> str | None:
        """The person of this browser session, from ``actor_loader``."""
        if self.actor_loader_callback is None:
            return None
        actor = self.actor_loader_callback()
        return str(actor) if actor not in (None, "") else None

    def current_role(self) -> str:
        """``"manager"`` or ``"viewer"``; anything else is read as a viewer."""
        if self.role_loader_callback is None:
            return "manager"
        return "manager" if self.role_loader_callback() in (None, "manager") else "viewer"

    def error_handler(self, callback: EH) -> EH:
        """Register ``f(error: KeyAuthError) -> response`` to build error
        responses of ``require_key`` in the host's own shape."""
        self.error_handler_callback = callback
        return callback

    # -- the service API, on the current app ---------------------------------

    @property
    def limiter(self) -> Limiter:
        """The Flask-Limiter instance of the current app, for extra limits.

        >>> @app.post("/v1/exports")
        ... @keyauth.limiter.limit("10/hour")
        ... @require_key("write")
        ... def export(): ...

        Outside an app context (where routes are usually declared) it is the
        limiter of the one app this ``KeyAuth`` serves.
        """
        if has_app_context() and "keyauth" in current_app.extensions:
            return get_state().limits.limiter
        limiter = self._only_limiter() if self._only_limiter is not None else None
        if limiter is None:
            raise RuntimeError(
                "keyauth.limiter needs an app context when this KeyAuth serves several apps "
                "(or none yet): call init_app first, or pass your own Limiter with limiter=..."
            )
        return limiter

    @property
    def service(self) -> KeyService:
        return get_state().service

    def create_key(
        self,
        owner_id: str,
        name: str,
        scopes: Any = ("read",),
        environment: str = "live",
        expires_at: dt.datetime | None = None,
        **options: Any,
    ) -> tuple[ApiKeyInfo, str]:
        """Create a key; return ``(info, secret)``. Show the secret once.

        ``options`` are the service's: ``limits``, ``description``,
        ``metadata``, ``allowed_ips``, ``actor``.
        """
        return self.service.create_key(owner_id, name, scopes, environment, expires_at, **options)

    def disable_key(self, key_id: str) -> ApiKeyInfo:
        """Switch a key off (401 everywhere) until :meth:`enable_key`."""
        return self.service.disable_key(key_id)

    def enable_key(self, key_id: str) -> ApiKeyInfo:
        """Switch a disabled key back on."""
        return self.service.enable_key(key_id)

    def revoke_key(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key at once; revoking a revoked key returns it unchanged."""
        return self.service.revoke_key(key_id)

    def rotate_key(self, key_id: str, grace: dt.timedelta | None = None) -> tuple[ApiKeyInfo, str]:
        """Replace a key; the old one keeps working for ``grace`` (24 hours)."""
        if grace is None:
            return self.service.rotate_key(key_id)
        return self.service.rotate_key(key_id, grace)

    def list_keys(self, owner_id: str) -> list[ApiKeyInfo]:
        """An owner's keys, newest first, revoked ones included."""
        return self.service.list_keys(owner_id)

    def get_key(self, key_id: str) -> ApiKeyInfo:
        """One key by id; raises ``KeyNotFound``."""
        return self.service.get_key(key_id)

    def set_plan(self, owner_id: str, plan: str, limits: str | None = None) -> None:
        """Put an owner on a plan; ``limits`` gives custom limits."""
        self.service.set_plan(owner_id, plan, limits)

    def current_owner(self) -> str | None:
        """The owner id of this browser session, from ``owner_loader``."""
        if self.owner_loader_callback is None:
            return None
        owner = self.owner_loader_callback()
        # "" (as None) means nobody is signed in.
        return str(owner) if owner is not None and owner != "" else None


def state_of(app: Flask | None = None) -> KeyAuthState:
    """The state of ``app`` (or of the current app)."""
    target = app or current_app
    return target.extensions["keyauth"]  # type: ignore[no-any-return]
