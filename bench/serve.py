"""The app gunicorn serves for the HTTP part of the bench (configured by env)."""

from __future__ import annotations

import os

from flask import Flask

from . import apps


def create_app() -> Flask:
    kind = os.environ["BENCH_APP"]
    storage = os.environ["BENCH_STORAGE_URI"]
    prefix = os.environ["BENCH_KEY_PREFIX"]
    if kind == "keyauth":
        return apps.keyauth_app(
            os.environ["BENCH_DATABASE_URL"], storage, key_prefix=prefix
        ).app
    return apps.peer_glued([os.environ["BENCH_TOKEN"]], storage, prefix)
