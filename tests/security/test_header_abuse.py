"""Hostile key headers (OWASP API2, API4): whatever arrives, 401 or 400,
never a 500, never an echo, and no argon2 run for anything malformed or
over the length cap.

The in-process tests count argon2 runs and SQL statements; the gunicorn
tests send raw bytes to a real server, where duplicated headers are joined
with a comma before the app sees them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth, keys

from ..conftest import argon2_runs, make_app, sql_statements
from ..test_auth import forge, wrong_secret
from .servers import Reply, gunicorn, raw_request

NO_THROTTLE = "1000000/minute"


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[Flask, KeyAuth, str]]:
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 'h.db'}", KEYAUTH_FAILED_AUTH_LIMIT=NO_THROTTLE
    )
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    yield app, keyauth, secret
    with app.app_context():
        db.engine.dispose()


def assert_clean_refusal(response: Any, *secrets: str) -> str:
    """A 401 in our envelope that echoes nothing; return its code."""
    assert response.status_code == 401, response.get_data(as_text=True)
    body = response.get_data(as_text=True)
    assert "Traceback" not in body
    for secret in secrets:
        assert secret[20:52] not in body
        assert secret[20:52] not in str(response.headers)
    return str(response.get_json()["error"]["code"])


# -- over the length cap: refused on its face ---------------------------------------

OVER_CAP = {
    "one past the cap": lambda k: "sk_live_" + "a" * (keys.MAX_KEY_LENGTH - 7),
    "key plus padding past the cap": lambda k: k + "0" * (keys.MAX_KEY_LENGTH - len(k) + 1),
    "8 KB": lambda k: k + "A" * 8192,
    "64 KB": lambda k: "x" * 65536,
    "1 MB of key-shaped text": lambda k: k * (1_048_576 // len(k)),
    "key, space, 8 KB": lambda k: k + " " + "B" * 8192,
    "8 KB of commas": lambda k: ",".join([k] * 150),
}


@pytest.mark.parametrize("case", list(OVER_CAP))
@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_over_the_length_cap_costs_no_argon2_and_no_query(
    hostile: tuple[Flask, KeyAuth, str], case: str, header: str
) -> None:
    app, _, secret = hostile
    value = OVER_CAP[case](secret)
    assert len(value) > keys.MAX_KEY_LENGTH
    if header == "Authorization":
        value = "Bearer " + value
    client = app.test_client()
    with sql_statements(app) as statements, argon2_runs(app) as runs:
        started = time.monotonic()
        response = client.get("/read", headers={header: value})
        took = time.monotonic() - started
    assert assert_clean_refusal(response, secret) == "INVALID_API_KEY"
    assert runs == [] and statements == []
    assert took < 2, f"{case}: {took:.2f}s to refuse"


# -- every shape of abuse: 401, the right code, nothing echoed --------------------


def abuse_cases(k: str) -> dict[str, tuple[dict[str, str], str]]:
    return {
        "empty Authorization": ({"Authorization": ""}, "MISSING_API_KEY"),
        "scheme only": ({"Authorization": "Bearer"}, "MISSING_API_KEY"),
        "scheme and spaces": ({"Authorization": "Bearer \t "}, "MISSING_API_KEY"),
        "Basic with the key": ({"Authorization": f"Basic {k}"}, "MISSING_API_KEY"),
        "Token scheme": ({"Authorization": f"Token {k}"}, "MISSING_API_KEY"),
        "the key as the scheme": ({"Authorization": k}, "MISSING_API_KEY"),
        "Bearer glued": ({"Authorization": f"Bearer{k}"}, "MISSING_API_KEY"),
        "Bearer= value": ({"Authorization": f"Bearer={k}"}, "MISSING_API_KEY"),
        "two schemes": ({"Authorization": f"Bearer Bearer {k}"}, "INVALID_API_KEY"),
        "comma-joined duplicate": ({"Authorization": f"Bearer {k},Bearer {k}"},
                                   "INVALID_API_KEY"),
        "comma-joined X-API-Key": ({"X-API-Key": f"{k},{k}"}, "INVALID_API_KEY"),
        "comma-joined wrong first": (
            {"Authorization": f"Bearer {wrong_secret(k)},Bearer {k}"}, "INVALID_API_KEY"),
        "Bearer plus Basic joined": ({"Authorization": f"Bearer {k},Basic eA=="},
                                     "INVALID_API_KEY"),
        "NUL": ({"Authorization": f"Bearer {k}\x00"}, "INVALID_API_KEY"),
        "BEL inside": ({"X-API-Key": f"{k[:20]}\x07{k[21:]}"}, "INVALID_API_KEY"),
        "ESC sequence": ({"X-API-Key": f"\x1b[31m{k}"}, "INVALID_API_KEY"),
        "DEL": ({"X-API-Key": f"{k}\x7f"}, "INVALID_API_KEY"),
        "latin-1": ({"X-API-Key": k[:-1] + "\xe9"}, "INVALID_API_KEY"),
        "UTF-8 bytes as latin-1": ({"X-API-Key": k + "Ã©"}, "INVALID_API_KEY"),
        "base64 padding": ({"Authorization": f"Bearer {k}=="}, "INVALID_API_KEY"),
        "= inside": ({"Authorization": f"Bearer {k[:30]}={k[30:]}"}, "INVALID_API_KEY"),
        "key=value": ({"Authorization": f"Bearer token={k}"}, "INVALID_API_KEY"),
        "quoted": ({"Authorization": f'Bearer "{k}"'}, "INVALID_API_KEY"),
        "percent-encoded": ({"X-API-Key": k.replace("_", "%5F")}, "INVALID_API_KEY"),
        "upper-cased": ({"X-API-Key": k.upper()}, "INVALID_API_KEY"),
        "SQL": ({"X-API-Key": "' OR 1=1 --"}, "INVALID_API_KEY"),
        "SQL in the id": ({"X-API-Key": forge("sk", "live", "'OR''='", k[20:52])},
                          "INVALID_API_KEY"),
        "path traversal": ({"X-API-Key": "../../etc/passwd"}, "INVALID_API_KEY"),
        "template": ({"X-API-Key": "{{7*7}}${7*7}"}, "INVALID_API_KEY"),
        "two different keys": ({"Authorization": f"Bearer {k}", "X-API-Key": wrong_secret(k)},
                               "INVALID_API_KEY"),
    }


@pytest.mark.parametrize("case", list(abuse_cases("sk_live_" + "A" * 50)))
def test_header_abuse_is_a_clean_401(hostile: tuple[Flask, KeyAuth, str], case: str) -> None:
    app, _, secret = hostile
    headers, expected = abuse_cases(secret)[case]
    response = app.test_client().get("/read", headers=headers)
    assert assert_clean_refusal(response, secret) == expected
    challenge = "Bearer" if expected == "MISSING_API_KEY" else 'Bearer error="invalid_token"'
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("junk", ["\x1c", "\x1f", "\x85", "\xa0", "\x0b", "\x0c"])
def test_control_or_non_ascii_whitespace_around_a_key_is_invalid(
    hostile: tuple[Flask, KeyAuth, str], junk: str
) -> None:
    app, _, secret = hostile
    client = app.test_client()
    for headers in ({"X-API-Key": f"{junk}{secret}"}, {"Authorization": f"Bearer{junk}{secret}"}):
        response = client.get("/read", headers=headers)
        assert response.status_code == 401, (repr(junk), headers)


# -- a real gunicorn: duplicated headers arrive joined ------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str, str]]:
    directory = tmp_path_factory.mktemp("gunicorn-headers")
    url = f"sqlite:///{directory / 'g.db'}"
    app, db, keyauth = make_app(url)  # creates the tables gunicorn's app uses
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
        _, other = keyauth.create_key("acme", "other")
        db.engine.dispose()
    config = {
        "SQLALCHEMY_DATABASE_URI": url,
        "RATELIMIT_STORAGE_URI": "memory://",
        "KEYAUTH_FAILED_AUTH_LIMIT": NO_THROTTLE,
    }
    with gunicorn(config, workers=1, threads=2) as (_, port):
        yield port, secret, other


def request_head(*headers: bytes) -> bytes:
    return b"GET /read HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(h + b"\r\n" for h in headers)


def refused_by_server_or_us(reply: Reply, *secrets: str) -> None:
    """Our 401, or the server's own 400/431 for what HTTP itself forbids."""
    assert reply.status in (400, 401, 431), (reply.status, reply.body[:300])
    assert b"Traceback" not in reply.body
    for secret in secrets:
        assert secret[20:52].encode() not in reply.body
    if reply.status == 401:
        assert reply.code in ("INVALID_API_KEY", "MISSING_API_KEY")
        assert reply.headers["cache-control"] == "no-store"


