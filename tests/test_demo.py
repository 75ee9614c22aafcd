"""The demo app: the same session secret in every worker and restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from example.app import create_app, demo_secret


def test_the_demo_secret_is_made_once_and_kept(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("DEMO_SECRET_KEY", raising=False)
    first = demo_secret(str(tmp_path))
    # Another worker, or the next start, reads the same one.
    assert demo_secret(str(tmp_path)) == first and len(first) == 64
    assert (tmp_path / "demo-secret-key").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("DEMO_SECRET_KEY", "given")
    assert demo_secret(str(tmp_path)) == "given"


def test_two_demo_apps_accept_each_others_sessions(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("DEMO_SECRET_KEY", raising=False)
    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.db'}", "TESTING": True}
    one, two = create_app(config), create_app(config)
    assert one.config["SECRET_KEY"] == two.config["SECRET_KEY"]


def test_the_demos_metered_route_spends_five_units(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.delenv("DEMO_SECRET_KEY", raising=False)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.db'}",
                      "KEYAUTH_ARGON2_TIME_COST": 1, "KEYAUTH_ARGON2_MEMORY_COST": 8})
    with app.app_context():
        _, secret = app.extensions["keyauth"].extension.create_key("acme", "k")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    before = int(client.get("/v1/entities", headers=headers).headers["X-RateLimit-Remaining"])
    after = int(client.get("/v1/reports", headers=headers).headers["X-RateLimit-Remaining"])
    assert before - after == 5
