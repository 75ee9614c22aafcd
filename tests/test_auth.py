"""Authentication results over HTTP (SPEC §4, §5) and scopes."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import auth_failed, current_key, keys, require_key

from .conftest import (
    AppFactory,
    Clock,
    MakeKey,
    argon2_runs,
    bearer,
    service_of,
    sql_statements,
)
from .test_keys import forge

ENVELOPE_KEYS = {"code", "message", "details"}


def refused(response: Any, status: int, code: str) -> dict[str, Any]:
    """Check the one error envelope and return its ``error`` object."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data(as_text=True))
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == ENVELOPE_KEYS
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if status == 401:
        assert response.headers["Cache-Control"] == "no-store"
    else:
        assert "WWW-Authenticate" not in response.headers
    return error


def echoes(response: Any, *texts: str) -> bool:
    """Whether the response carries any of ``texts`` anywhere."""
    blob = response.get_data(as_text=True) + "\n".join(
        f"{name}: {value}" for name, value in response.headers.items()
    )
    return any(text and text in blob for text in texts)


def other_char(char: str) -> str:
    return "a" if char != "a" else "b"


def wrong_secret(key: str) -> str:
    """The same id with another secret, checksummed: well-formed but wrong."""
    prefix, environment, body = key.split("_")
    secret = body[12:44]
    return forge(prefix, environment, body[:12], other_char(secret[0]) + secret[1:])


def unknown_id(key: str) -> str:
    prefix, environment, body = key.split("_")
    return forge(prefix, environment, keys.random_base62(12), body[12:44])


# -- success -------------------------------------------------------------------


def test_bearer_and_x_api_key(client: Any, make_key: MakeKey) -> None:
    info, secret = make_key()
    for headers in (bearer(secret), {"X-API-Key": secret}):
        response = client.get("/read", headers=headers)
        assert response.status_code == 200
        assert response.get_json() == {"key": info.id, "owner": "acme"}


@pytest.mark.parametrize(
    "value",
    ["Bearer {k}", "bearer {k}", "BEARER {k}", "bEaReR {k}", "  Bearer   {k}  ", "Bearer\t{k}"],
)
def test_bearer_scheme_any_case_whitespace_ignored(
    client: Any, make_key: MakeKey, value: str
) -> None:
    _, secret = make_key()
    response = client.get("/read", headers={"Authorization": value.format(k=secret)})
    assert response.status_code == 200


def test_x_api_key_whitespace_ignored(client: Any, make_key: MakeKey) -> None:
    _, secret = make_key()
    assert client.get("/read", headers={"X-API-Key": f"  {secret}\t"}).status_code == 200


def test_same_key_in_both_headers_is_accepted(client: Any, make_key: MakeKey) -> None:
    _, secret = make_key()
    headers = {**bearer(secret), "X-API-Key": secret}
    assert client.get("/read", headers=headers).status_code == 200


def test_current_key_is_the_read_only_view(app: Flask, client: Any, make_key: MakeKey) -> None:
    @app.get("/me")
    @require_key()
    def me() -> dict[str, Any]:
        key = current_key._get_current_object()  # type: ignore[attr-defined]
        return {
            "type": type(key).__name__,
            "id": key.id,
            "env": key.environment,
            "status": key.status,
            "plan": key.plan,
            "redacted": key.redacted,
        }

    info, secret = make_key(["admin"], environment="test")
    response = client.get("/any", headers=bearer(secret))
    assert response.get_json() == {"scopes": ["admin", "read", "write"]}
    assert client.get("/me", headers=bearer(secret)).get_json() == {
        "type": "ApiKeyInfo",
        "id": info.id,
        "env": "test",
        "status": "active",
        "plan": "free",
        "redacted": info.redacted,
    }


# -- MISSING_API_KEY ------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "   "},
        {"X-API-Key": ""},
        {"X-API-Key": "  "},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        {"Authorization": "Digest username=x"},
        {"Authorization": "Bearer", "X-API-Key": ""},
    ],
    ids=lambda h: repr(h),
)
def test_missing_key(client: Any, headers: dict[str, str]) -> None:
    response = client.get("/read", headers=headers)
    error = refused(response, 401, "MISSING_API_KEY")
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error["details"] == {"headers": ["Authorization", "X-API-Key"]}


def test_a_key_under_another_scheme_is_no_key(client: Any, make_key: MakeKey) -> None:
    _, secret = make_key()
    for scheme in ("Basic", "Token", "ApiKey"):
        response = client.get("/read", headers={"Authorization": f"{scheme} {secret}"})
        refused(response, 401, "MISSING_API_KEY")
        assert not echoes(response, secret)


