"""A throwaway Redis (its own port) stopped and paused under the limiter.

Never the machine's shared Redis: these tests start and kill their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ..conftest import bearer, make_app
from ..services import free_port, unavailable


class ThrowawayRedis:
    def __init__(self, tmp_path: Any) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.stop()


def timed_get(client: Any, secret: str) -> tuple[int, str | None, float]:
    started = time.monotonic()
    response = client.get("/read", headers=bearer(secret))
    code = response.get_json()["error"]["code"] if response.status_code >= 400 else None
    return response.status_code, code, time.monotonic() - started


def test_redis_stopped_mid_traffic_gives_503_then_recovers(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    app, _, keyauth = make_app(
        f"sqlite:///{tmp_path / 'f.db'}", RATELIMIT_STORAGE_URI=redis_server.url
    )
    client = app.test_client()
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    assert timed_get(client, secret)[0] == 200

    redis_server.stop()
    status, code, took = timed_get(client, secret)
    assert (status, code) == (503, "SERVICE_UNAVAILABLE")
    assert took < 3

    redis_server.start()
    assert timed_get(client, secret)[0] == 200


def test_redis_paused_answers_503_within_the_socket_timeout(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    app, _, keyauth = make_app(
        f"sqlite:///{tmp_path / 'f.db'}", RATELIMIT_STORAGE_URI=redis_server.url
    )
    client = app.test_client()
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    assert timed_get(client, secret)[0] == 200

    redis_server.pause()
    status, code, took = timed_get(client, secret)
    assert (status, code) == (503, "SERVICE_UNAVAILABLE")
    assert took < 3, f"a paused Redis held the request {took:.1f}s"

    redis_server.resume()
    deadline = time.monotonic() + 5
    while timed_get(client, secret)[0] != 200:
        assert time.monotonic() < deadline, "no recovery after Redis resumed"
        time.sleep(0.1)


def test_redis_down_with_fail_open_serves_and_never_500s(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    app, _, keyauth = make_app(
        f"sqlite:///{tmp_path / 'f.db'}",
        RATELIMIT_STORAGE_URI=redis_server.url,
        KEYAUTH_RATELIMIT_FAIL_OPEN=True,
    )
    client = app.test_client()
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
        _, never_used = keyauth.create_key("acme", "k2")
    assert timed_get(client, secret)[0] == 200
    redis_server.stop()
    assert timed_get(client, secret)[0] == 200
    # A key never verified in this process meets the failed-auth throttle,
    # which fails closed.
    assert timed_get(client, never_used)[:2] == (503, "SERVICE_UNAVAILABLE")
