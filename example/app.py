"""The flask-keyauth demo: an API with read and write routes behind keys.

Run it with ``flask --app example.app run`` and create keys with
``flask --app example.app keys create --owner acme --name demo --scopes read,write``.
It uses SQLite (``instance/demo.db``) and in-memory rate limits: nothing else
to install.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask, redirect, render_template_string, request, session, url_for
from flask_sqlalchemy import SQLAlchemy
from werkzeug.wrappers import Response

from flask_keyauth import KeyAuth, blueprint, current_key, require_key

db = SQLAlchemy()
keyauth = KeyAuth()

#: The demo's "data": entities per owner, kept in memory.
ENTITIES: dict[str, list[dict[str, Any]]] = {}

HOME = """<!doctype html>
<title>flask-keyauth demo</title>
<h1>flask-keyauth demo</h1>
{% if org %}
  <p>Signed in as organisation <strong>{{ org }}</strong>.
     <a href="{{ url_for('keyauth.index') }}">Manage API keys</a> ·
     <a href="{{ url_for('logout') }}">Sign out</a></p>
{% else %}
  <form method="post" action="{{ url_for('login') }}">
    <label>Organisation id <input name="org" value="acme" required></label>
    <button>Sign in (pretend)</button>
  </form>
{% endif %}
<p>API: <code>GET /v1/entities</code> (scope <code>read</code>),
<code>POST /v1/entities</code> (scope <code>write</code>),
<code>GET /settings/api-keys/api/whoami</code>.</p>
"""


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.config.update(
        SECRET_KEY=os.environ.get("DEMO_SECRET_KEY") or secrets.token_hex(32),
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL")
        or "sqlite:///" + os.path.join(app.instance_path, "demo.db"),
        RATELIMIT_STORAGE_URI=os.environ.get("RATELIMIT_STORAGE_URI", "memory://"),
    )
    app.config.update(config or {})
    os.makedirs(app.instance_path, exist_ok=True)

    db.init_app(app)
    keyauth.init_app(app, db=db)
    app.register_blueprint(blueprint, url_prefix="/settings/api-keys")
    with app.app_context():
        db.create_all()

    @keyauth.owner_loader
    def current_owner() -> str | None:
        return session.get("org_id")

    @app.get("/")
    def home() -> str:
        return render_template_string(HOME, org=session.get("org_id"))

    @app.post("/login")
    def login() -> Response:
        org = (request.form.get("org") or "").strip()[:64]
        if org:
            session["org_id"] = org
        return redirect(url_for("home"))

    @app.get("/logout")
    def logout() -> Response:
        session.pop("org_id", None)
        return redirect(url_for("home"))

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

    return app
