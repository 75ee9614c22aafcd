"""The service API (SPEC §2, §11): create, list, revoke, rotate, plans, signals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from blinker import Signal
from flask import Flask

import flask_keyauth
from flask_keyauth import (
    ApiKeyInfo,
    KeyAuth,
    KeyNotFound,
    key_created,
    key_revoked,
    key_rotated,
)

from .conftest import Clock, MakeKey, bearer, service_of
from .test_keys import DOCUMENTED

UTC = dt.timezone.utc


def is_utc(value: dt.datetime | None) -> bool:
    return value is not None and value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)


@contextmanager
def received(app: Flask, *signals: Signal) -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = []
    for signal in signals:

        def receiver(sender: Any, _name: str = signal.name, **extra: Any) -> None:
            seen.append((_name, sender, extra))

        receivers.append(receiver)
        signal.connect(receiver, sender=app)
    try:
        yield seen
    finally:
        for signal, receiver in zip(signals, receivers, strict=True):
            signal.disconnect(receiver, sender=app)


ALL = (key_created, key_revoked, key_rotated)


# -- create -------------------------------------------------------------------------


def test_create_returns_info_and_the_key_once(
    app: Flask, keyauth: KeyAuth, clock: Clock
) -> None:
    with app.app_context(), received(app, *ALL) as seen:
        info, secret = keyauth.create_key("acme", "CI deploys", ["write"], "test")
    assert DOCUMENTED.fullmatch(secret) and secret.startswith("sk_test_")
    assert isinstance(info, ApiKeyInfo)
    assert info.id == secret[8:20]
    assert (info.owner_id, info.name, info.environment) == ("acme", "CI deploys", "test")
    assert info.scopes == frozenset({"write", "read"})
    assert info.granted_scopes == ("write",)
    assert info.status == "active" and info.plan == "free"
    assert info.created_at == clock.now
    assert info.expires_at is None and info.revoked_at is None and info.last_used_at is None
    assert seen == [("keyauth.key-created", app, {"key": info})]


def test_create_defaults(app: Flask, keyauth: KeyAuth) -> None:
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    assert info.granted_scopes == ("read",) and info.environment == "live"
    assert secret.startswith("sk_live_")


def test_info_is_frozen_and_holds_no_secret(make_key: MakeKey) -> None:
    info, secret = make_key()
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = "active"  # type: ignore[misc]
    assert not hasattr(info, "secret_hash") and not hasattr(info, "secret")
    assert secret not in repr(info) and secret[20:52] not in repr(info)
    assert "$argon2" not in repr(info)


def test_all_datetimes_are_aware_utc(app: Flask, keyauth: KeyAuth, client: Any) -> None:
    berlin = dt.timezone(dt.timedelta(hours=2))
    expires = dt.datetime.now(berlin) + dt.timedelta(days=3)
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k", expires_at=expires)
    assert is_utc(info.created_at) and is_utc(info.expires_at)
    assert info.expires_at == expires  # the same instant, written in UTC
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        service_of(app).flush_usage()
        revoked = keyauth.revoke_key(info.id)
        listed = keyauth.list_keys("acme")[0]
        fetched = keyauth.get_key(info.id)
    for key in (revoked, listed, fetched):
        for value in (key.created_at, key.expires_at, key.revoked_at, key.last_used_at):
            assert is_utc(value), (key, value)


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local zone is not UTC (naive must still mean UTC)."""
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_naive_datetimes_are_read_as_utc(app: Flask, keyauth: KeyAuth) -> None:
    naive = dt.datetime.now(UTC).replace(tzinfo=None, microsecond=0) + dt.timedelta(days=1)
    with app.app_context():
        info, _ = keyauth.create_key("acme", "k", expires_at=naive)
        stored = keyauth.get_key(info.id)
    assert info.expires_at == naive.replace(tzinfo=UTC)
    assert stored.expires_at == naive.replace(tzinfo=UTC)
    assert is_utc(stored.expires_at)


