"""The app the hostile tests serve with gunicorn.

Configured from the environment: ``TESTAPP_*`` variables become config keys
(values JSON-decoded, as Flask's ``from_prefixed_env`` does), so a test sets
``TESTAPP_KEYAUTH_FAILED_AUTH_LIMIT`` and the like. Two keys are the test
app's own:

- ``TEST_HOST_DB`` (default true): flask-keyauth on the app's Flask-SQLAlchemy
  ``db``; false, on the engine flask-keyauth builds itself;
- ``TEST_TOUCH_DATABASE`` (default false): ``create_app`` itself uses the
  database (creates the tables, lists and creates a key), as an app
  served with ``gunicorn --preload`` does in the master before forking;
  ``"host"``: only the host's own code does (``db.create_all()`` and a
  query on ``db.session``), flask-keyauth not at all;
- ``TEST_METRICS`` (default false): ``/metrics`` as a host exposes it in
  gunicorn's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), through
  ``MultiProcessCollector``.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.wrappers import Response
from flask_sqlalchemy import SQLAlchemy

from flask_keyauth import KeyAuth, current_key, require_key

db = SQLAlchemy()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        KEYAUTH_ARGON2_TIME_COST=1,
        KEYAUTH_ARGON2_MEMORY_COST=8,
        KEYAUTH_ARGON2_PARALLELISM=1,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
    )
    app.config.from_prefixed_env("TESTAPP")
    host_db = app.config.get("TEST_HOST_DB", True)
    if host_db:
        db.init_app(app)
        keyauth = KeyAuth(app, db=db)
    else:
        keyauth = KeyAuth(app)
    touch = app.config.get("TEST_TOUCH_DATABASE")
    if touch:
        with app.app_context():
            if host_db:
                db.create_all()
                db.session.execute(sa.text("SELECT 1"))
                db.session.remove()
            if touch != "host":
                # Connections left in the pool before any fork.
                keyauth.list_keys("preload")
                keyauth.create_key("preload", f"made by {os.getpid()}")

    @app.get("/read")
    @require_key("read")
    def read() -> dict[str, Any]:
        return {"key": current_key.id}

    if app.config.get("TEST_METRICS"):
        add_metrics(app)

    @app.after_request
    def worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app


def add_metrics(app: Flask) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    @app.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
