"""Real servers for the hostile and fault tests: gunicorn on a free
loopback port, and a raw HTTP client that sends exactly the bytes given."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..services import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The error code of our JSON envelope, if this is one."""
        try:
            return str(self.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return None


def raw_request(port: int, head: bytes, timeout: float = 30) -> Reply:
    """Send ``head`` (request line and headers, no final blank line) as is."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    header_blob, _, body = data.partition(b"\r\n\r\n")
    lines = header_blob.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(status, headers, body, time.monotonic() - started)


def get(base: str, headers: dict[str, str], timeout: float = 30) -> Reply:
    """A GET with urllib; HTTP errors are replies too."""
    started = time.monotonic()
    request = urllib.request.Request(base, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(
                response.status, {k.lower(): v for k, v in response.headers.items()},
                response.read(), time.monotonic() - started,
            )
    except urllib.error.HTTPError as error:
        return Reply(
            error.code, {k.lower(): v for k, v in error.headers.items()}, error.read(),
            time.monotonic() - started,
        )


@contextmanager
def gunicorn(
    config: dict[str, Any],
    workers: int = 1,
    threads: int = 1,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """Serve ``hostile_app`` with ``config`` (KEY -> value) and ``env``;
    yield (base url, port)."""
    port = free_port()
    env = {**os.environ, **(env or {})}
    for name, value in config.items():
        env[f"TESTAPP_{name}"] = json.dumps(value)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads),
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--graceful-timeout", "5",
         *extra, "tests.security.hostile_app:create_app()"],
        cwd=ROOT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/read", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # 401: a worker answers
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield base, port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@contextmanager
def workers_on_shared_stores(postgres_url: str, workers: int = 4) -> Iterator[tuple[str, Any]]:
    """gunicorn ``workers`` on PostgreSQL + Redis, and this process as another
    host on the same stores: yield (base url, (app, keyauth)); clean up after."""
    import uuid

    from ..conftest import make_app
    from ..services import redis_url

    prefix = f"w{uuid.uuid4().hex[:8]}"
    storage = redis_url()
    app, db, keyauth = make_app(
        postgres_url, RATELIMIT_STORAGE_URI=storage, RATELIMIT_KEY_PREFIX=prefix
    )
    config = {
        "SQLALCHEMY_DATABASE_URI": postgres_url,
        "RATELIMIT_STORAGE_URI": storage,
        "RATELIMIT_KEY_PREFIX": prefix,
    }
    try:
        with gunicorn(config, workers=workers) as (base, _):
            from ..faults.servers import until_every_worker_answers

            # gunicorn serves once its first worker is up: load spread over
            # all of them needs all of them.
            until_every_worker_answers(base, workers)
            yield base, (app, keyauth)
    finally:
        with app.app_context():
            app.extensions["keyauth"].limits.limiter.reset()
            db.drop_all()
            db.engine.dispose()
