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


def test_the_demo_speaks_the_browsers_language(tmp_path: Path, monkeypatch: Any) -> None:
    """The demo's own pages and the key pages follow Accept-Language through
    the demo's Flask-Babel locale selector, scope descriptions included."""
    monkeypatch.chdir(tmp_path)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.db'}",
                      "RATELIMIT_STORAGE_URI": "memory://", "TESTING": True})
    client = app.test_client()
    spanish = {"Accept-Language": "es-ES,es;q=0.9"}
    home = client.get("/", headers=spanish).get_data(as_text=True)
    assert '<html lang="es' in home
    assert "Iniciar sesión" in home and "Inicio de sesión simulado" in home
    assert "Sign in" not in home and "Pretend sign-in" not in home
    client.post("/login", data={"org": "acme", "person": "alice"})
    signed_in = client.get("/", headers=spanish).get_data(as_text=True)
    assert "Usted es alice, gestor de sus claves." in signed_in and "Cerrar sesión" in signed_in
    new = client.get("/settings/api-keys/new", headers=spanish).get_data(as_text=True)
    assert "Listar entidades y generar informes." in new
    assert "List entities and run reports." not in new
    english = client.get("/settings/api-keys/new").get_data(as_text=True)
    assert "List entities and run reports." in english and '<html lang="en' in english
    app.extensions["keyauth"].service.usage.take()
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


def test_the_demos_catalogue_is_complete_and_compiled() -> None:
    from babel.messages.extract import extract_from_dir
    from babel.messages.mofile import read_mo
    from babel.messages.pofile import read_po

    folder = Path(__file__).resolve().parent.parent / "example"
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    keywords = {"_": None, "_l": None, "gettext": None}
    found = {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(
            str(folder), method_map, keywords=keywords
        )
    }
    po_path = folder / "translations" / "es" / "LC_MESSAGES" / "messages.po"
    with po_path.open("rb") as po:
        catalog = read_po(po)
    translated = {m.id: m.string for m in catalog if m.id}
    assert found, "no messages found"
    assert found <= set(translated), found - set(translated)
    assert all(translated[m] for m in found)
    with po_path.with_suffix(".mo").open("rb") as mo:
        compiled = {m.id: m.string for m in read_mo(mo) if m.id}
    assert compiled == translated
