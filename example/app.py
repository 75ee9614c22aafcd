"""The flask-keyauth demo: an API with read and write routes behind keys.

Run it with ``flask --app example.app run``, open http://127.0.0.1:5000/,
sign in (any organisation id: the sign-in is pretend) as one of its people
and manage keys under Settings → API keys. alice and bob manage the keys;
carol is a viewer, who sees keys, usage and history but changes nothing.
Each key's page says who created it and who changed what; switch person on
the home page to see it. Keys can also be made from the command line:
``flask --app example.app keys create --owner acme --name demo --scopes read,write``
(``--actor alice`` records the change as hers).
It uses SQLite (``instance/demo.db``) and in-memory rate limits: nothing else
to install.

The key pages use the demo's own layout (``templates/demo/base.html``,
through ``KEYAUTH_BASE_TEMPLATE``), which extends the bundled
``keyauth/base.html`` to put the demo's name and a sign-out link in the top
bar. The demo speaks English and Spanish, as the browser asks, through
Flask-Babel: its own words are in ``translations/`` (extract them with
``pybabel extract -F babel.cfg -k _l -o messages.pot .`` in this folder), and
flask-keyauth's pages follow its locale selector.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, redirect, render_template, request, session, url_for
from flask_babel import Babel, get_locale
from flask_babel import lazy_gettext as _l
from flask_sqlalchemy import SQLAlchemy
from werkzeug.wrappers import Response

from flask_keyauth import KeyAuth, blueprint, current_key, require_key

from . import alerts

db = SQLAlchemy()
keyauth = KeyAuth()

#: The demo's "data": entities per owner, kept in memory.
ENTITIES: dict[str, list[dict[str, Any]]] = {}

#: The people of every organisation, and their role on the key pages.
PEOPLE = {"alice": "manager", "bob": "manager", "carol": "viewer"}
DEFAULT_PERSON = "alice"

#: The demo's permissions, each with what it allows (shown on the create page).
#: Descriptions are lazy_gettext strings: each page says them in its language.
SCOPES = {
    "read": {"implies": [], "description": _l("List entities and run reports.")},
    "write": {"implies": ["read"], "description": _l("Create entities.")},
    "admin": {
        "implies": ["write"],
        "description": _l("Manage this organisation's API keys through the JSON API."),
    },
}
#: The languages of the demo's own pages; flask-keyauth's pages follow them.
LANGUAGES = ["en", "es"]

#: Units of the plan one report spends.
REPORT_COST = 5


def safe_next(target: str | None) -> str | None:
    """A path on this site to return to after sign-in, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def demo_secret(instance_path: str) -> str:
    """The demo's session secret: ``DEMO_SECRET_KEY``, else one made once and
    kept in the instance folder, so that every worker (``gunicorn -w 4``)
    and every restart signs sessions with the same one."""
    given = os.environ.get("DEMO_SECRET_KEY")
    if given:
        return given
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, "demo-secret-key")
    try:
        # O_EXCL: of several workers starting together, one writes it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    for _ in range(50):
        with open(path) as kept:
            secret = kept.read().strip()
        if secret:
            return secret
        time.sleep(0.01)  # another worker is writing it
    raise RuntimeError(f"{path} is empty: delete it and start again")


def demo_locale() -> str:
    """The browser's language among the demo's, English when it names none."""
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def sign_in(app: Flask) -> None:
    """The demo's pretend sign-in: an organisation (the keys' owner) and one
    of its people (who acts, and with which role)."""

    @keyauth.owner_loader
    def current_owner() -> str | None:
        return session.get("org_id")

    # Who of the organisation is acting: events and keys record them.
    @keyauth.actor_loader
    def current_person() -> str | None:
        return session.get("person")

    # What they may do on the key pages: an unknown person only looks.
    @keyauth.role_loader
    def current_role() -> str:
        return PEOPLE.get(session.get("person") or "", "viewer")

    @app.context_processor
    def demo_context() -> dict[str, Any]:
        # ka_lang: <html lang> of the bundled layout, which the demo's pages extend.
        return {"people": PEOPLE, "ka_lang": str(get_locale() or LANGUAGES[0])}

    @app.get("/")
    def home() -> str:
        return render_template(
            "demo/home.html",
            org=session.get("org_id"),
            person=session.get("person"),
            next=safe_next(request.args.get("next")) or "",
        )

    @app.post("/login")
    def login() -> Response:
        org = (request.form.get("org") or "").strip()[:64]
        person = request.form.get("person") or DEFAULT_PERSON
        if org and person in PEOPLE:
            session["org_id"], session["person"] = org, person
        return redirect(safe_next(request.form.get("next")) or url_for("home"))

    @app.get("/logout")
    def logout() -> Response:
        session.pop("org_id", None)
        session.pop("person", None)
        return redirect(url_for("home"))


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(
        SECRET_KEY=demo_secret(app.instance_path),
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL")
        or "sqlite:///" + os.path.join(app.instance_path, "demo.db"),
        RATELIMIT_STORAGE_URI=os.environ.get("RATELIMIT_STORAGE_URI", "memory://"),
        # Anonymous visitors of the key pages are sent to the sign-in page.
        KEYAUTH_LOGIN_VIEW="home",
        KEYAUTH_BASE_TEMPLATE="demo/base.html",
        KEYAUTH_SCOPES=SCOPES,
    )
    app.config.update(config or {})
    os.makedirs(app.instance_path, exist_ok=True)
    # The demo's own pages in the browser's language (example/translations);
    # flask-keyauth's pages use the same choice.
    Babel(app, locale_selector=demo_locale)
    db.init_app(app)
    keyauth.init_app(app, db=db)
    app.register_blueprint(blueprint, url_prefix="/settings/api-keys")
    with app.app_context():
        db.create_all()

    sign_in(app)
    # Alerts go to the log: failure bursts, spent plans, revocations, leaks,
    # and the reminders that `flask --app example.app keys remind` sends.
    alerts.install(app, app.logger.warning)

    @app.get("/v1/entities")
    @require_key("read")
    def list_entities() -> dict[str, Any]:
        return {
            "org": current_key.owner_id,
            "env": current_key.environment,
            "entities": ENTITIES.get(f"{current_key.owner_id}:{current_key.environment}", []),
        }

    @app.post("/v1/entities")
    @require_key("write")
    def create_entity() -> tuple[dict[str, Any], int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return {"error": {"code": "VALIDATION_ERROR", "message": "give a name",
                              "details": {"fields": {"name": "required"}}}}, 400
        entity = {"name": body["name"][:200]}
        # Live and test keys see different data, as a real API would route them.
        ENTITIES.setdefault(f"{current_key.owner_id}:{current_key.environment}", []).append(entity)
        return {"entity": entity}, 201

    @app.get("/v1/reports")
    @require_key("read", cost=REPORT_COST)
    def report() -> dict[str, Any]:
        # A metered route: a report spends REPORT_COST units of every window.
        entities = ENTITIES.get(f"{current_key.owner_id}:{current_key.environment}", [])
        return {"org": current_key.owner_id, "entities": len(entities), "cost": REPORT_COST}

    return app
