"""Several gunicorn workers on PostgreSQL + Redis: exact limits, instant revocation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .conftest import make_app
from .services import free_port, redis_url

ROOT = Path(__file__).resolve().parent.parent


def get(url: str, key: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["X-Worker-Pid"]
    except urllib.error.HTTPError as error:
        return error.code, error.headers["X-Worker-Pid"]


@pytest.fixture
def served(postgres_url: str) -> Iterator[tuple[str, Any]]:
    prefix = f"w{uuid.uuid4().hex[:8]}"
    storage = redis_url()
    # The test process is "another host": it shares the database and Redis.
    app, db, keyauth = make_app(
        postgres_url, RATELIMIT_STORAGE_URI=storage, RATELIMIT_KEY_PREFIX=prefix
    )
    with app.app_context():
        db.create_all()
    port = free_port()
    env = dict(
        os.environ,
        TEST_DATABASE_URL=postgres_url,
        TEST_RATELIMIT_STORAGE_URI=storage,
        TEST_RATELIMIT_KEY_PREFIX=prefix,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--threads", "1",
         "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
         "tests.wsgi_app:create_app()"],
        cwd=ROOT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/read", timeout=2)
            except urllib.error.HTTPError:
                break  # 401: a worker answers
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield base, (app, keyauth)
    finally:
        server.terminate()
        server.wait(timeout=30)
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


def test_four_workers_serve_exactly_the_plan(served: tuple[str, Any]) -> None:
    base, (app, keyauth) = served
    with app.app_context():
        keyauth.set_plan("acme", "enterprise", "50/hour")
        info, secret = keyauth.create_key("acme", "load")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: get(base + "/read", secret), range(200)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 50, 429: 150}
    served_by = {pid for status, pid in results if status == 200}
    assert len(served_by) >= 2, "the load should have reached several workers"

    # Revoked through the service API in this process: the very next request
    # in every worker, each of which has this key in its verified cache, is 401.
    with app.app_context():
        keyauth.revoke_key(info.id)
    with ThreadPoolExecutor(max_workers=8) as pool:
        # 20, below the failed-auth throttle (30/minute from this address):
        # a revoked key counts as a failed attempt.
        after = list(pool.map(lambda _: get(base + "/read", secret), range(20)))
    assert [status for status, _ in after] == [401] * 20
    assert len({pid for _, pid in after} & served_by) >= 2
