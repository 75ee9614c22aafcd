"""The Flask extension (SPEC §2, §10): init_app, state, config, hooks, views."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, jsonify
from flask.views import MethodView
from flask_sqlalchemy import SQLAlchemy
from werkzeug.exceptions import Forbidden, HTTPException, Unauthorized

import flask_keyauth
from flask_keyauth import (
    KeyAuth,
    KeyAuthError,
    auth_failed,
    blueprint,
    current_key,
    require_key,
)

from .conftest import FAST_ARGON2, MakeKey, bearer, make_app, service_of

TABLES = {"keyauth_api_keys", "keyauth_owners", "keyauth_events", "keyauth_usage"}


@pytest.fixture
def engines() -> Iterator[list[sa.Engine]]:
    """Engines to dispose of after the test."""
    made: list[sa.Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def host(tmp_path: Path, name: str = "app", **config: Any) -> Flask:
    """A bare host app, nothing initialised yet."""
    app = Flask(__name__, instance_path=str(tmp_path / f"{name}-instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY="s",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / f'{name}.db'}",
        RATELIMIT_STORAGE_URI="memory://",
        RATELIMIT_KEY_PREFIX=uuid.uuid4().hex[:8],
        **FAST_ARGON2,
    )
    app.config.update(config)

    @app.get("/read")
    @require_key("read")
    def read() -> dict[str, Any]:
        return {"key": current_key.id, "owner": current_key.owner_id}

    return app


def new_key(app: Flask, keyauth: KeyAuth, owner: str = "acme") -> tuple[str, str]:
    with app.app_context():
        info, secret = keyauth.create_key(owner, "k")
    return info.id, secret


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


# -- init_app ------------------------------------------------------------------------


def test_init_app_twice_is_a_clear_error(tmp_path: Path) -> None:
    app = host(tmp_path)
    db = SQLAlchemy(app)
    keyauth = KeyAuth(app, db=db)
    for again in (keyauth, KeyAuth()):
        with pytest.raises(RuntimeError, match="already initialised") as caught:
            again.init_app(app, db=db)
        assert "once" in str(caught.value)
    with app.app_context():
        db.engine.dispose()


def test_constructor_with_app_and_db(tmp_path: Path) -> None:
    app = host(tmp_path)
    db = SQLAlchemy(app)
    keyauth = KeyAuth(app, db=db)
    with app.app_context():
        db.create_all()
    key_id, secret = new_key(app, keyauth)
    response = app.test_client().get("/read", headers=bearer(secret))
    assert response.get_json() == {"key": key_id, "owner": "acme"}
    assert app.extensions["keyauth"].extension is keyauth
    with app.app_context():
        db.engine.dispose()


def test_init_app_before_the_databases_init_app(tmp_path: Path) -> None:
    app = host(tmp_path)
    db = SQLAlchemy()
    keyauth = KeyAuth()
    keyauth.init_app(app, db=db)
    db.init_app(app)
    with app.app_context():
        db.create_all()
    _, secret = new_key(app, keyauth)
    assert app.test_client().get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("blueprint_first", [True, False])
def test_blueprint_and_init_app_in_either_order(tmp_path: Path, blueprint_first: bool) -> None:
    app = host(tmp_path)
    db = SQLAlchemy(app)
    keyauth = KeyAuth()
    if blueprint_first:
        app.register_blueprint(blueprint, url_prefix="/settings/api-keys")
    keyauth.init_app(app, db=db)
    if not blueprint_first:
        app.register_blueprint(blueprint, url_prefix="/settings/api-keys")
    assert blueprint.name == "keyauth" and "keyauth" in app.blueprints
    with app.app_context():
        db.create_all()
    _, secret = new_key(app, keyauth)
    assert app.test_client().get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        db.engine.dispose()


def test_tables_are_on_the_hosts_metadata(tmp_path: Path) -> None:
    app = host(tmp_path)
    db = SQLAlchemy(app)
    KeyAuth(app, db=db)
    assert set(db.metadata.tables) >= TABLES
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    # With the host's db, the host creates them (db.create_all or migrations).
    assert not TABLES & table_names(url)
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    assert table_names(url) >= TABLES


def test_without_db_it_makes_its_own_engine_and_tables(
    tmp_path: Path, engines: list[sa.Engine]
) -> None:
    app = host(tmp_path)
    keyauth = KeyAuth(app)
    engines.append(app.extensions["keyauth"].store.engine)
    assert "sqlalchemy" not in app.extensions
    assert table_names(app.config["SQLALCHEMY_DATABASE_URI"]) >= TABLES
    _, secret = new_key(app, keyauth)
    assert app.test_client().get("/read", headers=bearer(secret)).status_code == 200


def test_without_db_or_uri_it_uses_the_instance_folder(
    tmp_path: Path, engines: list[sa.Engine]
) -> None:
    app = host(tmp_path)
    del app.config["SQLALCHEMY_DATABASE_URI"]
    keyauth = KeyAuth(app)
    engines.append(app.extensions["keyauth"].store.engine)
    database = Path(app.instance_path) / "keyauth.db"
    assert database.exists()
    assert table_names(f"sqlite:///{database}") >= TABLES
    _, secret = new_key(app, keyauth)
    assert app.test_client().get("/read", headers=bearer(secret)).status_code == 200


def test_one_keyauth_serves_two_apps(tmp_path: Path, engines: list[sa.Engine]) -> None:
    keyauth = KeyAuth()
    first, second = host(tmp_path, "first"), host(tmp_path, "second")
    keyauth.init_app(first)
    keyauth.init_app(second)
    engines += [app.extensions["keyauth"].store.engine for app in (first, second)]
    assert not hasattr(keyauth, "app")
    assert first.extensions["keyauth"] is not second.extensions["keyauth"]
    assert first.extensions["keyauth"].extension is keyauth is second.extensions[
        "keyauth"
    ].extension

    calls: list[str] = []

    @keyauth.error_handler
    def errors(error: KeyAuthError) -> Any:
        calls.append(error.code_name)
        return {"oops": error.code_name}, error.status

    first_id, first_secret = new_key(first, keyauth, "acme")
    second_id, second_secret = new_key(second, keyauth, "globex")
    one, two = first.test_client(), second.test_client()
    assert one.get("/read", headers=bearer(first_secret)).get_json()["key"] == first_id
    assert two.get("/read", headers=bearer(second_secret)).get_json()["key"] == second_id
    # Each app has its own store: a key of one is unknown to the other.
    assert one.get("/read", headers=bearer(second_secret)).get_json() == {
        "oops": "INVALID_API_KEY"
    }
    assert two.get("/read", headers=bearer(first_secret)).get_json() == {
        "oops": "INVALID_API_KEY"
    }
    assert calls == ["INVALID_API_KEY", "INVALID_API_KEY"]
    with first.app_context():
        assert [k.id for k in keyauth.list_keys("acme")] == [first_id]
        assert keyauth.list_keys("globex") == []
    with second.app_context():
        assert [k.id for k in keyauth.list_keys("globex")] == [second_id]


def test_owner_loader_applies_to_every_app(tmp_path: Path, engines: list[sa.Engine]) -> None:
    keyauth = KeyAuth()
    apps = [host(tmp_path, "a"), host(tmp_path, "b")]
    for app in apps:
        keyauth.init_app(app)
        engines.append(app.extensions["keyauth"].store.engine)

    @keyauth.owner_loader
    def owner() -> str:
        return "org-1"

    for app in apps:
        with app.test_request_context():
            assert keyauth.current_owner() == "org-1"


# -- configuration -------------------------------------------------------------------


def test_defaults_are_set_on_the_config(app: Flask) -> None:
    config = app.config
    assert config["KEYAUTH_KEY_PREFIX"] == "sk"
    assert config["KEYAUTH_SCOPES"] == {"read": [], "write": ["read"], "admin": ["write"]}
    assert config["KEYAUTH_ENVIRONMENTS_ACCEPTED"] == {"live", "test"}
    assert config["KEYAUTH_PLANS"] == {
        "free": "100/hour;10000/day",
        "starter": "300/hour;100000/day",
        "professional": "1200/hour;500000/day",
        "enterprise": None,
    }
    assert config["KEYAUTH_DEFAULT_PLAN"] == "free"
    assert config["KEYAUTH_FAILED_AUTH_LIMIT"] == "30/minute"
    assert config["KEYAUTH_RATELIMIT_HEADERS"] == "x-ratelimit"
    assert config["KEYAUTH_RATELIMIT_FAIL_OPEN"] is False
    assert config["KEYAUTH_REQUIRE_HTTPS"] is False
    assert config["KEYAUTH_HEADER_NAMES"] == ["Authorization", "X-API-Key"]
    assert config["KEYAUTH_LAST_USED_INTERVAL"] == 60
    assert config["KEYAUTH_LOGIN_VIEW"] is None
    assert config["KEYAUTH_BASE_TEMPLATE"] == "keyauth/base.html"
    assert config["KEYAUTH_ROTATION_REMINDER_DAYS"] == 90


def test_argon2_defaults_are_owasps_minimum(tmp_path: Path, engines: list[sa.Engine]) -> None:
    app = host(tmp_path)
    for name in FAST_ARGON2:
        del app.config[name]
    KeyAuth(app)
    engines.append(app.extensions["keyauth"].store.engine)
    assert app.config["KEYAUTH_ARGON2_TIME_COST"] == 2
    assert app.config["KEYAUTH_ARGON2_MEMORY_COST"] == 19456
    assert app.config["KEYAUTH_ARGON2_PARALLELISM"] == 1
    stored = service_of(app).hasher.hash("x")
    assert stored.startswith("$argon2id$") and "m=19456,t=2,p=1" in stored


def test_defaults_are_copies(tmp_path: Path, engines: list[sa.Engine]) -> None:
    app = host(tmp_path)
    KeyAuth(app)
    engines.append(app.extensions["keyauth"].store.engine)
    app.config["KEYAUTH_SCOPES"]["webhook"] = []
    from flask_keyauth import config

    assert "webhook" not in config.SCOPES


BAD_CONFIG = [
    ("KEY_PREFIX", "SK"),
    ("KEY_PREFIX", "s_k"),
    ("KEY_PREFIX", None),
    ("SCOPES", {}),
    ("SCOPES", ["read"]),
    ("SCOPES", {"read": ["missing"]}),
    ("SCOPES", {"read": "write"}),
    ("SCOPES", {"read": None}),
    ("SCOPES", {"has space": []}),
    ("ENVIRONMENTS_ACCEPTED", set()),
    ("ENVIRONMENTS_ACCEPTED", {"prod"}),
    ("ENVIRONMENTS_ACCEPTED", None),
    ("PLANS", {}),
    ("PLANS", {"free": "lots"}),
    ("PLANS", {"free": 100}),
    ("DEFAULT_PLAN", "gold"),
    ("DEFAULT_PLAN", "enterprise"),
    ("FAILED_AUTH_LIMIT", "often"),
    ("RATELIMIT_HEADERS", "x-rate"),
    ("RATELIMIT_HEADERS", ["ietf", "nope"]),
    ("RATELIMIT_HEADERS", 5),
    ("HEADER_NAMES", []),
    ("HEADER_NAMES", None),
    ("HEADER_NAMES", [""]),
    ("ARGON2_TIME_COST", 0),
    ("ARGON2_TIME_COST", "2"),
    ("ARGON2_MEMORY_COST", 4),
    ("ARGON2_PARALLELISM", 0),
    ("ARGON2_PARALLELISM", 4),  # 8 KiB for 4 lanes: argon2 would refuse it
    ("LAST_USED_INTERVAL", -1),
    ("LAST_USED_INTERVAL", "60"),
    ("ROTATION_REMINDER_DAYS", 0),
]


@pytest.mark.parametrize(("name", "value"), BAD_CONFIG, ids=[f"{n}={v!r}" for n, v in BAD_CONFIG])
def test_bad_config_fails_at_init_naming_the_key(
    tmp_path: Path, name: str, value: Any
) -> None:
    app = host(tmp_path, **{f"KEYAUTH_{name}": value})
    db = SQLAlchemy(app)
    with pytest.raises(RuntimeError) as caught:
        KeyAuth(app, db=db)
    message = str(caught.value)
    assert message.startswith("KEYAUTH_")
    assert f"KEYAUTH_{name}" in message or name.startswith("ARGON2_")
    assert "KEYAUTH_ARGON2" in message or not name.startswith("ARGON2_")
    assert "keyauth" not in app.extensions
    with app.app_context():
        db.engine.dispose()


def test_scope_implication_is_transitive_and_survives_cycles(tmp_path: Path) -> None:
    app = host(
        tmp_path,
        KEYAUTH_SCOPES={"read": [], "write": ["read"], "owner": ["admin"], "admin": ["owner",
                                                                                     "write"]},
    )
    db = SQLAlchemy(app)
    KeyAuth(app, db=db)
    scopes = app.extensions["keyauth"].settings.scopes
    assert scopes["read"] == {"read"}
    assert scopes["write"] == {"read", "write"}
    assert scopes["admin"] == scopes["owner"] == {"read", "write", "admin", "owner"}
    with app.app_context():
        db.engine.dispose()


# -- views ---------------------------------------------------------------------------


def test_method_view_and_async_view(app: Flask, client: Any, make_key: MakeKey) -> None:
    class Things(MethodView):
        decorators = [require_key("read")]

        def get(self) -> Any:
            return {"things": [], "key": current_key.id}

        def post(self) -> Any:
            return {"created": True}, 201

    app.add_url_rule("/things", view_func=Things.as_view("things"))

    @app.get("/async")
    @require_key("read")
    async def async_view() -> Any:
        return {"key": current_key.id, "owner": current_key.owner_id}

    @app.get("/items/<int:item_id>")
    @require_key("read")
    def item(item_id: int) -> Any:
        return {"item": item_id}

    info, secret = make_key()
    assert client.get("/things").status_code == 401
    assert client.get("/things", headers=bearer(secret)).get_json() == {
        "things": [], "key": info.id,
    }
    assert client.post("/things", headers=bearer(secret)).status_code == 201
    assert client.get("/async").status_code == 401
    assert client.get("/async", headers=bearer(secret)).get_json() == {
        "key": info.id, "owner": "acme",
    }
    assert client.get("/items/7", headers=bearer(secret)).get_json() == {"item": 7}
    assert item.__name__ == "item" and async_view.__name__ == "async_view"


def test_current_key_is_none_without_a_key(app: Flask, client: Any, make_key: MakeKey) -> None:
    @app.get("/public")
    def public() -> Any:
        key = current_key._get_current_object()  # type: ignore[attr-defined]
        return {"none": key is None, "falsy": not current_key,
                "id": key.id if key is not None else None}

    failures: list[dict[str, Any]] = []

    def on_failure(sender: Any, **extra: Any) -> None:
        failures.append(extra)

    info, secret = make_key()
    with auth_failed.connected_to(on_failure, app):
        assert client.get("/public").get_json() == {"none": True, "falsy": True, "id": None}
        assert client.get("/public", headers=bearer("sk_live_nope")).get_json()["none"]
        assert client.get("/public", headers=bearer(secret)).get_json() == {
            "none": False, "falsy": False, "id": info.id,
        }
    # Looking at current_key refuses nothing, so nothing failed.
    assert failures == []
    with app.test_request_context():
        assert current_key._get_current_object() is None  # type: ignore[attr-defined]


# -- errors --------------------------------------------------------------------------


def test_error_classes_are_werkzeug_http_exceptions() -> None:
    from flask_keyauth import errors

    assert issubclass(KeyAuthError, HTTPException)
    assert issubclass(errors.InvalidApiKey, Unauthorized)
    assert issubclass(errors.MissingApiKey, Unauthorized)
    assert issubclass(errors.ExpiredApiKey, Unauthorized)
    assert issubclass(errors.InsufficientScope, Forbidden)
    assert issubclass(errors.HttpsRequired, Forbidden)
    error = errors.ExpiredApiKey(details={"expired_at": "2030-01-01T00:00:00Z"})
    assert error.status == 401 and error.code_name == "EXPIRED_API_KEY"
    assert error.message and error.details == {"expired_at": "2030-01-01T00:00:00Z"}


def test_error_handler_replaces_the_body_keeps_the_challenge(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    keyauth = app.extensions["keyauth"].extension
    seen: list[KeyAuthError] = []

    @keyauth.error_handler
    def handler(error: KeyAuthError) -> Any:
        seen.append(error)
        return {"ok": False, "reason": error.code_name, "why": error.message}, error.status

    response = client.get("/read")
    assert response.status_code == 401
    assert response.get_json() == {
        "ok": False, "reason": "MISSING_API_KEY", "why": seen[0].message,
    }
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["Cache-Control"] == "no-store"

    _, secret = make_key()
    response = client.get("/read", headers=bearer(secret[:-1] + "!"))
    assert response.get_json()["reason"] == "INVALID_API_KEY"
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert secret not in response.get_data(as_text=True)

    response = client.post("/write", headers=bearer(secret))
    assert response.status_code == 403 and response.get_json()["reason"] == "FORBIDDEN"
    assert seen[-1].details == {"required_scopes": ["write"]}
    assert "WWW-Authenticate" not in response.headers


def test_app_errorhandler_for_keyauth_errors(app: Flask, client: Any, make_key: MakeKey) -> None:
    @app.errorhandler(KeyAuthError)
    def handle(error: KeyAuthError) -> Any:
        response = jsonify(problem=error.code_name, status=error.status)
        response.status_code = error.status
        return response

    response = client.get("/read")
    assert response.status_code == 401
    assert response.get_json() == {"problem": "MISSING_API_KEY", "status": 401}
    _, secret = make_key()
    response = client.post("/write", headers=bearer(secret))
    assert response.get_json() == {"problem": "FORBIDDEN", "status": 403}


def test_app_errorhandler_by_status(app: Flask, client: Any) -> None:
    @app.errorhandler(401)
    def handle(error: Any) -> Any:
        return {"status": "unauthorised"}, 401

    assert client.get("/read").get_json() == {"status": "unauthorised"}


def test_public_names() -> None:
    for name in ("KeyAuth", "KeyAuthError", "KeyNotFound", "ApiKeyInfo", "blueprint",
                 "current_key", "require_key", "key_created", "key_revoked", "key_rotated",
                 "auth_failed", "rate_limited"):
        assert name in flask_keyauth.__all__
        assert getattr(flask_keyauth, name) is not None


def test_make_app_helper_is_isolated(tmp_path: Path) -> None:
    # Two hosts built by the shared helper do not share state.
    first, db1, _ = make_app(f"sqlite:///{tmp_path / 'one.db'}")
    second, db2, _ = make_app(f"sqlite:///{tmp_path / 'two.db'}")
    assert first.extensions["keyauth"] is not second.extensions["keyauth"]
    for app, db in ((first, db1), (second, db2)):
        with app.app_context():
            db.engine.dispose()


def test_require_key_on_an_app_without_init_app(tmp_path: Path) -> None:
    app = host(tmp_path)
    with pytest.raises(RuntimeError, match="not initialised"):
        app.test_client().get("/read", headers=bearer("sk_live_x"))


def test_require_key_needs_parentheses() -> None:
    def view() -> Any:
        return {}

    with pytest.raises(TypeError, match="scope names"):
        require_key(view)  # type: ignore[arg-type]


def test_config_is_read_once_at_init(app: Flask, client: Any, make_key: MakeKey) -> None:
    _, secret = make_key()
    app.config["KEYAUTH_REQUIRE_HTTPS"] = True
    app.config["KEYAUTH_HEADER_NAMES"] = ["X-Other"]
    assert client.get("/read", headers=bearer(secret)).status_code == 200
