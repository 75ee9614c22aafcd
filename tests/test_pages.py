"""The key pages (SPEC §7): what a signed-in owner sees and can do, and
what nobody else can, through the Flask test client."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from flask import Flask, session
from flask.testing import FlaskClient
from jinja2 import ChoiceLoader, DictLoader
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.test import TestResponse

from flask_keyauth import KeyAuth, blueprint
from flask_keyauth.i18n import duration, relative
from flask_keyauth.models import ApiKeyInfo

from .conftest import bearer, dispose, install_clock, make_app, service_of, sql_statements

PREFIX = "/settings/api-keys"
KEY_PATTERN = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")


@dataclass
class Site:
    app: Flask
    keyauth: KeyAuth
    client: FlaskClient

    def create(self, owner: str = "acme", name: str = "k", **kwargs: Any) -> tuple[ApiKeyInfo, str]:
        with self.app.app_context():
            return self.keyauth.create_key(owner, name, **kwargs)

    def key_list(self, owner: str = "acme") -> list[ApiKeyInfo]:
        with self.app.app_context():
            return self.keyauth.list_keys(owner)

    def get_key(self, key_id: str) -> ApiKeyInfo:
        with self.app.app_context():
            return self.keyauth.get_key(key_id)

    def sign_in(self, owner: str = "acme") -> None:
        with self.client.session_transaction() as sess:
            sess["org"] = owner

    def page(self, path: str = "/", status: int = 200) -> str:
        response = self.client.get(PREFIX + path)
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.mimetype == "text/html"
        return response.get_data(as_text=True)

    def flush_usage(self) -> None:
        with self.app.app_context():
            service_of(self.app).flush_usage()


MakeSite = Callable[..., Site]


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[MakeSite]:
    """A host app with the blueprint at /settings/api-keys, an owner loader
    reading ``session["org"]`` and a sign-in page at /signin."""
    made: list[tuple[Flask, Any]] = []

    def factory(templates: dict[str, str] | None = None, **config: Any) -> Site:
        app, db, keyauth = make_app(f"sqlite:///{tmp_path / f'keys{len(made)}.db'}", **config)
        app.register_blueprint(blueprint, url_prefix=PREFIX)
        if templates:
            app.jinja_env.loader = ChoiceLoader(
                [DictLoader(templates), app.create_global_jinja_loader()]
            )

        @keyauth.owner_loader
        def owner() -> str | None:
            return session.get("org")

        @app.get("/signin")
        def signin() -> str:
            return "sign in here"

        made.append((app, db))
        return Site(app, keyauth, app.test_client())

    yield factory
    for app, db in made:
        dispose(app, db)


@pytest.fixture
def site(make_site: MakeSite) -> Site:
    made = make_site()
    made.sign_in()
    return made


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def create_form(site: Site, **fields: Any) -> TestResponse:
    """Open the create form and post it with ``fields`` over its defaults."""
    data: dict[str, Any] = {
        **hidden_fields(site.page("/new")),
        "name": "Production server",
        "scopes": ["read"],
        "environment": "live",
        "expires": "90",
    }
    data.update(fields)
    return site.client.post(f"{PREFIX}/new", data=data)


def secret_in(response: TestResponse) -> str:
    found = KEY_PATTERN.findall(response.get_data(as_text=True))
    assert len(set(found)) == 1, found
    return str(found[0])


def row_of(html: str, name: str) -> str:
    """The list's table row of the key named ``name``."""
    rows = re.findall(r'<tr class="ka-row.*?</tr>', html, re.S)
    matching = [row for row in rows if f">{name}</a>" in row]
    assert len(matching) == 1, f"{name!r} in {len(matching)} rows"
    return str(matching[0])


def row_with_id(html: str, key_id: str) -> str:
    """The list's table row of the key ``key_id`` (names can repeat)."""
    rows = re.findall(r'<tr class="ka-row.*?</tr>', html, re.S)
    link = f'class="ka-keyname" href="{PREFIX}/{key_id}"'
    matching = [row for row in rows if link in row]
    assert len(matching) == 1, f"{key_id!r} in {len(matching)} rows"
    return str(matching[0])


# -- who may see the pages ----------------------------------------------------


PAGES = [
    "/",
    "/new",
    "/{id}",
    "/{id}/edit",
    "/{id}/disable",
    "/{id}/enable",
    "/{id}/revoke",
    "/{id}/rotate",
]
#: The pages that change a key, with a POST.
CHANGE_PAGES = ["/new", "/{id}/edit", "/{id}/disable", "/{id}/enable", "/{id}/revoke",
                "/{id}/rotate"]


def test_anonymous_visitors_get_a_401_page(make_site: MakeSite) -> None:
    made = make_site()
    info, _ = made.create()
    for path in PAGES:
        response = made.client.get(PREFIX + path.format(id=info.id))
        assert response.status_code == 401
        assert response.mimetype == "text/html"
        assert "Sign in to manage your API keys." in response.get_data(as_text=True)
    for path in CHANGE_PAGES:
        assert made.client.post(PREFIX + path.format(id=info.id)).status_code == 401
    assert made.get_key(info.id).status == "active"
    assert len(made.key_list()) == 1


def test_anonymous_visitors_are_sent_to_the_login_view(make_site: MakeSite) -> None:
    made = make_site(KEYAUTH_LOGIN_VIEW="signin")
    info, _ = made.create()
    response = made.client.get(f"{PREFIX}/{info.id}")
    assert response.status_code == 302
    target = urlsplit(response.location)
    assert target.path == "/signin"
    assert parse_qs(target.query) == {"next": [f"{PREFIX}/{info.id}"]}
    # A POST is not replayed after sign-in: no ``next``.
    response = made.client.post(f"{PREFIX}/{info.id}/revoke")
    assert (response.status_code, response.location) == (302, "/signin")
    assert made.get_key(info.id).status == "active"


def test_another_owners_key_is_not_found(site: Site) -> None:
    theirs, their_secret = site.create(owner="globex", name="Globex prod")
    unknown = "A" * 12
    not_found = site.page(f"/{unknown}", 404)
    assert "NOT_FOUND" in not_found
    for path in PAGES[2:]:
        html = site.page(path.format(id=theirs.id), 404)
        assert "Globex prod" not in html
        # The same page as for an id that does not exist: no oracle.
        assert html == site.page(path.format(id=unknown), 404)
    data = hidden_fields(site.page("/new"))
    for path in CHANGE_PAGES[1:]:
        response = site.client.post(
            PREFIX + path.format(id=theirs.id), data={**data, "grace": "0", "name": "Mine now"}
        )
        assert response.status_code == 404, path
    assert site.get_key(theirs.id).status == "active"
    assert site.get_key(theirs.id).name == "Globex prod"
    assert len(site.key_list("globex")) == 1
    assert site.client.get("/read", headers=bearer(their_secret)).status_code == 200
    assert "Globex prod" not in site.page("/")


