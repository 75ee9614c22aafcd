"""Limits beyond fixed windows (SPEC §13): token buckets with a burst,
a key's own limits beside its owner's plan, and routes that cost more than
one unit; on memory:// and on Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import http_sfv
import pytest
from flask import Flask, request

from flask_keyauth import KeyAuth, blueprint, require_key
from flask_keyauth.config import ConfigError
from flask_keyauth.plans import Bucket, LocalBuckets, parse_limits

from .conftest import FAST_ARGON2, bearer, make_app
from .faults.servers import ThrowawayRedis


@pytest.fixture(params=["memory", "redis"])
def uri(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    server: ThrowawayRedis = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
def limited(uri: str, tmp_path: Any) -> Iterator[tuple[Flask, KeyAuth]]:
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 'k.db'}",
        RATELIMIT_STORAGE_URI=uri,
        RATELIMIT_KEY_PREFIX=f"l{uuid.uuid4().hex[:6]}",
        KEYAUTH_PLANS={
            "free": "100/hour",
            "gospace": "2/second burst 5;2000/day",
            "metered": "10/hour",
            "enterprise": None,
        },
        KEYAUTH_RATELIMIT_HEADERS=["x-ratelimit", "ietf"],
    )
    app.register_blueprint(blueprint, url_prefix="/k")

    @app.get("/report")
    @require_key("read", cost=5)
    def report() -> Any:
        return {"ok": True}

    @app.post("/sized")
    @require_key("read", cost=lambda: 1 + len(request.get_data()) // 10)
    def sized() -> Any:
        return {"ok": True}

    yield app, keyauth
    app.extensions["keyauth"].service.usage.take()


def key_of(app: Flask, keyauth: KeyAuth, plan: str, **extra: Any) -> str:
    owner = f"o{uuid.uuid4().hex[:6]}"
    with app.app_context():
        keyauth.set_plan(owner, plan)
        return keyauth.service.create_key(owner, "k", ["read"], **extra)[1]


# -- token buckets ------------------------------------------------------------------


def test_parsing_a_rate_with_a_burst() -> None:
    bucket, day = parse_limits("200/second burst 500;2000/day")
    assert bucket == Bucket(rate=200, period=1, burst=500)
    assert bucket.get_expiry() == 3 and day.amount == 2000
    assert parse_limits("10 per 2 minutes burst 4")[0] == Bucket(10, 120, 4)
    for bad in ("200/second burst", "200/fortnight burst 5", "0/second burst 5", ""):
        with pytest.raises(ValueError):
            parse_limits(bad)


def test_a_bad_plan_fails_at_start_naming_it(tmp_path: Any) -> None:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'k.db'}",
        RATELIMIT_STORAGE_URI="memory://",
        KEYAUTH_PLANS={"free": "100/hour", "broken": "5/second burst lots"},
        **FAST_ARGON2,
    )
    with pytest.raises(ConfigError, match="KEYAUTH_PLANS.*broken"):
        KeyAuth(app)


def test_a_burst_needs_a_storage_that_counts_it_exactly(
    tmp_path: Any, redis_server: ThrowawayRedis
) -> None:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'k.db'}",
        RATELIMIT_STORAGE_URI=redis_server.url,
        RATELIMIT_STRATEGY="moving-window",
        KEYAUTH_PLANS={"free": "100/hour", "fast": "5/second burst 10"},
        **FAST_ARGON2,
    )
    with pytest.raises(ConfigError, match="fast.*burst"):
        KeyAuth(app)


def test_a_bucket_serves_its_burst_then_refuses(limited: tuple[Flask, KeyAuth]) -> None:
    app, keyauth = limited
    secret = key_of(app, keyauth, "gospace")
    client = app.test_client()
    replies = [client.get("/read", headers=bearer(secret)) for _ in range(6)]
    assert [r.status_code for r in replies] == [200] * 5 + [429]
    refused = replies[-1]
    # One unit comes back every half second.
    assert refused.headers["Retry-After"] == "1"
    assert refused.get_json()["error"]["details"]["limit"] == 5
    assert [r.headers["X-RateLimit-Remaining"] for r in replies[:5]] == ["4", "3", "2", "1", "0"]


def test_the_ietf_headers_describe_the_bucket_as_a_window_named_burst(
    limited: tuple[Flask, KeyAuth],
) -> None:
    app, keyauth = limited
    secret = key_of(app, keyauth, "gospace")
    response = app.test_client().get("/read", headers=bearer(secret))
    policy = http_sfv.List()
    policy.parse(response.headers["RateLimit-Policy"].encode())
    state = http_sfv.List()
    state.parse(response.headers["RateLimit"].encode())
    policies = {item.value: dict(item.params) for item in policy}
    assert policies == {"burst": {"q": 5, "w": 3}, "day": {"q": 2000, "w": 86400}}
    states = {item.value: dict(item.params) for item in state}
    assert states["burst"]["r"] == 4 and 0 <= states["burst"]["t"] <= 1
    assert states["day"]["r"] == 1999


def test_local_buckets_stay_bounded_and_exact() -> None:
    buckets = LocalBuckets()
    bucket = Bucket(rate=1000, period=1, burst=2)
    assert [buckets.take("a", bucket, 1)[0] for _ in range(3)] == [1, 2, 3]  # 3: refused
    # Many owners whose buckets refill: swept as the table grows.
    for n in range(5000):
        buckets.take(f"k{n}", Bucket(rate=1_000_000, period=1, burst=1), 1)
    assert len(buckets) <= 2 * 1024 + 1


# -- a key's own limits ---------------------------------------------------------------


def test_a_key_passes_its_own_limits_and_its_owners_plan(limited: tuple[Flask, KeyAuth]) -> None:
    app, keyauth = limited
    owner = f"o{uuid.uuid4().hex[:6]}"
    with app.app_context():
        info, narrow = keyauth.service.create_key(owner, "narrow", ["read"], limits="2/minute")
        _, wide = keyauth.service.create_key(owner, "wide", ["read"])
        assert keyauth.get_key(info.id).limits == "2/minute"
    client = app.test_client()
    codes = [client.get("/read", headers=bearer(narrow)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    # The other key of the same owner is held only by the plan (100/hour),
    # which counted the narrow key's requests too.
    reply = client.get("/read", headers=bearer(wide))
    assert reply.status_code == 200 and reply.headers["X-RateLimit-Remaining"] == "96"


def test_a_keys_limits_through_the_json_api(limited: tuple[Flask, KeyAuth]) -> None:
    app, keyauth = limited
    owner = f"o{uuid.uuid4().hex[:6]}"
    with app.app_context():
        _, admin = keyauth.service.create_key(owner, "admin", ["admin"])
    client = app.test_client()
    created = client.post(
        "/k/api/keys", json={"name": "n", "limits": "3/minute"}, headers=bearer(admin)
    )
    assert created.status_code == 201 and created.get_json()["key"]["limits"] == "3/minute"
    key_id = created.get_json()["key"]["id"]
    for bad in ("lots", "1/hour;" * 11, 7):
        refused = client.patch(f"/k/api/keys/{key_id}", json={"limits": bad}, headers=bearer(admin))
        assert refused.status_code == 400, bad
        assert "limits" in refused.get_json()["error"]["details"]["fields"]
    cleared = client.patch(f"/k/api/keys/{key_id}", json={"limits": None}, headers=bearer(admin))
    assert cleared.status_code == 200 and cleared.get_json()["key"]["limits"] is None
    changed = client.patch(
        f"/k/api/keys/{key_id}", json={"limits": "1/second burst 2"}, headers=bearer(admin)
    )
    assert changed.get_json()["key"]["limits"] == "1/second burst 2"


# -- routes that cost more ---------------------------------------------------------------


def test_a_route_spends_its_cost_in_every_window(limited: tuple[Flask, KeyAuth]) -> None:
    app, keyauth = limited
    secret = key_of(app, keyauth, "metered")
    client = app.test_client()
    replies = [client.get("/report", headers=bearer(secret)) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in replies[:2]] == ["5", "0"]
    whoami = client.get("/k/api/whoami", headers=bearer(secret)).get_json()
    assert whoami["rate_limits"][0]["remaining"] == 0  # counted in units


def test_a_cost_computed_from_the_request(limited: tuple[Flask, KeyAuth]) -> None:
    app, keyauth = limited
    secret = key_of(app, keyauth, "metered")
    client = app.test_client()
    first = client.post("/sized", data=b"x" * 35, headers=bearer(secret))  # costs 4
    assert first.headers["X-RateLimit-Remaining"] == "6"


def test_a_cost_beyond_the_whole_budget_is_a_clear_429(limited: tuple[Flask, KeyAuth]) -> None:
    app, keyauth = limited
    secret = key_of(app, keyauth, "metered")
    client = app.test_client()
    refused = client.post("/sized", data=b"x" * 200, headers=bearer(secret))  # costs 21
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert error["code"] == "RATE_LIMIT_EXCEEDED" and "costs 21" in error["message"]
    assert int(refused.headers["Retry-After"]) > 0
    # Nothing was spent.
    assert client.get("/read", headers=bearer(secret)).headers["X-RateLimit-Remaining"] == "9"


def test_a_bad_cost_is_refused_when_the_route_is_declared() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(TypeError):
            require_key("read", cost=bad)


def test_whoami_serves_while_the_storage_is_down_when_failing_open(
    redis_server: ThrowawayRedis, tmp_path: Any
) -> None:
    app, _, keyauth = make_app(
        f"sqlite:///{tmp_path / 'k.db'}",
        RATELIMIT_STORAGE_URI=redis_server.url,
        KEYAUTH_RATELIMIT_FAIL_OPEN=True,
    )
    app.register_blueprint(blueprint, url_prefix="/k")
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    for _ in range(2):
        assert client.get("/k/api/whoami", headers=bearer(secret)).status_code == 200
    redis_server.stop()
    for path in ("/k/api/whoami", "/read"):
        response = client.get(path, headers=bearer(secret))
        assert response.status_code == 200, path
    assert client.get("/k/api/whoami", headers=bearer(secret)).get_json()["rate_limits"] == []
    app.extensions["keyauth"].service.usage.take()
