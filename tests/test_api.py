"""The JSON API of the blueprint (SPEC §7, §11): every route and shape, who
may call it (session + CSRF, admin key, other keys, nobody), bad input that
changes nothing, the body cap, budgets, the audit trail and usage."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, session
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy

from flask_keyauth import KeyAuth, blueprint
from flask_keyauth.models import ApiKeyInfo
from flask_keyauth.service import KeyService
from flask_keyauth.views import api
from flask_keyauth.views.common import csrf_token

from .conftest import bearer, install_clock, make_app, service_of
from .services import postgres_database

PREFIX = "/settings/api-keys"
API = f"{PREFIX}/api"
KEY_FIELDS = {
    "id",
    "name",
    "redacted",
    "scopes",
    "environment",
    "status",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "limits",
    "created_by",
    "description",
    "metadata",
    "allowed_ips",
}
SECRET = re.compile(r"sk_(live|test)_[0-9A-Za-z]{50}")
UNKNOWN_ID = "A" * 12


@dataclass
class Host:
    """A host app with the blueprint, a session login and a CSRF token route."""

    app: Flask
    db: SQLAlchemy
    keyauth: KeyAuth
    client: FlaskClient

    @property
    def service(self) -> KeyService:
        return service_of(self.app)

    def sign_in(self, owner: str = "acme") -> dict[str, str]:
        """Sign the client in as ``owner``; return the CSRF header to send."""
        with self.client.session_transaction() as sess:
            sess["org_id"] = owner
        token = self.client.get("/csrf-token").get_json()["token"]
        return {"X-CSRFToken": token}

    def sign_out(self) -> None:
        with self.client.session_transaction() as sess:
            sess.clear()

    def key(
        self, scopes: Any = ("admin",), owner: str = "acme", **kw: Any
    ) -> tuple[ApiKeyInfo, str]:
        with self.app.app_context():
            return self.keyauth.create_key(owner, kw.pop("name", "key"), scopes, **kw)

    def snapshot(self, owner: str = "acme") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The owner's keys (last use aside: using a key moves it) and events."""
        with self.app.app_context():
            keys = [
                {k: v for k, v in info.to_dict().items() if k != "last_used_at"}
                for info in self.service.list_keys(owner)
            ]
            events = [event.to_dict() for event in self.service.events(owner)]
        return keys, events

    def call(self, method: str, path: str, **kw: Any) -> Any:
        return self.client.open(API + path, method=method, **kw)


def build_host(database_url: str, **config: Any) -> Host:
    app, db, keyauth = make_app(database_url, **config)
    app.register_blueprint(blueprint, url_prefix=PREFIX)

    @keyauth.owner_loader
    def owner() -> Any:
        return session.get("org_id")

    @app.get("/csrf-token")
    def token() -> dict[str, str]:
        return {"token": csrf_token()}

    return Host(app, db, keyauth, app.test_client())


def drop(host: Host) -> None:
    host.service.usage.take()
    with host.app.app_context():
        host.db.drop_all()
        host.db.engine.dispose()


@pytest.fixture
def host(database_url: str) -> Iterator[Host]:
    made = build_host(database_url)
    yield made
    drop(made)


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Host]:
    """SQLite only, for what the database does not change."""
    made = build_host(f"sqlite:///{tmp_path / 'keys.db'}")
    yield made
    drop(made)


def error_of(response: Any) -> dict[str, Any]:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]  # type: ignore[no-any-return]


def routes(key_id: str) -> list[tuple[str, str, Any]]:
    """Every management route on ``key_id``: (method, path, JSON body)."""
    return [
        ("GET", f"/keys/{key_id}", None),
        ("PATCH", f"/keys/{key_id}", {"name": "taken over"}),
        ("DELETE", f"/keys/{key_id}", None),
        ("POST", f"/keys/{key_id}/rotate", {"grace_seconds": 0}),
        ("GET", f"/keys/{key_id}/usage", None),
        ("GET", f"/events?key_id={key_id}", None),
    ]


ALL_ROUTES = [("GET", "/keys", None), ("POST", "/keys", {"name": "k"}), *routes(UNKNOWN_ID)]


# -- the session owner ----------------------------------------------------