@pytest.mark.parametrize(
    "key_id", ["x", "A" * 11, "A" * 13, "A" * 300, "%C3%A9" * 6, "new%20", "..", "%00" * 12]
)
def test_malformed_key_ids_are_not_found(site: Site, key_id: str) -> None:
    for path in PAGES[2:]:
        response = site.client.get(PREFIX + path.format(id=key_id))
        assert response.status_code == 404
        assert "There is no such API key in your account." in response.get_data(as_text=True)


def test_page_401s_are_never_cached(make_site: MakeSite) -> None:
    made = make_site()
    info, _ = made.create()
    for path in PAGES:
        for method in ("GET", "HEAD", "POST"):
            if method == "POST" and path in ("/", "/{id}"):
                continue
            response = made.client.open(PREFIX + path.format(id=info.id), method=method)
            assert response.status_code == 401, (method, path)
            assert response.headers["Cache-Control"] == "no-store", (method, path)


HTTPS = "https://localhost"


def test_pages_over_plain_http_go_to_https_when_it_is_required(make_site: MakeSite) -> None:
    made = make_site(KEYAUTH_REQUIRE_HTTPS=True)
    info, _ = made.create(name="Kept")
    made.sign_in()
    for path in [*PAGES, "/{id}?done=revoked"]:
        url = PREFIX + path.format(id=info.id)
        for method in ("GET", "HEAD"):
            response = made.client.open(url, method=method)
            assert response.status_code == 301, (method, path)
            # The same URL, query included, with https.
            assert response.location == f"{HTTPS}{url}"
        assert made.client.get(url, base_url=HTTPS).status_code == 200, path
    # Before anything else: an anonymous visitor is sent to https too, not
    # shown a sign-in page over plain HTTP.
    anonymous = made.app.test_client()
    response = anonymous.get(f"{PREFIX}/new")
    assert (response.status_code, response.location) == (301, f"{HTTPS}{PREFIX}/new")


def test_changes_over_plain_http_are_refused_when_https_is_required(make_site: MakeSite) -> None:
    made = make_site(KEYAUTH_REQUIRE_HTTPS=True)
    info, secret = made.create(name="Kept")
    made.sign_in()
    fields = hidden_fields(made.client.get(f"{PREFIX}/new", base_url=HTTPS).get_data(as_text=True))
    create = {**fields, "name": "x", "scopes": "read", "environment": "live", "expires": "never"}
    for path, data in [
        ("/new", create),
        (f"/{info.id}/edit", {**fields, "name": "Changed"}),
        (f"/{info.id}/disable", fields),
        (f"/{info.id}/revoke", fields),
        (f"/{info.id}/rotate", {**fields, "grace": "0"}),
    ]:
        response = made.client.post(PREFIX + path, data=data)
        assert response.status_code == 403, path
        assert response.mimetype == "text/html"
        body = response.get_data(as_text=True)
        assert "HTTPS_REQUIRED" in body and KEY_PATTERN.search(body) is None
        assert "Location" not in response.headers
    assert [(k.id, k.status) for k in made.key_list()] == [(info.id, "active")]
    assert made.get_key(info.id).expires_at is None
    assert made.get_key(info.id).name == "Kept"
    assert made.client.get("/read", headers=bearer(secret), base_url=HTTPS).status_code == 200
    # The same form over https creates the key, once.
    created = made.client.post(f"{PREFIX}/new", data=create, base_url=HTTPS)
    assert created.status_code == 201
    secret_in(created)


def test_https_behind_a_proxy_is_read_through_proxy_fix(make_site: MakeSite) -> None:
    made = make_site(KEYAUTH_REQUIRE_HTTPS=True)
    made.app.wsgi_app = ProxyFix(made.app.wsgi_app, x_proto=1)  # type: ignore[method-assign]
    made.sign_in()
    forwarded = {"X-Forwarded-Proto": "https"}
    assert made.client.get(f"{PREFIX}/", headers=forwarded).status_code == 200
    html = made.client.get(f"{PREFIX}/new", headers=forwarded).get_data(as_text=True)
    data = {
        **hidden_fields(html),
        "name": "Behind a proxy",
        "scopes": "read",
        "environment": "live",
        "expires": "never",
    }
    assert made.client.post(f"{PREFIX}/new", data=data, headers=forwarded).status_code == 201
    # Without the header, the proxy says the request came over plain HTTP.
    assert made.client.get(f"{PREFIX}/").status_code == 301


def test_pages_are_served_over_plain_http_unless_https_is_required(site: Site) -> None:
    assert site.client.get(f"{PREFIX}/").status_code == 200
    assert create_form(site).status_code == 201


# -- the pages ------------------------------------------------------------------


def test_head_requests_change_nothing(site: Site) -> None:
    info, secret = site.create(name="Kept")
    for path in PAGES:
        response = site.client.head(PREFIX + path.format(id=info.id))
        assert response.status_code == 200, path
    assert [(k.id, k.status) for k in site.key_list()] == [(info.id, "active")]
    assert site.client.get("/read", headers=bearer(secret)).status_code == 200


