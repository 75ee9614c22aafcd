"""The verified-key cache and buffered usage (SPEC §9).

A second app on the same database stands for another process or host: it
has its own cache and buffers, and shares only the database.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_keyauth import current_key, require_key

from .conftest import (
    AppFactory,
    Clock,
    MakeKey,
    argon2_runs,
    bearer,
    install_clock,
    service_of,
    sql_statements,
    writes,
)
from .test_auth import wrong_secret


def stored_row(app: Flask, key_id: str) -> Any:
    state = app.extensions["keyauth"]
    keys = state.store.tables.keys
    with app.app_context(), state.store.engine.connect() as conn:
        return conn.execute(sa.select(keys).where(keys.c.key_id == key_id)).one()


def code(response: Any) -> str | int:
    if response.status_code == 200:
        return 200
    return str(response.get_json()["error"]["code"])


def test_a_repeat_request_runs_no_argon2(app: Flask, client: Any, make_key: MakeKey) -> None:
    _, secret = make_key()
    with argon2_runs(app) as runs:
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert runs == [1]
    with argon2_runs(app) as runs:
        for _ in range(5):
            assert client.get("/read", headers=bearer(secret)).status_code == 200
        assert client.get("/any", headers={"X-API-Key": secret}).status_code == 200
    assert runs == []


def test_the_cache_does_not_vouch_for_another_secret(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    _, secret = make_key()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with argon2_runs(app) as runs:
        assert client.get("/read", headers=bearer(wrong_secret(secret))).status_code == 401
    assert runs == [1]
    # And a wrong secret does not evict the right one.
    with argon2_runs(app) as runs:
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert runs == []


def test_every_request_reads_the_row(app: Flask, client: Any, make_key: MakeKey) -> None:
    _, secret = make_key()
    client.get("/read", headers=bearer(secret))
    with sql_statements(app) as statements:
        client.get("/read", headers=bearer(secret))
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")


def test_revoke_through_the_service_beats_the_cache(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    info, secret = make_key()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        service_of(app).revoke_key(info.id)
    assert code(client.get("/read", headers=bearer(secret))) == "INVALID_API_KEY"


def test_revoke_from_another_process_applies_on_the_next_request(
    app_factory: AppFactory,
) -> None:
    first, _, first_keyauth = app_factory()
    second, _, second_keyauth = app_factory()
    client = first.test_client()
    with first.app_context():
        info, secret = first_keyauth.create_key("acme", "k")
    for _ in range(2):
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert first.extensions["keyauth"].auth.cache.get(info.id) is not None
    with second.app_context():
        second_keyauth.revoke_key(info.id)
    # The first app's cache still knows the key; the row decides.
    assert first.extensions["keyauth"].auth.cache.get(info.id) is not None
    assert code(client.get("/read", headers=bearer(secret))) == "INVALID_API_KEY"


def test_rotation_with_zero_grace_elsewhere_applies_on_the_next_request(
    app_factory: AppFactory,
) -> None:
    first, _, first_keyauth = app_factory()
    second, _, second_keyauth = app_factory()
    client = first.test_client()
    with first.app_context():
        info, secret = first_keyauth.create_key("acme", "k")
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with second.app_context():
        _, new_secret = second_keyauth.rotate_key(info.id, dt.timedelta(0))
    assert code(client.get("/read", headers=bearer(secret))) == "INVALID_API_KEY"
    assert client.get("/read", headers=bearer(new_secret)).status_code == 200


def test_expiry_set_later_applies_at_once(app_factory: AppFactory) -> None:
    first, _, first_keyauth = app_factory()
    second, _, _ = app_factory()
    first_clock = install_clock(first)
    second_clock = install_clock(second, first_clock.now)
    client = first.test_client()
    with first.app_context():
        info, secret = first_keyauth.create_key("acme", "k")
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    # Through this app's service, then through the other one's.
    with first.app_context():
        service_of(first).update_key(info.id, expires_at=first_clock.now + dt.timedelta(hours=1))
    with second.app_context():
        # Extended elsewhere before it ran out: this app serves it past the hour.
        service_of(second).update_key(info.id, expires_at=second_clock.now + dt.timedelta(1))
    first_clock.advance(hours=2)
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with second.app_context():
        service_of(second).update_key(info.id, expires_at=first_clock.now + dt.timedelta(hours=1))
    first_clock.advance(hours=1)
    assert code(client.get("/read", headers=bearer(secret))) == "EXPIRED_API_KEY"
    # An expired key stays expired.
    second_clock.now = first_clock.now
    with second.app_context(), pytest.raises(ValueError, match="expired"):
        service_of(second).update_key(info.id, expires_at=None)


def test_old_argon2_parameters_are_upgraded_once_on_use(app_factory: AppFactory) -> None:
    old, _, old_keyauth = app_factory()
    with old.app_context():
        info, secret = old_keyauth.create_key("acme", "k")
    old_hash = stored_row(old, info.id).secret_hash
    assert "t=1" in old_hash and "m=8," in old_hash
    # The deployment raised its cost since.
    new, _, _ = app_factory(KEYAUTH_ARGON2_TIME_COST=2, KEYAUTH_ARGON2_MEMORY_COST=16)
    hasher = service_of(new).hasher
    hashed: list[int] = []
    original = hasher.hash

    def counting(text: str) -> str:
        hashed.append(1)
        return original(text)

    hasher.hash = counting  # type: ignore[method-assign]
    client = new.test_client()
    with argon2_runs(new) as runs:
        for _ in range(3):
            assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert hashed == [1] and runs == [1]
    upgraded = stored_row(new, info.id).secret_hash
    assert upgraded != old_hash and "t=2" in upgraded and "m=16," in upgraded
    assert secret not in upgraded and secret[20:52] not in upgraded
    # A fresh process with the new parameters verifies the new hash and
    # leaves it alone.
    new.extensions["keyauth"].auth.cache.clear()
    with argon2_runs(new) as runs:
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert runs == [1] and hashed == [1]
    assert stored_row(new, info.id).secret_hash == upgraded


def test_no_rehash_when_parameters_match(app: Flask, client: Any, make_key: MakeKey) -> None:
    info, secret = make_key()
    before = stored_row(app, info.id).secret_hash
    with sql_statements(app) as statements:
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert writes(statements) == []
    assert stored_row(app, info.id).secret_hash == before


# -- buffered usage -------------------------------------------------------------------


def test_steady_state_requests_write_nothing(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(KEYAUTH_LAST_USED_INTERVAL=3600)
    client = app.test_client()
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    assert client.get("/read", headers=bearer(secret)).status_code == 200  # warm up
    with sql_statements(app) as statements:
        for _ in range(20):
            assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert writes(statements) == []
    assert len(statements) == 20  # one indexed read each
    assert stored_row(app, info.id).last_used_at is None
    with app.app_context():
        # Pending use already shows; flushing writes it.
        assert keyauth.get_key(info.id).last_used_at is not None
        service_of(app).flush_usage()
    assert stored_row(app, info.id).last_used_at is not None


def written(app: Flask, key_id: str, check: Any, seconds: float = 5) -> Any:
    """The key's stored row once ``check(row)`` holds (the background writer's pace)."""
    deadline = time.monotonic() + seconds
    row = stored_row(app, key_id)
    while not check(row) and time.monotonic() < deadline:
        time.sleep(0.02)
        row = stored_row(app, key_id)
    return row


def test_interval_zero_writes_last_used_at(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(KEYAUTH_LAST_USED_INTERVAL=0)
    clock = install_clock(app)
    client = app.test_client()
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    assert stored_row(app, info.id).last_used_at is None
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    first = written(app, info.id, lambda row: row.last_used_at is not None).last_used_at
    assert first is not None
    clock.advance(minutes=5)
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    later = written(app, info.id, lambda row: row.last_used_at != first).last_used_at
    assert later is not None
    assert later.replace(tzinfo=None) == clock.now.replace(tzinfo=None)
    # Another process sees it in the row.
    other, _, other_keyauth = app_factory()
    with other.app_context():
        assert other_keyauth.get_key(info.id).last_used_at == clock.now


def test_failed_requests_are_not_usage(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(KEYAUTH_LAST_USED_INTERVAL=0)
    client = app.test_client()
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    with sql_statements(app) as statements:
        assert client.get("/read", headers=bearer(wrong_secret(secret))).status_code == 401
    assert writes(statements) == []
    assert stored_row(app, info.id).last_used_at is None


def test_clock_is_the_services(app: Flask, make_key: MakeKey, clock: Clock) -> None:
    info, _ = make_key()
    assert info.created_at == clock.now
    assert stored_row(app, info.id).created_at.replace(tzinfo=None) == clock.now.replace(
        tzinfo=None
    )


# -- what a warm request reuses, and when it stops --------------------------------------


def test_plan_change_elsewhere_applies_on_the_next_request(app_factory: AppFactory) -> None:
    first, _, first_keyauth = app_factory()
    second, _, second_keyauth = app_factory()
    client = first.test_client()
    with first.app_context():
        _, secret = first_keyauth.create_key("acme", "k")
    for _ in range(3):
        response = client.get("/read", headers=bearer(secret))
    assert response.headers["X-RateLimit-Limit"] == "100"
    with second.app_context():
        second_keyauth.set_plan("acme", "enterprise", "7/minute")
    response = client.get("/read", headers=bearer(secret))
    assert response.headers["X-RateLimit-Limit"] == "7"
    with second.app_context():
        second_keyauth.set_plan("acme", "free")
    assert client.get("/read", headers=bearer(secret)).headers["X-RateLimit-Limit"] == "100"


def test_a_rename_elsewhere_shows_in_current_key_at_once(app_factory: AppFactory) -> None:
    first, _, first_keyauth = app_factory()
    second, _, _ = app_factory()

    @first.get("/name")
    @require_key()
    def name() -> dict[str, Any]:
        return {"name": current_key.name, "last_used_at": current_key.last_used_at.isoformat()}

    client = first.test_client()
    with first.app_context():
        info, secret = first_keyauth.create_key("acme", "before")
    assert client.get("/name", headers=bearer(secret)).get_json()["name"] == "before"
    with second.app_context():
        service_of(second).update_key(info.id, name="after")
    body = client.get("/name", headers=bearer(secret)).get_json()
    assert body["name"] == "after"
    # A warm request's view carries this request's use.
    first_use = body["last_used_at"]
    time.sleep(0.01)
    assert client.get("/name", headers=bearer(secret)).get_json()["last_used_at"] > first_use


def test_revoke_by_direct_sql_applies_on_the_next_request(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    # Not through the service, so no cache is told: the row read decides.
    info, secret = make_key()
    for _ in range(3):
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    state = app.extensions["keyauth"]
    keys = state.store.tables.keys
    with app.app_context(), state.store.engine.begin() as conn:
        conn.execute(
            sa.update(keys).where(keys.c.key_id == info.id).values(revoked_at=sa.func.now())
        )
    assert code(client.get("/read", headers=bearer(secret))) == "INVALID_API_KEY"


def test_no_transaction_is_left_open_between_requests(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    _, secret = make_key()
    state = app.extensions["keyauth"]
    with app.app_context():
        engine = state.store.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("pg_stat_activity is PostgreSQL's")
    for _ in range(3):
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    with engine.connect() as conn:
        stuck = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert stuck == 0


def test_a_full_cache_drops_its_oldest_entry() -> None:
    from flask_keyauth.hashing import CachedKey, KeyCache

    cache = KeyCache(max_entries=3)

    def entry(text: str) -> CachedKey:
        return CachedKey(None, (), "hash", cache.digest("hash", text), None, 0.0)  # type: ignore[arg-type]

    for n in range(4):
        cache.put(f"key{n}", entry(f"text{n}"))
    assert cache.get("key0") is None and cache.get("key3") is not None and len(cache) == 3
    assert cache.verifies(cache.get("key3"), "hash", "text3")
    assert not cache.verifies(cache.get("key3"), "hash", "another text")
    assert not cache.verifies(cache.get("key3"), "another hash", "text3")


def test_a_forked_worker_reads_on_its_own_connection(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    """A worker forked after a request (gunicorn --preload) must not share
    the parent's database connection, which would garble both: SQLAlchemy's
    fork recipe gives the child connections of its own."""
    import os
    import warnings

    _, secret = make_key()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        engine = app.extensions["keyauth"].store.engine
    opened: list[int] = []
    sa.event.listen(engine, "connect", lambda *_: opened.append(os.getpid()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        try:
            ok = all(
                app.test_client().get("/read", headers=bearer(secret)).status_code == 200
                for _ in range(3)
            )
            os._exit(0 if ok and os.getpid() in opened else 1)
        except BaseException:  # noqa: BLE001
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for _ in range(3):
        assert client.get("/read", headers=bearer(secret)).status_code == 200
