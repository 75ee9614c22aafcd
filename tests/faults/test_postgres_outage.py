"""A throwaway PostgreSQL cluster (initdb + pg_ctl on its own port) stopped,
paused, restarted and made read-only under traffic. Never the machine's
shared server.

Each scenario runs twice where it matters: on the host's Flask-SQLAlchemy
``db`` (its engine, its pool) and without it (``KeyAuth(app)`` builds its
own engine). The limiter is ``memory://``, so every request reads its key's
row from the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_keyauth import KeyAuth, blueprint, require_key
from flask_keyauth.errors import StorageUnavailable
from flask_keyauth.store import is_unavailable

from ..conftest import FAST_ARGON2, bearer, make_app, service_of
from .servers import ThrowawayPostgres

PREFIX = "/settings/api-keys"
API = PREFIX + "/api"
#: The request path's deadline is 2 s; a little for the machine's own pace.
DEADLINE = 2.5


def build(url: str, **config: Any) -> tuple[Flask, KeyAuth]:
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SECRET_KEY="test-secret",
        SQLALCHEMY_DATABASE_URI=url,
        RATELIMIT_STORAGE_URI="memory://",
        **FAST_ARGON2,
    )
    app.config.update(config)
    keyauth = KeyAuth(app)  # its own engine: bounded pool, timeouts, one retry

    @app.get("/read")
    @require_key("read")
    def read() -> Any:
        return {"ok": True}

    return app, keyauth


@dataclass
class Served:
    """One host app on the throwaway server, with or without its own ``db``."""

    app: Flask
    keyauth: KeyAuth
    db: Any

    @property
    def engine(self) -> sa.Engine:
        with self.app.app_context():
            return self.app.extensions["keyauth"].store.engine  # type: ignore[no-any-return]

    def create(self, owner: str = "acme", name: str = "k", **kwargs: Any) -> tuple[Any, str]:
        with self.app.app_context():
            return self.keyauth.create_key(owner, name, **kwargs)

    def close(self) -> None:
        service_of(self.app).usage.take()
        self.engine.dispose()


def serve(url: str, host_db: bool, **config: Any) -> Served:
    """``/read`` and the key management blueprint, on the host's ``db`` or
    on flask-keyauth's own engine."""
    if host_db:
        app, db, keyauth = make_app(url, **config)
    else:
        (app, keyauth), db = build(url, **config), None
    app.register_blueprint(blueprint, url_prefix=PREFIX)
    return Served(app, keyauth, db)