def test_every_page_renders_in_the_default_layout(site: Site) -> None:
    empty = site.page("/")
    assert "No API keys yet" in empty
    info, _ = site.create(name="CI deploys", scopes=["write"], environment="test")
    for path, marker in [
        ("/", "Create API key"),
        ("/new", "Create key"),
        (f"/{info.id}", "Requests, last 30 days"),
        (f"/{info.id}/edit", "Edit “CI deploys”"),
        (f"/{info.id}/disable", "Disable “CI deploys”?"),
        (f"/{info.id}/enable", "This key is not disabled"),
        (f"/{info.id}/revoke", "Revoke “CI deploys”?"),
        (f"/{info.id}/rotate", "Rotate “CI deploys”"),
    ]:
        html = site.page(path)
        assert marker in html
        assert html.startswith("<!doctype html>")
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
        assert f'href="{PREFIX}/static/keyauth.css"' in html
        # No page can be framed by another site (clickjacking the buttons).
        headers = site.client.get(PREFIX + path).headers
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    css = site.client.get(f"{PREFIX}/static/keyauth.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert b"@media (max-width:" in css.data  # the table stacks on phones
    css.close()
    js = site.client.get(f"{PREFIX}/static/keyauth.js")
    assert js.status_code == 200 and b"clipboard" in js.data
    js.close()


def test_list_shows_each_keys_details(site: Site) -> None:
    info, _ = site.create(name="Billing", scopes=["read", "write"], environment="test")
    row = row_of(site.page("/"), "Billing")
    assert info.redacted in row
    assert '<li class="ka-scope">read</li><li class="ka-scope">write</li>' in row
    assert 'class="ka-env ka-env--test">Test<' in row
    assert ">Active<" in row
    assert "Never</span>" in row  # never used, never expires
    assert f'href="{PREFIX}/{info.id}"' in row
    # Besides the name, a link that looks like one.
    assert (
        f'<a class="ka-rowlink" href="{PREFIX}/{info.id}">Details'
        '<span class="ka-visually-hidden"> of Billing</span></a>'
    ) in row
    assert "Replaces" not in row and "Replaced by" not in row


def test_the_copy_button_stays_hidden_without_script(site: Site) -> None:
    css = site.client.get(f"{PREFIX}/static/keyauth.css")
    text = css.get_data(as_text=True)
    css.close()
    # The button is a .ka-btn (display: inline-flex); the hidden attribute
    # must win over that rule, or a button that does nothing shows.
    assert re.search(r"\.keyauth \[hidden\][^{]*\{\s*display: none !important;", text)
    html = create_form(site).get_data(as_text=True)
    assert re.search(r'<button [^>]*class="ka-btn[^"]*ka-secret__copy"[^>]* hidden>', html)


class FormLabels(HTMLParser):
    """Collects the ids of form controls and the targets of labels."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[str] = []
        self.labelled: set[str] = set()
        self.legends = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in ("input", "textarea", "select") and attributes.get("type") != "hidden":
            self.controls.append(attributes.get("id") or "")
        if tag == "label" and attributes.get("for"):
            self.labelled.add(attributes["for"] or "")
        if tag == "legend":
            self.legends += 1


def test_forms_label_every_control(site: Site) -> None:
    info, _ = site.create()
    # Permissions, environment, expiration and the optional details.
    for path, legends in [("/new", 4), (f"/{info.id}/rotate", 2), (f"/{info.id}/edit", 0)]:
        parser = FormLabels()
        parser.feed(site.page(path))
        assert parser.controls and all(parser.controls)
        assert set(parser.controls) <= parser.labelled, path
        assert parser.legends == legends
    parser = FormLabels()
    parser.feed(site.page("/new"))
    for control in ["ka-description", "ka-metadata", "ka-allowed-ips", "ka-confirm-admin"]:
        assert control in parser.controls


def test_create_form_offers_the_configured_scopes(make_site: MakeSite) -> None:
    made = make_site(
        KEYAUTH_SCOPES={"read": [], "write": ["read"], "billing": []},
        KEYAUTH_ENVIRONMENTS_ACCEPTED=["test"],
    )
    made.sign_in()
    html = made.page("/new")
    assert re.findall(r'name="scopes" value="(\w+)"', html) == ["read", "write", "billing"]
    # What each includes, in the permission table's last column.
    assert re.search(
        r'value="write".*?<td data-label="Includes"><ul class="ka-scopes" aria-label="Permissions">'
        r'<li class="ka-scope">read</li></ul></td>',
        html,
        re.S,
    )
    # No admin scope, no live keys: nothing to confirm.
    assert "ka-confirm-admin" not in html
    # Only keys this deployment accepts can be made.
    assert re.findall(r'name="environment" value="(\w+)"', html) == ["test"]
    assert re.findall(r'name="expires" value="(\w+)"', html) == [
        "never",
        "30",
        "60",
        "90",
        "date",
    ]


# -- creating: the key shown once -------------------------------------------


def test_created_key_is_shown_once_and_nowhere_else(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # SQL statements with their parameters go to the log too.
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    response = create_form(site, name="Production server", scopes=["read", "write"])
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    assert "Location" not in response.headers
    secret = secret_in(response)
    html = response.get_data(as_text=True)
    assert html.count(secret) == 1
    assert "It will not be shown again." in html
    assert 'data-copy-target="ka-secret" hidden' in html  # shown by the script only
    assert 'aria-live="polite"' in html
    for header, value in response.headers.items():
        assert secret not in value, header

    # The key works.
    assert site.client.get("/read", headers=bearer(secret)).status_code == 200
    (key,) = site.key_list()
    assert (key.name, key.granted_scopes) == ("Production server", ("read", "write"))

    # ... and is never shown again: list, details, confirmation pages.
    for path in ["/", f"/{key.id}", f"/{key.id}/revoke", f"/{key.id}/rotate"]:
        page = site.page(path)
        assert secret not in page
        assert secret[-20:] not in page
    assert key.redacted in site.page("/")

    # Not in the session, signed cookie or decoded.
    cookie = site.client.get_cookie("session")
    assert cookie is not None and secret not in cookie.value
    serializer = site.app.session_interface.get_signing_serializer(site.app)  # type: ignore[attr-defined]
    assert secret not in repr(serializer.loads(cookie.value))
    # Not in any log line.
    assert "INSERT INTO keyauth_api_keys" in caplog.text
    assert secret not in caplog.text
    assert secret[-20:] not in caplog.text
    # Not in any table.
    with site.app.app_context():
        engine = site.app.extensions["keyauth"].store.engine
        tables = site.app.extensions["keyauth"].store.tables
        with engine.connect() as conn:
            for table in (tables.keys, tables.events, tables.usage, tables.owners):
                for row in conn.execute(sa.select(table)):
                    assert secret not in repr(tuple(row))


def test_resubmitting_the_create_form_shows_nothing_and_creates_nothing(site: Site) -> None:
    data = {
        **hidden_fields(site.page("/new")),
        "name": "Once",
        "scopes": "read",
        "environment": "live",
        "expires": "never",
    }
    first = site.client.post(f"{PREFIX}/new", data=data)
    assert first.status_code == 201
    secret = secret_in(first)
    again = site.client.post(f"{PREFIX}/new", data=data)  # the browser's reload
    assert again.status_code == 409
    body = again.get_data(as_text=True)
    assert "FORM_ALREADY_SUBMITTED" in body and secret not in body
    assert KEY_PATTERN.search(body) is None
    assert len(site.key_list()) == 1


def test_create_stores_environment_and_expiry(site: Site) -> None:
    clock = install_clock(site.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    cases = [
        ({"expires": "never"}, None),
        ({"expires": "30"}, clock.now + dt.timedelta(days=30)),
        ({"expires": "60"}, clock.now + dt.timedelta(days=60)),
        ({"expires": "90", "expires_on": "2027-01-01"}, clock.now + dt.timedelta(days=90)),
        (
            {"expires": "date", "expires_on": "2027-01-15"},
            dt.datetime(2027, 1, 15, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
        ),
        # Through the end of today: still hours of use left.
        (
            {"expires": "date", "expires_on": "2026-11-23"},
            dt.datetime(2026, 11, 23, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
        ),
    ]
    for i, (fields, expected) in enumerate(cases):
        response = create_form(site, name=f"key {i}", environment="test", **fields)
        assert response.status_code == 201, response.get_data(as_text=True)
        assert secret_in(response).startswith("sk_test_")
        key = next(k for k in site.key_list() if k.name == f"key {i}")
        assert (key.environment, key.expires_at) == ("test", expected)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (30 * 86400 - 0.005, "30 days"),  # a 30-day key, a moment after it was made
        (30 * 86400 + 0.005, "30 days"),
        (29 * 86400 + 13 * 3600, "30 days"),
        (29 * 86400 + 11 * 3600, "29 days"),
        (86400, "1 day"),
        (23 * 3600 + 45 * 60, "1 day"),
        (3 * 3600 - 1, "3 hours"),
        (3600 - 20, "1 hour"),
        (59 * 60, "59 minutes"),
        (60, "1 minute"),
        (60.4, "1 minute"),
    ],
)
def test_durations_round_to_the_nearest_unit(seconds: float, text: str) -> None:
    assert duration(seconds) == text
    now = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc)
    assert relative(now + dt.timedelta(seconds=seconds), now) == f"in {text}"
    assert relative(now - dt.timedelta(seconds=seconds), now) == f"{text} ago"
    assert relative(now + dt.timedelta(seconds=59), now) == "just now"


class TickingClock:
    """A clock that moves a few milliseconds every time it is read, as the
    real one does between creating a key and rendering the page."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(milliseconds=7)
        return self.now


def test_a_30_day_key_shows_30_days_right_after_creation(site: Site) -> None:
    service_of(site.app).clock = TickingClock(dt.datetime.now(dt.timezone.utc))
    response = create_form(site, name="Monthly", expires="30")
    assert response.status_code == 201
    assert '<span class="ka-sub">in 30 days</span>' in response.get_data(as_text=True)
    (key,) = site.key_list()
    assert '<span class="ka-sub">in 30 days</span>' in row_of(site.page("/"), "Monthly")
    assert '<span class="ka-sub">in 30 days</span>' in site.page(f"/{key.id}")


def test_a_key_set_to_expire_on_a_date_works_through_that_whole_day(site: Site) -> None:
    clock = install_clock(site.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    form = site.page("/new")
    assert "works through the end of that day: until 23:59:59 UTC." in form
    assert 'min="2026-11-23"' in form  # today is a valid choice
    response = create_form(site, name="Dated", expires="date", expires_on="2027-01-15")
    assert response.status_code == 201
    secret = secret_in(response)
    created = response.get_data(as_text=True)
    # Shown as the day chosen, everywhere.
    shown = (
        '<time datetime="2027-01-15T23:59:59Z" title="Jan 15, 2027, 11:59\u202fPM UTC">'
        "Jan 15, 2027</time>"
    )
    assert shown in created
    (key,) = site.key_list()
    assert shown in row_of(site.page("/"), "Dated")
    assert shown in site.page(f"/{key.id}")

    clock.now = dt.datetime(2027, 1, 15, 23, 59, 59, tzinfo=dt.timezone.utc)
    assert site.client.get("/read", headers=bearer(secret)).status_code == 200
    clock.now = dt.datetime(2027, 1, 16, tzinfo=dt.timezone.utc)
    refused = site.client.get("/read", headers=bearer(secret))
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "EXPIRED_API_KEY"  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "Give the key a name"),
        ({"name": "   "}, "Give the key a name"),
        ({"name": "n" * 129}, "at most 128 characters long; this one has 129"),
        ({"scopes": []}, "Choose at least one permission."),
        ({"scopes": ["read", "root"]}, "Choose permissions from the list."),
        ({"environment": "prod"}, "Choose live or test."),
        ({"expires": "45"}, "Choose when the key expires."),
        ({"expires": "date", "expires_on": ""}, "Choose the day the key expires."),
        ({"expires": "date", "expires_on": "   "}, "Choose the day the key expires."),
        ({"expires": "date", "expires_on": "31/12/2030"}, "Choose a valid day for the key"),
        ({"expires": "date", "expires_on": "2020-01-01"}, "The expiry day is in the past"),
        ({"expires": "date", "expires_on": "10000-01-01"}, "Choose a valid day for the key"),
    ],
)
def test_invalid_input_re_renders_the_form(
    site: Site, fields: dict[str, Any], message: str
) -> None:
    response = create_form(site, **fields)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html
    # The browser's date picker shows the user's own date format: no
    # message may ask for another one.
    assert "YYYY" not in html and "yyyy" not in html.lower()
    assert 'role="alert"' in html and "The key was not created." in html
    assert KEY_PATTERN.search(html) is None
    assert site.key_list() == []
    # The form comes back filled in, and can still be submitted once.
    assert hidden_fields(html)["form_id"]
    again = create_form(
        site,
        **{
            **fields,
            "name": "Fixed",
            "scopes": ["read"],
            "environment": "live",
            "expires": "never",
        },
    )
    assert again.status_code == 201


