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
