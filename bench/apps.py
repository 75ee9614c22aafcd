"""The apps the bench calls: a bare route, flask-keyauth, and its peers.

Every protected route answers the same small JSON body as the bare one, so
that the difference between two rows is the cost of the protection alone.

Of flask-keyauth the bench uses its public API (``KeyAuth``, ``create_key``,
``require_key``, ``current_key``), its tables by name, and
``app.extensions["keyauth"]`` only to find the hasher whose ``verify`` it
counts: nothing else of the package's internals, which may move.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Flask
from flask_httpauth import HTTPTokenAuth
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy

from flask_keyauth import KeyAuth, current_key, require_key

from .cleanup import at_end

#: Limits high enough never to answer 429 during a run: the bench measures
#: the counting, not the refusing. Two windows, as the built-in plans have.
BENCH_LIMITS = "1000000000/hour;1000000000/day"
#: The same with a token bucket first, as gospace's plan has (rate, burst, day).
BURST_LIMITS = "1000000/second burst 1000000000;1000000000/day"
#: argon2-cffi's cheapest profile, only to warm thousands of keys quickly;
#: a warm request never runs argon2, whatever its cost.
CHEAP_ARGON2 = {
    "KEYAUTH_ARGON2_TIME_COST": 1,
    "KEYAUTH_ARGON2_MEMORY_COST": 8,
    "KEYAUTH_ARGON2_PARALLELISM": 1,
}
#: For the PostgreSQL rows: the re-read of a key's row (every
#: ``KEYAUTH_ROW_MAX_AGE``) and the usage flush (every
#: ``KEYAUTH_LAST_USED_INTERVAL``) put off past the run, see ``build``.
STEADY_SECONDS = 600
STEADY_STATE: dict[str, Any] = {
    "KEYAUTH_ROW_MAX_AGE": STEADY_SECONDS,
    "KEYAUTH_LAST_USED_INTERVAL": STEADY_SECONDS,
}
PROTECTED = "/v1/protected"
BARE = "/bare"

PG_ADMIN_URL = os.environ.get(
    "KEYAUTH_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("KEYAUTH_BENCH_REDIS", "redis://127.0.0.1:6379/0")
#: The bench talks to this machine only: the servers it measures, and the
#: gunicorn it starts, are on 127.0.0.1.
LOCAL_HOSTS = ("127.0.0.1",)
#: The tables flask-keyauth creates; the PostgreSQL rows read their counters.
KEYAUTH_TABLES = ("keyauth_api_keys", "keyauth_owners", "keyauth_usage", "keyauth_events")


def local_only(url: str) -> str:
    """``url`` itself, when its host is 127.0.0.1; otherwise the run stops."""
    host = urlsplit(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"bench: {url!r} is not on 127.0.0.1, the only host the bench uses")
    return url


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
    #: Called before each request, untimed and uncounted (to make a new key).
    prepare: Callable[[], dict[str, Any]] | None = None
    #: The flask-keyauth app, whose hasher's ``verify`` runs are counted.
    keyauth: Flask | None = None
    #: The database the row's requests use: PostgreSQL rows read the
    #: server's statistics; SQLite rows count statements.
    database_url: str | None = None
    #: Measure the resident memory the warm-up adds, per distinct key.
    measure_rss: bool = False
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
    database_url: str


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
    made = KeyauthApp(app, keyauth, database_url)

    @app.get(BARE)
    def bare() -> dict[str, Any]:
        return {"ok": True, "owner": "acme"}

    @app.get(PROTECTED)
    @require_key("read")
    def protected() -> dict[str, Any]:
        return {"ok": True, "owner": current_key.owner_id}

    return made


def new_key(ka: KeyauthApp, owner: str = "acme") -> str:
    with ka.app.app_context():
        _, secret = ka.keyauth.create_key(owner, "bench", ["read"])
    return secret


# -- the key format (SPEC §3), so that the bench makes keys without the package --------

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH, SECRET_LENGTH, CHECKSUM_LENGTH = 12, 32, 6


def random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def checksum(head: str) -> str:
    """``zlib.crc32`` of the text before it, in base62, left-padded to 6."""
    number, digits = zlib.crc32(head.encode("ascii")), []
    while number:
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits)).rjust(CHECKSUM_LENGTH, "0")


def key_text(key_id: str, secret: str, prefix: str = "sk", environment: str = "live") -> str:
    head = f"{prefix}_{environment}_{key_id}{secret}"
    return head + checksum(head)


def split_key(text: str) -> tuple[str, str]:
    """The id and the secret of a key."""
    body = text.rpartition("_")[2]
    return body[:ID_LENGTH], body[ID_LENGTH : ID_LENGTH + SECRET_LENGTH]


def bulk_keys(ka: KeyauthApp, owners: int) -> list[str]:
    """One key for each of ``owners`` owners, inserted in one transaction.

    ``create_key`` would hash each secret and commit each row: minutes for
    50,000 keys. One key is made with ``create_key``; its row is copied, with
    a new id and owner each time, by the bench's own engine on the same
    database. Every copy shares the first key's secret (so its hash) and has
    its own id, which is all a warm request looks at.
    """
    template = new_key(ka, "owner-template")
    template_id, secret = split_key(template)
    engine = sa.create_engine(ka.database_url)
    try:
        with engine.begin() as conn:
            row = conn.execute(
                sa.text("SELECT * FROM keyauth_api_keys WHERE key_id = :id"), {"id": template_id}
            ).mappings().one()
            columns = list(row.keys())
            insert = sa.text(
                f"INSERT INTO keyauth_api_keys ({', '.join(columns)}) "  # noqa: S608 - reflected names
                f"VALUES ({', '.join(':' + c for c in columns)})"
            )
            rows, texts = [], []
            for n in range(owners):
                key_id = random_base62(ID_LENGTH)
                texts.append(key_text(key_id, secret))
                rows.append({**row, "key_id": key_id, "owner_id": f"owner-{n}"})
            for start in range(0, len(rows), 5000):
                conn.execute(insert, rows[start : start + 5000])
    finally:
        engine.dispose()
    return texts


def garbage_keys() -> list[str]:
    """Malformed keys and keys whose checksum does not match."""
    good = unknown_id_key()
    bad_checksum = good[:-1] + ("0" if good[-1] != "0" else "1")
    return ["not-a-key", "sk_live_" + "x" * 10, bad_checksum, good[:-6] + "zzzzzz"]


def unknown_id_key() -> str:
    """Well-formed, with a valid checksum, for an id no one has."""
    return key_text(random_base62(ID_LENGTH), random_base62(SECRET_LENGTH))


# -- the floor of an exact design: one script round trip -------------------------------

#: What one round trip of an exact limiter does, in the smallest form: count
#: a window (INCR, PEXPIRE on its first hit) and read one more key.
FLOOR_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('GET', KEYS[2])}
"""