def test_names_are_trimmed_and_escaped_in_the_form(site: Site) -> None:
    response = create_form(site, name='"><script>alert(1)</script>', scopes=[])
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "<script>alert(1)" not in html
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    created = create_form(site, name="  padded  ")
    assert created.status_code == 201
    assert [k.name for k in site.key_list()] == ["padded"]


# -- CSRF ------------------------------------------------------------------------


def test_posts_without_a_valid_csrf_token_change_nothing(site: Site) -> None:
    info, secret = site.create(name="Target")
    fields = hidden_fields(site.page("/new"))
    form_id = fields["form_id"]
    create = {"name": "x", "scopes": "read", "environment": "live", "expires": "never"}
    for token in [None, "", "not-a-token", fields["csrf_token"][:-2] + "xx"]:
        extra = {} if token is None else {"csrf_token": token}
        for path, data in [
            ("/new", {**create, "form_id": form_id}),
            (f"/{info.id}/edit", {"name": "Changed", "description": "x"}),
            (f"/{info.id}/disable", {}),
            (f"/{info.id}/revoke", {}),
            (f"/{info.id}/rotate", {"grace": "0", "form_id": form_id}),
        ]:
            response = site.client.post(PREFIX + path, data={**data, **extra})
            assert response.status_code == 400, (token, path)
            assert response.mimetype == "text/html"
            assert "CSRF_FAILED" in response.get_data(as_text=True)
    # A cross-site POST with a valid token is refused too.
    response = site.client.post(
        f"{PREFIX}/{info.id}/revoke",
        data={"csrf_token": fields["csrf_token"]},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 400
    assert [k.id for k in site.key_list()] == [info.id]
    key = site.get_key(info.id)
    assert (key.status, key.name, key.description) == ("active", "Target", None)
    assert site.client.get("/read", headers=bearer(secret)).status_code == 200
    # Disabled keys are not enabled by a forged POST either.
    with site.app.app_context():
        service_of(site.app).disable_key(info.id)
    assert site.client.post(f"{PREFIX}/{info.id}/enable").status_code == 400
    assert site.get_key(info.id).status == "disabled"
    with site.app.app_context():
        service_of(site.app).enable_key(info.id)
    # The form was not used up by the refused posts.
    assert create_form(site, form_id=form_id).status_code == 201


# -- labels are escaped everywhere ---------------------------------------------------


def test_script_in_a_name_is_escaped_on_every_page(site: Site) -> None:
    name = "<script>alert('pwned')</script>"
    info, _ = site.create(name=name)
    other = create_form(site, name=name)
    assert other.status_code == 201
    pages = [other.get_data(as_text=True)]
    pages += [
        site.page(p.format(id=info.id))
        for p in ["/", "/{id}", "/{id}/edit", "/{id}/disable", "/{id}/revoke", "/{id}/rotate"]
    ]
    data = hidden_fields(site.page(f"/{info.id}/rotate"))
    rotated = site.client.post(f"{PREFIX}/{info.id}/rotate", data={**data, "grace": "3600"})
    assert rotated.status_code == 201
    pages.append(rotated.get_data(as_text=True))
    for html in pages:
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in html


# -- status, rotation reminder, usage ------------------------------------------------


def test_statuses(site: Site) -> None:
    clock = install_clock(site.app)
    now = clock.now
    site.create(name="Fresh", expires_at=now + dt.timedelta(days=8))
    site.create(name="Soon", expires_at=now + dt.timedelta(days=6, hours=23))
    site.create(name="Forever")
    site.create(name="Lapsed", expires_at=now + dt.timedelta(hours=1))
    gone, _ = site.create(name="Gone")
    paused, _ = site.create(name="Paused")
    with site.app.app_context():
        site.keyauth.revoke_key(gone.id)
        service_of(site.app).disable_key(paused.id)
    clock.advance(hours=2)
    html = site.page("/")
    expected = {
        "Fresh": "active",
        "Soon": "expiring",
        "Forever": "active",
        "Lapsed": "expired",
        "Gone": "revoked",
        "Paused": "disabled",
    }
    labels = {
        "active": "Active",
        "expiring": "Expiring soon",
        "expired": "Expired",
        "revoked": "Revoked",
        "disabled": "Disabled",
    }
    for name, status in expected.items():
        row = row_of(html, name)
        assert f'<tr class="ka-row ka-row--{status}">' in row
        assert f'<span class="ka-status ka-status--{status}">{labels[status]}</span>' in row
    assert "3 active keys." in html
    # Expired and revoked keys cannot be rotated or revoked from their page.
    lapsed = next(k for k in site.key_list() if k.name == "Lapsed")
    detail = site.page(f"/{lapsed.id}")
    assert "/rotate" not in detail and "Revoke</a>" not in detail
    assert "/edit" not in detail and "/disable" not in detail and "/enable" not in detail
    # A disabled key can be enabled or revoked, and nothing else.
    detail = site.page(f"/{paused.id}")
    assert "This key is disabled since" in detail
    assert f'href="{PREFIX}/{paused.id}/enable">Enable</a>' in detail
    assert f'href="{PREFIX}/{paused.id}/revoke">Revoke</a>' in detail
    for action in ("rotate", "edit", "disable"):
        assert f"{PREFIX}/{paused.id}/{action}" not in detail, action
    # An active key offers every action.
    fresh = next(k for k in site.key_list() if k.name == "Fresh")
    detail = site.page(f"/{fresh.id}")
    for action in ("rotate", "edit", "disable", "revoke"):
        assert f'href="{PREFIX}/{fresh.id}/{action}"' in detail, action
    assert f"{PREFIX}/{fresh.id}/enable" not in detail


def expiry_hint(site: Site, name: str) -> str | None:
    """What a key's row on the list says of its expiry within 7 days."""
    found = re.search(
        r'<(strong|a) class="ka-hint ka-expires-soon"[^>]*>(.*?)</\1>', row_of(site.page("/"), name)
    )
    return None if found is None else found.group(2)


def expiry_notice(site: Site, key_id: str) -> str | None:
    found = re.search(
        r'<div class="ka-notice [^"]*ka-expires-soon"[^>]*>\s*<strong>(.*?)</strong>',
        site.page(f"/{key_id}"),
    )
    return None if found is None else found.group(1)


def test_a_key_expiring_within_7_days_says_so_on_the_list_and_its_page(site: Site) -> None:
    clock = install_clock(site.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    soon, _ = site.create(name="Soon", expires_at=clock.now + dt.timedelta(days=3))
    later, _ = site.create(name="Later", expires_at=clock.now + dt.timedelta(days=8))
    html = site.page(f"/{soon.id}")
    notice = re.search(r'<div class="ka-notice [^"]*ka-expires-soon".*?</div>', html, re.S)
    assert notice is not None
    assert "<strong>This key expires in 3 days</strong>" in notice.group()
    assert "Nov 26, 2026, 10:00\u202fAM UTC" in notice.group()
    assert f'href="{PREFIX}/{soon.id}/rotate">Rotate it</a>' in notice.group()
    assert expiry_hint(site, "Soon") == "Expires in 3 days"
    # A manager's hint leads to the rotate form, as the rotation reminder does.
    assert f'href="{PREFIX}/{soon.id}/rotate"' in row_of(site.page("/"), "Soon")
    assert expiry_notice(site, later.id) is None and expiry_hint(site, "Later") is None
    # Counted in UTC days, as every date on the pages.
    clock.advance(days=2)
    assert expiry_notice(site, later.id) == "This key expires in 6 days"
    assert expiry_hint(site, "Later") == "Expires in 6 days"
    assert expiry_hint(site, "Soon") == "Expires tomorrow"
    clock.advance(days=5)
    assert expiry_notice(site, later.id) == "This key expires tomorrow"
    clock.advance(hours=19)  # 05:00 on the day it expires, at 10:00
    assert expiry_notice(site, later.id) == "This key expires today"
    assert expiry_hint(site, "Later") == "Expires today"
    clock.advance(hours=6)
    assert "ka-expires-soon" not in site.page(f"/{later.id}")  # expired now
    assert expiry_hint(site, "Later") is None


def test_rotate_hint_on_active_keys_past_the_reminder(make_site: MakeSite) -> None:
    made = make_site(KEYAUTH_ROTATION_REMINDER_DAYS=30)
    made.sign_in()
    clock = install_clock(made.app)
    old, _ = made.create(name="Old")
    old_revoked, _ = made.create(name="Old revoked")
    with made.app.app_context():
        made.keyauth.revoke_key(old_revoked.id)
    clock.advance(days=29)
    young, _ = made.create(name="Young")
    html = made.page("/")
    assert "Rotate:" not in html
    clock.advance(days=1)
    html = made.page("/")
    assert f'href="{PREFIX}/{old.id}/rotate"' in row_of(html, "Old")
    assert "Rotate: 30 days old" in row_of(html, "Old")
    assert "Rotate:" not in row_of(html, "Young")
    assert "Rotate:" not in row_of(html, "Old revoked")
    assert "1 key is over 30 days old." in html
    assert "This key is 30 days old." in made.page(f"/{old.id}")
    assert "days old." not in made.page(f"/{young.id}")


def test_rotate_hint_uses_the_default_of_90_days(site: Site) -> None:
    clock = install_clock(site.app)
    site.create(name="Key")
    clock.advance(days=89)
    assert "Rotate:" not in site.page("/")
    clock.advance(days=1)
    assert "Rotate: 90 days old" in row_of(site.page("/"), "Key")


def test_sparkline_and_chart_show_real_counts(site: Site) -> None:
    clock = install_clock(site.app, dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc))
    busy, secret = site.create(name="Busy")
    quiet, _ = site.create(name="Quiet")
    clock.advance(days=-2)
    for _ in range(5):
        assert site.client.get("/read", headers=bearer(secret)).status_code == 200
    site.flush_usage()
    clock.advance(days=2)
    for _ in range(3):
        assert site.client.get("/read", headers=bearer(secret)).status_code == 200
    site.flush_usage()

    html = site.page("/")
    busy_row = row_of(html, "Busy")
    assert (
        "<title>8 requests in the last 30 days; busiest day Nov 21, 2026 with 5 requests.</title>"
        in busy_row
    )
    assert "Nov 21, 2026: 5, Nov 22, 2026: 0, Nov 23, 2026: 3</desc>" in busy_row
    assert '<span class="ka-usage-total">8</span>' in busy_row
    assert "<title>No requests in the last 30 days.</title>" in row_of(html, "Quiet")

    detail = site.page(f"/{busy.id}")
    assert detail.count("<title>Nov 21, 2026: 5 requests</title>") == 2  # wide and narrow
    assert detail.count("<title>Nov 23, 2026: 3 requests</title>") == 2
    assert detail.count("<title>Nov 22, 2026: 0 requests</title>") == 2
    assert detail.count("<title>Oct 25, 2026: 0 requests</title>") == 2  # 30 days, today last
    assert "<title>2026-10-24" not in detail
    assert '<span class="ka-stat__value">8</span>' in detail
    # The table under the chart.
    assert '<td><time datetime="2026-11-21">Nov 21, 2026</time></td><td>5</td>' in detail
    # Axis labels: counts on the left, dates below.
    assert re.search(r'text-anchor="end"[^>]*>6</text>', detail)
    assert ">Nov 23</text>" in detail and ">Nov 16</text>" in detail
    assert "No requests yet" in site.page(f"/{quiet.id}")


# -- revoking and rotating --------------------------------------------------------------


def test_revoke_asks_then_revokes(site: Site) -> None:
    info, secret = site.create(name="Doomed")
    assert site.client.get("/read", headers=bearer(secret)).status_code == 200
    confirm = site.page(f"/{info.id}/revoke")
    assert "This cannot be undone." in confirm
    assert f'action="{PREFIX}/{info.id}/revoke"' in confirm
    assert site.get_key(info.id).status == "active"  # GET changes nothing

    data = hidden_fields(confirm)
    response = site.client.post(f"{PREFIX}/{info.id}/revoke", data=data)
    assert response.status_code == 303
    assert response.location == f"{PREFIX}/{info.id}?done=revoked"
    assert site.get_key(info.id).status == "revoked"
    assert site.client.get("/read", headers=bearer(secret)).status_code == 401

    detail = site.page(f"/{info.id}?done=revoked")
    assert "Key revoked." in detail
    assert 'class="ka-event ka-event--revoked">Revoked</span>' in detail
    assert "acme (web)" in detail and "<code>127.0.0.1</code>" in detail
    with site.app.app_context():
        (event, _created) = service_of(site.app).events("acme", key_id=info.id)
    assert (event.action, event.actor, event.remote_addr) == (
        "revoked",
        "session:acme",
        "127.0.0.1",
    )
    # Again: the confirmation says so, and a second POST is a no-op.
    assert "This key is already revoked" in site.page(f"/{info.id}/revoke")
    assert site.client.post(f"{PREFIX}/{info.id}/revoke", data=data).status_code == 303
    with site.app.app_context():
        assert len(service_of(site.app).events("acme", key_id=info.id)) == 2


def test_rotate_shows_the_new_key_once_and_keeps_the_old_for_the_grace(site: Site) -> None:
    clock = install_clock(site.app)
    old, old_secret = site.create(name="Worker", scopes=["write"], environment="test")
    form = site.page(f"/{old.id}/rotate")
    assert re.findall(r'name="grace" value="(\d+)"', form) == ["0", "3600", "86400", "604800"]
    assert 'value="86400"\n                   checked' in form or 'value="86400" checked' in form

    data = {**hidden_fields(form), "grace": "3600"}
    response = site.client.post(f"{PREFIX}/{old.id}/rotate", data=data)
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    new_secret = secret_in(response)
    assert new_secret != old_secret and new_secret.startswith("sk_test_")
    html = response.get_data(as_text=True)
    assert "API key rotated" in html and "keeps working until" in html
    assert site.get_key(old.id).expires_at == clock.now + dt.timedelta(hours=1)
    assert site.client.get("/read", headers=bearer(old_secret)).status_code == 200
    assert site.client.post("/write", headers=bearer(new_secret)).status_code == 200

    # A resubmission does not rotate again.
    again = site.client.post(f"{PREFIX}/{old.id}/rotate", data=data)
    assert again.status_code == 409 and KEY_PATTERN.search(again.get_data(as_text=True)) is None
    assert len(site.key_list()) == 2
    (new,) = [k for k in site.key_list() if k.id != old.id]
    assert new_secret not in site.page(f"/{new.id}")
    assert f'Replaced by <a href="{PREFIX}/{new.id}">' in site.page(f"/{old.id}")
    assert f'Replaces <a href="{PREFIX}/{old.id}">' in site.page(f"/{new.id}")


def rotate_form(site: Site, key_id: str, **fields: Any) -> TestResponse:
    """Open the rotate form of ``key_id`` and post it with ``fields``."""
    data = {**hidden_fields(site.page(f"/{key_id}/rotate")), "grace": "3600", **fields}
    return site.client.post(f"{PREFIX}/{key_id}/rotate", data=data)


def test_rotate_form_warns_about_the_old_key_and_offers_an_expiry(site: Site) -> None:
    clock = install_clock(site.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    old, _ = site.create(name="Monthly", expires_at=clock.now + dt.timedelta(days=30))
    form = site.page(f"/{old.id}/rotate")
    assert "stops working at the end of the grace period you choose." in form
    assert "every request with it is refused" in form
    assert "revokes the old key at once, which cannot be undone." in form
    # Each grace period says when the old key stops working.
    until = 'Until <time datetime="2026-11-{}T10:00:00Z">Nov {}, 2026, 10:00\u202fAM UTC</time>'
    assert until.format(24, 24) in form
    assert until.format(30, 30) in form
    # The new key's expiry: the old key's lifetime unless chosen otherwise.
    choices = re.findall(r'name="expires" value="(\w+)"', form)
    assert choices == ["same", "never", "30", "60", "90", "date"]
    assert re.search(r'value="same"\s+checked', form)
    assert "Same lifetime as the old key" in form and "30 days from now" in form
    assert 'name="expires_on"' in form and 'min="2026-11-23"' in form

    forever, _ = site.create(name="Forever")
    form = site.page(f"/{forever.id}/rotate")
    assert "Never expires: the old key never does" in form
    # "Never" would be the same choice twice.
    assert re.findall(r'name="expires" value="(\w+)"', form) == ["same", "30", "60", "90", "date"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"expires": "60"}, dt.datetime(2027, 1, 22, 10, 0, tzinfo=dt.timezone.utc)),
        ({"expires": "never"}, None),
        (
            {"expires": "date", "expires_on": "2027-02-01"},
            dt.datetime(2027, 2, 1, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
        ),
    ],
)
def test_rotate_gives_the_new_key_the_expiry_chosen(
    site: Site, fields: dict[str, str], expected: dt.datetime | None
) -> None:
    clock = install_clock(site.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    old, _ = site.create(name="Worker", expires_at=clock.now + dt.timedelta(days=30))
    response = rotate_form(site, old.id, **fields)
    assert response.status_code == 201, response.get_data(as_text=True)
    (new,) = [k for k in site.key_list() if k.id != old.id]
    assert new.expires_at == expected
    assert site.get_key(old.id).expires_at == clock.now + dt.timedelta(hours=1)


def test_rotate_with_the_same_lifetime_leaves_it_to_the_service(site: Site) -> None:
    clock = install_clock(site.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    month = clock.now + dt.timedelta(days=30)
    paged, _ = site.create(name="Paged", expires_at=month)
    direct, _ = site.create(name="Direct", expires_at=month)
    assert rotate_form(site, paged.id, expires="same").status_code == 201
    with site.app.app_context():
        by_service, _ = site.keyauth.rotate_key(direct.id, dt.timedelta(hours=1))
    (by_page,) = [k for k in site.key_list() if k.name == "Paged" and k.id != paged.id]
    # The page asks for what the service does by default (SPEC §11): a key
    # made to live 30 days is replaced by one that lives 30 days.
    assert by_page.expires_at == by_service.expires_at == month

    forever, _ = site.create(name="Forever")
    assert rotate_form(site, forever.id, expires="same").status_code == 201
    (new,) = [k for k in site.key_list() if k.name == "Forever" and k.id != forever.id]
    assert new.expires_at is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expires": "45"}, "Choose when the key expires."),
        ({"expires": "same lifetime"}, "Choose when the key expires."),
        ({"expires": ""}, "Choose when the key expires."),
        ({"expires": "date", "expires_on": ""}, "Choose the day the key expires."),
        ({"expires": "date", "expires_on": "15/01/2027"}, "Choose a valid day for the key"),
        ({"expires": "date", "expires_on": "2020-01-01"}, "The expiry day is in the past"),
        ({"grace": "60", "expires": "30"}, "Choose when the old key stops working."),
    ],
)
def test_rotate_refuses_other_expiry_values(
    site: Site, fields: dict[str, str], message: str
) -> None:
    old, _ = site.create(name="Worker")
    response = rotate_form(site, old.id, **fields)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html and "The key was not rotated." in html
    assert "YYYY" not in html
    assert KEY_PATTERN.search(html) is None
    assert [k.id for k in site.key_list()] == [old.id]
    assert site.get_key(old.id).expires_at is None
    # The form comes back as sent, and can still be submitted once.
    assert rotate_form(site, old.id, expires="30").status_code == 201


