"""The rules of key management that hold whoever asks (SPEC §7, §11): what
an admin key may hand out, one successor per rotation, the lifetime a
rotation keeps, keys that can no longer change, the cap on keys per owner,
signal receivers that fail after a commit, owner ids, and the JSON API's
errors through ``@keyauth.error_handler``."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import key_created, key_rotated, keys
from flask_keyauth.errors import KeyAuthError

from .conftest import Clock, argon2_runs, bearer, install_clock
from .test_api import Host, build_host, drop


@pytest.fixture
def host(database_url: str) -> Iterator[Host]:
    made = build_host(database_url, KEYAUTH_SCOPES={
        "read": [], "write": ["read"], "admin": ["write"], "billing": [],
    })
    yield made
    drop(made)


def count_keys(host: Host, owner: str = "acme") -> int:
    with host.app.app_context():
        return len(host.service.list_keys(owner))


# -- an admin key hands out no more than it holds ---------------------------------


def test_a_test_admin_key_cannot_mint_a_live_key(host: Host) -> None:
    _, admin = host.key(["admin"], environment="test")
    before = count_keys(host)
    response = host.call(
        "POST", "/keys", json={"name": "x", "scopes": ["read"], "environment": "live"},
        headers=bearer(admin),
    )
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert count_keys(host) == before
    same_env = host.call(
        "POST", "/keys", json={"name": "x", "scopes": ["admin"], "environment": "test"},
        headers=bearer(admin),
    )
    assert same_env.status_code == 201


def test_an_admin_key_cannot_mint_or_rotate_a_scope_it_does_not_hold(host: Host) -> None:
    _, admin = host.key(["admin"])
    before = count_keys(host)
    minted = host.call(
        "POST", "/keys", json={"name": "x", "scopes": ["billing"]}, headers=bearer(admin)
    )
    assert minted.status_code == 403 and count_keys(host) == before
    billing, _ = host.key(["billing"])
    rotated = host.call("POST", f"/keys/{billing.id}/rotate", json={}, headers=bearer(admin))
    assert rotated.status_code == 403
    assert "secret" not in rotated.get_json()
    assert count_keys(host) == before + 1
    # The session owner may do both.
    csrf = host.sign_in()
    assert host.call("POST", f"/keys/{billing.id}/rotate", json={}, headers=csrf).status_code == 201


# -- rotation ---------------------------------------------------------------------


def test_a_rotation_keeps_the_old_keys_lifetime(host: Host) -> None:
    clock = install_clock(host.app)
    old, _ = host.key(["read"], expires_at=clock.now + dt.timedelta(days=30))
    clock.advance(days=10)
    with host.app.app_context():
        new, _ = host.keyauth.rotate_key(old.id)
        assert new.expires_at == clock.now + dt.timedelta(days=30)
        never, _ = host.service.rotate_key(new.id, expires_at=None)
        assert never.expires_at is None


def test_concurrent_rotations_give_one_successor(host: Host) -> None:
    old, _ = host.key(["read"])
    outcomes: list[str] = []
    barrier = threading.Barrier(5)

    def rotate() -> None:
        barrier.wait()
        with host.app.app_context():
            try:
                host.keyauth.rotate_key(old.id)
                outcomes.append("rotated")
            except ValueError:
                outcomes.append("refused")

    threads = [threading.Thread(target=rotate) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["refused"] * 4 + ["rotated"]
    with host.app.app_context():
        active = [k for k in host.service.list_keys("acme") if k.status == "active"]
    assert len(active) == 2  # the old one in its grace, and one successor
    response = host.call("POST", f"/keys/{old.id}/rotate", json={}, headers=host.sign_in())
    assert response.status_code == 400


def test_an_expired_key_cannot_be_revived(host: Host) -> None:
    clock = install_clock(host.app)
    info, _ = host.key(["read"], expires_at=clock.now + dt.timedelta(hours=1))
    clock.advance(hours=2)
    response = host.call(
        "PATCH", f"/keys/{info.id}", json={"expires_at": None}, headers=host.sign_in()
    )
    assert response.status_code == 400
    with host.app.app_context():
        assert host.keyauth.get_key(info.id).status == "expired"


# -- the cap on keys per owner ------------------------------------------------------


def test_keys_per_owner_are_capped(database_url: str) -> None:
    host = build_host(database_url, KEYAUTH_MAX_KEYS_PER_OWNER=2)
    try:
        first, _ = host.key(["read"])
        host.key(["read"])
        with host.app.app_context(), pytest.raises(ValueError, match="MAX_KEYS_PER_OWNER"):
            host.keyauth.create_key("acme", "third")
        response = host.call("POST", "/keys", json={"name": "third"}, headers=host.sign_in())
        assert response.status_code == 409
        assert response.get_json()["error"]["code"] == "KEY_LIMIT_REACHED"
        with host.app.app_context():
            host.keyauth.revoke_key(first.id)  # revoked keys do not count
            host.keyauth.create_key("acme", "third")
            host.keyauth.create_key("globex", "another owner's")
    finally:
        drop(host)


# -- receivers that fail after the commit -------------------------------------------


def test_a_failing_receiver_never_loses_a_committed_key(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Flask, **extra: Any) -> None:
        raise RuntimeError("receiver bug")

    with key_created.connected_to(broken, host.app), key_rotated.connected_to(
        broken, host.app
    ), caplog.at_level(logging.ERROR, logger="flask_keyauth"):
        created = host.call("POST", "/keys", json={"name": "k"}, headers=host.sign_in())
        assert created.status_code == 201
        secret = created.get_json()["secret"]
        key_id = created.get_json()["key"]["id"]
        rotated = host.call(
            "POST", f"/keys/{key_id}/rotate", json={"grace_seconds": 0},
            headers=host.sign_in(),
        )
    assert rotated.status_code == 201
    new_secret = rotated.get_json()["secret"]
    client = host.app.test_client()
    assert client.get("/read", headers=bearer(new_secret)).status_code == 200
    assert client.get("/read", headers=bearer(secret)).status_code == 401
    failures = [r for r in caplog.records if "receiver" in r.getMessage()]
    assert len(failures) == 2
    assert not any(secret in r.getMessage() or new_secret in r.getMessage() for r in caplog.records)


# -- owner ids ------------------------------------------------------------------------


def test_owner_ids_are_1_to_128_printable_characters(host: Host) -> None:
    longest = "o" * 128
    with host.app.app_context():
        info, secret = host.keyauth.create_key(longest, "k")
        for bad in ("", "o" * 129, "tab\there", "nul\x00"):
            with pytest.raises(ValueError, match="owner_id"):
                host.keyauth.create_key(bad, "k")
        # Its actor (session:<owner>) and events fit every column.
        host.service.revoke_key(info.id, actor=f"session:{longest}")
        host.keyauth.set_plan(longest, "free")
    assert host.app.test_client().get("/read", headers=bearer(secret)).status_code == 401


def test_an_owner_loader_answering_empty_means_nobody(host: Host) -> None:
    @host.keyauth.owner_loader
    def nobody() -> str:
        return ""

    assert host.call("GET", "/keys").status_code == 401
    assert host.client.get("/settings/api-keys/").status_code == 401


# -- the JSON API's errors through the host's handler ----------------------------------


def test_the_error_handler_shapes_the_json_apis_errors(host: Host) -> None:
    @host.keyauth.error_handler
    def shaped(error: KeyAuthError) -> Any:
        return {"problem": error.error_code, "status": error.code}, error.status

    try:
        missing = host.call("GET", "/keys")
        assert missing.status_code == 401
        assert missing.get_json() == {"problem": "MISSING_API_KEY", "status": 401}
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        unknown = host.call("GET", "/keys/AAAAAAAAAAAA", headers=bearer(host.key()[1]))
        assert unknown.get_json() == {"problem": "NOT_FOUND", "status": 404}
    finally:
        host.keyauth.error_handler_callback = None


# -- no existence oracle across environments ----------------------------------------


def test_a_known_id_under_the_other_environment_costs_an_argon2_run(
    app: Flask, make_key: Any, clock: Clock
) -> None:
    info, secret = make_key()
    parsed = keys.parse(secret)
    assert parsed is not None
    head = f"sk_test_{parsed.key_id}{parsed.secret}"
    moved = head + keys.checksum(head)
    with argon2_runs(app) as runs:
        response = app.test_client().get("/read", headers=bearer(moved))
    assert response.status_code == 401
    assert len(runs) == 1  # as an unknown id: no faster answer to tell it exists