def test_key_in_query_string_or_body_is_never_accepted(client: Any, make_key: MakeKey) -> None:
    _, secret = make_key(["write"])
    query = {"api_key": secret, "key": secret, "access_token": secret, "X-API-Key": secret}
    response = client.get("/read", query_string=query)
    refused(response, 401, "MISSING_API_KEY")
    assert not echoes(response, secret)
    response = client.post("/write", data=query)
    refused(response, 401, "MISSING_API_KEY")
    response = client.post("/write", json=query)
    refused(response, 401, "MISSING_API_KEY")
    assert not echoes(response, secret)


# -- INVALID_API_KEY -------------------------------------------------------------

Headers = Callable[[str, str], dict[str, str]]

INVALID: dict[str, Headers] = {
    "not a key": lambda k, o: bearer("not-a-key"),
    "bad checksum": lambda k, o: bearer(k[:-1] + other_char(k[-1])),
    "typo in the secret": lambda k, o: bearer(k[:30] + other_char(k[30]) + k[31:]),
    "unknown id": lambda k, o: bearer(unknown_id(k)),
    "wrong secret": lambda k, o: bearer(wrong_secret(k)),
    "wrong secret in X-API-Key": lambda k, o: {"X-API-Key": wrong_secret(k)},
    "two different keys": lambda k, o: {**bearer(k), "X-API-Key": o},
    "two Bearer values": lambda k, o: {"Authorization": f"Bearer {k}, Bearer {o}"},
    "the same key twice in one value": lambda k, o: {"Authorization": f"Bearer {k}, Bearer {k}"},
    "10 KB": lambda k, o: bearer(k + "a" * 10_240),
    "10 KB X-API-Key": lambda k, o: {"X-API-Key": "x" * 10_240},
    "non-ASCII": lambda k, o: bearer(k[:30] + "é" + k[31:]),
    "non-ASCII appended": lambda k, o: bearer(k + "ÿ"),
    "NUL": lambda k, o: bearer(k[:30] + "\x00" + k[31:]),
    "DEL": lambda k, o: bearer(k + "\x7f"),
    "inner tab": lambda k, o: bearer(k[:30] + "\t" + k[30:]),
    "equals inside": lambda k, o: bearer(k[:30] + "=" + k[31:]),
    "equals appended": lambda k, o: bearer(k + "="),
    "key=value": lambda k, o: bearer(f"key={k}"),
    "another prefix": lambda k, o: bearer(forge("pk", "live", k[8:20], k[20:52])),
    "the id alone": lambda k, o: bearer(k[8:20]),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_key(client: Any, make_key: MakeKey, case: str) -> None:
    _, secret = make_key()
    _, other = make_key()
    response = client.get("/read", headers=INVALID[case](secret, other))
    error = refused(response, 401, "INVALID_API_KEY")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert error["details"] == {}
    assert not echoes(response, secret, other, secret[20:52], other[20:52])


def test_revoked_key(app: Flask, client: Any, make_key: MakeKey) -> None:
    info, secret = make_key()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        service_of(app).revoke_key(info.id)
    response = client.get("/read", headers=bearer(secret))
    refused(response, 401, "INVALID_API_KEY")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_environment_not_accepted(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(KEYAUTH_ENVIRONMENTS_ACCEPTED={"test"})
    client = app.test_client()
    with app.app_context():
        _, live = keyauth.create_key("acme", "live key", environment="live")
        _, test = keyauth.create_key("acme", "test key", environment="test")
    assert client.get("/read", headers=bearer(test)).status_code == 200
    with sql_statements(app) as statements, argon2_runs(app) as runs:
        response = client.get("/read", headers=bearer(live))
    refused(response, 401, "INVALID_API_KEY")
    # Refused on its face: no lookup, no argon2.
    assert statements == [] and runs == []


def test_an_environment_forged_onto_a_real_key_is_refused(
    client: Any, make_key: MakeKey
) -> None:
    _, secret = make_key(environment="live")
    forged = forge("sk", "test", secret[8:20], secret[20:52])
    refused(client.get("/read", headers=bearer(forged)), 401, "INVALID_API_KEY")


@pytest.mark.parametrize(
    "case",
    ["not a key", "bad checksum", "typo in the secret", "two different keys",
     "two Bearer values", "10 KB", "non-ASCII", "NUL", "equals inside", "another prefix"],
)
def test_malformed_keys_cost_no_query_and_no_argon2(
    app: Flask, client: Any, make_key: MakeKey, case: str
) -> None:
    _, secret = make_key()
    _, other = make_key()
    with sql_statements(app) as statements, argon2_runs(app) as runs:
        response = client.get("/read", headers=INVALID[case](secret, other))
    assert response.status_code == 401
    assert statements == []
    assert runs == []


def test_unknown_id_and_wrong_secret_look_the_same(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    _, secret = make_key()
    # Verified once already: the cache must not tell a wrong secret apart.
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    answers = []
    for presented in (unknown_id(secret), wrong_secret(secret)):
        with sql_statements(app) as statements, argon2_runs(app) as runs:
            response = client.get("/read", headers=bearer(presented))
        assert len(runs) == 1, "exactly one argon2 verification"
        assert len(statements) == 1, "one indexed lookup"
        answers.append((response.status_code, response.get_data(), sorted(response.headers)))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401


# -- EXPIRED_API_KEY ------------------------------------------------------------


def test_expired_key(app: Flask, client: Any, make_key: MakeKey, clock: Clock) -> None:
    expires = clock.now + dt.timedelta(hours=1)
    _, secret = make_key(expires_at=expires)
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    clock.advance(hours=2)
    response = client.get("/read", headers=bearer(secret))
    error = refused(response, 401, "EXPIRED_API_KEY")
    assert error["details"] == {"expired_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert not echoes(response, secret)


def test_validity_ends_exactly_at_expires_at(
    app: Flask, client: Any, make_key: MakeKey, clock: Clock
) -> None:
    expires = clock.now + dt.timedelta(minutes=10)
    _, secret = make_key(expires_at=expires)
    clock.now = expires - dt.timedelta(microseconds=1)
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    clock.now = expires
    refused(client.get("/read", headers=bearer(secret)), 401, "EXPIRED_API_KEY")
    clock.now = expires + dt.timedelta(microseconds=1)
    refused(client.get("/read", headers=bearer(secret)), 401, "EXPIRED_API_KEY")


def test_expiry_is_told_only_to_the_key_holder(
    app: Flask, client: Any, make_key: MakeKey, clock: Clock
) -> None:
    _, secret = make_key(expires_at=clock.now + dt.timedelta(hours=1))
    clock.advance(hours=2)
    with argon2_runs(app) as runs:
        wrong = client.get("/read", headers=bearer(wrong_secret(secret)))
    error = refused(wrong, 401, "INVALID_API_KEY")
    assert error["details"] == {}
    assert runs == [1]
    # And the body is the very one an unknown id gets.
    unknown = client.get("/read", headers=bearer(unknown_id(secret)))
    assert wrong.get_data() == unknown.get_data()


def test_expired_and_revoked_is_invalid(
    app: Flask, client: Any, make_key: MakeKey, clock: Clock
) -> None:
    info, secret = make_key(expires_at=clock.now + dt.timedelta(hours=1))
    with app.app_context():
        service_of(app).revoke_key(info.id)
    clock.advance(hours=2)
    refused(client.get("/read", headers=bearer(secret)), 401, "INVALID_API_KEY")


# -- FORBIDDEN and scopes ---------------------------------------------------------


def test_forbidden_lists_required_scopes(client: Any, make_key: MakeKey) -> None:
    _, secret = make_key(["read"])
    response = client.post("/write", headers=bearer(secret))
    error = refused(response, 403, "FORBIDDEN")
    assert error["details"] == {"required_scopes": ["write"]}
    assert not echoes(response, secret)
    assert response.headers.get("Cache-Control") != "public"


@pytest.mark.parametrize(
    ("granted", "read", "write", "admin"),
    [
        (["read"], 200, 403, 403),
        (["write"], 200, 200, 403),
        (["admin"], 200, 200, 200),
        (["read", "write"], 200, 200, 403),
    ],
)
def test_scope_implication(
    app: Flask, client: Any, make_key: MakeKey, granted: list[str], read: int, write: int,
    admin: int,
) -> None:
    @app.get("/admin")
    @require_key("admin")
    def admin_view() -> dict[str, Any]:
        return {}

    _, secret = make_key(granted)
    assert client.get("/read", headers=bearer(secret)).status_code == read
    assert client.post("/write", headers=bearer(secret)).status_code == write
    assert client.get("/admin", headers=bearer(secret)).status_code == admin


def test_host_defined_scopes_and_several_required(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(
        KEYAUTH_SCOPES={"read": [], "write": ["read"], "admin": ["write"], "webhook": [],
                        "billing:read": []},
    )

    @app.post("/hooks")
    @require_key("webhook", "write")
    def hooks() -> dict[str, Any]:
        return {"scopes": sorted(current_key.scopes)}

    client = app.test_client()
    with app.app_context():
        _, hook_only = keyauth.create_key("acme", "h", ["webhook"])
        _, write_only = keyauth.create_key("acme", "w", ["write"])
        _, both = keyauth.create_key("acme", "b", ["webhook", "write"])
        _, admin = keyauth.create_key("acme", "a", ["admin"])
        _, billing = keyauth.create_key("acme", "c", ["billing:read"])
    for secret in (hook_only, write_only, admin):
        error = refused(client.post("/hooks", headers=bearer(secret)), 403, "FORBIDDEN")
        assert error["details"] == {"required_scopes": ["webhook", "write"]}
    response = client.post("/hooks", headers=bearer(both))
    assert response.status_code == 200
    assert response.get_json() == {"scopes": ["read", "webhook", "write"]}
    # admin does not imply a scope the host added beside it.
    assert client.get("/any", headers=bearer(billing)).get_json() == {"scopes": ["billing:read"]}


def test_require_key_without_scope_takes_any_valid_key(client: Any, make_key: MakeKey) -> None:
    for granted, environment in ((["read"], "live"), (["write"], "test"), (["admin"], "live")):
        _, secret = make_key(granted, environment=environment)
        assert client.get("/any", headers=bearer(secret)).status_code == 200
    refused(client.get("/any"), 401, "MISSING_API_KEY")


def test_unknown_scope_in_require_key_is_a_runtime_error(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    @app.get("/typo")
    @require_key("raed")
    def typo() -> dict[str, Any]:
        return {}

    _, secret = make_key()
    with pytest.raises(RuntimeError, match="raed"):
        client.get("/typo", headers=bearer(secret))


def test_scope_names_must_be_strings() -> None:
    with pytest.raises(TypeError):
        require_key(["read"])  # type: ignore[arg-type]


# -- HTTPS_REQUIRED -------------------------------------------------------------


def test_https_required(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(KEYAUTH_REQUIRE_HTTPS=True)
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    response = client.get("/read", headers=bearer(secret))
    refused(response, 403, "HTTPS_REQUIRED")
    assert not echoes(response, secret)
    secure = app.test_client()
    response = secure.get("/read", headers=bearer(secret), base_url="https://api.example.com")
    assert response.status_code == 200


def test_https_not_required_by_default(client: Any, make_key: MakeKey) -> None:
    _, secret = make_key()
    assert client.get("/read", headers=bearer(secret)).status_code == 200


# -- configured header names -----------------------------------------------------


def test_header_names_are_configurable(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(KEYAUTH_HEADER_NAMES=["X-Token"])
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    assert client.get("/read", headers={"X-Token": secret}).status_code == 200
    refused(client.get("/read", headers=bearer(secret)), 401, "MISSING_API_KEY")
    refused(client.get("/read", headers={"X-API-Key": secret}), 401, "MISSING_API_KEY")


# -- auth_failed ------------------------------------------------------------------


def test_auth_failed_signal(app: Flask, client: Any, make_key: MakeKey, clock: Clock) -> None:
    _, secret = make_key(expires_at=clock.now + dt.timedelta(hours=1))
    _, reader = make_key(["read"])
    seen: list[tuple[Any, dict[str, Any]]] = []

    def receiver(sender: Any, **extra: Any) -> None:
        seen.append((sender, extra))

    addr = {"REMOTE_ADDR": "203.0.113.9"}
    with auth_failed.connected_to(receiver, app):
        client.get("/read", environ_base=addr)
        client.get("/read", headers=bearer(wrong_secret(secret)), environ_base=addr)
        clock.advance(hours=2)
        client.get("/read", headers=bearer(secret), environ_base=addr)
        # Neither a success nor a 403 is a failed authentication.
        assert client.get("/read", headers=bearer(reader)).status_code == 200
        assert client.post("/write", headers=bearer(reader)).status_code == 403
    assert [s for s, _ in seen] == [app, app, app]
    assert [e for _, e in seen] == [
        {"reason": "MISSING_API_KEY", "remote_addr": "203.0.113.9"},
        {"reason": "INVALID_API_KEY", "remote_addr": "203.0.113.9"},
        {"reason": "EXPIRED_API_KEY", "remote_addr": "203.0.113.9"},
    ]
    assert secret not in repr(seen)


def test_401_bodies_never_carry_a_secret_anywhere(
    app: Flask, client: Any, make_key: MakeKey
) -> None:
    _, secret = make_key()
    token = secrets.token_hex(8)
    for case, build in INVALID.items():
        headers = build(secret + token, secret)
        response = client.get("/read", headers=headers)
        assert response.status_code == 401, case
        assert not echoes(response, token, secret), case


def test_two_different_keys_are_refused_without_any_io(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory(KEYAUTH_FAILED_AUTH_LIMIT="2/minute")
    with app.app_context():
        _, one = keyauth.create_key("acme", "one")
        _, two = keyauth.create_key("acme", "two")
    client = app.test_client()
    headers = {**bearer(one), "X-API-Key": two}
    with sql_statements(app) as statements:
        for _ in range(4):
            refused(client.get("/read", headers=headers), 401, "INVALID_API_KEY")
    # Like a malformed key: decided from the headers alone, so nothing to
    # throttle and nothing read.
    assert statements == []
    assert client.get("/read", headers=bearer(one)).status_code == 200