def test_the_keys_of_a_rotation_are_linked(site: Site) -> None:
    old, _ = site.create(name="Worker")
    other, _ = site.create(name="Worker")  # same name, not a rotation
    assert rotate_form(site, old.id).status_code == 201
    (new,) = [k for k in site.key_list() if k.id not in (old.id, other.id)]
    html = site.page("/")
    old_row, new_row = row_with_id(html, old.id), row_with_id(html, new.id)
    replaced_by = f'Replaced by <a href="{PREFIX}/{new.id}"><code>{new.redacted}</code></a>'
    replaces = f'Replaces <a href="{PREFIX}/{old.id}"><code>{old.redacted}</code></a>'
    assert replaced_by in old_row and "Replaces" not in old_row
    assert replaces in new_row and "Replaced by" not in new_row
    other_row = row_with_id(html, other.id)
    assert "Replaces" not in other_row and "Replaced by" not in other_row
    # The key pages say it too, next to the key's facts.
    assert replaced_by in site.page(f"/{old.id}")
    assert replaces in site.page(f"/{new.id}")
    assert "<dt>Rotation</dt>" not in site.page(f"/{other.id}")

    # A rotation made by host code is linked the same way.
    with site.app.app_context():
        newer, _ = site.keyauth.rotate_key(new.id, dt.timedelta(0))
    html = site.page("/")
    assert f'Replaced by <a href="{PREFIX}/{newer.id}">' in row_with_id(html, new.id)
    assert replaces in row_with_id(html, new.id)
    assert f'Replaces <a href="{PREFIX}/{new.id}">' in row_with_id(html, newer.id)


