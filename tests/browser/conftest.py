"""A real browser (Debian's chromium through Playwright) and the demo app
served over real HTTP, for the page tests of this folder.

Without Playwright or chromium the tests skip with the reason; under
``CI=true`` they fail instead (``tests.services.unavailable``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from ..conftest import FAST_ARGON2
from ..services import unavailable

CHROMIUM = os.environ.get("KEYAUTH_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium, shared by the tests of a module."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as error:
        unavailable(f"Playwright for Python is not installed: {error}")
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"chromium is not installed at {CHROMIUM}")
    with sync_playwright() as playwright:
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Error as error:
            unavailable(f"chromium at {CHROMIUM} does not start: {error}")
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class LiveServer:
    app: Flask
    url: str


def demo_app(database: Path, **config: Any) -> Flask:
    """The demo app (``example.app``) on a SQLite file, as the tests run it."""
    from example.app import create_app

    return create_app(
        {
            "SECRET_KEY": "browser-test",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
            "RATELIMIT_STORAGE_URI": "memory://",
            "RATELIMIT_KEY_PREFIX": f"b{uuid.uuid4().hex[:8]}",
            **FAST_ARGON2,
            **config,
        }
    )


@contextmanager
def serving(app: Flask) -> Iterator[LiveServer]:
    """``app`` on 127.0.0.1, a free port, in a thread, until the block ends."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="demo-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(app, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        # Buffered usage would otherwise be written at exit, to a deleted file.
        app.extensions["keyauth"].service.usage.take()
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The demo app over real HTTP, on a database of its own."""
    with serving(demo_app(tmp_path / "demo.db")) as server:
        yield server


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (``tests/artifacts/``, not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
