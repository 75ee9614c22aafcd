"""SQLite, the default store, under concurrent writers: creates, rotations
and revocations while authenticated traffic writes its usage every request.
SQLite allows one writer at a time; the others must wait their turn, never
fail with "database is locked" nor surface as a 500."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth

from ..conftest import bearer, make_app, service_of
from ..security.servers import get, gunicorn


def hammer(app: Flask, secrets: list[str], stop: threading.Event, seen: Counter[Any]) -> None:
    client = app.test_client()
    n = 0
    while not stop.is_set():
        response = client.get("/read", headers=bearer(secrets[n % len(secrets)]))
        seen[response.status_code] += 1
        n += 1


def lifecycle(app: Flask, keyauth: KeyAuth, i: int) -> str:
    """Create, use, rotate and (every other one) revoke a key; the last key."""
    with app.app_context():
        info, secret = keyauth.create_key(f"org{i % 4}", f"key {i}")
    assert app.test_client().get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        new, new_secret = keyauth.rotate_key(info.id, dt.timedelta(hours=1))
        if i % 2:
            keyauth.revoke_key(info.id)
    assert app.test_client().get("/read", headers=bearer(new_secret)).status_code == 200
    return new.id


@pytest.mark.parametrize("engine", ["host db", "own engine"])
def test_sqlite_20_concurrent_creates_under_auth_load_users_never_see_database_locked(
    tmp_path: Path, engine: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'contended.db'}"
    if engine == "host db":
        app, db, keyauth = make_app(url, KEYAUTH_LAST_USED_INTERVAL=0)
    else:
        from flask_keyauth import require_key

        app = Flask(__name__)
        app.config.update(
            SQLALCHEMY_DATABASE_URI=url, RATELIMIT_STORAGE_URI="memory://",
            KEYAUTH_LAST_USED_INTERVAL=0, KEYAUTH_ARGON2_TIME_COST=1,
            KEYAUTH_ARGON2_MEMORY_COST=8,
        )
        keyauth = KeyAuth(app)

        @app.get("/read")
        @require_key("read")
        def read() -> Any:
            return {"ok": True}

    with app.app_context():
        keyauth.set_plan("load", "enterprise", "1000000/hour")
        for i in range(4):
            keyauth.set_plan(f"org{i}", "enterprise", "1000000/hour")
        busy = [keyauth.create_key("load", f"busy {i}")[1] for i in range(4)]
    stop = threading.Event()
    seen: Counter[int] = Counter()
    load = [threading.Thread(target=hammer, args=(app, busy, stop, seen)) for _ in range(6)]
    caplog.set_level(logging.WARNING)
    for thread in load:
        thread.start()
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            created = list(pool.map(lambda i: lifecycle(app, keyauth, i), range(20)))
    finally:
        stop.set()
        for thread in load:
            thread.join(timeout=60)
    assert len(set(created)) == 20
    assert set(seen) == {200}, seen
    assert sum(seen.values()) > 20
    with app.app_context():
        service_of(app).flush_usage()
        listed = [k for i in range(4) for k in keyauth.list_keys(f"org{i}")]
    assert len(listed) == 40
    assert Counter(k.status for k in listed) == {"active": 30, "revoked": 10}
    locked = [r for r in caplog.records if "locked" in r.getMessage() or (
        r.exc_info and "locked" in str(r.exc_info[1]))]
    assert locked == [], [r.getMessage() for r in locked]


def test_sqlite_shared_by_gunicorn_workers_and_a_creating_host_never_500s(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    app, db, keyauth = make_app(url)
    with app.app_context():
        keyauth.set_plan("load", "enterprise", "1000000/hour")
        busy = [keyauth.create_key("load", f"busy {i}")[1] for i in range(8)]
    config = {
        "SQLALCHEMY_DATABASE_URI": url,
        "RATELIMIT_STORAGE_URI": "memory://",
        "KEYAUTH_LAST_USED_INTERVAL": 0,
        "KEYAUTH_FAILED_AUTH_LIMIT": "1000000/minute",
    }
    with gunicorn(config, workers=2, threads=4) as (base, _):
        stop = threading.Event()
        replies: Counter[int] = Counter()

        def traffic(i: int) -> None:
            n = i
            while not stop.is_set():
                replies[get(base + "/read", bearer(busy[n % 8])).status] += 1
                n += 1

        load = [threading.Thread(target=traffic, args=(i,)) for i in range(6)]
        for thread in load:
            thread.start()
        try:
            time.sleep(0.5)

            def create(i: int) -> int:
                with app.app_context():
                    keyauth.set_plan(f"new{i}", "enterprise", "1000/hour")
                    _, secret = keyauth.create_key(f"new{i}", "fresh")
                return get(base + "/read", bearer(secret)).status

            with ThreadPoolExecutor(max_workers=20) as pool:
                first_uses = list(pool.map(create, range(20)))
        finally:
            stop.set()
            for thread in load:
                thread.join(timeout=60)
    assert first_uses == [200] * 20
    assert set(replies) == {200}, replies
    with app.app_context():
        db.engine.dispose()
