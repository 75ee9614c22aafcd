"""The apps the bench calls: a bare route, flask-keyauth, and its peers.

Every protected route answers the same small JSON body as the bare one, so
that the difference between two rows is the cost of the protection alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_httpauth import HTTPTokenAuth
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy

from flask_keyauth import KeyAuth, current_key, keys, require_key
from flask_keyauth.extension import KeyAuthState

#: Limits high enough never to answer 429 during a run: the bench measures
#: the counting, not the refusing. Two windows, as the built-in plans have.
BENCH_LIMITS = "1000000000/hour;1000000000/day"
#: argon2-cffi's cheapest profile, only to warm thousands of keys quickly;
#: a warm request never runs argon2, whatever its cost.
CHEAP_ARGON2 = {
    "KEYAUTH_ARGON2_TIME_COST": 1,
    "KEYAUTH_ARGON2_MEMORY_COST": 8,
    "KEYAUTH_ARGON2_PARALLELISM": 1,
}
PROTECTED = "/v1/protected"
BARE = "/bare"

PG_ADMIN_URL = os.environ.get(
    "KEYAUTH_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("KEYAUTH_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def environ(
    path: str, headers: dict[str, str] | None = None, addr: str = "10.0.0.1"
) -> dict[str, Any]:
    """A WSGI environ for a GET request, as a server would build it."""
    import io

    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": addr,
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Target:
    """An app and the requests to send it, in turn."""

    app: Any
    environs: list[dict[str, Any]]
    status: int = 200
    #: Requests per timed batch (slow variants send few).
    batch: int | None = None
    #: Called before each request, untimed (to make a new key).
    prepare: Callable[[], dict[str, Any]] | None = None
    keyauth: KeyAuthState | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)


# -- the bare route ------------------------------------------------------------------


def bare_app() -> Flask:
    app = Flask("bench_bare")

    @app.get(BARE)
    def bare() -> dict[str, Any]:
        return {"ok": True, "owner": "acme"}

    return app


# -- flask-keyauth -------------------------------------------------------------------


@dataclass
class KeyauthApp:
    app: Flask
    keyauth: KeyAuth

    @property
    def state(self) -> KeyAuthState:
        return self.app.extensions["keyauth"]  # type: ignore[no-any-return]


def keyauth_app(
    database_url: str,
    storage_uri: str,
    *,
    key_prefix: str,
    cheap_argon2: bool = False,
    **config: Any,
) -> KeyauthApp:
    """flask-keyauth with its own engine, every owner on a two-window plan."""
    app = Flask("bench_keyauth")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        RATELIMIT_STORAGE_URI=storage_uri,
        RATELIMIT_KEY_PREFIX=key_prefix,
        KEYAUTH_PLANS={"bench": BENCH_LIMITS, "enterprise": None},
        KEYAUTH_DEFAULT_PLAN="bench",
        # The throttle still counts every failure; the bench sends many
        # from one address and must not be refused for it.
        KEYAUTH_FAILED_AUTH_LIMIT="1000000000/minute",
        **(CHEAP_ARGON2 if cheap_argon2 else {}),
    )
    app.config.update(config)
    keyauth = KeyAuth(app)
    made = KeyauthApp(app, keyauth)
    CREATED.append(made)

    @app.get(BARE)
    def bare() -> dict[str, Any]:
        return {"ok": True, "owner": "acme"}

    @app.get(PROTECTED)
    @require_key("read")
    def protected() -> dict[str, Any]:
        return {"ok": True, "owner": current_key.owner_id}

    return made


#: Every flask-keyauth app made in this process, to close before the
#: temporary databases go.
CREATED: list[KeyauthApp] = []


def close_all() -> None:
    """Write buffered usage now (not at exit, when the databases are gone)."""
    while CREATED:
        made = CREATED.pop()
        with made.app.app_context():
            made.state.service.flush_usage()
            made.state.store.engine.dispose()


def new_key(ka: KeyauthApp, owner: str = "acme") -> str:
    with ka.app.app_context():
        _, secret = ka.keyauth.create_key(owner, "bench", ["read"])
    return secret


def bulk_keys(ka: KeyauthApp, owners: int) -> list[str]:
    """One key for each of ``owners`` owners, inserted in one transaction.

    ``create_key`` would hash each secret and commit each row: minutes for
    50,000 keys. Every key here shares one secret (so one hash) and has its
    own id, which is all a warm request looks at.
    """
    state = ka.state
    secret = keys.random_base62(keys.SECRET_LENGTH)
    stored_hash = state.service.hasher.hash(secret)
    now = dt.datetime.now(dt.timezone.utc)
    rows, texts = [], []
    for n in range(owners):
        key_id = keys.random_base62(keys.ID_LENGTH)
        head = f"sk_live_{key_id}{secret}"
        text = head + keys.checksum(head)
        texts.append(text)
        rows.append({
            "key_id": key_id, "owner_id": f"owner-{n}", "name": "bench", "prefix": "sk",
            "environment": "live", "scopes": "read", "secret_hash": stored_hash,
            "last4": text[-4:], "created_at": now, "expires_at": None, "revoked_at": None,
            "last_used_at": None, "rotated_from": None,
        })
    with ka.app.app_context(), state.store.engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(state.store.tables.keys), rows[start : start + 5000])
    return texts


def garbage_keys() -> list[str]:
    """Malformed keys and keys whose checksum does not match."""
    good = keys.generate("sk", "live").text
    bad_checksum = good[:-1] + ("0" if good[-1] != "0" else "1")
    return ["not-a-key", "sk_live_" + "x" * 10, bad_checksum, good[:-6] + "zzzzzz"]


def unknown_id_key() -> str:
    """Well-formed, with a valid checksum, for an id no one has."""
    return keys.generate("sk", "live").text


# -- peers ---------------------------------------------------------------------------


def peer_httpauth(tokens: Iterable[str]) -> Flask:
    """Flask-HTTPAuth with SHA-256 token hashes in a dict."""
    app = Flask("bench_httpauth")
    auth = HTTPTokenAuth(scheme="Bearer")
    table = {hashlib.sha256(t.encode()).hexdigest(): f"owner-{i}" for i, t in enumerate(tokens)}

    @auth.verify_token
    def verify(token: str) -> str | None:
        return table.get(hashlib.sha256(token.encode()).hexdigest())

    @app.get(PROTECTED)
    @auth.login_required
    def protected() -> dict[str, Any]:
        return {"ok": True, "owner": auth.current_user()}

    return app


def peer_limiter(storage_uri: str, key_prefix: str) -> Flask:
    """Flask-Limiter alone: two limits per client address, with headers."""
    app = Flask("bench_limiter")
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri,
        headers_enabled=True,
        key_prefix=key_prefix,
    )

    @app.get(PROTECTED)
    @limiter.limit(BENCH_LIMITS)
    def protected() -> dict[str, Any]:
        return {"ok": True, "owner": "acme"}

    return app


def peer_glued(tokens: Iterable[str], storage_uri: str, key_prefix: str) -> Flask:
    """Flask-HTTPAuth's SHA-256 token lookup glued to Flask-Limiter, per owner."""
    app = Flask("bench_glued")
    auth = HTTPTokenAuth(scheme="Bearer")
    table = {hashlib.sha256(t.encode()).hexdigest(): f"owner-{i}" for i, t in enumerate(tokens)}

    @auth.verify_token
    def verify(token: str) -> str | None:
        return table.get(hashlib.sha256(token.encode()).hexdigest())

    limiter = Limiter(
        lambda: str(auth.current_user()),
        app=app,
        storage_uri=storage_uri,
        headers_enabled=True,
        key_prefix=key_prefix,
    )

    @app.get(BARE)
    def bare() -> dict[str, Any]:
        return {"ok": True, "owner": "acme"}

    @app.get(PROTECTED)
    @auth.login_required
    @limiter.limit(BENCH_LIMITS)
    def protected() -> dict[str, Any]:
        return {"ok": True, "owner": auth.current_user()}

    return app


