"""Prometheus metrics (SPEC §15): outcomes, argon2 runs and the time to
authenticate, on the host's registry and under gunicorn's multiprocess mode."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from flask_keyauth import KeyAuth, current_key, keys, require_key
from flask_keyauth.metrics import OUTCOMES

from .conftest import bearer, dispose, make_app, service_of
from .services import free_port


@pytest.fixture
def measured(tmp_path: Path) -> Iterator[tuple[Flask, KeyAuth, CollectorRegistry]]:
    registry = CollectorRegistry()
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 'm.db'}",
        KEYAUTH_METRICS_REGISTRY=registry,
        KEYAUTH_FAILED_AUTH_LIMIT="3/minute",
    )

    @app.get("/stacked")
    @require_key("read")
    @require_key("read")
    def stacked() -> dict[str, Any]:
        return {"key": current_key.id}

    yield app, keyauth, registry
    dispose(app, db)


def outcome(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value("keyauth_requests_total", {"outcome": name}) or 0.0


def argon2(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("keyauth_argon2_verifications_total", {"result": result})
    return value or 0.0


def test_every_outcome_is_counted_once_per_request(
    measured: tuple[Flask, KeyAuth, CollectorRegistry],
) -> None:
    app, keyauth, registry = measured
    service = service_of(app)
    with app.app_context():
        keyauth.set_plan("tight", "enterprise", "2/hour")
        _, reader = keyauth.create_key("acme", "reader", ["read"])
        _, tight = keyauth.create_key("tight", "tight", ["read"])
        _, fenced = service.create_key("acme", "fenced", allowed_ips=["10.0.0.0/8"])
        _, dying = keyauth.create_key(
            "acme", "dying", expires_at=service.clock() + dt.timedelta(seconds=1)
        )
    client = app.test_client()
    expected = dict.fromkeys(["ok", *OUTCOMES.values()], 0)

    def call(path: str, headers: dict[str, str], status: int, name: str, **kw: Any) -> None:
        reply = client.open(path, headers=headers, **kw)
        assert reply.status_code == status, (name, reply.get_data(as_text=True))
        expected[name] += 1

    call("/read", bearer(reader), 200, "ok")
    call("/stacked", bearer(reader), 200, "ok")  # two decorators, one request
    call("/read", {}, 401, "missing")
    call("/write", bearer(reader), 403, "forbidden", method="POST")
    call("/read", bearer(fenced), 403, "ip_not_allowed")
    for _ in range(2):
        call("/read", bearer(tight), 200, "ok")
    call("/read", bearer(tight), 429, "rate_limited")
    service.clock = lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    call("/read", bearer(dying), 401, "expired")
    for _ in range(3):  # three failures allowed a minute
        call("/read", bearer(keys.generate().text), 401, "invalid")
    call("/read", bearer(keys.generate().text), 429, "throttled")
    assert {name: outcome(registry, name) for name in expected} == expected
    decided = sum(expected.values())
    assert registry.get_sample_value("keyauth_auth_seconds_count") == decided
    total = registry.get_sample_value("keyauth_auth_seconds_sum")
    assert total is not None and 0 < total < decided * 2


def test_argon2_runs_are_counted_by_result(
    measured: tuple[Flask, KeyAuth, CollectorRegistry],
) -> None:
    app, keyauth, registry = measured
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    for _ in range(3):
        assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert argon2(registry, "match") == 1  # the first use only: then the cache
    wrong = secret[:-10] + "A" * 4 + secret[-6:]
    parsed = keys.parse(secret)
    assert parsed is not None
    head = f"sk_live_{parsed.key_id}{'B' * keys.SECRET_LENGTH}"
    assert client.get("/read", headers=bearer(head + keys.checksum(head))).status_code == 401
    assert client.get("/read", headers=bearer(keys.generate().text)).status_code == 401
    assert argon2(registry, "mismatch") == 2  # a wrong secret, an unknown id
    assert client.get("/read", headers=bearer(wrong)).status_code == 401  # bad checksum
    assert argon2(registry, "mismatch") == 2
    assert argon2(registry, "busy") == 0


def test_unavailable_storage_is_counted(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    app, db, keyauth = make_app(
        f"sqlite:///{tmp_path / 'u.db'}",
        KEYAUTH_METRICS_REGISTRY=registry,
        RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0",
    )
    try:
        with app.app_context():
            _, secret = keyauth.create_key("acme", "k")
        reply = app.test_client().get("/read", headers=bearer(secret))
        assert reply.status_code == 503
        assert outcome(registry, "unavailable") == 1
    finally:
        dispose(app, db)


def test_apps_share_the_default_registry_without_clashing(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("keyauth_requests_total", {"outcome": "missing"}) or 0
    made = [make_app(f"sqlite:///{tmp_path / f'{n}.db'}") for n in range(2)]
    try:
        for app, _, _ in made:
            assert app.test_client().get("/read").status_code == 401
        after = REGISTRY.get_sample_value("keyauth_requests_total", {"outcome": "missing"})
        assert after == before + 2
    finally:
        for app, db, _ in made:
            with app.app_context():
                db.drop_all()
                db.engine.dispose()


def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    from flask_keyauth.metrics import NOTHING

    app, db, _ = make_app(f"sqlite:///{tmp_path / 'o.db'}", KEYAUTH_METRICS_REGISTRY=False)
    try:
        assert app.extensions["keyauth"].metrics is NOTHING
        assert app.test_client().get("/read").status_code == 401
    finally:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()


def test_without_prometheus_client_everything_works(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["prometheus_client"] = None  # as if the extra were not installed
        from flask import Flask
        from flask_keyauth import KeyAuth, require_key
        from flask_keyauth.metrics import NOTHING
        app = Flask(__name__)
        app.config.update(
            SQLALCHEMY_DATABASE_URI="sqlite:///{tmp_path / 'n.db'}",
            RATELIMIT_STORAGE_URI="memory://",
            KEYAUTH_ARGON2_TIME_COST=1, KEYAUTH_ARGON2_MEMORY_COST=8,
        )
        keyauth = KeyAuth(app)
        app.add_url_rule("/r", "r", require_key("read")(lambda: "ok"))
        with app.app_context():
            _, secret = keyauth.create_key("acme", "k")
        client = app.test_client()
        assert client.get("/r", headers={{"Authorization": "Bearer " + secret}}).data == b"ok"
        assert client.get("/r").status_code == 401
        assert app.extensions["keyauth"].metrics is NOTHING
        print("served")
        """
    )
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served"


