"""``flask keys remind``: expiry and rotation reminders, once per key and
kind across runs and hosts (SPEC §14)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth, key_expiring, key_rotation_due

from .conftest import AppFactory, Clock, install_clock, service_of


@pytest.fixture
def reminded() -> Iterator[list[tuple[str, str, int]]]:
    """(signal, key id, days) of every reminder signal sent."""
    seen: list[tuple[str, str, int]] = []

    def expiring(sender: Any, key: Any, days_left: int) -> None:
        seen.append(("key_expiring", key.id, days_left))

    def rotation(sender: Any, key: Any, age_days: int) -> None:
        seen.append(("key_rotation_due", key.id, age_days))

    key_expiring.connect(expiring)
    key_rotation_due.connect(rotation)
    yield seen
    key_expiring.disconnect(expiring)
    key_rotation_due.disconnect(rotation)


def remind(app: Flask, *args: str) -> list[str]:
    result = app.test_cli_runner().invoke(args=["keys", "remind", *args])
    assert result.exit_code == 0, result.output
    return list(result.stdout.splitlines())


def test_each_reminder_goes_out_once(
    app: Flask, keyauth: KeyAuth, clock: Clock, reminded: list[Any]
) -> None:
    start = clock.now
    with app.app_context():
        old, _ = keyauth.create_key("acme", "old, never expires")
        clock.advance(days=95)
        soon, _ = keyauth.create_key("acme", "soon", expires_at=clock.now + dt.timedelta(days=3))
        later, _ = keyauth.create_key("acme", "later", expires_at=clock.now + dt.timedelta(days=30))
        gone, _ = keyauth.create_key("acme", "revoked", expires_at=clock.now + dt.timedelta(days=1))
        keyauth.revoke_key(gone.id)
    lines = remind(app)
    assert reminded == [("key_rotation_due", old.id, 95), ("key_expiring", soon.id, 3)]
    assert lines == [
        f"key_rotation_due {old.id} {old.redacted} owner acme: is 95 days old: rotate it",
        f"key_expiring {soon.id} {soon.redacted} owner acme: expires in 3 day(s), at "
        f"{(start + dt.timedelta(days=98)).strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    # Again: nothing, on this host as on any other.
    assert remind(app) == []
    assert len(reminded) == 2
    with app.app_context():
        trail = service_of(app).events("acme")
    assert sorted(e.detail for e in trail if e.action == "reminded") == [
        f"key_expiring {(start + dt.timedelta(days=98)).strftime('%Y-%m-%dT%H:%M:%SZ')}",
        "key_rotation_due",
    ]
    # A longer horizon reaches the 30-day key; a moved expiry is a new one.
    assert [line.split()[1] for line in remind(app, "--days", "30")] == [later.id]
    with app.app_context():
        service_of(app).update_key(soon.id, expires_at=clock.now + dt.timedelta(days=5))
    assert [line.split()[:2] for line in remind(app)] == [["key_expiring", soon.id]]
    assert reminded[-1] == ("key_expiring", soon.id, 5)


def test_another_host_sends_nothing_already_sent(
    app: Flask, keyauth: KeyAuth, app_factory: AppFactory, reminded: list[Any]
) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    with app.app_context():
        key, _ = keyauth.create_key("acme", "k", expires_at=now + dt.timedelta(days=2))
    other, _, _ = app_factory()
    install_clock(other, now)
    assert len(remind(app)) == 1
    assert remind(other) == []
    assert [k for _, k, _ in reminded] == [key.id]


def test_a_rotated_key_is_not_reminded_its_successor_is(
    app: Flask, keyauth: KeyAuth, clock: Clock, reminded: list[Any]
) -> None:
    with app.app_context():
        old, _ = keyauth.create_key("acme", "k", expires_at=clock.now + dt.timedelta(days=200))
        clock.advance(days=100)
        new, _ = keyauth.rotate_key(old.id)  # the old key now ends in a day
    assert remind(app) == []
    assert reminded == []
    clock.advance(days=95)
    lines = remind(app)
    assert [line.split()[:2] for line in lines] == [["key_rotation_due", new.id]]


def test_days_must_be_a_whole_number(app: Flask) -> None:
    for bad in ("-1", "soon"):
        result = app.test_cli_runner().invoke(args=["keys", "remind", "--days", bad])
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1
    with app.app_context(), pytest.raises(ValueError, match="days"):
        service_of(app).remind(-1)