def test_a_key_is_rotated_once_from_the_pages(site: Site) -> None:
    old, _ = site.create(name="Worker")
    stale = {**hidden_fields(site.page(f"/{old.id}/rotate")), "grace": "3600"}
    assert rotate_form(site, old.id).status_code == 201
    (new,) = [k for k in site.key_list() if k.id != old.id]
    # Still working for its grace period, but no longer offered for rotation.
    assert site.get_key(old.id).status == "active"
    detail = site.page(f"/{old.id}")
    assert f'href="{PREFIX}/{old.id}/rotate"' not in detail
    assert f'href="{PREFIX}/{new.id}/rotate"' in site.page(f"/{new.id}")
    form = site.page(f"/{old.id}/rotate")
    assert "This key was already rotated" in form and 'name="grace"' not in form
    assert f'href="{PREFIX}/{new.id}/rotate"' in form
    # A form opened before the rotation gets a page saying so; nothing changes.
    response = site.client.post(f"{PREFIX}/{old.id}/rotate", data=stale)
    assert response.status_code == 409
    assert "KEY_ALREADY_ROTATED" in response.get_data(as_text=True)
    assert KEY_PATTERN.search(response.get_data(as_text=True)) is None
    assert len(site.key_list()) == 2


def test_rotate_now_revokes_the_old_key(site: Site) -> None:
    old, old_secret = site.create(name="Leaked")
    data = {**hidden_fields(site.page(f"/{old.id}/rotate")), "grace": "0"}
    response = site.client.post(f"{PREFIX}/{old.id}/rotate", data=data)
    assert response.status_code == 201
    assert "was revoked" in response.get_data(as_text=True)
    assert site.client.get("/read", headers=bearer(old_secret)).status_code == 401
    assert site.client.get("/read", headers=bearer(secret_in(response))).status_code == 200