def floor_app(redis_url: str, key_prefix: str) -> Flask:
    """The bare app, its route making one EVALSHA against Redis per request."""
    import redis

    app = Flask("bench_floor")
    client = redis.Redis.from_url(local_only(redis_url))
    script = client.register_script(FLOOR_SCRIPT)
    keys_ = [f"{key_prefix}:floor:count", f"{key_prefix}:floor:stamp"]
    client.set(keys_[1], "1")

    @app.get(BARE)
    def bare() -> dict[str, Any]:
        script(keys=keys_, args=[3_600_000])
        return {"ok": True, "owner": "acme"}

    at_end(client.close)
    return app


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


def postgres_database() -> str | None:
    """A throwaway database on the shared server, dropped at exit."""
    admin = sa.create_engine(local_only(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    name = f"keyauth_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.SQLAlchemyError as error:
        print(f"  (PostgreSQL not reachable at {PG_ADMIN_URL}: {error.__class__.__name__})",
              file=sys.stderr)
        admin.dispose()
        return None

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    at_end(drop)
    return sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(False)


def redis_prefix() -> str | None:
    """A key prefix of its own on the shared Redis; only its keys are deleted, at exit."""
    import redis

    client = redis.Redis.from_url(local_only(REDIS_URL), socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        print(f"  (Redis not reachable at {REDIS_URL}: {error.__class__.__name__})",
              file=sys.stderr)
        return None
    prefix = f"kabench{uuid.uuid4().hex[:10]}"

    def delete() -> None:
        # Never FLUSHDB: the server is shared. Only this run's keys go.
        for found in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(found)
        client.close()

    at_end(delete)
    return prefix