def test_session_owner_manages_keys_end_to_end(host: Host) -> None:
    csrf = host.sign_in("acme")
    created = host.call(
        "POST",
        "/keys",
        json={"name": "CI deploy", "scopes": ["write"], "environment": "test"},
        headers=csrf,
    )
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    body = created.get_json()
    assert set(body) == {"key", "secret"}
    key, secret = body["key"], body["secret"]
    assert set(key) == KEY_FIELDS
    assert SECRET.fullmatch(secret) and secret.startswith("sk_test_")
    assert key["scopes"] == ["write"] and key["environment"] == "test"
    assert key["status"] == "active" and key["expires_at"] is None
    assert key["redacted"] == f"sk_test_{key['id']}\u2026{secret[-4:]}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", key["created_at"])
    # The secret works at once.
    assert host.client.get("/read", headers=bearer(secret)).status_code == 200

    listed = host.call("GET", "/keys")
    assert listed.status_code == 200
    assert [k["id"] for k in listed.get_json()["keys"]] == [key["id"]]
    one = host.call("GET", f"/keys/{key['id']}")
    assert one.status_code == 200 and one.get_json()["key"]["name"] == "CI deploy"

    patched = host.call(
        "PATCH",
        f"/keys/{key['id']}",
        json={"name": "CI deploy (old)", "expires_at": "2099-01-01T00:00:00Z"},
        headers=csrf,
    )
    assert patched.status_code == 200
    assert patched.get_json()["key"]["name"] == "CI deploy (old)"
    assert patched.get_json()["key"]["expires_at"] == "2099-01-01T00:00:00Z"

    revoked = host.call("DELETE", f"/keys/{key['id']}", headers=csrf)
    assert revoked.status_code == 200
    gone = revoked.get_json()["key"]
    assert gone["status"] == "revoked" and gone["revoked_at"] is not None
    assert host.client.get("/read", headers=bearer(secret)).status_code == 401
    # Revoking again is a no-op that returns the key as it is.
    again = host.call("DELETE", f"/keys/{key['id']}", headers=csrf)
    assert again.status_code == 200
    assert again.get_json()["key"]["revoked_at"] == gone["revoked_at"]
    # Revoked keys stay listed, with their status.
    assert host.call("GET", "/keys").get_json()["keys"][0]["status"] == "revoked"
    # A revoked key cannot be changed.
    refused = host.call("PATCH", f"/keys/{key['id']}", json={"name": "x"}, headers=csrf)
    assert refused.status_code == 400 and error_of(refused)["code"] == "VALIDATION_ERROR"


def test_create_defaults_and_the_longest_name(host: Host) -> None:
    csrf = host.sign_in()
    created = host.call("POST", "/keys", json={"name": "n" * 128}, headers=csrf)
    assert created.status_code == 201
    key = created.get_json()["key"]
    assert key["scopes"] == ["read"] and key["environment"] == "live"
    assert created.get_json()["secret"].startswith("sk_live_")
    assert key["name"] == "n" * 128


def test_management_answers_are_never_cached(lite: Host) -> None:
    lite.sign_in()
    for path in ("/keys", "/events"):
        assert lite.call("GET", path).headers["Cache-Control"] == "no-store"


# -- admin keys and other keys ------------------------------------------


def test_admin_key_manages_its_owners_keys_without_csrf(host: Host) -> None:
    admin, secret = host.key(["admin"], owner="acme", name="automation")
    other, _ = host.key(["read"], owner="globex", name="theirs")
    created = host.call("POST", "/keys", json={"name": "made by key"}, headers=bearer(secret))
    assert created.status_code == 201
    new_id = created.get_json()["key"]["id"]
    listed = host.call("GET", "/keys", headers=bearer(secret)).get_json()["keys"]
    assert {k["id"] for k in listed} == {admin.id, new_id}
    assert other.id not in {k["id"] for k in listed}
    # X-API-Key works as well as the bearer form.
    by_header = host.call("DELETE", f"/keys/{new_id}", headers={"X-API-Key": secret})
    assert by_header.status_code == 200
    events = host.call("GET", "/events", headers=bearer(secret)).get_json()["events"]
    assert events[0]["action"] == "revoked" and events[0]["actor"] == f"key:{admin.id}"


@pytest.mark.parametrize("scopes", [["read"], ["write"], ["read", "write"]])
def test_a_key_without_admin_is_forbidden(lite: Host, scopes: list[str]) -> None:
    _, secret = lite.key(scopes)
    before = lite.snapshot()
    for method, path, body in ALL_ROUTES:
        response = lite.call(method, path, json=body, headers=bearer(secret))
        assert response.status_code == 403, (method, path)
        error = error_of(response)
        assert error["code"] == "FORBIDDEN"
        assert error["details"]["required_scopes"] == ["admin"]
        # The call was counted against the owner's plan (SPEC §6).
        assert "X-RateLimit-Remaining" in response.headers
    assert lite.snapshot() == before


def test_the_presented_key_decides_even_with_a_session(lite: Host) -> None:
    csrf = lite.sign_in("acme")
    _, reader = lite.key(["read"])
    assert lite.call("GET", "/keys", headers=bearer(reader)).status_code == 403
    invalid = lite.call("GET", "/keys", headers=bearer("sk_live_" + "x" * 50))
    assert invalid.status_code == 401
    assert error_of(invalid)["code"] == "INVALID_API_KEY"
    assert invalid.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    # Two different keys are one invalid attempt, not a fallback to the session.
    _, admin = lite.key(["admin"])
    both = lite.call("GET", "/keys", headers={**bearer(admin), "X-API-Key": reader})
    assert both.status_code == 401
    # Another scheme carries no key: the session decides.
    basic = {"Authorization": "Basic dXNlcjpwYXNz", **csrf}
    assert lite.call("GET", "/keys", headers=basic).status_code == 200
    assert lite.call("POST", "/keys", json={"name": "k"}, headers=basic).status_code == 201