@pytest.mark.usefixtures("far_from_utc")
def test_a_naive_past_expiry_is_refused_as_utc(app: Flask, keyauth: KeyAuth) -> None:
    # Ten minutes ago in UTC; read as local time it could be in the future.
    naive = dt.datetime.now(UTC).replace(tzinfo=None) - dt.timedelta(minutes=10)
    with app.app_context(), pytest.raises(ValueError, match="future"):
        keyauth.create_key("acme", "k", expires_at=naive)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scopes": ["read", "superuser"]}, "unknown scope 'superuser'"),
        ({"scopes": []}, "scope"),
        ({"scopes": "read"}, "scope"),
        ({"name": "x" * 129}, "128"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"environment": "prod"}, "environment"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"owner_id": ""}, "owner"),
    ],
)
def test_create_refuses_bad_arguments(
    app: Flask, keyauth: KeyAuth, kwargs: dict[str, Any], message: str
) -> None:
    arguments = {"owner_id": "acme", "name": "k", **kwargs}
    with app.app_context():
        with pytest.raises(ValueError, match=message):
            keyauth.create_key(**arguments)
        assert keyauth.list_keys("acme") == []


def test_name_of_128_characters_is_fine(app: Flask, keyauth: KeyAuth) -> None:
    with app.app_context():
        info, _ = keyauth.create_key("acme", "é" * 128)
        assert keyauth.get_key(info.id).name == "é" * 128


@pytest.mark.parametrize(
    "delta", [dt.timedelta(0), dt.timedelta(seconds=-1), -dt.timedelta(days=9)]
)
def test_expiry_must_be_in_the_future(
    app: Flask, keyauth: KeyAuth, clock: Clock, delta: dt.timedelta
) -> None:
    with app.app_context(), pytest.raises(ValueError, match="future"):
        keyauth.create_key("acme", "k", expires_at=clock.now + delta)


def test_service_api_needs_an_app_context(app: Flask, keyauth: KeyAuth) -> None:
    with pytest.raises(RuntimeError):
        keyauth.create_key("acme", "k")


# -- KeyNotFound --------------------------------------------------------------------


def test_key_not_found_is_an_exported_lookup_error() -> None:
    assert issubclass(KeyNotFound, LookupError)
    assert "KeyNotFound" in flask_keyauth.__all__


@pytest.mark.parametrize("key_id", ["A" * 12, "short", "", "x" * 200])
def test_unknown_ids_raise_key_not_found(app: Flask, keyauth: KeyAuth, key_id: str) -> None:
    with app.app_context():
        for call in (
            lambda: keyauth.get_key(key_id),
            lambda: keyauth.revoke_key(key_id),
            lambda: keyauth.rotate_key(key_id),
            lambda: service_of(app).update_key(key_id, name="n"),
        ):
            with pytest.raises(KeyNotFound) as caught:
                call()
            assert caught.value.key_id == key_id


# -- list ---------------------------------------------------------------------------


def test_list_keys_newest_first_revoked_included(
    app: Flask, keyauth: KeyAuth, clock: Clock
) -> None:
    with app.app_context():
        first, _ = keyauth.create_key("acme", "first")
        clock.advance(seconds=1)
        second, _ = keyauth.create_key("acme", "second", expires_at=clock.now + dt.timedelta(1))
        clock.advance(seconds=1)
        third, _ = keyauth.create_key("acme", "third")
        keyauth.create_key("globex", "not ours")
        keyauth.revoke_key(first.id)
        clock.advance(days=2)
        listed = keyauth.list_keys("acme")
    assert [k.id for k in listed] == [third.id, second.id, first.id]
    assert [k.status for k in listed] == ["active", "expired", "revoked"]
    assert all(isinstance(k, ApiKeyInfo) for k in listed)
    with app.app_context():
        assert keyauth.list_keys("nobody") == []


# -- revoke -------------------------------------------------------------------------


def test_revoke_then_revoke_again_is_a_no_op(
    app: Flask, keyauth: KeyAuth, client: Any, clock: Clock
) -> None:
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context(), received(app, *ALL) as seen:
        revoked = keyauth.revoke_key(info.id)
        clock.advance(hours=1)
        again = keyauth.revoke_key(info.id)
    assert revoked.status == "revoked" and revoked.revoked_at == clock.now - dt.timedelta(hours=1)
    assert again == dataclasses.replace(revoked, status="revoked")
    assert again.revoked_at == revoked.revoked_at
    assert seen == [("keyauth.key-revoked", app, {"key": revoked})]
    assert client.get("/read", headers=bearer(secret)).status_code == 401