@pytest.mark.parametrize("grace", ["", "60", "-3600", "abc", "86400.0"])
def test_rotate_refuses_other_grace_values(site: Site, grace: str) -> None:
    old, _ = site.create(name="Worker")
    data = {**hidden_fields(site.page(f"/{old.id}/rotate")), "grace": grace}
    response = site.client.post(f"{PREFIX}/{old.id}/rotate", data=data)
    assert response.status_code == 400
    assert "Choose when the old key stops working." in response.get_data(as_text=True)
    assert [k.id for k in site.key_list()] == [old.id]
    assert site.get_key(old.id).expires_at is None


def test_revoked_keys_cannot_be_rotated(site: Site) -> None:
    old, _ = site.create(name="Gone")
    data = {**hidden_fields(site.page(f"/{old.id}/rotate")), "grace": "0"}
    with site.app.app_context():
        site.keyauth.revoke_key(old.id)
    assert "This key cannot be rotated" in site.page(f"/{old.id}/rotate")
    response = site.client.post(f"{PREFIX}/{old.id}/rotate", data=data)
    assert response.status_code == 409
    assert "KEY_NOT_ACTIVE" in response.get_data(as_text=True)
    assert len(site.key_list()) == 1


# -- restyling -------------------------------------------------------------------------


HOST_BASE = """<!doctype html><html><head><title>{% block title %}{% endblock %} | Host</title>
</head><body><nav>HOST NAV</nav>{% block content %}{% endblock %}</body></html>"""


