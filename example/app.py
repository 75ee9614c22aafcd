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

The key pages use the demo's own layout (``demo/base.html``, through
``KEYAUTH_BASE_TEMPLATE``), which extends the bundled ``keyauth/base.html``
to put the demo's name and a sign-out link in the top bar.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, redirect, render_template, request, session, url_for
from flask_sqlalchemy import SQLAlchemy
from jinja2 import ChoiceLoader, DictLoader
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
SCOPES = {
    "read": {"implies": [], "description": "List entities and run reports."},
    "write": {"implies": ["read"], "description": "Create entities."},
    "admin": {
        "implies": ["write"],
        "description": "Manage this organisation's API keys through the JSON API.",
    },
}

#: The demo's layout: the bundled one, with the demo's name and account menu.
#: The key pages extend it (KEYAUTH_BASE_TEMPLATE), and so does the home page.
DEMO_BASE = """{% extends "keyauth/base.html" %}
{% block brand %}<a class="ka-brand" href="{{ url_for('home') }}">
  <span class="ka-brand__mark" aria-hidden="true"></span>
  Acme API <span class="ka-muted">demo</span></a>{% endblock %}
{% block account %}{% if session.org_id %}
  <span><span class="ka-hide-narrow">Signed in as</span>
    <strong>{{ session.person or "?" }}</strong>
    of <strong>{{ session.org_id }}</strong>
    {%- if people.get(session.person) == "viewer" %}
    <span class="ka-muted">(viewer)</span>{% endif %}</span>
  <a href="{{ url_for('logout') }}">Sign out</a>
{% endif %}{% endblock %}
"""

HOME = """{% extends "demo/base.html" %}
{% macro people_select(current) -%}
<select id="person" name="person" aria-describedby="person-help">
  {%- for name, role in people.items() %}
  <option value="{{ name }}" {% if name == current %}selected{% endif %}>
    {{- name }} ({{ role }})</option>
  {%- endfor %}
</select>
{%- endmacro %}
{% block title %}flask-keyauth demo{% endblock %}
{% block content %}
<div class="keyauth">
  <div class="ka-pagehead">
    <div>
      <h1>flask-keyauth demo</h1>
      <p class="ka-lede">An API whose routes take API keys. Sign in, create a key under
        Settings → API keys, then call the API with it.</p>
    </div>
  </div>
  {% if org %}
  <section class="ka-card">
    <h2>Organisation {{ org }}</h2>
    <p class="ka-muted">You are {{ person }}, {{ "a viewer" if people.get(person) == "viewer"
      else "a manager" }} of its keys. The keys belong to the organisation: everyone in it
      sees the same ones, and each key's page says who did what.</p>
    <div class="ka-actions">
      <a class="ka-btn ka-btn--primary" href="{{ url_for('keyauth.index') }}">
        Settings → API keys</a>
      <a class="ka-btn ka-btn--ghost" href="{{ url_for('logout') }}">Sign out</a>
    </div>
  </section>
  <form class="ka-card ka-form" method="post" action="{{ url_for('login') }}">
    <input type="hidden" name="org" value="{{ org }}">
    <div class="ka-field">
      <label for="person">Switch to another person of {{ org }}</label>
      <p class="ka-help" id="person-help">alice and bob manage the keys; carol only sees them.</p>
      {{ people_select(person) }}
    </div>
    <div class="ka-actions"><button class="ka-btn">Switch person</button></div>
  </form>
  {% else %}
  <form class="ka-card ka-form" method="post" action="{{ url_for('login') }}">
    <input type="hidden" name="next" value="{{ next }}">
    <div class="ka-field">
      <label for="org">Organisation id</label>
      <p class="ka-help" id="org-help">Pretend sign-in: any id works, and each id has
        its own keys.</p>
      <input id="org" name="org" type="text" value="acme" required maxlength="64"
             aria-describedby="org-help">
    </div>
    <div class="ka-field">
      <label for="person">Person</label>
      <p class="ka-help" id="person-help">alice and bob manage the keys; carol only sees them.</p>
      {{ people_select(none) }}
    </div>
    <div class="ka-actions"><button class="ka-btn ka-btn--primary">Sign in</button></div>
  </form>
  {% endif %}
  <section class="ka-card">
    <h2>The API</h2>
    <ul>
      <li><code>GET /v1/entities</code> needs a key with <code>read</code></li>
      <li><code>POST /v1/entities</code> needs a key with <code>write</code></li>
      <li><code>GET /settings/api-keys/api/whoami</code> takes any key</li>
    </ul>
    <pre><code>curl -H "Authorization: Bearer $API_KEY" \\
  {{ request.host_url }}v1/entities</code></pre>
  </section>
</div>
{% endblock %}
"""


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
    def demo_people() -> dict[str, Any]:
        return {"people": PEOPLE}

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
    # The demo keeps its two templates in this file; an app would have a
    # templates/ folder instead.
    app.jinja_env.loader = ChoiceLoader(
        [
            DictLoader({"demo/base.html": DEMO_BASE, "demo/home.html": HOME}),
            app.create_global_jinja_loader(),
        ]
    )

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