def fetch(url: str, headers: dict[str, str]) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={**headers, "Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - loopback
            return reply.status, reply.headers["X-Worker-Pid"], reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["X-Worker-Pid"], ""


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_gunicorn_multiprocess_mode_adds_up_every_worker(tmp_path: Path) -> None:
    from .security.servers import gunicorn

    database = f"sqlite:///{tmp_path / 'shared.db'}"
    app, db, keyauth = make_app(database, RATELIMIT_KEY_PREFIX=f"m{uuid.uuid4().hex[:6]}")
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    config = {"SQLALCHEMY_DATABASE_URI": database, "TEST_METRICS": True}
    try:
        with gunicorn(
            config, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
        ) as (base, _):
            # gunicorn serves once its first worker is up: wait until both
            # have answered (keyless requests, counted as "missing"), so the
            # totals below are summed over two processes.
            pids: set[str] = set()
            deadline = time.monotonic() + 30
            while len(pids) < 2 and time.monotonic() < deadline:
                with ThreadPoolExecutor(4) as pool:
                    pids |= {pid for _, pid, _ in pool.map(lambda _: fetch(base + "/read", {}),
                                                           range(8))}
            with ThreadPoolExecutor(8) as pool:
                good = list(pool.map(lambda _: fetch(base + "/read", bearer(secret)), range(60)))
                bad = list(
                    pool.map(
                        lambda _: fetch(base + "/read", bearer(keys.generate().text)), range(10)
                    )
                )
            assert [status for status, _, _ in good] == [200] * 60
            assert [status for status, _, _ in bad] == [401] * 10
            pids |= {pid for _, pid, _ in good + bad}
            _, _, text = fetch(base + "/metrics", {})
    finally:
        dispose(app, db)
    found = samples(text)
    assert found[("keyauth_requests_total", (("outcome", "ok"),))] == 60
    assert found[("keyauth_requests_total", (("outcome", "invalid"),))] == 10
    # gunicorn's start-up probes are keyless requests: "missing".
    decided = sum(v for (name, _), v in found.items() if name == "keyauth_requests_total")
    assert decided == 70 + found[("keyauth_requests_total", (("outcome", "missing"),))]
    assert found[("keyauth_auth_seconds_count", ())] == decided
    # Each worker that served the key ran argon2 for it once, then used its cache.
    matches = found[("keyauth_argon2_verifications_total", (("result", "match"),))]
    assert 1 <= matches <= len(pids) <= 2
    assert found[("keyauth_argon2_verifications_total", (("result", "mismatch"),))] == 10
    assert len(pids) == 2, "the load should have reached both workers"
    assert len(os.listdir(multiproc)) >= 2  # one set of files per worker