def test_pages_extend_the_hosts_base_template(make_site: MakeSite) -> None:
    made = make_site(
        templates={"host/base.html": HOST_BASE}, KEYAUTH_BASE_TEMPLATE="host/base.html"
    )
    made.sign_in()
    info, _ = made.create(name="Hosted")
    for path in ["/", "/new", f"/{info.id}", f"/{info.id}/revoke", f"/{info.id}/rotate"]:
        html = made.page(path)
        assert "HOST NAV" in html and " | Host</title>" in html
        assert 'class="keyauth"' in html
        assert "ka-topbar" not in html  # the bundled layout is not used
    created = create_form(made)
    assert created.status_code == 201
    assert "HOST NAV" in created.get_data(as_text=True)
    secret_in(created)


def test_host_templates_override_the_bundled_ones(make_site: MakeSite) -> None:
    made = make_site(
        templates={
            "keyauth/index.html": (
                "{% extends keyauth_base %}{% block content %}"
                "OUR LIST{% for row in rows %} [{{ row.key.name }}]{% endfor %}"
                "{% endblock %}"
            )
        }
    )
    made.sign_in()
    made.create(name="<b>x</b>")
    html = made.page("/")
    assert "OUR LIST [&lt;b&gt;x&lt;/b&gt;]" in html
    assert "ka-topbar" in html  # still inside the bundled layout


def test_the_list_reads_every_sparkline_in_one_query(site: Site) -> None:
    for n in range(6):
        site.create(name=f"key {n}")
    site.sign_in()
    with sql_statements(site.app) as statements:
        html = site.page("/")
    assert html.count('class="ka-usage-total"') == 6
    assert len([s for s in statements if "keyauth_usage" in s]) == 1
