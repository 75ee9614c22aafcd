"""Credentials under attack (OWASP API2, ASVS V6/V7): an unknown id and a
wrong secret cannot be told apart, by body or by time; validity ends at
``expires_at`` in UTC whatever zone the process or the database session
runs in; a rotation's grace ends for every process at once.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_keyauth import keys

from ..conftest import AppFactory, bearer, install_clock, make_app, service_of
from ..test_auth import forge

UTC = dt.timezone.utc


# -- no timing oracle ---------------------------------------------------------------


@pytest.fixture
def real_cost_app(tmp_path: Path) -> Iterator[tuple[Flask, str]]:
    # The default (OWASP minimum) argon2 cost, as deployed: with the cheap
    # test profile, argon2 would be too fast for a missing run to show.
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 't.db'}",
        KEYAUTH_ARGON2_TIME_COST=2,
        KEYAUTH_ARGON2_MEMORY_COST=19456,
        KEYAUTH_FAILED_AUTH_LIMIT="1000000/minute",
    )
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    yield app, secret
    with app.app_context():
        db.engine.dispose()


def presented(kind: str, secret: str) -> str:
    other = keys.random_base62(keys.SECRET_LENGTH)
    if kind == "unknown id":
        return forge("sk", "live", keys.random_base62(keys.ID_LENGTH), other)
    if kind == "wrong secret":
        return forge("sk", "live", secret[8:20], other)
    return secret[:-1] + ("0" if secret[-1] != "0" else "1")  # bad checksum: no argon2


def sample(app: Flask, secret: str, rounds: int) -> dict[str, list[float]]:
    """Interleaved timings, in a random order each round, so drift in the
    machine's load falls on every kind alike."""
    client = app.test_client()
    timings: dict[str, list[float]] = {"unknown id": [], "wrong secret": [], "malformed": []}
    for _ in range(rounds):
        kinds = list(timings)
        random.shuffle(kinds)
        for kind in kinds:
            headers = bearer(presented(kind, secret))
            started = time.perf_counter()
            response = client.get("/read", headers=headers)
            timings[kind].append(time.perf_counter() - started)
            assert response.status_code == 401
    return timings


def auc(a: list[float], b: list[float]) -> float:
    """P(a sample of ``a`` is slower than one of ``b``): 0.5 when alike."""
    wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    return wins / (len(a) * len(b))


def test_unknown_id_and_wrong_secret_take_the_same_time(real_cost_app: tuple[Flask, str]) -> None:
    app, secret = real_cost_app
    sample(app, secret, 3)  # warm up
    verdicts = []
    # A shared, noisy machine: a verdict stands if one of three runs agrees.
    for _ in range(3):
        t = sample(app, secret, 40)
        unknown, wrong = statistics.median(t["unknown id"]), statistics.median(t["wrong secret"])
        malformed = statistics.median(t["malformed"])
        # Power: the measurement does see one argon2 run missing.
        powered = malformed < 0.5 * min(unknown, wrong)
        gap = abs(unknown - wrong) / min(unknown, wrong)
        overlap = auc(t["unknown id"], t["wrong secret"])
        verdicts.append((powered, gap, overlap, unknown, wrong, malformed))
        if powered and gap < 0.25 and 0.25 < overlap < 0.75:
            return
    pytest.fail(f"timings tell unknown ids from wrong secrets: {verdicts}")


def test_unknown_id_and_wrong_secret_answer_the_same_bytes(
    real_cost_app: tuple[Flask, str],
) -> None:
    app, secret = real_cost_app
    client = app.test_client()
    answers = set()
    for kind in ("unknown id", "wrong secret") * 3:
        response = client.get("/read", headers=bearer(presented(kind, secret)))
        answers.add((response.status_code, response.get_data(), tuple(sorted(response.headers))))
    assert len(answers) == 1


# -- expiry in UTC, whatever the zones -------------------------------------------------


@pytest.fixture(params=["Pacific/Kiritimati", "America/Los_Angeles"])
def process_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The process runs in a zone far from UTC (+14:00 or -08:00/-07:00)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    assert time.timezone != 0
    yield request.param
    monkeypatch.undo()
    time.tzset()


def zoned_app(database_url: str, app_factory: AppFactory, zone: str) -> tuple[Flask, Any]:
    config: dict[str, Any] = {}
    if database_url.startswith("postgresql"):
        # The database session runs in a zone far from UTC too.
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            "connect_args": {"options": f"-c TimeZone={zone}"}
        }
    app, _, keyauth = app_factory(**config)
    return app, keyauth


def raw_expiry(app: Flask, key_id: str) -> Any:
    with app.app_context():
        engine = app.extensions["keyauth"].store.engine
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                return conn.execute(sa.text(
                    "SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
                    "FROM keyauth_api_keys WHERE key_id = :k"), {"k": key_id}).scalar_one()
            return conn.execute(sa.text(
                "SELECT expires_at FROM keyauth_api_keys WHERE key_id = :k"), {"k": key_id}
            ).scalar_one()