@pytest.mark.parametrize(("method", "path", "body"), ALL_ROUTES)
def test_nobody_gets_401(lite: Host, method: str, path: str, body: Any) -> None:
    before = lite.snapshot()
    response = lite.call(method, path, json=body)
    assert response.status_code == 401
    assert error_of(response)["code"] == "MISSING_API_KEY"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "X-RateLimit-Remaining" not in response.headers
    assert lite.snapshot() == before


def test_another_owners_key_is_not_found_everywhere(host: Host) -> None:
    theirs, their_secret = host.key(["admin"], owner="globex", name="theirs")
    _, admin = host.key(["admin"], owner="acme")
    before_theirs = host.snapshot("globex")
    csrf = host.sign_in("acme")
    unknown_bodies = {}
    for auth in (csrf, bearer(admin)):
        for method, path, body in routes(UNKNOWN_ID):
            response = host.call(method, path, json=body, headers=auth)
            assert response.status_code == 404, (method, path)
            unknown_bodies[(method, path.replace(UNKNOWN_ID, ""))] = response.get_json()
        for key_id in (theirs.id, "nope", "AAAAAAAAAAA!", "Ā" * 12):
            for method, path, body in routes(key_id):
                response = host.call(method, path, json=body, headers=auth)
                assert response.status_code == 404, (method, path)
                error = error_of(response)
                assert error["code"] == "NOT_FOUND"
                # The same body as an unknown id: nothing tells them apart.
                assert response.get_json() == unknown_bodies[(method, path.replace(key_id, ""))]
    assert host.snapshot("globex") == before_theirs
    # Their key still works: nothing was revoked or rotated.
    assert host.client.get("/read", headers=bearer(their_secret)).status_code == 200


# -- CSRF -----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CSRFToken": "not-the-token"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
    ids=["missing", "wrong", "cross-site-origin", "sec-fetch-site"],
)
def test_csrf_failures_change_nothing(host: Host, headers: dict[str, str]) -> None:
    target, secret = host.key(["read"], name="target")
    token = host.sign_in("acme")
    if "X-CSRFToken" not in headers and headers:
        headers = {**token, **headers}  # a valid token does not excuse a cross-site request
    before = host.snapshot()
    attempts = [
        ("POST", "/keys", {"name": "forged"}),
        ("PATCH", f"/keys/{target.id}", {"name": "forged"}),
        ("DELETE", f"/keys/{target.id}", None),
        ("POST", f"/keys/{target.id}/rotate", {"grace_seconds": 0}),
    ]
    for method, path, body in attempts:
        response = host.call(method, path, json=body, headers=headers)
        assert response.status_code == 400, (method, path)
        assert error_of(response)["code"] == "CSRF_FAILED"
    assert host.snapshot() == before
    assert host.client.get("/read", headers=bearer(secret)).status_code == 200
    # The same request from the same site, with the token, goes through.
    same_site = {**token, "Origin": "http://localhost"}
    assert host.call("POST", "/keys", json={"name": "k"}, headers=same_site).status_code == 201


# -- bad input --------------------------------------------------------------