def peer_sqlalchemy(database_url: str, tokens: list[str]) -> Flask:
    """Flask-HTTPAuth looking the token's hash up with Flask-SQLAlchemy each request."""
    app = Flask("bench_sqlalchemy")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db = SQLAlchemy()

    class ApiToken(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "bench_tokens"
        id = db.Column(db.Integer, primary_key=True)
        token_hash = db.Column(db.String(64), unique=True, nullable=False)
        owner = db.Column(db.String(64), nullable=False)

    db.init_app(app)
    auth = HTTPTokenAuth(scheme="Bearer")

    @auth.verify_token
    def verify(token: str) -> str | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        row = db.session.execute(
            sa.select(ApiToken).where(ApiToken.token_hash == digest)
        ).scalar_one_or_none()
        return row.owner if row is not None else None

    @app.get(PROTECTED)
    @auth.login_required
    def protected() -> dict[str, Any]:
        return {"ok": True, "owner": auth.current_user()}

    with app.app_context():
        db.create_all()
        for i, token in enumerate(tokens):
            db.session.add(
                ApiToken(token_hash=hashlib.sha256(token.encode()).hexdigest(), owner=f"owner-{i}")
            )
        db.session.commit()
    return app


def token() -> str:
    return secrets.token_urlsafe(32)


# -- the servers ---------------------------------------------------------------------


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A throwaway database on the shared server, dropped afterwards."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"keyauth_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.SQLAlchemyError as error:
        print(f"  (PostgreSQL not reachable at {PG_ADMIN_URL}: {error.__class__.__name__})")
        admin.dispose()
        yield None
        return
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def redis_prefix() -> Iterator[str | None]:
    """A key prefix of its own on the shared Redis; only its keys are deleted."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        print(f"  (Redis not reachable at {REDIS_URL}: {error.__class__.__name__})")
        yield None
        return
    prefix = f"kabench{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        # Never FLUSHDB: the server is shared. Only this run's keys go.
        for found in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(found)
        client.close()
