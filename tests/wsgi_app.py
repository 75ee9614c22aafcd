"""The app the multi-process tests serve with gunicorn (configured by env)."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask.wrappers import Response
from flask_sqlalchemy import SQLAlchemy

from flask_keyauth import KeyAuth, current_key, require_key

FAST_ARGON2 = {
    "KEYAUTH_ARGON2_TIME_COST": 1,
    "KEYAUTH_ARGON2_MEMORY_COST": 8,
    "KEYAUTH_ARGON2_PARALLELISM": 1,
}

db = SQLAlchemy()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["TEST_DATABASE_URL"],
        RATELIMIT_STORAGE_URI=os.environ["TEST_RATELIMIT_STORAGE_URI"],
        RATELIMIT_KEY_PREFIX=os.environ["TEST_RATELIMIT_KEY_PREFIX"],
        **FAST_ARGON2,
    )
    db.init_app(app)
    KeyAuth(app, db=db)

    @app.get("/read")
    @require_key("read")
    def read() -> dict[str, Any]:
        return {"key": current_key.id}

    @app.after_request
    def worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        return response

    return app