@pytest.fixture(params=[True, False], ids=["hosts-db", "own-engine"])
def host_db(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def served(host_db: bool, postgres_server: ThrowawayPostgres) -> Iterator[Served]:
    """A host app on the throwaway server, once on the host's ``db`` and
    once on flask-keyauth's own engine."""
    served = serve(postgres_server.url, host_db)
    try:
        yield served
    finally:
        postgres_server.resume()
        served.close()


def timed(client: Any, secret: str, path: str = "/read") -> tuple[int, str | None, float]:
    started = time.monotonic()
    response = client.get(path, headers=bearer(secret))
    took = time.monotonic() - started
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    code = response.get_json()["error"]["code"] if response.status_code != 200 else None
    return response.status_code, code, took


def test_postgres_stopped_gives_503_and_first_request_after_restart_succeeds(
    postgres_server: ThrowawayPostgres,
) -> None:
    app, keyauth = build(postgres_server.url)
    client = app.test_client()
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    assert client.get("/read", headers=bearer(secret)).status_code == 200

    postgres_server.stop()
    for _ in range(3):
        started = time.monotonic()
        response = client.get("/read", headers=bearer(secret))
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert "Traceback" not in response.get_data(as_text=True)
        assert time.monotonic() - started < DEADLINE

    postgres_server.start()
    # The pool's connections died with the server; the read is tried once
    # more on a new connection, so the very first request after the restart
    # is served.
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        _, other = keyauth.create_key("acme", "after restart")
    assert client.get("/read", headers=bearer(other)).status_code == 200
    service_of(app).usage.take()  # nothing left for the exit to write
    app.extensions["keyauth"].store.engine.dispose()


# -- the host's own db, and real gunicorn workers ----------------------------------


def host_app(url: str, **engine_options: Any) -> tuple[Flask, Any, KeyAuth]:
    return make_app(url, SQLALCHEMY_ENGINE_OPTIONS=engine_options)


def statuses(client: Any, secret: str, n: int) -> list[tuple[int, str | None]]:
    found = []
    for _ in range(n):
        response = client.get("/read", headers=bearer(secret))
        code = response.get_json()["error"]["code"] if response.status_code != 200 else None
        assert "Traceback" not in response.get_data(as_text=True)
        found.append((response.status_code, code))
    return found


def test_postgres_restarted_under_the_hosts_db_with_pre_ping_user_never_sees_a_failure_after(
    postgres_server: ThrowawayPostgres,
) -> None:
    app, db, keyauth = host_app(postgres_server.url, pool_pre_ping=True)
    client = app.test_client()
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    assert statuses(client, secret, 3) == [(200, None)] * 3

    postgres_server.stop()
    assert statuses(client, secret, 3) == [(503, "SERVICE_UNAVAILABLE")] * 3
    with app.app_context(), pytest.raises(sa.exc.OperationalError) as raised:
        keyauth.create_key("acme", "while down")
    assert secret not in str(raised.value)

    postgres_server.start()
    # No cascade: every request after the restart is served, the first included.
    assert statuses(client, secret, 10) == [(200, None)] * 10
    with app.app_context():
        _, fresh = keyauth.create_key("acme", "after restart")
        assert len(keyauth.list_keys("acme")) == 2
    assert statuses(client, fresh, 3) == [(200, None)] * 3
    with app.app_context():
        service_of(app).usage.take()
        db.engine.dispose()


def busy(client: Any, secret: str, threads: int = 4, each: int = 5) -> list[int]:
    """Requests from several threads at once: the pool then holds several
    connections, every one of which a restart kills."""
    found: list[int] = []

    def run() -> None:
        for _ in range(each):
            found.append(client.get("/read", headers=bearer(secret)).status_code)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return found


def test_postgres_restarted_the_first_request_after_it_is_back_is_served(
    served: Served, postgres_server: ThrowawayPostgres
) -> None:
    # No pool_pre_ping on the host's engine: the read itself notices the
    # dead connection and tries once more on a new one.
    _, secret = served.create()
    _, never_used = served.create(name="first used after the restart")
    client = served.app.test_client()
    assert busy(served.app.test_client(), secret) == [200] * 20
    assert served.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]

    postgres_server.restart()
    # Nothing between the restart and this request: every pooled connection
    # is dead, and the very first request is served all the same.
    assert timed(client, secret)[:2] == (200, None)
    assert [timed(client, secret)[:2] for _ in range(9)] == [(200, None)] * 9
    assert timed(client, never_used)[:2] == (200, None)

    postgres_server.restart()
    assert busy(served.app.test_client(), secret) == [200] * 20


def test_postgres_paused_answers_503_within_the_deadline_then_200_once_resumed(
    served: Served, postgres_server: ThrowawayPostgres
) -> None:
    """SIGSTOP on the postmaster and every backend: connections already
    open get no answer, new ones no handshake. No hang, no 500."""
    _, secret = served.create()
    _, never_used = served.create(name="first used during the pause")
    client = served.app.test_client()
    assert [timed(client, secret)[:2] for _ in range(2)] == [(200, None)] * 2

    postgres_server.pause()
    try:
        # The first request waits on a pooled connection, the later ones on
        # connections the frozen server never accepts.
        for presented in (secret, secret, never_used, secret):
            status, code, took = timed(client, presented)
            assert (status, code) == (503, "SERVICE_UNAVAILABLE"), (status, code)
            assert took < DEADLINE, f"a paused PostgreSQL held the request {took:.1f}s"
        response = client.get("/read", headers=bearer(secret))
        assert response.headers.get("Retry-After")
    finally:
        postgres_server.resume()

    after = [timed(client, s)[:2] for s in (secret, never_used, secret, secret, secret)]
    assert after == [(200, None)] * 5