def test_gunicorn_serves_a_plain_key(served: tuple[int, str, str]) -> None:
    port, secret, _ = served
    reply = raw_request(port, request_head(f"Authorization: Bearer {secret}".encode()))
    assert reply.status == 200, reply.body


@pytest.mark.parametrize(
    "lines",
    [
        ["Authorization: Bearer {k}", "Authorization: Bearer {k}"],
        ["Authorization: Bearer {k}", "Authorization: Bearer {o}"],
        ["Authorization: Bearer {o}", "Authorization: Bearer {k}"],
        ["Authorization: Basic eDp5", "Authorization: Bearer {k}"],
        ["Authorization: Bearer {k}", "authorization: bearer {k}"],
        ["X-API-Key: {k}", "X-API-Key: {k}"],
        ["X-API-Key: {k}", "X-API-Key: {o}"],
        ["X-API-Key: {k}", "Authorization: Bearer {o}"],
    ],
    ids=lambda lines: " + ".join(line.split(":")[0] for line in lines),
)
def test_duplicated_headers_joined_by_gunicorn_are_refused(
    served: tuple[int, str, str], lines: list[str]
) -> None:
    port, secret, other = served
    head = request_head(*(line.format(k=secret, o=other).encode() for line in lines))
    reply = raw_request(port, head)
    # Joined as "Bearer k,Bearer k": not one key, and never a 500.
    assert reply.status == 401, reply.body
    if lines[0].startswith("Authorization: Basic"):
        # Joined "Basic …,Bearer k" is a Basic credential: no key at all.
        assert reply.code == "MISSING_API_KEY"
    else:
        assert reply.code == "INVALID_API_KEY"
        assert reply.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert secret[20:52].encode() not in reply.body and other[20:52].encode() not in reply.body


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"Bearer",
        b"Bearer " + b"A" * 8000,                 # under gunicorn's field limit: ours
        b"Bearer " + b"A" * 9000,                 # over it: gunicorn's 400
        b"Bearer " + b"A" * 70000,
        b"Bearer sk_live_\x01\x02\x03",
        b"Bearer sk_live_\x00abc",
        b"Bearer sk_live_\x7f",
        b"Bearer sk_live_\xc3\xa9\xe2\x80\x8b",   # UTF-8: e-acute, zero-width space
        b"Bearer sk_live_\xff\xfe",
        b"Bearer a=b=c==",
        b"Bearer {k}\x0b",
        b"Bearer {k} trailing",
        b"Bearer\t\t{k}x",
    ],
)
def test_raw_abusive_values_through_gunicorn_never_500(
    served: tuple[int, str, str], value: bytes
) -> None:
    port, secret, _ = served
    value = value.replace(b"{k}", secret.encode())
    reply = raw_request(port, request_head(b"Authorization: " + value))
    refused_by_server_or_us(reply, secret)
    if len(value) < 8000 and not any(c < 0x20 or c == 0x7F for c in value if c != 0x09):
        assert reply.status == 401  # only the server's own checks answer 400/431


def test_too_many_headers_and_underscore_names_through_gunicorn(
    served: tuple[int, str, str],
) -> None:
    port, secret, _ = served
    many = [f"Authorization: Bearer {secret}".encode()] * 150
    refused_by_server_or_us(raw_request(port, request_head(*many)), secret)
    # X_API_KEY must not pass for X-API-Key (a proxy may not strip it).
    reply = raw_request(port, request_head(f"X_API_KEY: {secret}".encode()))
    refused_by_server_or_us(reply, secret)
    assert reply.status == 400 or reply.code == "MISSING_API_KEY"