CREATE_CASES: list[tuple[Any, str]] = [
    ([], "body"),
    ("just text", "body"),
    (1, "body"),
    ({}, "name"),
    ({"name": "k", "bogus": 1}, "bogus"),
    ({"name": "k", "secret_hash": "x"}, "secret_hash"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": 5}, "name"),
    ({"name": ["k"]}, "name"),
    ({"name": "n" * 129}, "name"),
    ({"name": "a\x00b"}, "name"),
    ({"name": "line\nbreak"}, "name"),
    ({"name": "k", "scopes": "read"}, "scopes"),
    ({"name": "k", "scopes": []}, "scopes"),
    ({"name": "k", "scopes": ["root"]}, "scopes"),
    ({"name": "k", "scopes": [1]}, "scopes"),
    ({"name": "k", "scopes": None}, "scopes"),
    ({"name": "k", "environment": "prod"}, "environment"),
    ({"name": "k", "environment": None}, "environment"),
    ({"name": "k", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "k", "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "k", "expires_at": "2030-02-30T00:00:00Z"}, "expires_at"),
    ({"name": "k", "expires_at": "2030-01-01T25:00:00Z"}, "expires_at"),
    ({"name": "k", "expires_at": "2030-01-01T00:00:00+24:00"}, "expires_at"),
    ({"name": "k", "expires_at": "9999-12-31T23:59:59-05:00"}, "expires_at"),
    ({"name": "k", "expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at"),
    ({"name": "k", "expires_at": "2030-01-01T00:00:00Z" + " " * 100}, "expires_at"),
    ({"name": "k", "expires_at": 1893456000}, "expires_at"),
    ({"name": "k", "expires_in_days": 0}, "expires_in_days"),
    ({"name": "k", "expires_in_days": -1}, "expires_in_days"),
    ({"name": "k", "expires_in_days": 1.5}, "expires_in_days"),
    ({"name": "k", "expires_in_days": True}, "expires_in_days"),
    ({"name": "k", "expires_in_days": "30"}, "expires_in_days"),
    ({"name": "k", "expires_in_days": 10**9}, "expires_in_days"),
    ({"name": "k", "expires_in_days": 30, "expires_at": "2099-01-01T00:00:00Z"}, "expires_in_days"),
]
RAW_CASES: list[tuple[bytes, str, str]] = [
    (b"null", "application/json", "body"),
    (b"{not json", "application/json", "body"),
    (b'{"name": NaN}', "application/json", "body"),
    (b'{"name": "k", "expires_in_days": 1' + b"0" * 5000 + b"}", "application/json", "body"),
    (b"[" * 5000 + b"]" * 5000, "application/json", "body"),
    (b"\xff\xfe\x00", "application/json", "body"),
    (b'{"name": "\\ud800"}', "application/json", "name"),
    (b'{"name": "k"}', "text/plain", "body"),
    (b"name=k", "application/x-www-form-urlencoded", "body"),
]
UPDATE_CASES: list[tuple[Any, str]] = [
    ([], "body"),
    ({"scopes": ["admin"]}, "scopes"),
    ({"environment": "test"}, "environment"),
    ({"expires_in_days": 30}, "expires_in_days"),
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"name": "n" * 129}, "name"),
    ({"expires_at": "2000-01-01"}, "expires_at"),
    ({"expires_at": False}, "expires_at"),
]
ROTATE_CASES: list[tuple[Any, str]] = [
    ("x", "body"),
    ({"grace_seconds": -1}, "grace_seconds"),
    ({"grace_seconds": "1h"}, "grace_seconds"),
    ({"grace_seconds": 1.5}, "grace_seconds"),
    ({"grace_seconds": None}, "grace_seconds"),
    ({"grace_seconds": 10**12}, "grace_seconds"),
    ({"grace_seconds": 0, "name": "x"}, "name"),
    ({"expires_at": "1999-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_in_days": 0}, "expires_in_days"),
]


def test_each_validation_case_changes_nothing(host: Host) -> None:
    target, secret = host.key(["read"], name="target")
    for auth in (host.sign_in("acme"), bearer(host.key(["admin"])[1])):
        before = host.snapshot()
        cases = [("POST", "/keys", body, field) for body, field in CREATE_CASES]
        cases += [("PATCH", f"/keys/{target.id}", body, field) for body, field in UPDATE_CASES]
        cases += [
            ("POST", f"/keys/{target.id}/rotate", body, field) for body, field in ROTATE_CASES
        ]
        for method, path, body, field in cases:
            response = host.call(method, path, json=body, headers=auth)
            assert response.status_code == 400, (method, path, body, response.get_json())
            error = error_of(response)
            assert error["code"] == "VALIDATION_ERROR"
            assert field in error["details"]["fields"], (body, error)
        for raw, content_type, field in RAW_CASES:
            response = host.call(
                "POST", "/keys", data=raw, headers={**auth, "Content-Type": content_type}
            )
            assert response.status_code == 400, (raw[:40], response.get_json())
            assert field in error_of(response)["details"]["fields"]
        assert host.snapshot() == before
    assert host.client.get("/read", headers=bearer(secret)).status_code == 200


def test_unknown_fields_are_named(lite: Host) -> None:
    csrf = lite.sign_in()
    response = lite.call(
        "POST", "/keys", json={"name": "k", "owner": "x", "plan": "y"}, headers=csrf
    )
    fields = error_of(response)["details"]["fields"]
    assert set(fields) == {"owner", "plan"}
    assert "unknown field" in fields["owner"]


def test_bodies_over_the_cap_are_413_before_parsing(lite: Host) -> None:
    csrf = lite.sign_in()
    target = lite.key(["read"])[0]
    _, admin = lite.key(["admin"])
    before = lite.snapshot()
    small = b'{"name": "k"}'
    at_cap = small + b" " * (api.BODY_MAX - len(small))
    over = at_cap + b" "
    json_type = {**csrf, "Content-Type": "application/json"}
    response = lite.call("POST", "/keys", data=over, headers=json_type)
    assert response.status_code == 413
    assert response.mimetype == "application/json"
    error = error_of(response)
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["details"]["max_bytes"] == api.BODY_MAX
    # Not even JSON: refused for its size, before anyone reads it.
    assert lite.call("POST", "/keys", data=b"\xff" * 100_000, headers=json_type).status_code == 413
    # A chunked body has no length: it is read up to the cap and no further.
    chunked = lite.call(
        "POST",
        "/keys",
        input_stream=io.BytesIO(over),
        headers=json_type,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked.status_code == 413
    for method, path in (("PATCH", f"/keys/{target.id}"), ("POST", f"/keys/{target.id}/rotate")):
        assert lite.call(method, path, data=over, headers=json_type).status_code == 413
    by_key = lite.call(
        "POST", "/keys", data=over, headers={**bearer(admin), "Content-Type": "application/json"}
    )
    assert by_key.status_code == 413
    assert lite.snapshot() == before
    # A body at the cap is read and served, chunked or not.
    assert lite.call("POST", "/keys", data=at_cap, headers=json_type).status_code == 201
    chunked_ok = lite.call(
        "POST",
        "/keys",
        input_stream=io.BytesIO(at_cap),
        headers=json_type,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked_ok.status_code == 201


def test_the_apps_smaller_max_content_length_is_the_cap(tmp_path: Path) -> None:
    host = build_host(f"sqlite:///{tmp_path / 'keys.db'}", MAX_CONTENT_LENGTH=1000)
    csrf = host.sign_in()
    json_type = {**csrf, "Content-Type": "application/json"}
    body = b'{"name": "k"}' + b" " * 1000
    response = host.call("POST", "/keys", data=body, headers=json_type)
    assert response.status_code == 413
    assert error_of(response)["details"]["max_bytes"] == 1000
    chunked = host.call(
        "POST",
        "/keys",
        input_stream=io.BytesIO(body),
        headers=json_type,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert chunked.status_code == 413 and chunked.mimetype == "application/json"
    assert host.snapshot()[0] == []
    drop(host)


# -- expiry -----------------------------------------------------------------


def test_expiry_forms_all_read_as_utc(host: Host) -> None:
    clock = install_clock(host.app, dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.timezone.utc))
    csrf = host.sign_in()
    forms = {
        "2031-06-01T10:00:00Z": "2031-06-01T10:00:00Z",
        "2031-06-01T10:00:00+02:00": "2031-06-01T08:00:00Z",
        "2031-06-01T10:00:00-05:30": "2031-06-01T15:30:00Z",
        "2031-06-01T10:00:00": "2031-06-01T10:00:00Z",  # naive is UTC
        "2031-06-01T10:00:00.250Z": "2031-06-01T10:00:00Z",
        "2031-06-01": "2031-06-01T00:00:00Z",
    }
    for given, stored in forms.items():
        response = host.call("POST", "/keys", json={"name": "k", "expires_at": given}, headers=csrf)
        assert response.status_code == 201, given
        assert response.get_json()["key"]["expires_at"] == stored
    in_days = host.call("POST", "/keys", json={"name": "k", "expires_in_days": 30}, headers=csrf)
    assert in_days.get_json()["key"]["expires_at"] == "2030-01-31T12:00:00Z"
    # Strictly in the future: now itself is refused.
    now = host.call(
        "POST", "/keys", json={"name": "k", "expires_at": "2030-01-01T12:00:00Z"}, headers=csrf
    )
    assert now.status_code == 400
    key_id = in_days.get_json()["key"]["id"]
    cleared = host.call("PATCH", f"/keys/{key_id}", json={"expires_at": None}, headers=csrf)
    assert cleared.status_code == 200 and cleared.get_json()["key"]["expires_at"] is None
    events = host.call("GET", f"/events?key_id={key_id}").get_json()["events"]
    assert events[0]["action"] == "expiry_changed" and events[0]["detail"] == "never"
    clock.advance(days=600)
    # Expired keys are listed as such; the one whose expiry was cleared is not.
    listed = host.call("GET", "/keys").get_json()["keys"]
    statuses = {k["expires_at"]: k["status"] for k in listed}
    assert statuses["2031-06-01T08:00:00Z"] == "expired"
    assert statuses[None] == "active"


# -- rotation ----------------------------------------------------------------


def test_rotation_with_the_default_grace(host: Host) -> None:
    clock = install_clock(host.app)
    old, old_secret = host.key(["read", "write"], name="deploy", environment="test")
    csrf = host.sign_in()
    rotated = host.call("POST", f"/keys/{old.id}/rotate", headers=csrf)
    assert rotated.status_code == 201
    assert rotated.headers["Cache-Control"] == "no-store"
    body = rotated.get_json()
    assert set(body) == {"key", "secret", "previous"}
    new, previous = body["key"], body["previous"]
    assert SECRET.fullmatch(body["secret"]) and body["secret"] != old_secret
    assert new["id"] != old.id and previous["id"] == old.id
    assert (new["name"], new["scopes"], new["environment"]) == ("deploy", ["read", "write"], "test")
    assert new["expires_at"] is None
    grace_end = clock.now + dt.timedelta(seconds=api.DEFAULT_GRACE_SECONDS)
    assert previous["expires_at"] == grace_end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert previous["status"] == "active"
    # Both work during the grace; the old one stops after it.
    assert host.client.get("/read", headers=bearer(old_secret)).status_code == 200
    assert host.client.get("/read", headers=bearer(body["secret"])).status_code == 200
    clock.advance(days=1)
    assert host.client.get("/read", headers=bearer(old_secret)).status_code == 401
    events = host.call("GET", "/events").get_json()["events"]
    rotated_event = next(e for e in events if e["action"] == "rotated")
    assert rotated_event["key_id"] == old.id and rotated_event["detail"] == new["id"]


def test_rotation_with_no_grace_revokes_at_once(host: Host) -> None:
    old, old_secret = host.key(["read"])
    _, admin = host.key(["admin"])
    rotated = host.call(
        "POST",
        f"/keys/{old.id}/rotate",
        json={"grace_seconds": 0, "expires_in_days": 7},
        headers=bearer(admin),
    )
    assert rotated.status_code == 201
    body = rotated.get_json()
    assert body["previous"]["status"] == "revoked"
    assert body["key"]["expires_at"] is not None
    refused = host.client.get("/read", headers=bearer(old_secret))
    assert refused.status_code == 401 and error_of(refused)["code"] == "INVALID_API_KEY"
    # A revoked key cannot be rotated again.
    again = host.call("POST", f"/keys/{old.id}/rotate", json={}, headers=bearer(admin))
    assert again.status_code == 400 and error_of(again)["code"] == "VALIDATION_ERROR"


# -- usage -------------------------------------------------------------------


def test_usage_lists_every_day_with_zeros(host: Host) -> None:
    clock = install_clock(host.app)
    today = clock.now.date()
    key, secret = host.key(["read"])
    clock.advance(days=-3)
    for _ in range(2):
        assert host.client.get("/read", headers=bearer(secret)).status_code == 200
    clock.advance(days=2)
    for _ in range(3):
        assert host.client.get("/read", headers=bearer(secret)).status_code == 200
    clock.advance(days=1)
    with host.app.app_context():
        host.service.flush_usage()
    host.sign_in()
    response = host.call("GET", f"/keys/{key.id}/usage?days=5")
    assert response.status_code == 200
    body = response.get_json()
    assert body["key_id"] == key.id
    expected = [
        ((today - dt.timedelta(days=4 - i)).isoformat(), n) for i, n in enumerate([0, 2, 0, 3, 0])
    ]
    assert [(d["date"], d["requests"]) for d in body["days"]] == expected
    default = host.call("GET", f"/keys/{key.id}/usage").get_json()["days"]
    assert len(default) == 30 and default[-1]["date"] == today.isoformat()
    assert sum(d["requests"] for d in default) == 5
    assert len(host.call("GET", f"/keys/{key.id}/usage?days=90").get_json()["days"]) == 90
    assert len(host.call("GET", f"/keys/{key.id}/usage?days=1").get_json()["days"]) == 1
    for bad in ("0", "91", "abc", "-1", "1.5", "", " 5", "9" * 400):
        refused = host.call("GET", f"/keys/{key.id}/usage?days={bad}")
        assert refused.status_code == 400, bad
        assert "days" in error_of(refused)["details"]["fields"]


# -- events ------------------------------------------------------------------


def test_events_newest_first_with_actor_and_address(host: Host) -> None:
    clock = install_clock(host.app)
    admin, admin_secret = host.key(["admin"])
    csrf = host.sign_in("acme")
    clock.advance(seconds=1)
    created = host.call(
        "POST", "/keys", json={"name": "a"}, headers=csrf, environ_base={"REMOTE_ADDR": "10.0.0.1"}
    )
    key_id = created.get_json()["key"]["id"]
    clock.advance(seconds=1)
    host.call(
        "PATCH",
        f"/keys/{key_id}",
        json={"name": "b"},
        headers=bearer(admin_secret),
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    clock.advance(seconds=1)
    host.call("DELETE", f"/keys/{key_id}", headers=csrf, environ_base={"REMOTE_ADDR": "10.0.0.3"})
    host.key(["read"], owner="globex")
    with host.app.app_context():
        host.keyauth.set_plan("acme", "starter")

    events = host.call("GET", "/events").get_json()["events"]
    for event in events:
        assert set(event) == {"action", "key_id", "actor", "remote_addr", "detail", "at"}
    assert [e["action"] for e in events] == [
        "plan_changed",
        "revoked",
        "renamed",
        "created",
        "created",
    ]
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    revoked, renamed, made = events[1], events[2], events[3]
    assert (revoked["actor"], revoked["remote_addr"]) == ("session:acme", "10.0.0.3")
    assert (renamed["actor"], renamed["remote_addr"]) == (f"key:{admin.id}", "10.0.0.2")
    assert (made["actor"], made["remote_addr"], made["key_id"]) == (
        "session:acme",
        "10.0.0.1",
        key_id,
    )
    assert events[0]["detail"] == "starter" and events[0]["key_id"] is None
    assert events[4]["key_id"] == admin.id
    only = host.call("GET", f"/events?key_id={key_id}").get_json()["events"]
    assert [e["action"] for e in only] == ["revoked", "renamed", "created"]


# -- whoami and budgets ------------------------------------------------------


def remaining(response: Any) -> int:
    return int(response.headers["X-RateLimit-Remaining"])


def test_whoami_reports_without_spending(host: Host) -> None:
    key, secret = host.key(["write"], environment="test")
    first = host.call("GET", "/whoami", headers=bearer(secret))
    assert first.status_code == 200
    body = first.get_json()
    assert body == {
        "authenticated": True,
        "organization_id": "acme",
        "key_id": key.id,
        "permissions": ["read", "write"],
        "key_type": "test",
        "plan": "free",
        "created_by": None,
        "scope_descriptions": {"read": "", "write": ""},
        "rate_limits": body["rate_limits"],
    }
    windows = body["rate_limits"]
    assert [(w["limit"], w["remaining"], w["window"]) for w in windows] == [
        (100, 100, "hour"),
        (10000, 10000, "day"),
    ]
    assert all(w["reset_at"].endswith("Z") for w in windows)
    for _ in range(5):
        again = host.call("GET", "/whoami", headers=bearer(secret)).get_json()
        assert again["rate_limits"][0]["remaining"] == 100
    assert remaining(host.client.get("/read", headers=bearer(secret))) == 99
    after = host.call("GET", "/whoami", headers={"X-API-Key": secret}).get_json()
    assert after["rate_limits"][0]["remaining"] == 99


def test_whoami_answers_when_the_budget_is_spent(lite: Host) -> None:
    _, secret = lite.key(["read"])
    with lite.app.app_context():
        lite.keyauth.set_plan("acme", "enterprise", "2/hour")
    for _ in range(2):
        assert lite.client.get("/read", headers=bearer(secret)).status_code == 200
    assert lite.client.get("/read", headers=bearer(secret)).status_code == 429
    response = lite.call("GET", "/whoami", headers=bearer(secret))
    assert response.status_code == 200
    body = response.get_json()
    assert body["plan"] == "enterprise"
    assert body["rate_limits"][0]["limit"] == 2 and body["rate_limits"][0]["remaining"] == 0


def test_whoami_needs_a_valid_key(lite: Host) -> None:
    lite.sign_in()  # a session is not a key
    missing = lite.call("GET", "/whoami")
    assert missing.status_code == 401 and error_of(missing)["code"] == "MISSING_API_KEY"
    invalid = lite.call("GET", "/whoami", headers=bearer("sk_live_nope"))
    assert invalid.status_code == 401 and error_of(invalid)["code"] == "INVALID_API_KEY"
    key, secret = lite.key(["read"])
    with lite.app.app_context():
        lite.keyauth.revoke_key(key.id)
    assert lite.call("GET", "/whoami", headers=bearer(secret)).status_code == 401


def test_key_management_spends_the_owners_budget(host: Host) -> None:
    _, admin = host.key(["admin"])
    _, reader = host.key(["read"])
    with host.app.app_context():
        host.keyauth.set_plan("acme", "enterprise", "4/hour")
    seen = [remaining(host.call("GET", "/keys", headers=bearer(admin))) for _ in range(3)]
    assert seen == [3, 2, 1]
    # One budget for the owner: a plain protected route spends it too.
    assert remaining(host.client.get("/read", headers=bearer(reader))) == 0
    spent = host.call("POST", "/keys", json={"name": "k"}, headers=bearer(admin))
    assert spent.status_code == 429
    error = error_of(spent)
    assert error["code"] == "RATE_LIMIT_EXCEEDED" and error["details"]["limit"] == 4
    assert int(spent.headers["Retry-After"]) > 0
    assert spent.headers["X-RateLimit-Remaining"] == "0"
    # Spent budget first, scope second (SPEC §11): a reader gets 429, not 403.
    assert host.call("GET", "/keys", headers=bearer(reader)).status_code == 429
    assert len(host.snapshot()[0]) == 2  # nothing was created
    # The browser session has no budget to spend.
    csrf = host.sign_in()
    assert host.call("GET", "/keys").status_code == 200
    assert "X-RateLimit-Remaining" not in host.call("GET", "/keys").headers
    assert host.call("POST", "/keys", json={"name": "k"}, headers=csrf).status_code == 201


# -- secrets -------------------------------------------------------------------


def test_the_secret_appears_only_in_create_and_rotate(host: Host) -> None:
    csrf = host.sign_in()
    created = host.call("POST", "/keys", json={"name": "k", "scopes": ["admin"]}, headers=csrf)
    secret = created.get_json()["secret"]
    key_id = created.get_json()["key"]["id"]
    state = host.app.extensions["keyauth"]
    with host.app.app_context(), state.store.engine.connect() as conn:
        stored_hash = conn.execute(
            sa.select(state.store.tables.keys.c.secret_hash).where(
                state.store.tables.keys.c.key_id == key_id
            )
        ).scalar_one()
    bodies = []
    for auth in (csrf, bearer(secret)):
        for method, path, body in [
            ("GET", "/keys", None),
            ("GET", f"/keys/{key_id}", None),
            ("PATCH", f"/keys/{key_id}", {"name": "renamed"}),
            ("GET", f"/keys/{key_id}/usage", None),
            ("GET", "/events", None),
            ("GET", f"/events?key_id={key_id}", None),
            ("GET", "/openapi.json", None),
            ("POST", "/keys", {"name": "bad", "bogus": secret}),
        ]:
            response = host.call(method, path, json=body, headers=auth)
            bodies.append(response.get_data(as_text=True))
    bodies.append(host.call("GET", "/whoami", headers=bearer(secret)).get_data(as_text=True))
    rotated = host.call("POST", f"/keys/{key_id}/rotate", json={}, headers=bearer(secret))
    new_secret = rotated.get_json()["secret"]
    bodies.append(host.call("GET", "/keys", headers=bearer(new_secret)).get_data(as_text=True))
    bodies.append(host.call("DELETE", f"/keys/{key_id}", headers=csrf).get_data(as_text=True))
    for text in bodies:
        for needle in (
            secret,
            secret[-38:-6],
            new_secret,
            new_secret[-38:-6],
            stored_hash,
            "$argon2",
        ):
            assert needle not in text
    assert secret in created.get_data(as_text=True)
    assert new_secret in rotated.get_data(as_text=True)


# -- unexpected errors ---------------------------------------------------------


def test_an_unexpected_error_is_json_without_traceback(tmp_path: Path) -> None:
    host = build_host(f"sqlite:///{tmp_path / 'keys.db'}", PROPAGATE_EXCEPTIONS=False)

    @host.keyauth.owner_loader
    def broken_login() -> Any:
        raise RuntimeError("login store exploded at /srv/private/path")

    response = host.call("GET", "/keys")
    assert response.status_code == 500
    assert response.mimetype == "application/json"
    assert error_of(response)["code"] == "INTERNAL_ERROR"
    text = response.get_data(as_text=True)
    assert "exploded" not in text and "Traceback" not in text and "/srv" not in text
    drop(host)


def test_pages_keep_the_apps_500_handling(tmp_path: Path) -> None:
    host = build_host(f"sqlite:///{tmp_path / 'keys.db'}", PROPAGATE_EXCEPTIONS=False)

    @host.keyauth.owner_loader
    def broken_login() -> Any:
        raise RuntimeError("login store exploded")

    @host.app.errorhandler(500)
    def host_page(error: Any) -> tuple[str, int]:
        return "the host's own error page", 500

    pages = [
        rule.rule
        for rule in host.app.url_map.iter_rules()
        if rule.endpoint.startswith("keyauth.")
        and rule.endpoint.rpartition(".")[2] not in api.API_ENDPOINTS
        and "GET" in (rule.methods or ())
        and not rule.arguments
        and "static" not in rule.endpoint
    ]
    api_answer = host.call("GET", "/keys")
    assert api_answer.status_code == 500 and error_of(api_answer)["code"] == "INTERNAL_ERROR"
    if not pages:
        drop(host)
        pytest.skip("the blueprint has no page routes to compare with")
    page = host.client.get(pages[0])
    assert page.status_code == 500
    assert page.get_data(as_text=True) == "the host's own error page"
    drop(host)


def test_the_key_store_down_is_503(tmp_path: Path) -> None:
    with postgres_database() as url:
        host = build_host(url)
        _, admin = host.key(["admin"])
        host.app.config["PROPAGATE_EXCEPTIONS"] = False
        name = sa.make_url(url).database
        admin_engine = sa.create_engine(
            sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        try:
            with admin_engine.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            host.sign_in()
            response = host.call("GET", "/keys")
            assert response.status_code == 503
            assert error_of(response)["code"] == "SERVICE_UNAVAILABLE"
            assert response.headers["Retry-After"] == "5"
            by_key = host.call("GET", "/keys", headers=bearer(admin))
            assert by_key.status_code == 503
        finally:
            with admin_engine.connect() as conn:
                conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin_engine.dispose()
            host.service.usage.take()
            with host.app.app_context():
                host.db.engine.dispose()