def test_a_revoked_key_cannot_be_changed(app: Flask, keyauth: KeyAuth) -> None:
    with app.app_context():
        info, _ = keyauth.create_key("acme", "k")
        keyauth.revoke_key(info.id)
        with pytest.raises(ValueError, match="revoked"):
            service_of(app).update_key(info.id, name="back to life")
        with pytest.raises(ValueError, match="revoked"):
            keyauth.rotate_key(info.id)
        assert keyauth.get_key(info.id).status == "revoked"


# -- update -------------------------------------------------------------------------


def test_update_renames_and_changes_expiry(app: Flask, keyauth: KeyAuth, clock: Clock) -> None:
    service = service_of(app)
    with app.app_context():
        info, _ = keyauth.create_key("acme", "old", expires_at=clock.now + dt.timedelta(days=1))
        renamed = service.update_key(info.id, name="new")
        assert renamed.name == "new" and renamed.expires_at == info.expires_at
        later = clock.now + dt.timedelta(days=30)
        assert service.update_key(info.id, expires_at=later).expires_at == later
        assert service.update_key(info.id, expires_at=None).expires_at is None
        with pytest.raises(ValueError, match="future"):
            service.update_key(info.id, expires_at=clock.now - dt.timedelta(seconds=1))
        with pytest.raises(ValueError, match="128"):
            service.update_key(info.id, name="n" * 129)
        assert keyauth.get_key(info.id).name == "new"


# -- rotate -------------------------------------------------------------------------


def test_rotate_returns_a_new_key_and_keeps_the_old_for_the_grace(
    app: Flask, keyauth: KeyAuth, client: Any, clock: Clock
) -> None:
    with app.app_context():
        old, old_secret = keyauth.create_key("acme", "deploys", ["write", "read"], "test")
    start = clock.now
    with app.app_context(), received(app, *ALL) as seen:
        new, new_secret = keyauth.rotate_key(old.id, dt.timedelta(hours=2))
    assert DOCUMENTED.fullmatch(new_secret) and new_secret != old_secret
    assert new.id != old.id and new.id == new_secret[8:20]
    assert (new.owner_id, new.name, new.environment, new.granted_scopes) == (
        "acme", "deploys", "test", ("read", "write"),
    )
    assert new.expires_at is None and new.status == "active"
    assert [name for name, _, _ in seen] == ["keyauth.key-rotated"]
    _, sender, extra = seen[0]
    assert sender is app
    assert extra["new_key"] == new
    assert extra["key"].id == old.id and extra["key"].expires_at == start + dt.timedelta(hours=2)

    clock.now = start + dt.timedelta(hours=2) - dt.timedelta(seconds=1)
    assert client.get("/read", headers=bearer(old_secret)).status_code == 200
    assert client.get("/read", headers=bearer(new_secret)).status_code == 200
    clock.now = start + dt.timedelta(hours=2)
    response = client.get("/read", headers=bearer(old_secret))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "EXPIRED_API_KEY"
    assert client.get("/read", headers=bearer(new_secret)).status_code == 200


def test_rotate_default_grace_is_24_hours(app: Flask, keyauth: KeyAuth, clock: Clock) -> None:
    with app.app_context():
        old, _ = keyauth.create_key("acme", "k")
        keyauth.rotate_key(old.id)
        assert keyauth.get_key(old.id).expires_at == clock.now + dt.timedelta(hours=24)


def test_rotate_keeps_an_earlier_expiry(app: Flask, keyauth: KeyAuth, clock: Clock) -> None:
    soon = clock.now + dt.timedelta(hours=1)
    with app.app_context():
        old, _ = keyauth.create_key("acme", "k", expires_at=soon)
        new, _ = keyauth.rotate_key(old.id, dt.timedelta(days=7))
        assert keyauth.get_key(old.id).expires_at == soon
        # The new key keeps the old one's lifetime (an hour), from now.
        assert new.expires_at == clock.now + dt.timedelta(hours=1)


