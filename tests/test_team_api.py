"""People, teams and least privilege through the service and the JSON API
(SPEC §12): who acted, viewers, disabled keys, allowed addresses,
descriptions and metadata, scope descriptions and the longest lifetime."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import bearer as auth
from .conftest import dispose, install_clock, make_app, session_people
from .faults.servers import ThrowawayRedis
from .test_api import Host, build_host, drop

SCOPES = {
    "read": {"implies": [], "description": "Read entities"},
    "write": {"implies": ["read"], "description": "Create and change entities"},
    "admin": ["write"],  # the list form keeps working
}


@pytest.fixture
def host(database_url: str) -> Iterator[Host]:
    made = build_host(database_url, KEYAUTH_SCOPES=SCOPES)
    session_people(made.keyauth)
    yield made
    drop(made)


def sign_in(host: Host, person: str, role: str = "manager") -> dict[str, str]:
    csrf = host.sign_in("acme")
    with host.client.session_transaction() as sess:
        sess["person"], sess["role"] = person, role
    return csrf


# -- who did it ----------------------------------------------------------------------


def test_events_and_keys_record_the_person(host: Host) -> None:
    csrf = sign_in(host, "alice@acme.test")
    created = host.call("POST", "/keys", json={"name": "deploy"}, headers=csrf).get_json()["key"]
    assert created["created_by"] == "alice@acme.test"
    csrf = sign_in(host, "bob@acme.test")
    host.call("PATCH", f"/keys/{created['id']}", json={"name": "deploys"}, headers=csrf)
    host.call("POST", f"/keys/{created['id']}/disable", headers=csrf)
    events = host.call("GET", "/events", headers=csrf).get_json()["events"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("disabled", "bob@acme.test"),
        ("renamed", "bob@acme.test"),
        ("created", "alice@acme.test"),
    ]
    assert events[1]["detail"] == "deploy → deploys"


def test_without_a_person_the_actor_is_the_session_or_the_key(database_url: str) -> None:
    host = build_host(database_url)
    try:
        csrf = host.sign_in("acme")
        made = host.call("POST", "/keys", json={"name": "k"}, headers=csrf).get_json()["key"]
        assert made["created_by"] == "session:acme"
        admin, secret = host.key(["admin"])
        by_key = host.call("POST", "/keys", json={"name": "k2"}, headers=auth(secret))
        assert by_key.get_json()["key"]["created_by"] == f"key:{admin.id}"
    finally:
        drop(host)


def test_an_actor_of_any_length_fits(host: Host) -> None:
    csrf = sign_in(host, "x" * 5000)
    created = host.call("POST", "/keys", json={"name": "k"}, headers=csrf)
    assert created.status_code == 201
    actor = created.get_json()["key"]["created_by"]
    assert len(actor) == 255 and actor.endswith("…")


# -- viewers ------------------------------------------------------------------------------


def test_a_viewer_sees_everything_and_changes_nothing(host: Host) -> None:
    info, _ = host.key(["read"])
    csrf = sign_in(host, "carol@acme.test", role="viewer")
    for path in ("/keys", f"/keys/{info.id}", f"/keys/{info.id}/usage", "/events"):
        assert host.call("GET", path, headers=csrf).status_code == 200, path
    before = host.snapshot()
    for method, path, body in (
        ("POST", "/keys", {"name": "x"}),
        ("PATCH", f"/keys/{info.id}", {"name": "y"}),
        ("DELETE", f"/keys/{info.id}", None),
        ("POST", f"/keys/{info.id}/rotate", {}),
        ("POST", f"/keys/{info.id}/disable", None),
        ("POST", f"/keys/{info.id}/enable", None),
    ):
        response = host.call(method, path, json=body, headers=csrf)
        assert response.status_code == 403, (method, path)
        assert response.get_json()["error"]["code"] == "FORBIDDEN"
    assert host.snapshot() == before


# -- disabled keys ------------------------------------------------------------------------


def test_a_disabled_key_is_refused_in_every_worker_and_enabled_at_once(
    redis_server: ThrowawayRedis, database_url: str
) -> None:
    prefix = f"d{uuid.uuid4().hex[:6]}"
    (one, db_one, ka_one), (two, db_two, ka_two) = (
        make_app(database_url, RATELIMIT_STORAGE_URI=redis_server.url, RATELIMIT_KEY_PREFIX=prefix)
        for _ in range(2)
    )
    try:
        with one.app_context():
            info, secret = ka_one.create_key("acme", "k")
        client = one.test_client()
        for _ in range(2):
            assert client.get("/read", headers=auth(secret)).status_code == 200
        with two.app_context():
            assert ka_two.service.disable_key(info.id).status == "disabled"
        refused = client.get("/read", headers=auth(secret))
        assert refused.status_code == 401
        assert refused.get_json()["error"]["code"] == "INVALID_API_KEY"
        with two.app_context():
            assert ka_two.service.enable_key(info.id).status == "active"
        assert client.get("/read", headers=auth(secret)).status_code == 200
        with two.app_context():
            ka_two.revoke_key(info.id)
            with pytest.raises(ValueError, match="revoked"):
                ka_two.service.enable_key(info.id)
    finally:
        for app, db in ((one, db_one), (two, db_two)):
            dispose(app, db)


# -- allowed addresses ----------------------------------------------------------------------


def test_allowed_ips_refuse_other_addresses_before_the_plan_is_counted(host: Host) -> None:
    with host.app.app_context():
        _, secret = host.service.create_key(
            "acme", "office", ["read"], allowed_ips=["203.0.113.0/24", "2001:db8::1"]
        )
    client = host.app.test_client()

    def from_(address: str) -> Any:
        return client.get("/read", headers=auth(secret), environ_base={"REMOTE_ADDR": address})

    assert from_("203.0.113.9").headers["X-RateLimit-Remaining"] == "99"
    refused = from_("198.51.100.1")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "IP_NOT_ALLOWED"
    assert "X-RateLimit-Remaining" not in refused.headers
    assert from_("2001:db8::1").headers["X-RateLimit-Remaining"] == "98"  # not counted above


def test_allowed_ips_are_validated_and_normalised(host: Host) -> None:
    csrf = sign_in(host, "alice")
    bad = host.call("POST", "/keys", json={"name": "k", "allowed_ips": ["not an ip"]}, headers=csrf)
    assert bad.status_code == 400 and "allowed_ips" in bad.get_json()["error"]["details"]["fields"]
    good = host.call(
        "POST", "/keys", json={"name": "k", "allowed_ips": ["10.1.2.3/8", "::1"]}, headers=csrf
    )
    assert good.get_json()["key"]["allowed_ips"] == ["10.0.0.0/8", "::1/128"]


# -- descriptions and metadata ----------------------------------------------------------------


def test_description_and_metadata_have_their_limits(host: Host) -> None:
    csrf = sign_in(host, "alice")
    made = host.call(
        "POST", "/keys",
        json={"name": "k", "description": "CI of the billing repo", "metadata": {"team": "pay"}},
        headers=csrf,
    ).get_json()["key"]
    assert (made["description"], made["metadata"]) == ("CI of the billing repo", {"team": "pay"})
    for field, value in (
        ("description", "x" * 1001),
        ("metadata", {"team": 7}),
        ("metadata", {"k": "v" * 5000}),
        ("metadata", ["not", "an", "object"]),
    ):
        response = host.call("PATCH", f"/keys/{made['id']}", json={field: value}, headers=csrf)
        assert response.status_code == 400, field
        assert field in response.get_json()["error"]["details"]["fields"]
    with host.app.app_context():
        info = host.keyauth.get_key(made["id"])
    assert info.metadata["team"] == "pay"
    with pytest.raises(TypeError):
        info.metadata["team"] = "other"  # type: ignore[index]


# -- scopes and lifetimes ------------------------------------------------------------------------


def test_scope_descriptions_reach_whoami_and_the_openapi_document(host: Host) -> None:
    _, secret = host.key(["write"])
    whoami = host.call("GET", "/whoami", headers=auth(secret)).get_json()
    assert whoami["scope_descriptions"] == {
        "read": "Read entities", "write": "Create and change entities",
    }
    document = host.call("GET", "/openapi.json").get_json()
    assert "scope_descriptions" in document["components"]["schemas"]["Whoami"]["properties"]


def test_the_longest_lifetime_bounds_new_and_rotated_keys(database_url: str) -> None:
    host = build_host(database_url, KEYAUTH_MAX_LIFETIME_DAYS=30)
    try:
        clock = install_clock(host.app)
        with host.app.app_context():
            info, _ = host.keyauth.create_key("acme", "k")
            assert info.expires_at == clock.now + dt.timedelta(days=30)
            with pytest.raises(ValueError, match="within 30 days"):
                host.keyauth.create_key("acme", "k", expires_at=clock.now + dt.timedelta(31))
            new, _ = host.keyauth.rotate_key(info.id)
            assert new.expires_at == clock.now + dt.timedelta(days=30)
        response = host.call(
            "POST", "/keys", json={"name": "k", "expires_in_days": 90}, headers=host.sign_in()
        )
        assert response.status_code == 400
    finally:
        drop(host)
