"""A throwaway PostgreSQL cluster (initdb + pg_ctl on its own port) stopped
and restarted under traffic. Never the machine's shared server."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_keyauth import KeyAuth, require_key

from ..conftest import FAST_ARGON2, bearer
from .servers import ThrowawayPostgres


def build(url: str) -> tuple[Flask, KeyAuth]:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url, RATELIMIT_STORAGE_URI="memory://", **FAST_ARGON2
    )
    keyauth = KeyAuth(app)  # its own engine, with pool_pre_ping

    @app.get("/read")
    @require_key("read")
    def read() -> Any:
        return {"ok": True}

    return app, keyauth


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
        assert time.monotonic() - started < 5

    postgres_server.start()
    # The pool's connections died with the server; pre-ping replaces them,
    # so the very first request after the restart is served.
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        _, other = keyauth.create_key("acme", "after restart")
    assert client.get("/read", headers=bearer(other)).status_code == 200
    app.extensions["keyauth"].store.engine.dispose()


# -- the host's own db, and real gunicorn workers ----------------------------------


def host_app(url: str, **engine_options: Any) -> tuple[Flask, Any, KeyAuth]:
    from ..conftest import make_app

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
        db.engine.dispose()


def test_postgres_restarted_under_the_hosts_db_without_pre_ping_user_sees_one_503_never_500(
    postgres_server: ThrowawayPostgres,
) -> None:
    app, db, keyauth = host_app(postgres_server.url)
    client = app.test_client()
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    assert statuses(client, secret, 2) == [(200, None)] * 2
    postgres_server.stop()
    postgres_server.start()
    # The pooled connection died with the server: that request is a clean
    # 503 and the pool is refreshed, so the next ones are served.
    after = statuses(client, secret, 10)
    assert set(after[:1]) <= {(503, "SERVICE_UNAVAILABLE"), (200, None)}
    assert after[1:] == [(200, None)] * 9
    with app.app_context():
        db.engine.dispose()


def test_postgres_stopped_under_gunicorn_traffic_users_get_503_never_500_then_200s(
    postgres_server: ThrowawayPostgres,
) -> None:
    from ..security.servers import gunicorn
    from .test_redis_outage import Traffic, outage_under_traffic, tally

    app, db, keyauth = host_app(postgres_server.url)  # creates the tables
    with app.app_context():
        secrets = [keyauth.create_key("acme", f"k{i}")[1] for i in range(20)]
        keyauth.set_plan("acme", "enterprise", "1000000/hour")
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
    # Pre-ping: no failed transactions after the restart.
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
            host.db.engine.dispose()
