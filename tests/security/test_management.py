"""Key management under attack (OWASP API1 BOLA, API5 function-level
authorization, API4 resource consumption; ASVS V4, V5, V13): another
owner's keys are as unknown as none on every route and method, safe
methods change nothing, CSRF is enforced for session callers, labels are
data (stored verbatim, shown escaped), and over-size bodies are 413.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient
from flask_wtf.csrf import generate_csrf

from flask_keyauth import KeyAuth, blueprint
from flask_keyauth.models import ApiKeyInfo

from ..conftest import bearer, make_app, service_of
from ..test_secrets import every_value

PREFIX = "/settings/api-keys"
API = PREFIX + "/api"


@dataclass
class Host:
    app: Flask
    keyauth: KeyAuth
    db: Any

    def client(self, owner: str | None = None) -> FlaskClient:
        client = self.app.test_client()
        if owner is not None:
            with client.session_transaction() as sess:
                sess["org"] = owner
        return client

    def csrf(self, client: FlaskClient) -> str:
        return str(client.get("/csrf").get_data(as_text=True))

    def create(self, owner: str, name: str = "k", **kwargs: Any) -> tuple[ApiKeyInfo, str]:
        with self.app.app_context():
            return self.keyauth.create_key(owner, name, **kwargs)

    def keys_of(self, owner: str) -> list[ApiKeyInfo]:
        with self.app.app_context():
            return self.keyauth.list_keys(owner)

    def snapshot(self) -> list[tuple[str, str, str]]:
        """Every stored value but the usage bookkeeping of the caller's own
        key (an admin key's requests are usage, as any key's)."""
        with self.app.app_context():
            service_of(self.app).flush_usage()
        return sorted(
            (table, column, value) for table, column, value in every_value(self.app)
            if table != "keyauth_usage" and column != "last_used_at"
        )


def build_host(database_url: str, **config: Any) -> Host:
    config.setdefault("KEYAUTH_FAILED_AUTH_LIMIT", "1000000/minute")
    config.setdefault("KEYAUTH_LAST_USED_INTERVAL", 3600)
    config.setdefault("KEYAUTH_PLANS", {"free": "100000/hour", "enterprise": None})
    app, db, keyauth = make_app(database_url, **config)
    app.register_blueprint(blueprint, url_prefix=PREFIX)

    @keyauth.owner_loader
    def owner() -> str | None:
        return session.get("org")

    @app.get("/csrf")
    def csrf() -> str:
        return str(generate_csrf())  # type: ignore[no-untyped-call]

    return Host(app, keyauth, db)


@pytest.fixture
def host(database_url: str) -> Iterator[Host]:
    h = build_host(database_url)
    yield h
    service_of(h.app).usage.take()
    with h.app.app_context():
        h.db.drop_all()
        h.db.engine.dispose()


@pytest.fixture
def sqlite_host(tmp_path: Any) -> Iterator[Host]:
    h = build_host(f"sqlite:///{tmp_path / 'm.db'}")
    yield h
    service_of(h.app).usage.take()
    with h.app.app_context():
        h.db.engine.dispose()


#: Every route that names a key: (method, path template, JSON body or form).
KEY_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", API + "/keys/{id}", None),
    ("HEAD", API + "/keys/{id}", None),
    ("PATCH", API + "/keys/{id}", {"name": "mine now"}),
    ("PATCH", API + "/keys/{id}", {"expires_at": None}),
    ("DELETE", API + "/keys/{id}", None),
    ("POST", API + "/keys/{id}/rotate", {"grace_seconds": 0}),
    ("GET", API + "/keys/{id}/usage", None),
    ("GET", API + "/keys/{id}/usage?days=90", None),
    ("GET", API + "/events?key_id={id}", None),
    ("GET", PREFIX + "/{id}", None),
    ("GET", PREFIX + "/{id}/revoke", None),
    ("POST", PREFIX + "/{id}/revoke", {}),
    ("GET", PREFIX + "/{id}/rotate", None),
    ("POST", PREFIX + "/{id}/rotate", {"grace": "0"}),
]


def call(client: FlaskClient, method: str, path: str, body: Any, csrf: str | None = None,
         headers: dict[str, str] | None = None) -> Any:
    headers = dict(headers or {})
    if csrf is not None:
        headers["X-CSRFToken"] = csrf
    if path.startswith(API):
        return client.open(path, method=method, json=body, headers=headers)
    data = dict(body or {})
    if csrf is not None:
        data["csrf_token"] = csrf
    return client.open(path, method=method, data=data, headers=headers)


# -- BOLA: another owner's key is a 404, everywhere -----------------------------------


@pytest.mark.parametrize("caller", ["session", "admin key"])
def test_another_owners_key_is_404_on_every_route_and_method(host: Host, caller: str) -> None:
    victim, victim_secret = host.create("globex", "victim", scopes=["admin"])
    host.create("acme", "mine")
    _, admin = host.create("acme", "acme admin", scopes=["admin"])
    before = host.snapshot()
    client = host.client("acme" if caller == "session" else None)
    csrf = host.csrf(client) if caller == "session" else None
    auth = bearer(admin) if caller == "admin key" else {}
    unknown_id = "Zz0Zz0Zz0Zz0"
    for method, template, body in KEY_ROUTES:
        theirs = call(client, method, template.format(id=victim.id), body, csrf, auth)
        nobody = call(client, method, template.format(id=unknown_id), body, csrf, auth)
        where = f"{method} {template}"
        if template.startswith(PREFIX + "/{id}") and caller == "admin key":
            # The pages are for browser sessions only: no session, no page.
            assert theirs.status_code in (302, 401), where
            continue
        assert theirs.status_code == 404, (where, theirs.get_data(as_text=True)[:300])
        # Not even a different body: no "exists but not yours" oracle.
        assert theirs.get_data() == nobody.get_data(), where
        assert victim.name not in theirs.get_data(as_text=True)
        if template.startswith(API) and method != "HEAD":
            assert theirs.get_json()["error"]["code"] == "NOT_FOUND"
    # Nothing about the victim's key changed, and it still works.
    assert host.snapshot() == before
    assert host.client().get("/read", headers=bearer(victim_secret)).status_code == 200


def test_another_owners_keys_never_listed_nor_their_events(host: Host) -> None:
    host.create("globex", "globex secret project")
    mine, _ = host.create("acme", "mine")
    client = host.client("acme")
    listed = client.get(API + "/keys").get_json()["keys"]
    assert [k["id"] for k in listed] == [mine.id]
    events = client.get(API + "/events").get_json()["events"]
    assert {e["key_id"] for e in events} == {mine.id}
    page = client.get(PREFIX + "/").get_data(as_text=True)
    assert "globex secret project" not in page


# -- API5: function-level authorization ----------------------------------------------------


MANAGEMENT = [
    ("GET", API + "/keys", None),
    ("POST", API + "/keys", {"name": "new"}),
    ("GET", API + "/events", None),
    *KEY_ROUTES[:9],
]


@pytest.mark.parametrize("scopes", [["read"], ["write"], ["read", "write"]])
def test_keys_without_admin_cannot_manage_keys(sqlite_host: Host, scopes: list[str]) -> None:
    h = sqlite_host
    mine, secret = h.create("acme", "k", scopes=scopes)
    before = h.snapshot()
    client = h.client()
    for method, template, body in MANAGEMENT:
        response = call(client, method, template.format(id=mine.id), body, None, bearer(secret))
        assert response.status_code == 403, (method, template)
        if method != "HEAD":
            error = response.get_json()["error"]
            assert error["code"] == "FORBIDDEN"
            assert error["details"] == {"required_scopes": ["admin"]}
    # A session cookie beside the weak key does not lift it: the key decides.
    signed_in = h.client("acme")
    csrf = h.csrf(signed_in)
    response = call(signed_in, "POST", API + "/keys", {"name": "x"}, csrf, bearer(secret))
    assert response.status_code == 403
    assert h.snapshot() == before
    # whoami takes any key, and changes nothing.
    assert client.get(API + "/whoami", headers=bearer(secret)).status_code == 200


def test_no_session_and_no_key_is_401_everywhere(sqlite_host: Host) -> None:
    h = sqlite_host
    mine, _ = h.create("acme", "k")
    before = h.snapshot()
    client = h.client()
    for method, template, body in [*MANAGEMENT, ("GET", API + "/whoami", None)]:
        response = call(client, method, template.format(id=mine.id), body)
        assert response.status_code == 401, (method, template)
    forms = ("/new", f"/{mine.id}/revoke", f"/{mine.id}/rotate")
    pages = [("GET", "/"), ("GET", f"/{mine.id}")]
    pages += [(method, path) for path in forms for method in ("GET", "POST")]
    for method, path in pages:
        response = client.open(PREFIX + path, method=method)
        assert response.status_code == 401, (method, path)
    assert h.snapshot() == before


def test_a_revoked_or_expired_admin_key_manages_nothing(sqlite_host: Host) -> None:
    h = sqlite_host
    info, admin = h.create("acme", "admin", scopes=["admin"])
    client = h.client()
    assert client.get(API + "/keys", headers=bearer(admin)).status_code == 200
    assert client.delete(f"{API}/keys/{info.id}", headers=bearer(admin)).status_code == 200
    # It revoked itself: from now on it is nothing.
    response = client.post(API + "/keys", json={"name": "x"}, headers=bearer(admin))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "INVALID_API_KEY"
    assert len(h.keys_of("acme")) == 1


# -- safe methods change nothing -----------------------------------------------------------


@pytest.mark.parametrize("caller", ["session", "admin key"])
def test_get_head_options_change_nothing(sqlite_host: Host, caller: str) -> None:
    h = sqlite_host
    mine, _ = h.create("acme", "mine")
    _, admin = h.create("acme", "admin", scopes=["admin"])
    auth = bearer(admin) if caller == "admin key" else {}
    client = h.client("acme" if caller == "session" else None)
    client.get(API + "/whoami", headers=auth)  # first use of the admin key
    before = h.snapshot()
    paths = [
        API + "/keys", f"{API}/keys/{mine.id}", f"{API}/keys/{mine.id}/rotate",
        f"{API}/keys/{mine.id}/usage", API + "/events", API + "/whoami", API + "/openapi.json",
        PREFIX + "/", PREFIX + "/new", f"{PREFIX}/{mine.id}", f"{PREFIX}/{mine.id}/revoke",
        f"{PREFIX}/{mine.id}/rotate",
    ]
    for path in paths:
        for method in ("GET", "HEAD", "OPTIONS"):
            response = client.open(path, method=method, headers=auth)
            assert response.status_code < 500, (method, path)
    assert h.snapshot() == before
    assert [k.status for k in h.keys_of("acme")] == ["active", "active"]


def test_head_on_the_revoke_page_revokes_nothing(sqlite_host: Host) -> None:
    """HEAD is CORS-safelisted (no preflight): it must never act as the POST."""
    h = sqlite_host
    mine, secret = h.create("acme", "mine")
    client = h.client("acme")
    client.open(f"{PREFIX}/{mine.id}/revoke", method="HEAD")
    assert h.keys_of("acme")[0].status == "active"
    assert h.client().get("/read", headers=bearer(secret)).status_code == 200


# -- CSRF ----------------------------------------------------------------------------------


def csrf_attempts(h: Host, client: FlaskClient) -> dict[str, tuple[str | None, dict[str, str]]]:
    good = h.csrf(client)
    other = h.client("acme")
    return {
        "missing": (None, {}),
        "empty": ("", {}),
        "wrong": ("not-a-token", {}),
        "tampered": (good[:-2] + ("aa" if not good.endswith("aa") else "bb"), {}),
        "another session's": (h.csrf(other), {}),
        "cross-site fetch": (good, {"Sec-Fetch-Site": "cross-site"}),
        "foreign Origin": (good, {"Origin": "https://evil.example"}),
        "foreign Origin, same host name, other scheme": (good, {"Origin": "http://evil.localhost"}),
    }


STATE_CHANGES: list[tuple[str, str, Any]] = [
    ("POST", API + "/keys", {"name": "planted"}),
    ("PATCH", API + "/keys/{id}", {"name": "renamed"}),
    ("DELETE", API + "/keys/{id}", None),
    ("POST", API + "/keys/{id}/rotate", {"grace_seconds": 0}),
    ("POST", PREFIX + "/new", {"name": "planted", "scopes": "read", "environment": "live",
                               "expires": "90"}),
    ("POST", PREFIX + "/{id}/revoke", {}),
    ("POST", PREFIX + "/{id}/rotate", {"grace": "0"}),
]


def test_csrf_missing_wrong_or_cross_site_is_refused_and_changes_nothing(
    sqlite_host: Host,
) -> None:
    h = sqlite_host
    mine, secret = h.create("acme", "mine")
    client = h.client("acme")
    before = h.snapshot()
    for attempt, (token, extra) in csrf_attempts(h, client).items():
        for method, template, body in STATE_CHANGES:
            response = call(client, method, template.format(id=mine.id), body, token, extra)
            where = f"{attempt}: {method} {template}"
            assert response.status_code == 400, (where, response.get_data(as_text=True)[:300])
            if template.startswith(API):
                assert response.get_json()["error"]["code"] == "CSRF_FAILED", where
            else:
                assert "CSRF" in response.get_data(as_text=True), where
    assert h.snapshot() == before
    assert h.client().get("/read", headers=bearer(secret)).status_code == 200
    # The same requests with the right token do work (the refusals were CSRF).
    good = h.csrf(client)
    response = call(client, "POST", API + "/keys", {"name": "ok"}, good)
    assert response.status_code == 201


def test_a_cross_site_form_post_cannot_create_keys(sqlite_host: Host) -> None:
    """The classic attack: an auto-submitting form on another site, with
    the victim's cookie attached and no way to read the token."""
    h = sqlite_host
    client = h.client("acme")
    for content_type, data in [
        ("application/x-www-form-urlencoded", "name=planted&scopes=admin"),
        ("text/plain", '{"name": "planted", "scopes": ["admin"]}'),
        ("multipart/form-data; boundary=x",
         '--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nplanted\r\n--x--\r\n'),
    ]:
        for path in (API + "/keys", PREFIX + "/new"):
            response = client.post(path, data=data, content_type=content_type,
                                   headers={"Origin": "https://evil.example"})
            assert response.status_code == 400, (path, content_type)
    assert h.keys_of("acme") == []


