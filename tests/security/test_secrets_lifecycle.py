"""After a full life through the JSON API and the pages, on a real
Werkzeug server with DEBUG logging everywhere (application, Werkzeug,
SQLAlchemy's echo) and a forced 500, a key's plaintext is in no table, no
log line, no cookie and no response but the one that created it; the 500
is a JSON envelope without a traceback.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request, session
from werkzeug.serving import make_server

from flask_keyauth import KeyAuth, blueprint, require_key
from flask_keyauth.keys import random_base62

from ..conftest import make_app, service_of
from ..test_secrets import every_value, secret_parts

PREFIX = "/settings/api-keys"
KEY = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")


@dataclass
class Seen:
    status: int
    method: str
    path: str
    text: str  # body and headers


@dataclass
class Browser:
    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)
    seen: list[Seen] = field(default_factory=list)

    def send(self, method: str, path: str, body: Any = None, form: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
        data = None
        headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            from urllib.parse import urlencode

            data = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with opener.open(req, timeout=30) as response:
                status, text, hdrs = response.status, response.read().decode(), response.headers
        except urllib.error.HTTPError as error:
            status, text, hdrs = error.code, error.read().decode(), error.headers
        self.seen.append(Seen(status, method, path, text + "\n" + str(hdrs)))
        return status, text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # keep the 303 itself: its Location is checked too


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Flask, KeyAuth, str]]:
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 's.db'}",
        TESTING=False,  # a real 500, logged by Flask, not raised into the test
        SQLALCHEMY_ECHO="debug",
        KEYAUTH_LAST_USED_INTERVAL=0,
        KEYAUTH_FAILED_AUTH_LIMIT="1000/minute",
    )
    app.register_blueprint(blueprint, url_prefix=PREFIX)

    @keyauth.owner_loader
    def owner() -> str | None:
        if request.headers.get("X-Break-Owner-Store"):
            raise RuntimeError("the host's owner store failed")
        return session.get("org")

    @app.get("/login")
    def login() -> str:
        session["org"] = "acme"
        return "ok"

    @app.get("/csrf")
    def csrf() -> str:
        from flask_wtf.csrf import generate_csrf

        return str(generate_csrf())  # type: ignore[no-untyped-call]

    @app.get("/boom")
    @require_key("read")
    def boom() -> Any:
        raise ZeroDivisionError("a bug in the host's view")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    echo = logging.getLogger("sqlalchemy.engine.Engine")
    handlers = list(echo.handlers)
    try:
        yield app, keyauth, f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        for handler in echo.handlers[:]:
            if handler not in handlers:
                echo.removeHandler(handler)
        service_of(app).usage.take()
        with app.app_context():
            db.engine.dispose()


def test_full_lifecycle_leaves_the_key_only_in_its_creation_response(
    served: tuple[Flask, KeyAuth, str], caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app, keyauth, base = served
    caplog.set_level(logging.DEBUG)
    for name in ("flask_keyauth", "werkzeug", "sqlalchemy.engine", "flask.app"):
        caplog.set_level(logging.DEBUG, logger=name)
    browser = Browser(base)
    assert browser.send("GET", "/login")[0] == 200
    csrf = {"X-CSRFToken": browser.send("GET", "/csrf")[1]}
    api = PREFIX + "/api"
    issued: list[str] = []
    creations: list[Seen] = []

    def created(status: int, text: str) -> dict[str, Any]:
        assert status == 201, text
        creations.append(browser.seen[-1])
        body = json.loads(text)
        issued.append(body["secret"])
        return body

    # Create through the JSON API (session + CSRF) and through the page.
    one = created(*browser.send("POST", api + "/keys", {"name": "one", "scopes": ["admin"]},
                                headers=csrf))
    status, page = browser.send("GET", PREFIX + "/new")
    form_id = re.search(r'name="form_id" value="([^"]+)"', page)
    assert form_id is not None
    status, page = browser.send("POST", PREFIX + "/new", form={
        "name": "from the page", "scopes": "read", "environment": "test", "expires": "90",
        "form_id": form_id.group(1), "csrf_token": csrf["X-CSRFToken"]})
    assert status == 201
    (from_page,) = set(KEY.findall(page))
    issued.append(from_page)
    creations.append(browser.seen[-1])
    admin = issued[0]
    key_id = one["key"]["id"]

    # Use it, fail with it, manage with it.
    for path in ("/read", "/any", api + "/whoami", api + "/keys", f"{api}/keys/{key_id}",
                 f"{api}/keys/{key_id}/usage", api + "/events"):
        assert browser.send("GET", path, headers={"Authorization": f"Bearer {admin}"})[0] == 200
    wrong = admin[:20] + random_base62(32) + admin[52:]
    for bad in (wrong, admin + "x", admin[:-1]):
        assert browser.send("GET", "/read", headers={"X-API-Key": bad})[0] == 401

    # Rename, rotate (API and page), revoke.
    renamed = browser.send("PATCH", f"{api}/keys/{key_id}", {"name": "renamed"}, headers=csrf)
    assert renamed[0] == 200
    rotated = created(*browser.send("POST", f"{api}/keys/{key_id}/rotate",
                                    {"grace_seconds": 60}, headers=csrf))
    page_key_id = issued[1][8:20]
    status, page = browser.send("GET", f"{PREFIX}/{page_key_id}/rotate")
    form_id = re.search(r'name="form_id" value="([^"]+)"', page)
    assert form_id is not None
    status, page = browser.send("POST", f"{PREFIX}/{page_key_id}/rotate", form={
        "grace": "0", "form_id": form_id.group(1), "csrf_token": csrf["X-CSRFToken"]})
    assert status == 201, page
    (page_rotated,) = set(KEY.findall(page))
    issued.append(page_rotated)
    creations.append(browser.seen[-1])
    assert browser.send("DELETE", f"{api}/keys/{rotated['key']['id']}", headers=csrf)[0] == 200
    status, _ = browser.send("POST", f"{PREFIX}/{key_id}/revoke",
                             form={"csrf_token": csrf["X-CSRFToken"]})
    assert status == 303

    # Forced 500s: in the JSON API (the host's owner loader fails) and in a
    # host view behind require_key, both with a key in the request.
    status, text = browser.send("GET", api + "/keys", headers={
        "X-Break-Owner-Store": "1", **csrf})
    assert status == 500
    assert json.loads(text) == {"error": {
        "code": "INTERNAL_ERROR", "message": "An unexpected error occurred; it has been logged.",
        "details": {}}}
    status, text = browser.send("GET", "/boom", headers={"Authorization": f"Bearer {issued[3]}"})
    assert status == 500 and "Traceback" not in text and "ZeroDivisionError" not in text
    for page_path in ("/", f"/{key_id}", f"/{page_key_id}"):
        assert browser.send("GET", PREFIX + page_path)[0] == 200
    with app.app_context():
        service_of(app).flush_usage()

    assert len(issued) == 4 and len(creations) == 4
    # Each key appears in its own creation response, and nowhere else.
    for secret in issued:
        for part in secret_parts(secret):
            holders = [s for s in browser.seen if part in s.text]
            assert len(holders) == 1, (secret[:20], [(s.method, s.path) for s in holders])
            assert holders[0] in creations
            assert "no-store" in holders[0].text
        for cookie in browser.jar:
            assert secret not in str(cookie.value)
            assert secret not in _session_of(app, str(cookie.value))
    for seen in browser.seen:
        assert "Traceback" not in seen.text
    # No table, no log record, no echo line.
    for table, column, value in every_value(app):
        for secret in issued:
            for part in secret_parts(secret):
                assert part not in value, f"{table}.{column}"
    records = caplog.records
    assert any(r.name.startswith("werkzeug") for r in records)
    assert any(r.name.startswith("sqlalchemy.engine") for r in records)
    assert any(r.levelno == logging.ERROR and r.exc_info for r in records)  # the 500s
    formatter = logging.Formatter("%(name)s %(message)s")
    lines = [formatter.format(r) for r in records] + [repr(r.args) for r in records]
    out = capsys.readouterr()
    lines += [out.out, out.err]
    for line in lines:
        for secret in issued:
            for part in secret_parts(secret):
                assert part not in line, line[:300]


def _session_of(app: Flask, cookie: str) -> str:
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    try:
        return json.dumps(serializer.loads(cookie))
    except Exception:  # noqa: BLE001 - not a session cookie
        return ""


def test_a_key_sent_in_a_url_is_refused_and_the_scanner_finds_it_in_the_access_log(
    served: tuple[Flask, KeyAuth, str], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The one leak the library cannot stop: a client that puts its key in
    a URL hands it to every access log on the way. It is never accepted
    there, and ``flask keys scan`` over the logs finds it, to revoke."""
    app, keyauth, base = served
    caplog.set_level(logging.INFO, logger="werkzeug")
    with app.app_context():
        _, secret = keyauth.create_key("acme", "careless")
    browser = Browser(base)
    for query in ("api_key", "key", "access_token", "token"):
        assert browser.send("GET", f"/read?{query}={secret}")[0] == 401
    log = tmp_path / "access.log"
    log.write_text("\n".join(r.getMessage() for r in caplog.records if r.name == "werkzeug"))
    result = app.test_cli_runner().invoke(args=["keys", "scan", str(log)])
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 4 and secret not in result.output


def test_a_failed_statement_on_our_own_engine_logs_no_hash(postgres_url: str) -> None:
    """Without the host's ``db``, flask-keyauth's own engine hides statement
    parameters, so a database error's message (logged by the host) does not
    carry the new key's argon2 hash."""
    import sqlalchemy as sa

    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=postgres_url, RATELIMIT_STORAGE_URI="memory://",
                      KEYAUTH_ARGON2_TIME_COST=1, KEYAUTH_ARGON2_MEMORY_COST=8)
    keyauth = KeyAuth(app)
    store = app.extensions["keyauth"].store
    try:
        with store.engine.begin() as conn:
            # A rule of the database's own, so that the INSERT of the second
            # key row (which carries its new hash) fails in the database.
            conn.execute(sa.text("CREATE UNIQUE INDEX one_boom ON keyauth_api_keys (name)"))
        with app.app_context():
            keyauth.create_key("acme", "boom label")
        with app.app_context(), pytest.raises(sa.exc.DBAPIError) as raised:
            keyauth.create_key("acme", "boom label")
        assert "one_boom" in str(raised.value)
        assert "$argon2" not in str(raised.value)
    finally:
        store.tables.keys.metadata.drop_all(store.engine)
        store.engine.dispose()