def test_postgres_stopped_under_gunicorn_traffic_users_get_503_never_500_then_200s(
    postgres_server: ThrowawayPostgres,
) -> None:
    from ..security.servers import gunicorn
    from .test_redis_outage import Traffic, outage_under_traffic, tally

    app, db, keyauth = host_app(postgres_server.url)  # creates the tables
    with app.app_context():
        secrets = [keyauth.create_key("acme", f"k{i}")[1] for i in range(20)]
        keyauth.set_plan("acme", "enterprise", "1000000/hour")
        service_of(app).usage.take()
        db.engine.dispose()
    config = {
        "SQLALCHEMY_DATABASE_URI": postgres_server.url,
        "RATELIMIT_STORAGE_URI": "memory://",
        "KEYAUTH_FAILED_AUTH_LIMIT": "1000000/minute",
        "KEYAUTH_LAST_USED_INTERVAL": 0,  # a usage write after every request, too
    }
    with gunicorn(config, workers=2, threads=4) as (base, _), Traffic(
        base + "/read", lambda i, n: bearer(secrets[(i + n) % 20]), threads=4
    ) as traffic:
        outage = outage_under_traffic(
            traffic, postgres_server.stop, postgres_server.start, recovery=15, after=1.0
        )
    down, restarting, up = outage.down, outage.restarting, outage.up
    recovered_after = outage.recovered_after
    seen = tally(traffic.replies)
    assert set(seen) <= {(200, None), (503, "SERVICE_UNAVAILABLE")}, seen
    during = [r for r in traffic.replies if down + 0.5 <= r[0] and r[0] + r[3] < restarting]
    assert during and all(r[1] == 503 for r in during), tally(during)
    assert max(r[3] for r in traffic.replies) < 5
    # Pre-ping and the read's retry: no failed transactions after the restart.
    assert recovered_after < 3
    assert all(r[1] == 200 for r in traffic.since(up + recovered_after))


def test_postgres_stopped_management_api_users_get_503_json_never_500(
    postgres_server: ThrowawayPostgres,
) -> None:
    from ..security.test_management import API, build_host

    host = build_host(postgres_server.url, TESTING=False,
                      SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True})
    mine, admin = host.create("acme", "admin", scopes=["admin"])
    client = host.client("acme")
    csrf = {"X-CSRFToken": host.csrf(client)}
    assert client.get(API + "/keys").status_code == 200
    postgres_server.stop()
    calls = [
        ("GET", API + "/keys", None), ("POST", API + "/keys", {"name": "x"}),
        ("GET", f"{API}/keys/{mine.id}", None), ("PATCH", f"{API}/keys/{mine.id}", {"name": "y"}),
        ("DELETE", f"{API}/keys/{mine.id}", None), ("POST", f"{API}/keys/{mine.id}/rotate", {}),
        ("GET", f"{API}/keys/{mine.id}/usage", None), ("GET", API + "/events", None),
    ]
    for method, path, body in calls:
        response = client.open(path, method=method, json=body, headers=csrf)
        assert response.status_code == 503, (method, path, response.status_code)
        assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert "Retry-After" in response.headers
    # With an admin key instead of a session: the same 503.
    response = host.client().get(API + "/keys", headers=bearer(admin))
    assert response.status_code == 503
    postgres_server.start()
    assert client.get(API + "/keys").status_code == 200
    assert client.post(API + "/keys", json={"name": "back"}, headers=csrf).status_code == 201
    with host.app.app_context():
        service_of(host.app).usage.take()
        host.db.engine.dispose()


def test_postgres_stopped_key_pages_users_get_a_503_page(
    postgres_server: ThrowawayPostgres,
) -> None:
    from ..security.test_management import PREFIX, build_host

    host = build_host(postgres_server.url, TESTING=False,
                      SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True})
    mine, _ = host.create("acme", "k")
    client = host.client("acme")
    assert client.get(PREFIX + "/").status_code == 200
    postgres_server.stop()
    try:
        for path in ("/", f"/{mine.id}"):
            response = client.get(PREFIX + path)
            assert "Traceback" not in response.get_data(as_text=True)
            assert response.status_code == 503, (path, response.status_code)
    finally:
        postgres_server.start()
        with host.app.app_context():
            service_of(host.app).usage.take()
            host.db.engine.dispose()


