"""Plan limits, headers, the failed-auth throttle and storage outages (SPEC §6)."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, abort
from flask.views import MethodView

from flask_keyauth import KeyAuth, rate_limited, require_key
from flask_keyauth.signals import auth_failed

from .conftest import bearer, make_app
from .services import free_port, redis_url

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture(params=["memory", "redis"])
def storage_uri(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else redis_url()


class Host:
    """An app with protected routes on a given storage, and helpers."""

    def __init__(self, tmp_path: Any, storage_uri: str, **config: Any) -> None:
        config.setdefault("KEYAUTH_PLANS", {
            "free": "5/minute;10/hour",
            "tiny": "2/minute;2/hour",
            "enterprise": None,
        })
        self.app, self.db, self.keyauth = make_app(
            f"sqlite:///{tmp_path / 'rl.db'}", RATELIMIT_STORAGE_URI=storage_uri, **config
        )
        app, keyauth = self.app, self.keyauth

        @app.get("/aborts")
        @require_key("read")
        def aborts() -> Any:
            abort(404)

        @app.get("/returns-error")
        @require_key("read")
        def returns_error() -> Any:
            return {"error": "teapot"}, 418

        @app.get("/extra-outer")
        @keyauth.limiter.limit("2/minute")
        @require_key("read")
        def extra_outer() -> Any:
            return {"ok": True}

        @app.get("/extra-inner")
        @require_key("read")
        @keyauth.limiter.limit("2/minute")
        def extra_inner() -> Any:
            return {"ok": True}

        class Things(MethodView):
            decorators = [require_key("read")]

            def get(self) -> Any:
                return {"things": []}

        app.add_url_rule("/things", view_func=Things.as_view("things"))
        self.client = app.test_client()

    def key(self, owner: str = "acme", scopes: Any = ("read",)) -> tuple[Any, str]:
        with self.app.app_context():
            return self.keyauth.create_key(owner, "k", scopes)

    def plan(self, owner: str, plan: str, limits: str | None = None) -> None:
        with self.app.app_context():
            self.keyauth.set_plan(owner, plan, limits)


@pytest.fixture
def host(tmp_path: Any, storage_uri: str) -> Iterator[Host]:
    h = Host(tmp_path, storage_uri)
    yield h
    with h.app.app_context():
        h.app.extensions["keyauth"].limits.limiter.reset()


def test_headers_on_success_describe_binding_window(host: Host) -> None:
    _, secret = host.key()
    response = host.client.get("/read", headers=bearer(secret))
    assert response.status_code == 200
    # 5/minute has 4 left, 10/hour 9: the minute binds.
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "4"
    reset = response.headers["X-RateLimit-Reset"]
    assert ISO_Z.fullmatch(reset)
    seconds = dt.datetime.strptime(reset, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc
    ).timestamp() - time.time()
    assert 0 < seconds <= 61
    assert "Retry-After" not in response.headers
    # Flask-Limiter's own one-window epoch headers do not leak through.
    assert "RateLimit-Reset" not in response.headers


def test_binding_window_is_lowest_remaining(host: Host) -> None:
    host.plan("acme", "enterprise", "5/minute;3/hour")
    _, secret = host.key()
    response = host.client.get("/read", headers=bearer(secret))
    assert response.headers["X-RateLimit-Limit"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "2"


def test_tie_goes_to_the_latest_reset(host: Host) -> None:
    # Both windows have one left: the remaining number grows again only
    # when the hour resets, so the hour is the one that binds.
    host.plan("acme", "tiny")
    _, secret = host.key()
    response = host.client.get("/read", headers=bearer(secret))
    assert response.headers["X-RateLimit-Remaining"] == "1"
    reset = dt.datetime.strptime(response.headers["X-RateLimit-Reset"], "%Y-%m-%dT%H:%M:%SZ")
    assert reset.replace(tzinfo=dt.timezone.utc).timestamp() - time.time() > 3000


@pytest.mark.parametrize("path,status", [("/aborts", 404), ("/returns-error", 418)])
def test_headers_on_view_errors(host: Host, path: str, status: int) -> None:
    _, secret = host.key()
    response = host.client.get(path, headers=bearer(secret))
    assert response.status_code == status
    assert response.headers["X-RateLimit-Remaining"] == "4"


def test_403_counts_and_carries_headers(host: Host) -> None:
    _, secret = host.key(scopes=["read"])
    response = host.client.post("/write", headers=bearer(secret))
    assert response.status_code == 403
    assert response.headers["X-RateLimit-Remaining"] == "4"
    assert host.client.get("/read", headers=bearer(secret)).headers[
        "X-RateLimit-Remaining"
    ] == "3"


def test_401_has_no_rate_limit_headers_and_spends_nothing(host: Host) -> None:
    info, secret = host.key()
    for headers in ({}, bearer(secret[:-1] + ("a" if secret[-1] != "a" else "b"))):
        response = host.client.get("/read", headers=headers)
        assert response.status_code == 401
        assert not [n for n, _ in response.headers.items() if "ratelimit" in n.lower()]
    assert host.client.get("/read", headers=bearer(secret)).headers[
        "X-RateLimit-Remaining"
    ] == "4"


def test_budget_is_per_owner_shared_by_keys_and_routes(host: Host) -> None:
    _, one = host.key("acme")
    _, two = host.key("acme")
    _, other = host.key("globex")
    statuses = []
    for secret, path in [(one, "/read"), (two, "/any"), (one, "/things"), (two, "/read"),
                         (one, "/any"), (two, "/read")]:
        statuses.append(host.client.get(path, headers=bearer(secret)).status_code)
    assert statuses == [200, 200, 200, 200, 200, 429]
    assert host.client.get("/read", headers=bearer(other)).status_code == 200


def test_429_body_headers_and_signal(host: Host) -> None:
    host.plan("acme", "tiny")
    info, secret = host.key()
    seen: list[dict[str, Any]] = []

    def on_limited(sender: Flask, **extra: Any) -> None:
        seen.append({"sender": sender, **extra})

    with rate_limited.connected_to(on_limited, host.app):
        for _ in range(2):
            assert host.client.get("/read", headers=bearer(secret)).status_code == 200
        response = host.client.get("/read", headers=bearer(secret))
    assert response.status_code == 429
    body = response.get_json()["error"]
    assert body["code"] == "RATE_LIMIT_EXCEEDED"
    details = body["details"]
    assert details["limit"] == 2 and details["remaining"] == 0
    assert ISO_Z.fullmatch(details["reset_at"])
    # Both windows are spent: waiting for the minute would not be enough.
    assert 3500 < details["retry_after"] <= 3600
    assert response.headers["Retry-After"] == str(details["retry_after"])
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert len(seen) == 1
    assert seen[0]["sender"] is host.app
    assert seen[0]["key"].id == info.id
    # The limit named is the one that holds the request back longest.
    assert seen[0]["limit"] == "2 per 1 hour"


def test_spent_budget_answers_429_before_scope_check(host: Host) -> None:
    host.plan("acme", "tiny")
    _, secret = host.key(scopes=["read"])
    host.client.get("/read", headers=bearer(secret))
    host.client.get("/read", headers=bearer(secret))
    assert host.client.post("/write", headers=bearer(secret)).status_code == 429


def test_enterprise_custom_limits_and_plan_change(host: Host) -> None:
    _, secret = host.key()
    assert host.client.get("/read", headers=bearer(secret)).headers["X-RateLimit-Limit"] == "5"
    host.plan("acme", "enterprise", "7/minute")
    response = host.client.get("/read", headers=bearer(secret))
    assert response.headers["X-RateLimit-Limit"] == "7"
    with host.app.app_context(), pytest.raises(ValueError, match="enterprise"):
        host.keyauth.set_plan("acme", "enterprise")


def test_burst_style_plan_is_expressible(tmp_path: Any) -> None:
    h = Host(tmp_path, "memory://", KEYAUTH_PLANS={
        "burst": "500 per second;2000 per 10 seconds;2000 per day",
    }, KEYAUTH_DEFAULT_PLAN="burst", KEYAUTH_RATELIMIT_HEADERS="ietf")
    _, secret = h.key()
    response = h.client.get("/read", headers=bearer(secret))
    assert response.headers["RateLimit-Policy"] == (
        '"second";q=500;w=1, "10second";q=2000;w=10, "day";q=2000;w=86400'
    )


@pytest.mark.parametrize("path", ["/extra-outer", "/extra-inner"])
def test_extra_route_limit_in_any_decorator_order(host: Host, path: str) -> None:
    _, secret = host.key()
    statuses = [host.client.get(path, headers=bearer(secret)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    body = host.client.get(path, headers=bearer(secret)).get_json()
    assert body["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    # The plan budget counted the requests that reached require_key.
    remaining = host.client.get("/read", headers=bearer(secret)).headers["X-RateLimit-Remaining"]
    assert int(remaining) < 4


def test_keyauth_limiter_is_the_apps_limiter(host: Host) -> None:
    with host.app.app_context():
        assert host.keyauth.limiter is host.app.extensions["keyauth"].limits.limiter


def test_host_limiter_is_used(tmp_path: Any) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app = Flask(__name__)
    app.config.update(RATELIMIT_STORAGE_URI="memory://", SQLALCHEMY_DATABASE_URI=(
        f"sqlite:///{tmp_path / 'own.db'}"), KEYAUTH_ARGON2_MEMORY_COST=8,
        KEYAUTH_ARGON2_TIME_COST=1)
    limiter = Limiter(get_remote_address, app=app)
    keyauth = KeyAuth(app, limiter=limiter)
    with app.app_context():
        assert keyauth.limiter is limiter


@pytest.mark.parametrize(
    "styles,expected,absent",
    [
        ("ratelimit", ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"],
         ["X-RateLimit-Limit", "RateLimit-Policy"]),
        ("ietf", ["RateLimit-Policy", "RateLimit"], ["X-RateLimit-Limit", "RateLimit-Limit"]),
        (["x-ratelimit", "ratelimit", "ietf"],
         ["X-RateLimit-Limit", "RateLimit-Limit", "RateLimit-Policy", "RateLimit"], []),
    ],
)
def test_header_styles(tmp_path: Any, styles: Any, expected: list[str], absent: list[str]) -> None:
    h = Host(tmp_path, "memory://", KEYAUTH_RATELIMIT_HEADERS=styles)
    _, secret = h.key()
    response = h.client.get("/read", headers=bearer(secret))
    for name in expected:
        assert name in response.headers, name
    for name in absent:
        assert name not in response.headers, name
    if "RateLimit-Reset" in response.headers:
        reset = int(response.headers["RateLimit-Reset"])
        assert time.time() < reset <= time.time() + 61
    if "RateLimit-Policy" in response.headers:
        assert response.headers["RateLimit-Policy"] == '"minute";q=5;w=60, "hour";q=10;w=3600'
        match = re.fullmatch(r'"minute";r=4;t=(\d+), "hour";r=9;t=(\d+)',
                             response.headers["RateLimit"])
        assert match, response.headers["RateLimit"]
        assert 0 <= int(match[1]) <= 60 and 0 <= int(match[2]) <= 3600


def test_disabled_limiter_applies_no_limits(tmp_path: Any) -> None:
    h = Host(tmp_path, "memory://", RATELIMIT_ENABLED=False)
    _, secret = h.key()
    for _ in range(7):
        response = h.client.get("/read", headers=bearer(secret))
        assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response.headers


# -- the failed-auth throttle -------------------------------------------------


def wrong(secret: str) -> str:
    """A key with the right id and checksum shape but a wrong secret."""
    from flask_keyauth import keys

    parsed = keys.parse(secret)
    assert parsed is not None
    other = "x" * keys.SECRET_LENGTH
    head = f"{parsed.prefix}_{parsed.environment}_{parsed.key_id}{other}"
    return head + keys.checksum(head)


@pytest.fixture
def throttled(tmp_path: Any, storage_uri: str) -> Iterator[Host]:
    h = Host(tmp_path, storage_uri, KEYAUTH_FAILED_AUTH_LIMIT="3/minute")
    yield h
    with h.app.app_context():
        h.app.extensions["keyauth"].limits.limiter.reset()


def test_failed_attempts_throttled_per_address(throttled: Host) -> None:
    h = throttled
    _, verified = h.key()
    _, fresh = h.key()
    assert h.client.get("/read", headers=bearer(verified)).status_code == 200
    failures: list[str] = []

    def on_failed(sender: Flask, reason: str, remote_addr: str, **_: Any) -> None:
        failures.append(reason)

    with auth_failed.connected_to(on_failed, h.app):
        codes = [
            h.client.get("/read", headers=bearer(k)).get_json()["error"]["code"]
            for k in (wrong(verified), "sk_live_garbage", wrong(fresh), wrong(verified))
        ]
    # The malformed key costs no I/O and is not counted: three failures.
    assert codes == ["INVALID_API_KEY"] * 4
    assert failures == codes
    blocked = h.client.get("/read", headers=bearer(fresh))
    assert blocked.status_code == 429
    assert blocked.get_json()["error"]["code"] == "TOO_MANY_FAILED_ATTEMPTS"
    assert 0 < int(blocked.headers["Retry-After"]) <= 60
    # A key this process already verified is still served.
    assert h.client.get("/read", headers=bearer(verified)).status_code == 200
    # Another address is not affected.
    other = h.client.get("/read", headers=bearer(fresh), environ_base={"REMOTE_ADDR": "10.9.8.7"})
    assert other.status_code == 200


def test_missing_keys_and_403_do_not_count_as_failures(throttled: Host) -> None:
    h = throttled
    _, secret = h.key(scopes=["read"])
    for _ in range(5):
        assert h.client.get("/read").status_code == 401
        assert h.client.post("/write", headers=bearer(secret)).status_code == 403
    # (The 403s spent acme's plan budget, as they should; the throttle is
    # per address, so a fresh key of another owner shows it was not touched.)
    _, fresh = h.key("globex")
    assert h.client.get("/read", headers=bearer(fresh)).status_code == 200


def test_valid_first_use_gives_its_unit_back(throttled: Host) -> None:
    h = throttled
    for _ in range(5):
        _, secret = h.key()
        assert h.client.get("/read", headers=bearer(secret)).status_code == 200
    _, last = h.key()
    assert h.client.get("/read", headers=bearer(wrong(last))).status_code == 401


def test_concurrent_wrong_keys_run_at_most_the_allowed_argon2_at_once(tmp_path: Any) -> None:
    h = Host(tmp_path, "memory://", KEYAUTH_ARGON2_MAX_CONCURRENT=3)
    made = [h.key()[1] for _ in range(20)]
    hasher = h.app.extensions["keyauth"].hasher
    running = [0]
    most = [0]
    lock = threading.Lock()
    inner = hasher._hasher

    class Slow:
        """argon2 itself, slowed down, counting how many run at once."""

        def verify(self, stored: str, given: str) -> bool:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1
            return bool(inner.verify(stored, given))

    hasher._hasher = Slow()
    results: list[int] = []
    barrier = threading.Barrier(20)

    def attempt(secret: str) -> None:
        client = h.app.test_client()
        barrier.wait()
        results.append(client.get("/read", headers=bearer(wrong(secret))).status_code)

    threads = [threading.Thread(target=attempt, args=(secret,)) for secret in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] <= 3
    # Beyond the slots, a request is refused at once (503), never queued.
    assert set(results) <= {401, 429, 503} and 503 in results


# -- storage outages ------------------------------------------------------------


def dead_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_storage_down_fails_closed(tmp_path: Any) -> None:
    h = Host(tmp_path, dead_redis())
    with h.app.app_context():
        # Keys are created without the limiter storage.
        _, secret = h.keyauth.create_key("acme", "k")
    h.app.extensions["keyauth"].auth.cache.clear()
    response = h.client.get("/read", headers=bearer(secret))
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert int(response.headers["Retry-After"]) > 0


def test_storage_down_fail_open_serves_verified_keys_and_warns(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, redis_server: Any
) -> None:
    h = Host(tmp_path, redis_server.url, KEYAUTH_RATELIMIT_FAIL_OPEN=True)
    _, secret = h.key()
    for _ in range(2):  # verified, its row and stamps cached
        assert h.client.get("/read", headers=bearer(secret)).status_code == 200
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="flask_keyauth"):
        for _ in range(3):
            response = h.client.get("/read", headers=bearer(secret))
            assert response.status_code == 200
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not per request
    # The failed-auth throttle fails closed whatever FAIL_OPEN says.
    _, fresh = h.key()
    assert h.client.get("/read", headers=bearer(fresh)).status_code == 503


def test_redis_socket_timeouts_set_by_default(tmp_path: Any) -> None:
    h = Host(tmp_path, dead_redis())
    options = h.app.config["RATELIMIT_STORAGE_OPTIONS"]
    assert options["socket_timeout"] > 0 and options["socket_connect_timeout"] > 0


def test_key_prefix_separates_apps_sharing_a_storage(tmp_path: Any) -> None:
    storage = redis_url()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Host(tmp_path / "a", storage)
    second = Host(tmp_path / "b", storage)
    assert first.app.config["RATELIMIT_KEY_PREFIX"] != second.app.config["RATELIMIT_KEY_PREFIX"]
    for h in (first, second):
        _, secret = h.key("acme")
        response = h.client.get("/read", headers=bearer(secret))
        assert response.headers["X-RateLimit-Remaining"] == "4"


def test_429_body_reset_matches_header(host: Host) -> None:
    host.plan("acme", "tiny")
    _, secret = host.key()
    for _ in range(2):
        host.client.get("/read", headers=bearer(secret))
    response = host.client.get("/read", headers=bearer(secret))
    assert response.status_code == 429
    details = response.get_json()["error"]["details"]
    assert details["reset_at"] == response.headers["X-RateLimit-Reset"]


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
def test_every_strategy_counts_exactly(tmp_path: Any, storage_uri: str, strategy: str) -> None:
    h = Host(tmp_path, storage_uri, RATELIMIT_STRATEGY=strategy)
    try:
        _, secret = h.key()
        responses = [h.client.get("/read", headers=bearer(secret)) for _ in range(6)]
        assert [r.status_code for r in responses] == [200] * 5 + [429]
        assert [r.headers["X-RateLimit-Remaining"] for r in responses[:5]] == [
            "4", "3", "2", "1", "0"
        ]
        assert ISO_Z.fullmatch(responses[0].headers["X-RateLimit-Reset"])
    finally:
        with h.app.app_context():
            h.app.extensions["keyauth"].limits.limiter.reset()


# -- the cost of counting --------------------------------------------------------


def test_limiter_reset_clears_plan_counters_in_memory(host: Host) -> None:
    _, secret = host.key()
    for _ in range(5):
        host.client.get("/read", headers=bearer(secret))
    assert host.client.get("/read", headers=bearer(secret)).status_code == 429
    with host.app.app_context():
        host.keyauth.limiter.reset()
    assert host.client.get("/read", headers=bearer(secret)).headers[
        "X-RateLimit-Remaining"
    ] == "4"


def test_flask_limiter_defaults_still_apply_everywhere(tmp_path: Any) -> None:
    # Its hooks are skipped only where it has nothing to do: with default
    # limits it has something to do on every route, protected or not.
    h = Host(tmp_path, "memory://", RATELIMIT_DEFAULT="3/minute")
    app = h.app

    @app.get("/open")
    def open_route() -> Any:
        return {"ok": True}

    _, secret = h.key()
    assert [h.client.get("/open").status_code for _ in range(4)] == [200, 200, 200, 429]
    statuses = [h.client.get("/read", headers=bearer(secret)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    with app.app_context():
        h.app.extensions["keyauth"].limits.limiter.reset()


def test_flask_limiter_application_and_blueprint_limits_still_apply(tmp_path: Any) -> None:
    from flask import Blueprint

    h = Host(tmp_path, "memory://")
    limiter = h.keyauth.limiter
    bp = Blueprint("v2", __name__)

    @bp.get("/v2/read")
    @require_key("read")
    def v2_read() -> Any:
        return {"ok": True}

    limiter.limit("2/minute")(bp)
    h.app.register_blueprint(bp)
    _, secret = h.key()
    statuses = [h.client.get("/v2/read", headers=bearer(secret)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    # Routes without Flask-Limiter limits are not held by the blueprint's.
    assert h.client.get("/read", headers=bearer(secret)).status_code == 200

    (tmp_path / "o").mkdir()
    other = Host(tmp_path / "o", "memory://", RATELIMIT_APPLICATION="2/minute")
    _, key = other.key()
    codes = [other.client.get("/read", headers=bearer(key)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    for each in (h, other):
        with each.app.app_context():
            each.app.extensions["keyauth"].limits.limiter.reset()


def test_a_host_limiters_breach_on_a_protected_route_answers_in_our_shape(tmp_path: Any) -> None:
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    app = Flask(__name__)
    app.config.update(
        RATELIMIT_STORAGE_URI="memory://",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'own.db'}",
        KEYAUTH_ARGON2_MEMORY_COST=8,
        KEYAUTH_ARGON2_TIME_COST=1,
    )
    limiter = Limiter(get_remote_address, app=app)  # initialised before flask-keyauth
    keyauth = KeyAuth(app, limiter=limiter)

    @app.get("/exports")
    @require_key("read")
    @keyauth.limiter.limit("1/minute")
    def exports() -> Any:
        return {"ok": True}

    @app.get("/plain")
    @limiter.limit("1/minute")
    def plain() -> Any:
        return "plain"

    @app.errorhandler(429)
    def host_429(error: Any) -> Any:
        return "slow down (host)", 429

    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    assert client.get("/exports", headers=bearer(secret)).status_code == 200
    refused = client.get("/exports", headers=bearer(secret))
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["details"]["limit"] == 1
    # The host's own routes keep the host's own answer.
    client.get("/plain")
    assert client.get("/plain").get_data(as_text=True) == "slow down (host)"
