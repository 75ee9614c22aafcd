"""The key pages in other languages (SPEC §15): the catalogues are complete
and compiled, every page reads Spanish with ``lang="es"``, the locale
follows the host's Flask-Babel selector or ``Accept-Language``, dates and
numbers follow the locale, and the JSON API stays English."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import Flask, session
from flask.testing import FlaskClient
from flask_babel import Babel
from jinja2 import ChoiceLoader, DictLoader
from werkzeug.test import TestResponse

import flask_keyauth
from flask_keyauth import KeyAuth, blueprint, i18n
from flask_keyauth.models import ApiKeyInfo
from flask_keyauth.views import messages

from .conftest import dispose, install_clock, make_app, service_of

PREFIX = "/settings/api-keys"
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(flask_keyauth.__file__).resolve().parent
TRANSLATIONS = PACKAGE / "translations"
SPANISH = {"Accept-Language": "es"}
NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc)


# -- the catalogues ---------------------------------------------------------------------


def extracted() -> Catalog:
    """Every message of the package, extracted as babel.cfg says."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    keywords = {**DEFAULT_KEYWORDS, **i18n.TEMPLATE_KEYWORDS}
    catalog = Catalog(domain=i18n.DOMAIN)
    for filename, lineno, message, comments, context in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=keywords
    ):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def read_catalog(path: Path, locale: str | None = None) -> Catalog:
    with path.open("rb") as file:
        return read_po(file, locale=locale)


def message_ids(catalog: Catalog) -> set[Any]:
    return {message.id for message in catalog if message.id}


@pytest.fixture(scope="module")
def source() -> Catalog:
    return extracted()


def test_the_template_lists_every_message_of_the_code(source: Catalog) -> None:
    template = read_catalog(TRANSLATIONS / f"{i18n.DOMAIN}.pot")
    assert len(source) > 200  # the extraction found the templates and the code
    missing = message_ids(source) - message_ids(template)
    stale = message_ids(template) - message_ids(source)
    assert not missing, f"not in the .pot (run the extraction in babel.cfg): {sorted(missing)}"
    assert not stale, f"in the .pot but no longer in the code: {sorted(stale)}"


