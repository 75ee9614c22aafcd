"""A throwaway PostgreSQL cluster (initdb + pg_ctl on its own port) stopped
and restarted under traffic. Never the machine's shared server."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth, require_key

from ..conftest import FAST_ARGON2, bearer
from ..services import free_port, unavailable


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class ThrowawayPostgres:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.pg_ctl = pg_bin("pg_ctl")
        initdb = pg_bin("initdb")
        if self.pg_ctl is None or initdb is None:
            unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        subprocess.run(
            as_postgres([str(initdb), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        subprocess.run(
            as_postgres([str(self.pg_ctl), "-D", str(self.data), "-o", options,
                         "-l", str(self.root / "log"), "-w", "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        subprocess.run(
            as_postgres([str(self.pg_ctl), "-D", str(self.data), "-m", "immediate", "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )


@pytest.fixture
def postgres_server() -> Iterator[ThrowawayPostgres]:
    # Not under pytest's tmp_path: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="keyauth-pg-"))
    try:
        server = ThrowawayPostgres(root)
        server.start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build(url: str) -> tuple[Flask, KeyAuth]:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url, RATELIMIT_STORAGE_URI="memory://", **FAST_ARGON2
    )
    keyauth = KeyAuth(app)  # its own engine, with pool_pre_ping

    @app.get("/read")
    @require_key("read")
    def read() -> Any:
        return {"ok": True}

    return app, keyauth


def test_postgres_stopped_gives_503_and_first_request_after_restart_succeeds(
    postgres_server: ThrowawayPostgres,
) -> None:
    app, keyauth = build(postgres_server.url)
    client = app.test_client()
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    assert client.get("/read", headers=bearer(secret)).status_code == 200

    postgres_server.stop()
    for _ in range(3):
        started = time.monotonic()
        response = client.get("/read", headers=bearer(secret))
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert "Traceback" not in response.get_data(as_text=True)
        assert time.monotonic() - started < 5

    postgres_server.start()
    # The pool's connections died with the server; pre-ping replaces them,
    # so the very first request after the restart is served.
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    with app.app_context():
        _, other = keyauth.create_key("acme", "after restart")
    assert client.get("/read", headers=bearer(other)).status_code == 200
    app.extensions["keyauth"].store.engine.dispose()