def test_expiry_boundary_is_utc_in_any_process_and_session_zone(
    database_url: str, app_factory: AppFactory, process_zone: str
) -> None:
    app, keyauth = zoned_app(database_url, app_factory, process_zone)
    clock = install_clock(app, dt.datetime(2026, 3, 8, 9, 30, 0, 250_000, tzinfo=UTC))
    # Given in a +05:30 zone: the same instant as 2026-03-08 10:00:00.25 UTC
    # (a DST change day in Los Angeles, for good measure).
    india = dt.timezone(dt.timedelta(hours=5, minutes=30))
    expires = dt.datetime(2026, 3, 8, 15, 30, 0, 250_000, tzinfo=india)
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k", expires_at=expires)
    assert info.expires_at == expires and info.expires_at.utcoffset() == dt.timedelta(0)
    assert str(raw_expiry(app, info.id)).startswith("2026-03-08 10:00:00.25")

    client = app.test_client()
    clock.now = expires - dt.timedelta(microseconds=1)
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    clock.now = expires
    response = client.get("/read", headers=bearer(secret))
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "EXPIRED_API_KEY"
    assert error["details"] == {"expired_at": "2026-03-08T10:00:00Z"}

    # Another process (its own cache), reading the row from the database.
    other, _ = zoned_app(database_url, app_factory, process_zone)
    other_clock = install_clock(other, expires - dt.timedelta(microseconds=1))
    assert other.test_client().get("/read", headers=bearer(secret)).status_code == 200
    other_clock.now = expires
    assert other.test_client().get("/read", headers=bearer(secret)).status_code == 401
    with other.app_context():
        assert service_of(other).get_key(info.id).status == "expired"


def test_expiry_with_the_real_clock_in_a_far_zone(
    database_url: str, app_factory: AppFactory, process_zone: str
) -> None:
    app, keyauth = zoned_app(database_url, app_factory, process_zone)
    now = dt.datetime.now(UTC)
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k", expires_at=now + dt.timedelta(seconds=2))
        # A naive datetime is UTC, not the process's local time.
        local_naive = dt.datetime.now() + dt.timedelta(hours=1)  # noqa: DTZ005 - on purpose
        if time.timezone > 0:  # west of UTC: local naive + 1h is in the UTC past
            with pytest.raises(ValueError, match="future"):
                keyauth.create_key("acme", "k", expires_at=local_naive)
        else:
            late = keyauth.create_key("acme", "k", expires_at=local_naive)[0]
            assert late.expires_at == local_naive.replace(tzinfo=UTC)
    client = app.test_client()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    time.sleep(max(0.0, (info.expires_at - dt.datetime.now(UTC)).total_seconds()) + 0.05)
    assert client.get("/read", headers=bearer(secret)).get_json()["error"]["code"] == (
        "EXPIRED_API_KEY"
    )


# -- rotation grace, seen by another process ----------------------------------------


def test_rotation_grace_ends_at_its_end_in_every_process(
    database_url: str, app_factory: AppFactory, process_zone: str
) -> None:
    first, keyauth = zoned_app(database_url, app_factory, process_zone)
    second, _ = zoned_app(database_url, app_factory, process_zone)
    start = dt.datetime(2026, 11, 1, 8, 59, 59, tzinfo=UTC)
    clocks = [install_clock(first, start), install_clock(second, start)]
    with first.app_context():
        old, old_secret = keyauth.create_key("acme", "k")
    for app in (first, second):  # both processes have verified (cached) it
        assert app.test_client().get("/read", headers=bearer(old_secret)).status_code == 200
    with first.app_context():
        new, new_secret = keyauth.rotate_key(old.id, dt.timedelta(minutes=90))
    end = start + dt.timedelta(minutes=90)
    for clock in clocks:
        clock.now = end - dt.timedelta(microseconds=1)
    for app in (first, second):
        assert app.test_client().get("/read", headers=bearer(old_secret)).status_code == 200
    for clock in clocks:
        clock.now = end
    for app in (first, second):
        client = app.test_client()
        assert client.get("/read", headers=bearer(old_secret)).get_json()["error"]["code"] == (
            "EXPIRED_API_KEY"
        )
        assert client.get("/read", headers=bearer(new_secret)).status_code == 200
    # A second rotation, grace 0: revoked at once in the other process too.
    with first.app_context():
        _, newest = keyauth.rotate_key(new.id, dt.timedelta(0))
    response = second.test_client().get("/read", headers=bearer(new_secret))
    assert response.get_json()["error"]["code"] == "INVALID_API_KEY"
    assert second.test_client().get("/read", headers=bearer(newest)).status_code == 200


# -- rehash on use -------------------------------------------------------------------


def test_old_parameters_are_rehashed_once_under_parallel_first_use(
    app_factory: AppFactory,
) -> None:
    import threading

    old, _, old_keyauth = app_factory()
    with old.app_context():
        _, secret = old_keyauth.create_key("acme", "k")
    new, _, _ = app_factory(KEYAUTH_ARGON2_TIME_COST=2, KEYAUTH_ARGON2_MEMORY_COST=16,
                            KEYAUTH_FAILED_AUTH_LIMIT="1000/minute")
    hasher = service_of(new).hasher
    hashed: list[int] = []
    original = hasher.hash

    def slow_hash(text: str) -> str:
        hashed.append(1)
        time.sleep(0.05)  # argon2 at deployment cost takes about this long
        return original(text)

    hasher.hash = slow_hash  # type: ignore[method-assign]
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def first_use() -> None:
        barrier.wait()
        statuses.append(new.test_client().get("/read", headers=bearer(secret)).status_code)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * 8
    assert hashed == [1]
