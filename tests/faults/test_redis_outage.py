"""A throwaway Redis (its own port) stopped and paused under the limiter.

Never the machine's shared Redis: these tests start and kill their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..conftest import bearer, make_app
from .servers import ThrowawayRedis


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


# -- real gunicorn workers under traffic ------------------------------------------------


class Traffic:
    """Client threads sending requests to a server until stopped, recording
    (start time, status, error code, seconds) of every reply."""

    def __init__(self, url: str, headers_for: Any, threads: int = 6) -> None:
        import threading

        self.url = url
        self.headers_for = headers_for
        self.replies: list[tuple[float, int, str | None, float]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,)) for i in range(threads)
        ]

    def _run(self, i: int) -> None:
        from ..security.servers import get

        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            reply = get(self.url, self.headers_for(i, n), timeout=20)
            self.replies.append((started, reply.status, reply.code, reply.seconds))
            n += 1
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def since(self, moment: float) -> list[tuple[float, int, str | None, float]]:
        return [r for r in self.replies if r[0] >= moment]


def served_by_workers(tmp_path: Any, storage: str, **config: Any) -> Any:
    from ..security.servers import gunicorn

    url = f"sqlite:///{tmp_path / 'w.db'}"
    app, db, keyauth = make_app(url)  # creates the tables; the test's own host
    with app.app_context():
        keyauth.set_plan("acme", "enterprise", "1000000/hour")
        secrets = [keyauth.create_key("acme", f"k{i}")[1] for i in range(50)]
        db.engine.dispose()
    settings = {
        "SQLALCHEMY_DATABASE_URI": url,
        "RATELIMIT_STORAGE_URI": storage,
        "KEYAUTH_FAILED_AUTH_LIMIT": "1000000/minute",
        **config,
    }
    return gunicorn(settings, workers=2, threads=4), secrets


def wait_until_served(traffic: Traffic, since: float, seconds: float) -> float:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ok = [r for r in traffic.since(since) if r[1] == 200]
        if len(ok) >= 10:
            return ok[0][0] - since
        time.sleep(0.1)
    raise AssertionError(f"no recovery within {seconds}s: {tally(traffic.since(since))}")


@dataclass(frozen=True)
class Outage:
    """When an outage under traffic began, began to end, ended and was over."""

    down: float
    restarting: float
    up: float
    recovered_after: float


def outage_under_traffic(
    traffic: Traffic,
    stop: Callable[[], None],
    start: Callable[[], None],
    *,
    lasting: float = 2.0,
    recovery: float = 10,
    after: float = 0.5,
) -> Outage:
    """Let traffic flow, ``stop`` the server for ``lasting`` seconds, ``start``
    it, and wait until requests are served again."""
    time.sleep(1.5)
    stop()
    down = time.monotonic()
    time.sleep(lasting)
    restarting = time.monotonic()
    start()
    up = time.monotonic()
    recovered_after = wait_until_served(traffic, up, recovery)
    time.sleep(after)
    return Outage(down, restarting, up, recovered_after)


def tally(replies: list[tuple[float, int, str | None, float]]) -> dict[Any, int]:
    from collections import Counter

    return dict(Counter((status, code) for _, status, code, _ in replies))


def test_redis_killed_under_gunicorn_traffic_users_get_503_never_500_then_200_when_back(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    server, secrets = served_by_workers(tmp_path, redis_server.url)
    # Half the keys are used before the outage, half first during it.
    with server as (base, _), Traffic(
        base + "/read", lambda i, n: bearer(secrets[(i * 7 + n) % 50])
    ) as traffic:
        outage = outage_under_traffic(traffic, redis_server.stop, redis_server.start)
    down, restarting, up = outage.down, outage.restarting, outage.up
    recovered_after = outage.recovered_after
    before = traffic.since(0)
    # Begun and answered while Redis was down (on a busy machine a request
    # can wait in the listen queue and be served after the restart).
    during = [r for r in traffic.replies if down + 0.6 <= r[0] and r[0] + r[3] < restarting]
    statuses = tally(before)
    assert set(statuses) <= {(200, None), (503, "SERVICE_UNAVAILABLE")}, statuses
    assert during and all(r[1] == 503 for r in during), tally(during)
    # Well under gunicorn's 30 s worker timeout: a hang would show here.
    assert max(r[3] for r in traffic.replies) < 5, "a request hung on the dead Redis"
    assert recovered_after < 5
    assert all(r[1] == 200 for r in traffic.since(up + recovered_after + 1))


def test_redis_paused_under_gunicorn_traffic_users_get_503_within_the_timeout_never_a_hang(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    server, secrets = served_by_workers(tmp_path, redis_server.url)
    with server as (base, _), Traffic(
        base + "/read", lambda i, n: bearer(secrets[(i * 7 + n) % 50])
    ) as traffic:
        outage = outage_under_traffic(
            traffic, redis_server.pause, redis_server.resume, lasting=3.0
        )
    paused, resumed = outage.down, outage.restarting
    recovered_after = outage.recovered_after
    statuses = tally(traffic.replies)
    assert set(statuses) <= {(200, None), (503, "SERVICE_UNAVAILABLE")}, statuses
    during = [r for r in traffic.replies if paused + 1.0 <= r[0] and r[0] + r[3] < resumed]
    assert during and all(r[1] == 503 for r in during), tally(during)
    # The default socket timeout is 0.5s: nothing waits on a frozen Redis.
    slowest = max(r[3] for r in traffic.replies)
    assert slowest < 4, f"a request waited {slowest:.1f}s on the paused Redis"
    assert recovered_after < 5