# -- labels are data ---------------------------------------------------------------------


HOSTILE_LABELS = [
    "<script>alert(document.cookie)</script>",
    '"><img src=x onerror=alert(1)>',
    "'; DROP TABLE keyauth_api_keys; --",
    "Robert'); DELETE FROM keyauth_owners WHERE ('1'='1",
    "{{ config.SECRET_KEY }}{% raw %}",
    "\u202eevil\u202c label",
    "line one\nline two",
    "carriage\rreturn \x1b[2Kescape",
]


def test_hostile_labels_stored_verbatim_and_shown_escaped(sqlite_host: Host) -> None:
    h = sqlite_host
    created = [h.create("acme", label)[0] for label in HOSTILE_LABELS]
    client = h.client("acme")
    by_id = {k["id"]: k["name"] for k in client.get(API + "/keys").get_json()["keys"]}
    assert [by_id[c.id] for c in created] == HOSTILE_LABELS
    assert len(h.keys_of("acme")) == len(HOSTILE_LABELS)  # no table dropped, no row deleted
    pages = [client.get(PREFIX + "/").get_data(as_text=True)]
    for info in created:
        for path in (f"/{info.id}", f"/{info.id}/revoke", f"/{info.id}/rotate"):
            response = client.get(PREFIX + path)
            assert response.status_code == 200
            pages.append(response.get_data(as_text=True))
    for page in pages:
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "SECRET_KEY" not in page or "test-secret" not in page
        assert "test-secret" not in page
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in pages[0]


