"""The app the multiprocess metrics test serves with gunicorn: a protected
route, and ``/metrics`` as a host exposes it in gunicorn's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``), through ``MultiProcessCollector``."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask.wrappers import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from flask_keyauth import KeyAuth, require_key


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        KEYAUTH_ARGON2_TIME_COST=1,
        KEYAUTH_ARGON2_MEMORY_COST=8,
        KEYAUTH_ARGON2_PARALLELISM=1,
        RATELIMIT_STORAGE_URI="memory://",
    )
    app.config.from_prefixed_env("TESTAPP")
    KeyAuth(app)

    @app.get("/read")
    @require_key("read")
    def read() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    @app.after_request
    def worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
