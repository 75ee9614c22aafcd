from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_keyauth import KeyAuth, current_key, require_key
from flask_keyauth.models import ApiKeyInfo
from flask_keyauth.service import KeyService

from .faults.servers import postgres_server, redis_server  # noqa: F401 - fixtures
from .services import postgres_database

#: argon2-cffi's cheapest profile: tests verify many keys.
FAST_ARGON2 = {
    "KEYAUTH_ARGON2_TIME_COST": 1,
    "KEYAUTH_ARGON2_MEMORY_COST": 8,
    "KEYAUTH_ARGON2_PARALLELISM": 1,
}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    return str(request.getfixturevalue("postgres_url"))


def make_app(database_url: str, **config: Any) -> tuple[Flask, SQLAlchemy, KeyAuth]:
    """A host app with its own ``db``, a few protected routes and keyauth."""
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SECRET_KEY="test-secret",
        SQLALCHEMY_DATABASE_URI=database_url,
        RATELIMIT_STORAGE_URI="memory://",
        RATELIMIT_KEY_PREFIX=f"t{uuid.uuid4().hex[:8]}",
        **FAST_ARGON2,
    )
    app.config.update(config)
    db = SQLAlchemy()
    db.init_app(app)
    keyauth = KeyAuth()
    keyauth.init_app(app, db=db)

    @app.get("/read")
    @require_key("read")
    def read() -> dict[str, Any]:
        return {"key": current_key.id, "owner": current_key.owner_id}

    @app.post("/write")
    @require_key("write")
    def write() -> dict[str, Any]:
        return {"written": True}

    @app.get("/any")
    @require_key()
    def any_key() -> dict[str, Any]:
        return {"scopes": sorted(current_key.scopes)}

    with app.app_context():
        db.create_all()
    return app, db, keyauth


@pytest.fixture
def app_and_keyauth(database_url: str) -> Iterator[tuple[Flask, KeyAuth]]:
    app, db, keyauth = make_app(database_url)
    yield app, keyauth
    dispose(app, db)


@pytest.fixture
def app(app_and_keyauth: tuple[Flask, KeyAuth]) -> Flask:
    return app_and_keyauth[0]


@pytest.fixture
def keyauth(app_and_keyauth: tuple[Flask, KeyAuth]) -> KeyAuth:
    return app_and_keyauth[1]


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


MakeKey = Callable[..., tuple[ApiKeyInfo, str]]


@pytest.fixture
def make_key(app: Flask, keyauth: KeyAuth) -> MakeKey:
    """Create a key: ``make_key(scopes=["read"], owner="acme", ...)``."""

    def make(
        scopes: Any = ("read",),
        owner: str = "acme",
        name: str = "test key",
        environment: str = "live",
        expires_at: dt.datetime | None = None,
    ) -> tuple[ApiKeyInfo, str]:
        with app.app_context():
            return keyauth.create_key(owner, name, scopes, environment, expires_at)

    return make


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


AppFactory = Callable[..., tuple[Flask, SQLAlchemy, KeyAuth]]


@pytest.fixture
def app_factory(database_url: str) -> Iterator[AppFactory]:
    """More host apps on this test's database: ``app_factory(**config)``.

    Each has its own ``KeyAuth`` state (caches, buffers), as another
    process on the same database would.
    """
    made: list[tuple[Flask, SQLAlchemy, KeyAuth]] = []

    def factory(**config: Any) -> tuple[Flask, SQLAlchemy, KeyAuth]:
        made.append(make_app(database_url, **config))
        return made[-1]

    yield factory
    for app, db, _ in reversed(made):
        dispose(app, db)


def dispose(app: Flask, db: SQLAlchemy) -> None:
    """Put a test's app away: its buffered usage would otherwise be written
    at exit, to dropped tables; then its tables and its connections."""
    service_of(app).usage.take()
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def service_of(app: Flask) -> KeyService:
    return app.extensions["keyauth"].service  # type: ignore[no-any-return]


class Clock:
    """A settable time source for ``service.clock``."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


def install_clock(app: Flask, now: dt.datetime | None = None) -> Clock:
    """Replace the app's clock by a settable one, at ``now`` (whole seconds)."""
    clock = Clock(now or dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    service_of(app).clock = clock
    return clock


@pytest.fixture
def clock(app: Flask) -> Clock:
    return install_clock(app)


@contextmanager
def sql_statements(app: Flask) -> Iterator[list[str]]:
    """Every SQL statement the app's key store runs inside the block."""
    with app.app_context():
        engine = app.extensions["keyauth"].store.engine
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def writes(statements: list[str]) -> list[str]:
    return [
        s for s in statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]


@contextmanager
def argon2_runs(app: Flask) -> Iterator[list[int]]:
    """One entry per argon2 verification the app runs inside the block."""
    hasher = service_of(app).hasher
    runs: list[int] = []
    previous = hasher.__dict__.get("verify")
    verify = hasher.verify

    def counting(stored_hash: str, secret: str, *wait: float) -> bool:
        runs.append(1)
        return verify(stored_hash, secret, *wait)

    hasher.verify = counting  # type: ignore[method-assign]
    try:
        yield runs
    finally:
        if previous is None:
            del hasher.verify
        else:
            hasher.verify = previous  # type: ignore[method-assign]


def session_people(keyauth: KeyAuth) -> None:
    """Who acts and in which role, from the browser session: the person in
    ``session["person"]``, their role in ``session["role"]`` (manager)."""
    from flask import session

    @keyauth.actor_loader
    def person() -> Any:
        return session.get("person")

    @keyauth.role_loader
    def role() -> Any:
        return session.get("role", "manager")