@pytest.mark.parametrize("label", ["<script>x</script>", "'; DROP TABLE t; --", "a\"b'c"])
def test_hostile_labels_through_the_json_api(sqlite_host: Host, label: str) -> None:
    h = sqlite_host
    client = h.client("acme")
    csrf = h.csrf(client)
    response = client.post(API + "/keys", json={"name": label}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 201
    key = response.get_json()["key"]
    assert key["name"] == label
    renamed = client.patch(f"{API}/keys/{key['id']}", json={"name": label + "2"},
                           headers={"X-CSRFToken": csrf})
    assert renamed.get_json()["key"]["name"] == label + "2"
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("label", ["line one\nline two", "tab\there", "nul\x00", "esc\x1b[2K"])
def test_control_characters_in_labels_are_a_clean_400_in_the_api(
    sqlite_host: Host, label: str
) -> None:
    h = sqlite_host
    client = h.client("acme")
    csrf = h.csrf(client)
    response = client.post(API + "/keys", json={"name": label}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["fields"].keys() == {"name"}
    assert h.keys_of("acme") == []


def test_cli_list_shows_each_hostile_label_on_one_line(sqlite_host: Host) -> None:
    h = sqlite_host
    for label in HOSTILE_LABELS:
        h.create("acme", label)
    result = h.app.test_cli_runner().invoke(args=["keys", "list", "--owner", "acme"])
    assert result.exit_code == 0
    header, *lines = result.stdout.split("\n")
    assert header.startswith("ID ")
    assert lines[-1] == ""
    assert len(lines) - 1 == len(HOSTILE_LABELS)
    # No raw control character reaches the terminal: \r or ESC could
    # overwrite what the operator sees.
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", result.stdout)
    assert "\\r" in result.stdout and "\\x1b" in result.stdout


# -- over-size bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("caller", ["session", "admin key"])
def test_over_size_bodies_are_413_and_change_nothing(sqlite_host: Host, caller: str) -> None:
    h = sqlite_host
    mine, _ = h.create("acme", "mine")
    _, admin = h.create("acme", "admin", scopes=["admin"])
    client = h.client("acme" if caller == "session" else None)
    auth: dict[str, str] = {"X-CSRFToken": h.csrf(client)} if caller == "session" else bearer(admin)
    before = h.snapshot()
    big = json.dumps({"name": "x" * 100, "pad": "y" * (64 * 1024)})
    for method, path in [("POST", API + "/keys"), ("PATCH", f"{API}/keys/{mine.id}"),
                         ("POST", f"{API}/keys/{mine.id}/rotate")]:
        response = client.open(path, method=method, data=big,
                               content_type="application/json", headers=auth)
        assert response.status_code == 413, (method, path)
        assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

        # Chunked, with no Content-Length to refuse up front (as gunicorn
        # passes it: wsgi.input_terminated).
        response = client.open(
            path, method=method, input_stream=io.BytesIO(b" " * (64 * 1024) + b"{}"),
            content_type="application/json", headers={**auth, "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert response.status_code == 413, ("chunked", method, path)
    assert h.snapshot() == before


def test_over_size_page_form_is_refused_never_500(sqlite_host: Host) -> None:
    h = sqlite_host
    h.app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    client = h.client("acme")
    response = client.post(PREFIX + "/new", data={"name": "x", "pad": "y" * 200_000,
                                                  "csrf_token": h.csrf(client)})
    assert response.status_code == 413
    assert h.keys_of("acme") == []


# -- labels PostgreSQL cannot store ------------------------------------------------------


@pytest.fixture
def pg_host(postgres_url: str) -> Iterator[Host]:
    h = build_host(postgres_url, TESTING=False)
    yield h
    service_of(h.app).usage.take()
    with h.app.app_context():
        h.db.drop_all()
        h.db.engine.dispose()


def test_a_nul_in_a_label_is_a_value_error_and_a_400_page_on_postgresql(pg_host: Host) -> None:
    h = pg_host
    with h.app.app_context(), pytest.raises(ValueError, match="name"):
        h.keyauth.create_key("acme", "nul\x00label")
    client = h.client("acme")
    page = client.get(PREFIX + "/new").get_data(as_text=True)
    form_id = re.search(r'name="form_id" value="([^"]+)"', page)
    assert form_id is not None
    response = client.post(PREFIX + "/new", data={
        "name": "nul\x00label", "scopes": "read", "environment": "live", "expires": "90",
        "form_id": form_id.group(1), "csrf_token": h.csrf(client)})
    assert response.status_code == 400
    assert h.keys_of("acme") == []