def test_rotate_with_zero_grace_revokes_at_once(
    app: Flask, keyauth: KeyAuth, client: Any
) -> None:
    with app.app_context():
        old, old_secret = keyauth.create_key("acme", "k")
    assert client.get("/read", headers=bearer(old_secret)).status_code == 200  # now cached
    with app.app_context(), received(app, *ALL) as seen:
        new, new_secret = keyauth.rotate_key(old.id, dt.timedelta(0))
        assert keyauth.get_key(old.id).status == "revoked"
    assert seen[0][2]["key"].status == "revoked"
    response = client.get("/read", headers=bearer(old_secret))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "INVALID_API_KEY"
    assert client.get("/read", headers=bearer(new_secret)).status_code == 200


@pytest.mark.parametrize("grace", [dt.timedelta(seconds=-1), dt.timedelta(days=-1)])
def test_negative_grace_is_refused_and_changes_nothing(
    app: Flask, keyauth: KeyAuth, grace: dt.timedelta
) -> None:
    with app.app_context(), received(app, *ALL) as seen:
        old, _ = keyauth.create_key("acme", "k")
        seen.clear()
        with pytest.raises(ValueError, match="negative"):
            keyauth.rotate_key(old.id, grace)
        assert [k.id for k in keyauth.list_keys("acme")] == [old.id]
        assert keyauth.get_key(old.id).expires_at is None
    assert seen == []


def test_an_absurd_grace_is_a_value_error(app: Flask, keyauth: KeyAuth) -> None:
    with app.app_context():
        old, _ = keyauth.create_key("acme", "k")
        with pytest.raises(ValueError, match="grace"):
            keyauth.rotate_key(old.id, dt.timedelta(days=999_999_999))
        assert [k.id for k in keyauth.list_keys("acme")] == [old.id]


def test_an_expired_key_cannot_be_rotated(app: Flask, keyauth: KeyAuth, clock: Clock) -> None:
    with app.app_context():
        old, _ = keyauth.create_key("acme", "k", expires_at=clock.now + dt.timedelta(hours=1))
        clock.advance(hours=1)
        with pytest.raises(ValueError, match="expired"):
            keyauth.rotate_key(old.id)


def test_rotating_keeps_the_plan(app: Flask, keyauth: KeyAuth) -> None:
    with app.app_context():
        keyauth.set_plan("acme", "starter")
        old, _ = keyauth.create_key("acme", "k")
        new, _ = keyauth.rotate_key(old.id)
    assert old.plan == new.plan == "starter"


# -- plans --------------------------------------------------------------------------


def test_set_plan(app: Flask, keyauth: KeyAuth) -> None:
    with app.app_context():
        info, _ = keyauth.create_key("acme", "k")
        assert info.plan == "free"
        keyauth.set_plan("acme", "professional")
        assert keyauth.get_key(info.id).plan == "professional"
        keyauth.set_plan("acme", "enterprise", limits="5000/hour;100000/day")
        assert keyauth.get_key(info.id).plan == "enterprise"
        assert service_of(app).get_plan("acme") == ("enterprise", ("5000/hour", "100000/day"))
        keyauth.set_plan("acme", "free")
        assert service_of(app).get_plan("acme") == ("free", ("100/hour", "10000/day"))


@pytest.mark.parametrize(
    ("plan", "limits", "message"),
    [
        ("platinum", None, "unknown plan 'platinum'"),
        ("enterprise", None, "limits"),
        ("enterprise", "", "limits"),
        ("enterprise", "lots", "cannot be parsed"),
        ("", None, "unknown plan"),
    ],
)
def test_set_plan_refuses_bad_arguments(
    app: Flask, keyauth: KeyAuth, plan: str, limits: str | None, message: str
) -> None:
    with app.app_context():
        with pytest.raises(ValueError, match=message):
            keyauth.set_plan("acme", plan, limits)
        assert service_of(app).get_plan("acme") == ("free", ("100/hour", "10000/day"))
