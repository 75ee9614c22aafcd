"""What the host must configure, and what flask-keyauth never assumes
(OWASP API8): forwarded headers are trusted only through Werkzeug's
ProxyFix, never by flask-keyauth itself."""

from __future__ import annotations

from pathlib import Path

from werkzeug.middleware.proxy_fix import ProxyFix

from ..conftest import bearer, make_app
from ..test_auth import wrong_secret


def test_x_forwarded_for_cannot_dodge_the_failed_auth_throttle(tmp_path: Path) -> None:
    app, _, keyauth = make_app(f"sqlite:///{tmp_path / 'd.db'}",
                               KEYAUTH_FAILED_AUTH_LIMIT="3/minute")
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    codes = []
    for n in range(6):
        spoofed = {"X-Forwarded-For": f"198.51.100.{n}", "X-Real-IP": f"203.0.113.{n}",
                   **bearer(wrong_secret(secret))}
        codes.append(client.get("/read", headers=spoofed).status_code)
    assert codes == [401, 401, 401, 429, 429, 429]


def test_behind_one_proxy_with_proxyfix_each_client_has_its_own_budget(tmp_path: Path) -> None:
    app, _, keyauth = make_app(f"sqlite:///{tmp_path / 'd.db'}",
                               KEYAUTH_FAILED_AUTH_LIMIT="3/minute")
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for _ in range(3):
        client.get("/read", headers={"X-Forwarded-For": "198.51.100.7",
                                     **bearer(wrong_secret(secret))}, environ_base=proxy)
    blocked = client.get("/read", headers={"X-Forwarded-For": "198.51.100.7",
                                           **bearer(secret)}, environ_base=proxy)
    assert blocked.status_code == 429
    # Another client behind the same proxy is not locked out by the first.
    other = client.get("/read", headers={"X-Forwarded-For": "198.51.100.8", **bearer(secret)},
                       environ_base=proxy)
    assert other.status_code == 200
    # A client cannot pick its address by prepending to the header: ProxyFix
    # takes the one the proxy appended.
    forged = client.get("/read", headers={"X-Forwarded-For": "1.2.3.4, 198.51.100.7",
                                          **bearer(wrong_secret(secret))}, environ_base=proxy)
    assert forged.status_code == 429


def test_https_required_trusts_x_forwarded_proto_only_through_proxyfix(tmp_path: Path) -> None:
    app, _, keyauth = make_app(f"sqlite:///{tmp_path / 'd.db'}", KEYAUTH_REQUIRE_HTTPS=True)
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    spoofed = {"X-Forwarded-Proto": "https", **bearer(secret)}
    response = app.test_client().get("/read", headers=spoofed)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "HTTPS_REQUIRED"
    app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1)  # type: ignore[method-assign]
    assert app.test_client().get("/read", headers=spoofed).status_code == 200
    assert app.test_client().get("/read", headers=bearer(secret)).status_code == 403
