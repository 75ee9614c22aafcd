from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_keyauth import KeyAuth, current_key, require_key
from flask_keyauth.models import ApiKeyInfo

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
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


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