# -- a read-only server (a hot standby after failover) ------------------------------


def usage_of(served: Served, key_id: str) -> int:
    with served.engine.connect() as conn:
        total = conn.execute(
            sa.text("SELECT coalesce(sum(requests), 0) FROM keyauth_usage WHERE key_id = :k"),
            {"k": key_id},
        ).scalar()
    return int(total or 0)


def test_postgres_read_only_serves_authentication_and_reads_and_refuses_changes_with_503(
    served: Served, postgres_server: ThrowawayPostgres
) -> None:
    # As in production: an error a view does not handle reaches Flask's
    # error handling instead of the test client.
    served.app.config["TESTING"] = False
    reader, secret = served.create(name="reader")
    _, never_used = served.create(name="first used while read-only")
    admin, admin_secret = served.create(name="admin", scopes=["read", "admin"])
    client = served.app.test_client()
    as_admin = bearer(admin_secret)
    assert timed(client, secret)[:2] == (200, None)
    with served.app.app_context():
        service_of(served.app).flush_usage()

    postgres_server.set_read_only(True)
    assert postgres_server.execute("SHOW default_transaction_read_only") == [("on",)]
    try:
        # Authentication and reads: served, the first use of a key included.
        assert [timed(client, s)[:2] for s in (secret, never_used, secret)] == [(200, None)] * 3
        assert client.get(API + "/keys", headers=as_admin).status_code == 200
        assert client.get(f"{API}/keys/{reader.id}", headers=as_admin).status_code == 200
        # Buffered usage cannot be written now: kept, not lost, never a 500.
        with served.app.app_context():
            service_of(served.app).flush_usage()
        assert timed(client, secret)[:2] == (200, None)

        # Changes through the JSON API: 503, with Retry-After, never a 500.
        changes = [
            ("POST", API + "/keys", {"name": "new"}),
            ("PATCH", f"{API}/keys/{reader.id}", {"name": "renamed"}),
            ("DELETE", f"{API}/keys/{reader.id}", None),
            ("POST", f"{API}/keys/{reader.id}/rotate", {"grace_seconds": 0}),
        ]
        for method, path, body in changes:
            response = client.open(path, method=method, json=body, headers=as_admin)
            text = response.get_data(as_text=True)
            assert response.status_code == 503, (method, path, response.status_code, text)
            assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert response.headers.get("Retry-After")
            assert "Traceback" not in text and "argon2" not in text

        # Through the service: an error that says "unavailable", never a key
        # that was not stored.
        with served.app.app_context():
            for change in (
                lambda: served.keyauth.create_key("acme", "while read-only"),
                lambda: served.keyauth.revoke_key(reader.id),
                lambda: served.keyauth.set_plan("acme", "enterprise", "10/hour"),
            ):
                with pytest.raises(Exception) as raised:  # noqa: PT011 - checked just below
                    change()
                error = raised.value
                assert isinstance(error, StorageUnavailable) or is_unavailable(error), repr(error)
        # Nothing was changed: the key the failed revocation named still works.
        assert timed(client, secret)[:2] == (200, None)
        with served.app.app_context():
            assert len(served.keyauth.list_keys("acme")) == 3
    finally:
        postgres_server.set_read_only(False)

    # Writable again (failover over): changes go through, and the usage kept
    # while the server refused it is written, every request of it.
    response = client.post(API + "/keys", json={"name": "after"}, headers=as_admin)
    assert response.status_code == 201, response.get_data(as_text=True)
    with served.app.app_context():
        service_of(served.app).flush_usage()
    deadline = time.monotonic() + 5
    while usage_of(served, reader.id) != 5 and time.monotonic() < deadline:
        time.sleep(0.1)  # the background writer may hold part of it
    assert usage_of(served, reader.id) == 5  # every request made with it
