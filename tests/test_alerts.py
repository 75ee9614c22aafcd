"""The README's alerting recipe (example/alerts.py) on real requests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from example.alerts import Burst, install, usage_spikes
from flask_keyauth import KeyAuth

from .conftest import bearer, dispose, make_app, service_of

FORGED = "sk_live_" + "A" * 44


@pytest.fixture
def alerting(tmp_path: Any) -> Iterator[tuple[Flask, KeyAuth, list[str]]]:
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 'alerts.db'}",
        KEYAUTH_PLANS={"free": "3/hour"},
        KEYAUTH_FAILED_AUTH_LIMIT="1000/minute",
    )
    lines: list[str] = []
    install(app, lines.append, failures=5, failure_seconds=60)
    yield app, keyauth, lines
    dispose(app, db)


def test_burst_counts_once_per_burst_in_a_sliding_window() -> None:
    now = [0.0]
    burst = Burst(3, 10, clock=lambda: now[0])
    assert [burst.hit("a") for _ in range(4)] == [False, False, True, False]
    assert burst.hit("b") is False  # per subject
    now[0] = 11
    assert [burst.hit("a") for _ in range(3)] == [False, False, True]


def test_a_burst_of_failures_from_one_address_alerts_once(alerting: Any) -> None:
    app, _, lines = alerting
    client = app.test_client()
    for _ in range(12):
        assert client.get("/read", headers={"X-API-Key": FORGED}).status_code == 401
    assert len(lines) == 1
    assert "5 failed API key attempts from 127.0.0.1" in lines[0]
    assert FORGED not in lines[0]


def test_a_spent_plan_alerts_once_and_a_revocation_alerts(alerting: Any) -> None:
    app, keyauth, lines = alerting
    with app.app_context():
        info, secret = keyauth.create_key("acme", "deploy bot")
    client = app.test_client()
    statuses = [client.get("/read", headers=bearer(secret)).status_code for _ in range(6)]
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert lines == [f"owner acme hit its plan limit 3 per 1 hour (key {info.id})"]
    with app.app_context():
        keyauth.revoke_key(info.id)
    assert lines[-1] == f"key {info.redacted} ('deploy bot') of acme was revoked"
    assert all(secret not in line for line in lines)


def test_usage_spikes_compare_today_with_the_days_before(alerting: Any) -> None:
    app, keyauth, _ = alerting
    service = service_of(app)
    with app.app_context():
        quiet, _ = keyauth.create_key("acme", "quiet")
        busy, _ = keyauth.create_key("acme", "busy")
        today = service.clock()
        for days_ago in range(1, 8):
            for key_id in (quiet.id, busy.id):
                service.usage.record(key_id, today - dt.timedelta(days=days_ago))
        for _ in range(150):
            service.usage.record(busy.id, today)
        for _ in range(2):
            service.usage.record(quiet.id, today)
        service.flush_usage()
        spikes = usage_spikes(keyauth, "acme")
    assert len(spikes) == 1
    assert spikes[0].startswith(f"key {busy.redacted} of acme: 150 requests today")


def test_the_burst_counter_stays_bounded_under_a_flood_of_addresses() -> None:
    from example.alerts import Burst

    now = [0.0]
    burst = Burst(threshold=3, seconds=60, clock=lambda: now[0], max_subjects=1000)
    for n in range(50_000):
        burst.hit(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(burst) == 1000
    # A subject keeps at most `threshold` times, and still alerts once per burst.
    assert [burst.hit("192.0.2.1") for _ in range(10)] == [False, False, True] + [False] * 7
    now[0] += 61
    assert [burst.hit("192.0.2.1") for _ in range(3)] == [False, False, True]


def test_leaks_and_reminders_reach_the_alerts(alerting: Any) -> None:
    app, keyauth, lines = alerting
    service = service_of(app)
    with app.app_context():
        info, secret = keyauth.create_key(
            "acme", "ci", expires_at=service.clock() + dt.timedelta(days=1, hours=23)
        )
    result = app.test_cli_runner().invoke(args=["keys", "remind"])
    assert result.exit_code == 0, result.output
    assert lines == [f"key {info.redacted} ('ci') of acme expires in 2 day(s): rotate it"]
    result = app.test_cli_runner().invoke(
        args=["keys", "leaked", "-", "--url", "https://gist.example/1"], input=secret
    )
    assert result.exit_code == 0, result.output
    assert lines[1:] == [
        f"key {info.redacted} ('ci') of acme was found in https://gist.example/1; it is revoked",
        f"key {info.redacted} ('ci') of acme was revoked",
    ]
    assert all(secret not in line for line in lines)


def test_the_demo_logs_its_reminders(tmp_path: Any, monkeypatch: Any, caplog: Any) -> None:
    from example.app import create_app

    monkeypatch.chdir(tmp_path)
    app = create_app(
        {
            "SECRET_KEY": "demo-test",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.db'}",
            "RATELIMIT_STORAGE_URI": "memory://",
            "KEYAUTH_ARGON2_TIME_COST": 1,
            "KEYAUTH_ARGON2_MEMORY_COST": 8,
        }
    )
    service = service_of(app)
    with app.app_context():
        info, _ = service.create_key(
            "acme", "soon", expires_at=service.clock() + dt.timedelta(hours=30)
        )
    with caplog.at_level("WARNING"):
        result = app.test_cli_runner().invoke(args=["keys", "remind"])
    assert result.exit_code == 0, result.output
    assert f"key {info.redacted} ('soon') of acme expires in 2 day(s)" in caplog.text
    service.usage.take()
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