def test_every_message_has_a_spanish_translation(source: Catalog) -> None:
    spanish = read_catalog(TRANSLATIONS / "es" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po", "es")
    untranslated = []
    for message in source:
        if not message.id:
            continue
        found = spanish.get(message.id)
        strings = () if found is None else (
            found.string if isinstance(found.string, tuple) else (found.string,)
        )
        if found is None or found.fuzzy or not strings or not all(strings):
            untranslated.append(message.id)
    assert not untranslated, f"no Spanish for: {untranslated}"
    # Each translation keeps its message's placeholders (Babel's own checks).
    problems = [(m.id, [str(e) for e in errors]) for m, errors in spanish.check()]
    assert not problems


def flat(value: Any) -> Any:
    """A message's id or string, plural forms as a tuple (a .mo gives lists)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def test_each_compiled_catalogue_is_its_po_file() -> None:
    po_files = sorted(TRANSLATIONS.glob(f"*/LC_MESSAGES/{i18n.DOMAIN}.po"))
    assert [p.parent.parent.name for p in po_files] == ["es"]
    for po_file in po_files:
        mo_file = po_file.with_suffix(".mo")
        assert mo_file.is_file(), f"{mo_file} is missing: run pybabel compile"
        po = read_catalog(po_file)
        with mo_file.open("rb") as file:
            mo = read_mo(file)
        compiled = {flat(m.id): flat(m.string) for m in mo if m.id}
        written = {flat(m.id): flat(m.string) for m in po if m.id and not m.fuzzy}
        assert compiled == written, f"{mo_file} is older than {po_file}: run pybabel compile"


def test_the_catalogues_are_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    for pattern in ("translations/*.pot", "translations/*/LC_MESSAGES/*.po",
                    "translations/*/LC_MESSAGES/*.mo"):
        assert f'"{pattern}"' in text
    assert '"flask-babel>=' in text and '"babel>=' in text


# -- the service's sentences, said again by the pages -------------------------------------


def service_refusals(app: Flask) -> Iterator[str]:
    """One refusal of each checker the forms go through."""
    from flask_keyauth import plans, service
    from flask_keyauth.views.common import parse_labels

    checks: list[Callable[[], Any]] = [
        lambda: service.check_description("d" * 1001),
        lambda: service.check_description("a\x00b"),
        lambda: service.check_name("a\x00b"),
        lambda: parse_labels(["no equals sign"]),
        lambda: parse_labels(["=value"]),
        lambda: parse_labels(["a=1", "a=2"]),
        lambda: service.check_metadata({"k": "v" * 5000}),
        lambda: service.check_allowed_ips(["not-an-ip"]),
        lambda: service.check_allowed_ips([f"10.0.{n}.0/24" for n in range(65)]),
        lambda: plans.check_limits("lots"),
        lambda: plans.check_limits("0/hour"),
        lambda: plans.check_limits("0/second burst 5"),
        lambda: plans.check_limits("1/hour;" * 500),
        lambda: plans.check_limits(";".join(["1/hour"] * 50)),
        lambda: service_of(app).check_expiry(NOW - dt.timedelta(days=1)),
    ]
    for check in checks:
        with pytest.raises(ValueError) as refused:
            check()
        yield str(refused.value)


def test_the_pages_know_every_sentence_the_service_refuses_a_form_with(tmp_path: Path) -> None:
    app, _, _ = make_app(f"sqlite:///{tmp_path / 'keys.db'}", KEYAUTH_MAX_LIFETIME_DAYS=30)
    install_clock(app, NOW)
    with app.app_context():
        sentences = list(service_refusals(app))
        service = service_of(app)
        with pytest.raises(ValueError) as too_far:
            service.check_expiry(NOW + dt.timedelta(days=31))
        sentences.append(str(too_far.value))
    unknown = [text for text in sentences if messages.known_message(text) is None]
    assert not unknown, f"add these to views/messages.py: {unknown}"


# -- the pages in Spanish -----------------------------------------------------------------


@dataclass
class Site:
    app: Flask
    keyauth: KeyAuth
    client: FlaskClient

    def create(self, name: str, **kwargs: Any) -> ApiKeyInfo:
        with self.app.app_context():
            key, _ = self.keyauth.create_key("acme", name, **kwargs)
        return key

    def get(self, path: str, headers: dict[str, str] | None = None) -> TestResponse:
        return self.client.get(PREFIX + path, headers=SPANISH if headers is None else headers)

    def post(self, path: str, data: dict[str, Any]) -> TestResponse:
        return self.client.post(PREFIX + path, data=data, headers=SPANISH)

    def as_role(self, role: str) -> None:
        with self.client.session_transaction() as sess:
            sess["org"] = "acme"
            sess["role"] = role


MakeSite = Callable[..., Site]


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[MakeSite]:
    made: list[tuple[Flask, Any]] = []

    def factory(setup: Callable[[Flask], None] | None = None, **config: Any) -> Site:
        app, db, keyauth = make_app(f"sqlite:///{tmp_path / f'keys{len(made)}.db'}", **config)
        if setup is not None:
            setup(app)
        app.register_blueprint(blueprint, url_prefix=PREFIX)

        @keyauth.owner_loader
        def owner() -> str | None:
            return session.get("org")

        @keyauth.role_loader
        def role() -> str:
            return str(session.get("role", "manager"))

        install_clock(app, NOW)
        made.append((app, db))
        site = Site(app, keyauth, app.test_client())
        site.as_role("manager")
        return site

    yield factory
    for app, db in made:
        dispose(app, db)


@pytest.fixture
def site(make_site: MakeSite) -> Site:
    return make_site()


class Text(HTMLParser):
    """What a person reads on a page: its text and the attributes that are
    shown or read aloud."""

    SHOWN = ("title", "aria-label", "data-label", "alt", "placeholder")

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        for name, value in attrs:
            if value and (name in self.SHOWN or name.endswith(("-label", "-status"))):
                self.parts.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip and data.strip():
            self.parts.append(" ".join(data.split()))


def shown_text(html: str) -> list[str]:
    parser = Text()
    parser.feed(html)
    return parser.parts


PLACEHOLDER = re.compile(r"%\(\w+\)[sd]|<code>.*?</code>|<[^>]+>|&\w+;")
WORD = re.compile(r"[A-Za-z][a-z'’-]*")


def english_fragments() -> tuple[set[str], set[str]]:
    """From each message whose Spanish differs: its words between
    placeholders and tags, as phrases (several words) and single words."""
    spanish = read_catalog(TRANSLATIONS / "es" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po", "es")
    phrases: set[str] = set()
    words: set[str] = set()
    for message in spanish:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for text in ids:
            if text in strings:
                continue
            for piece in PLACEHOLDER.split(text):
                piece = " ".join(piece.split()).strip(" .,;:()")
                # Words, not code such as 10.0.0.0/8 or team=payments.
                found = [w for w in piece.split() if WORD.fullmatch(w.strip(".,;:()"))]
                if len(found) >= 2:
                    phrases.add(piece)
                elif len(found) == 1 == len(piece.split()) and len(piece) >= 3:
                    words.add(piece)
    return phrases, words


def assert_spanish(response: TestResponse, where: str) -> str:
    html = response.get_data(as_text=True)
    assert '<html lang="es">' in html, where
    parts = shown_text(html)
    text = "\n".join(parts)
    phrases, words = english_fragments()
    left = sorted(p for p in phrases if p in text) + sorted(
        w for w in words if any(part.strip(" .,;:()") == w for part in parts)
    )
    assert not left, f"{where}: English left on the page: {left}"
    return html


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def test_every_page_reads_spanish_with_accept_language_es(site: Site) -> None:
    service = service_of(site.app)
    active = site.create("Servidor", scopes=["read", "write"], description="Para el cobro",
                         metadata={"equipo": "pagos"}, allowed_ips=["10.0.0.0/8"])
    soon = site.create("Pronto", expires_at=NOW + dt.timedelta(days=3))
    paused = site.create("Pausada")
    gone = site.create("Anulada")
    rotated = site.create("Rotada")
    with site.app.app_context():
        service.disable_key(paused.id)
        service.revoke_key(gone.id)
    pages = {
        "list": "/",
        "create form": "/new",
        "key page": f"/{active.id}",
        "key page, expiring": f"/{soon.id}",
        "key page, disabled": f"/{paused.id}",
        "key page, revoked": f"/{gone.id}",
        "edit form": f"/{active.id}/edit",
        "rotate form": f"/{rotated.id}/rotate",
        "rotate, not possible": f"/{gone.id}/rotate",
        "revoke form": f"/{active.id}/revoke",
        "revoke, done already": f"/{gone.id}/revoke",
        "disable form": f"/{active.id}/disable",
        "disable, done already": f"/{paused.id}/disable",
        "enable form": f"/{paused.id}/enable",
        "enable, not disabled": f"/{active.id}/enable",
        "switch, revoked": f"/{gone.id}/disable",
        "not found": "/nope",
    }
    for where, path in pages.items():
        response = site.get(path)
        assert response.status_code in (200, 404), where
        assert_spanish(response, where)
    assert "Caduca dentro de 3 días" in site.get("/").get_data(as_text=True)
    assert "Esta clave caduca dentro de 3 días" in site.get(f"/{soon.id}").get_data(as_text=True)

    # Creating: the key page shown once, and the form sent again.
    fields = form_fields(site.get("/new").get_data(as_text=True))
    data = {**fields, "name": "Nueva", "scopes": ["read"], "environment": "live",
            "expires": "30"}
    created = site.post("/new", data)
    assert created.status_code == 201
    assert_spanish(created, "created")
    again = site.post("/new", data)
    assert again.status_code == 409
    assert_spanish(again, "form sent twice")

    # Rotating.
    fields = form_fields(site.get(f"/{rotated.id}/rotate").get_data(as_text=True))
    rotation = site.post(f"/{rotated.id}/rotate", {**fields, "grace": "3600", "expires": "same"})
    assert rotation.status_code == 201
    assert_spanish(rotation, "rotated")
    assert_spanish(site.get(f"/{rotated.id}/rotate"), "rotated already")

    # The notices after a change.
    for done in ("revoked", "disabled", "enabled", "updated"):
        assert_spanish(site.get(f"/{active.id}?done={done}"), f"done={done}")


def test_form_errors_read_spanish(site: Site) -> None:
    key = site.create("Servidor")
    fields = form_fields(site.get("/new").get_data(as_text=True))
    refused = site.post("/new", {**fields, "name": " ", "environment": "moon",
                                 "expires": "date", "expires_on": "2020-01-01",
                                 "metadata": "sin igual", "allowed_ips": "nope",
                                 "description": "d" * 1001})
    assert refused.status_code == 400
    html = assert_spanish(refused, "create form errors")
    assert "No se ha creado la clave." in html
    assert "no tiene &#39;=&#39;: escriba cada etiqueta como clave=valor." in html
    assert "&#39;nope&#39; no es una dirección ni un bloque CIDR." in html
    assert "La descripción puede tener como máximo 1000 caracteres." in html
    refused = site.post("/new", {**fields, "name": "x", "scopes": [], "environment": "live",
                                 "expires": "45"})
    assert_spanish(refused, "create form errors, permissions and expiry")
    refused = site.post(f"/{key.id}/edit", {
        **form_fields(site.get(f"/{key.id}/edit").get_data(as_text=True)),
        "name": "n" * 129, "metadata": "a=1\na=2", "limits": "lots",
    })
    assert refused.status_code == 400
    html = assert_spanish(refused, "edit form errors")
    assert "La clave &#39;a&#39; aparece dos veces." in html
    assert "No se puede interpretar el límite &#39;lots&#39;" in html
    fields = form_fields(site.get(f"/{key.id}/rotate").get_data(as_text=True))
    refused = site.post(f"/{key.id}/rotate", {**fields, "grace": "5", "expires": "date"})
    assert refused.status_code == 400
    assert_spanish(refused, "rotate form errors")


def test_error_pages_read_spanish(site: Site) -> None:
    key = site.create("Servidor")
    # CSRF: no token.
    refused = site.post(f"/{key.id}/revoke", {})
    assert refused.status_code == 400
    html = assert_spanish(refused, "CSRF")
    assert "CSRF_FAILED" in html and "Solicitud rechazada" in html
    # A viewer on a page that changes keys.
    site.as_role("viewer")
    assert_spanish(site.get("/"), "list, viewer")
    assert_spanish(site.get(f"/{key.id}"), "key page, viewer")
    forbidden = site.get("/new")
    assert forbidden.status_code == 403
    assert_spanish(forbidden, "viewer refused")
    # Signed out.
    with site.client.session_transaction() as sess:
        sess.clear()
    signed_out = site.get("/")
    assert signed_out.status_code == 401
    assert_spanish(signed_out, "signed out")


def test_the_json_api_stays_english(site: Site) -> None:
    site.create("Servidor")
    csrf = form_fields(site.get("/new").get_data(as_text=True))["csrf_token"]
    response = site.client.post(f"{PREFIX}/api/keys", json={"name": ""},
                                headers={**SPANISH, "X-CSRFToken": csrf})
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["message"].isascii()
    listed = site.client.get(f"{PREFIX}/api/keys", headers=SPANISH).get_json()
    assert "expires_at" in str(listed)


# -- choosing the locale ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "lang"),
    [
        ("es", "es"),
        ("es-MX,es;q=0.9,en;q=0.5", "es-MX"),
        ("fr-FR,fr;q=0.9,es;q=0.5", "es"),  # the first language a catalogue covers
        ("fr, de", "en"),
        ("es;q=0, en", "en"),
        ("en-GB", "en-GB"),
        ("*", "en"),
        ("", "en"),
        ("x-klingon, !!", "en"),
    ],
)
def test_without_flask_babel_accept_language_picks_the_locale(
    site: Site, accept: str, lang: str
) -> None:
    html = site.get("/", headers={"Accept-Language": accept}).get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    assert ("Claves de API" in html) == lang.startswith("es")


def test_english_is_the_default(site: Site) -> None:
    html = site.get("/", headers={}).get_data(as_text=True)
    assert '<html lang="en">' in html and "<h1>API keys</h1>" in html


def host_babel(locale: str) -> Callable[[Flask], None]:
    def setup(app: Flask) -> None:
        # The host's own layout uses its own gettext: the pages leave it alone.
        app.jinja_env.loader = ChoiceLoader([
            DictLoader({"host/base.html": (
                '<!doctype html><html lang="{{ host_lang }}"><title>{% block title %}'
                '{% endblock %}</title><nav>{{ _("Home") }}</nav>{% block content %}'
                "{% endblock %}</html>"
            )}),
            app.create_global_jinja_loader(),
        ])
        Babel(app, locale_selector=lambda: locale)

        @app.context_processor
        def lang() -> dict[str, str]:
            return {"host_lang": locale}

    return setup


def test_a_host_with_flask_babel_chooses_the_locale(make_site: MakeSite) -> None:
    site = make_site(host_babel("es"), KEYAUTH_BASE_TEMPLATE="host/base.html")
    key = site.create("Servidor")
    # Its selector wins over the browser's languages.
    html = site.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "<nav>Home</nav>" in html  # the host's own gettext
    assert "<h1>Claves de API</h1>" in html
    page = site.get(f"/{key.id}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "Creada" in page and "23 nov 2026" in page


def test_a_host_locale_without_a_catalogue_gets_english(make_site: MakeSite) -> None:
    site = make_site(host_babel("fr"), KEYAUTH_BASE_TEMPLATE="host/base.html")
    html = site.get("/", headers=SPANISH).get_data(as_text=True)
    assert '<html lang="fr">' in html  # the host's layout, in the host's language
    assert "<h1>API keys</h1>" in html


def test_a_host_with_flask_babel_but_no_selector_follows_the_browser(
    make_site: MakeSite,
) -> None:
    def plain(app: Flask) -> None:
        Babel(app)

    site = make_site(plain)
    assert "<h1>Claves de API</h1>" in site.get("/").get_data(as_text=True)
    assert "<h1>API keys</h1>" in site.get("/", headers={}).get_data(as_text=True)

    def spanish_by_default(app: Flask) -> None:
        app.config["BABEL_DEFAULT_LOCALE"] = "es"
        Babel(app)

    site = make_site(spanish_by_default)
    assert "<h1>Claves de API</h1>" in site.get("/", headers={}).get_data(as_text=True)
    english = site.get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "<h1>API keys</h1>" in english


def test_the_bundled_layout_has_the_locale(make_site: MakeSite) -> None:
    site = make_site(host_babel("es"))
    html = site.get("/", headers={}).get_data(as_text=True)
    assert '<html lang="es">' in html and "Saltar al contenido" in html


def test_a_host_adds_a_language_in_its_own_translations_folder(
    make_site: MakeSite, tmp_path: Path
) -> None:
    from babel.messages.mofile import write_mo

    folder = tmp_path / "translations" / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    catalog = Catalog(locale="de", domain=i18n.DOMAIN)
    catalog.add("API keys", "API-Schlüssel")
    with (folder / f"{i18n.DOMAIN}.mo").open("wb") as file:
        write_mo(file, catalog)

    def setup(app: Flask) -> None:
        app.root_path = str(tmp_path)

    site = make_site(setup)
    html = site.get("/", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert '<html lang="de">' in html and "<h1>API-Schlüssel</h1>" in html
    assert "Create API key" in html  # what the host did not translate stays English


# -- dates and numbers ----------------------------------------------------------------------


def test_dates_times_and_numbers_follow_the_locale(site: Site) -> None:
    key = site.create("Servidor", expires_at=NOW + dt.timedelta(days=30))
    english = site.get(f"/{key.id}", headers={}).get_data(as_text=True)
    spanish = site.get(f"/{key.id}").get_data(as_text=True)
    moment = '<time datetime="2026-11-23T10:00:00Z" title="{}">{}</time>'
    assert moment.format("Nov 23, 2026, 10:00\u202fAM UTC", "Nov 23, 2026") in english
    assert moment.format("23 nov 2026, 10:00 UTC", "23 nov 2026") in spanish
    assert '<span class="ka-sub">in 30 days</span>' in english
    assert '<span class="ka-sub">dentro de 30 días</span>' in spanish
    assert ">Nov 23</text>" in english and ">23 nov</text>" in spanish  # the chart's axis
    assert "Las fechas y horas están en UTC." in spanish
    with site.app.test_request_context(headers=SPANISH):
        assert i18n.format_number(1234567) == "1.234.567"
        assert i18n.relative(NOW - dt.timedelta(hours=3), NOW) == "hace 3 horas"
        assert i18n.relative(NOW, NOW) == "justo ahora"
        assert i18n.format_date(dt.date(2027, 1, 15)) == "15 ene 2027"
    with site.app.test_request_context(headers={"Accept-Language": "en"}):
        assert i18n.format_number(1234567) == "1,234,567"
        assert i18n.format_date(dt.date(2027, 1, 15)) == "Jan 15, 2027"


def test_outside_a_request_the_messages_are_english(site: Site) -> None:
    with site.app.app_context():
        assert i18n.gettext("API keys") == "API keys"
        assert i18n.duration(3600) == "1 hour"
