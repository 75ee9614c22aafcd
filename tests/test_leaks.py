"""Leaked-key reports: GitHub's signed partner messages and ``flask keys
leaked`` (SPEC §14), with a key pair each test generates."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask

from flask_keyauth import KeyAuth, key_leaked, key_revoked, keys
from flask_keyauth.config import ConfigError
from flask_keyauth.leaks import keys_from_github

from .conftest import FAST_ARGON2, argon2_runs, bearer, dispose, make_app, service_of

URL = "/api/leaks/github"
GITHUB_KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


class Signer:
    """GitHub's side: a P-256 key pair and the headers of a signed body."""

    def __init__(self, key_id: str = GITHUB_KEY_ID) -> None:
        self.key_id = key_id
        self.private = ec.generate_private_key(ec.SECP256R1())
        self.pem = (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def headers(self, body: bytes) -> dict[str, str]:
        signature = self.private.sign(body, ec.ECDSA(hashes.SHA256()))
        return {
            "Github-Public-Key-Identifier": self.key_id,
            "Github-Public-Key-Signature": base64.b64encode(signature).decode(),
            "Content-Type": "application/json",
        }


def report(*tokens: str, url: str = "https://github.com/octo/app/blob/abc/settings.py") -> bytes:
    return json.dumps(
        [{"token": t, "type": "keyauth_api_key", "url": url, "source": "content"} for t in tokens]
    ).encode()


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def leak_app(database_url: str, signer: Signer) -> Iterator[tuple[Flask, KeyAuth]]:
    app, db, keyauth = make_app(database_url, KEYAUTH_LEAK_REPORT_KEYS={signer.key_id: signer.pem})
    app.register_blueprint(keyauth_blueprint(), url_prefix="")
    yield app, keyauth
    dispose(app, db)


def keyauth_blueprint() -> Any:
    from flask_keyauth import blueprint

    return blueprint


@pytest.fixture
def heard() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every key_leaked and key_revoked signal sent during the test."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def leaked(sender: Any, **kw: Any) -> None:
        seen.append(("leaked", kw))

    def revoked(sender: Any, **kw: Any) -> None:
        seen.append(("revoked", kw))

    key_leaked.connect(leaked)
    key_revoked.connect(revoked)
    yield seen
    key_leaked.disconnect(leaked)
    key_revoked.disconnect(revoked)


def forged(secret: str) -> str:
    """A string of our format with a real key's id, a made-up secret and a
    valid checksum: what someone who saw the redacted key could publish."""
    parsed = keys.parse(secret)
    assert parsed is not None
    head = f"sk_{parsed.environment}_{parsed.key_id}{'A' * keys.SECRET_LENGTH}"
    return head + keys.checksum(head)


def events_of(app: Flask, key_id: str, action: str) -> list[Any]:
    with app.app_context():
        trail = service_of(app).events(service_of(app).get_key(key_id).owner_id, key_id)
    return [e for e in trail if e.action == action]


def test_a_signed_report_revokes_our_key_and_labels_each_token(
    leak_app: tuple[Flask, KeyAuth], signer: Signer, heard: list[Any]
) -> None:
    app, keyauth = leak_app
    with app.app_context():
        info, secret = keyauth.create_key("acme", "leaked one")
        _, other = keyauth.create_key("acme", "kept")
    client = app.test_client()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    not_ours = "ghp_" + "x" * 36
    fake = forged(other)
    body = report(secret, not_ours, fake)
    with argon2_runs(app) as runs:
        reply = client.post(URL, data=body, headers=signer.headers(body))
    assert reply.status_code == 200, reply.get_json()
    assert reply.get_json() == [
        {"token_raw": secret, "token_type": "keyauth_api_key", "label": "true_positive"},
        {"token_raw": not_ours, "token_type": "keyauth_api_key", "label": "false_positive"},
        {"token_raw": fake, "token_type": "keyauth_api_key", "label": "false_positive"},
    ]
    assert reply.headers["Cache-Control"] == "no-store"
    # Only strings that name an existing key id ran argon2: the real key and
    # the forgery (which therefore revoked nothing); GitHub's own token none.
    assert len(runs) == 2
    assert client.get("/read", headers=bearer(secret)).status_code == 401
    assert client.get("/read", headers=bearer(other)).status_code == 200
    [event] = events_of(app, info.id, "leaked")
    assert event.detail == "https://github.com/octo/app/blob/abc/settings.py"
    assert event.actor == "github"
    assert [e.actor for e in events_of(app, info.id, "revoked")] == ["github"]
    assert [(kind, kw["key"].id) for kind, kw in heard] == [
        ("leaked", info.id), ("revoked", info.id)
    ]
    assert heard[0][1]["url"].endswith("settings.py") and heard[0][1]["source"] == "content"
    assert heard[0][1]["key"].status == "revoked"


def test_a_repeated_report_changes_nothing_and_signals_nothing(
    leak_app: tuple[Flask, KeyAuth], signer: Signer, heard: list[Any]
) -> None:
    app, keyauth = leak_app
    with app.app_context():
        info, secret = keyauth.create_key("acme", "leaked")
    client = app.test_client()
    body = report(secret)
    first = client.post(URL, data=body, headers=signer.headers(body))
    again = client.post(URL, data=body, headers=signer.headers(body))
    assert first.get_json() == again.get_json()
    assert again.get_json()[0]["label"] == "true_positive"
    assert len(events_of(app, info.id, "leaked")) == 1
    assert len(events_of(app, info.id, "revoked")) == 1
    assert len(heard) == 2  # one leaked, one revoked: nothing from the repeat
    # Found somewhere else too: recorded and announced, revoked already.
    elsewhere = report(secret, url="https://github.com/octo/fork/blob/def/.env")
    client.post(URL, data=elsewhere, headers=signer.headers(elsewhere))
    assert len(events_of(app, info.id, "leaked")) == 2
    assert [kind for kind, _ in heard] == ["leaked", "revoked", "leaked"]


def test_a_bad_or_missing_signature_is_401_and_changes_nothing(
    leak_app: tuple[Flask, KeyAuth], signer: Signer, heard: list[Any]
) -> None:
    app, keyauth = leak_app
    with app.app_context():
        info, secret = keyauth.create_key("acme", "safe")
    client = app.test_client()
    body = report(secret)
    good = signer.headers(body)
    stranger = Signer()
    attempts = {
        "no headers": {"Content-Type": "application/json"},
        "no signature": {**good, "Github-Public-Key-Signature": ""},
        "unknown key id": {**good, "Github-Public-Key-Identifier": "f" * 64},
        "signed by another key": {**stranger.headers(body)},
        "not base64": {**good, "Github-Public-Key-Signature": "%%%not-base64%%%"},
        "another body's signature": signer.headers(report("something else")),
    }
    for name, headers in attempts.items():
        reply = client.post(URL, data=body, headers=headers)
        assert reply.status_code == 401, name
        assert reply.get_json()["error"]["code"] == "INVALID_SIGNATURE", name
        assert secret not in reply.get_data(as_text=True), name
    # A body changed after signing.
    tampered = body.replace(b"content", b"commits")
    reply = client.post(URL, data=tampered, headers=good)
    assert reply.status_code == 401
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    assert events_of(app, info.id, "leaked") == []
    assert heard == []


def test_reports_are_refused_when_no_github_key_is_configured(database_url: str) -> None:
    app, db, keyauth = make_app(database_url)
    app.register_blueprint(keyauth_blueprint())
    try:
        with app.app_context():
            _, secret = keyauth.create_key("acme", "k")
        body = report(secret)
        reply = app.test_client().post(URL, data=body, headers=Signer().headers(body))
        assert reply.status_code == 401
        assert app.test_client().get("/read", headers=bearer(secret)).status_code == 200
    finally:
        dispose(app, db)


def test_bad_bodies_are_clear_4xx_that_never_echo_a_token(
    leak_app: tuple[Flask, KeyAuth], signer: Signer
) -> None:
    app, keyauth = leak_app
    with app.app_context():
        _, secret = keyauth.create_key("acme", "k")
    client = app.test_client()
    bodies = [
        b"not json " + secret.encode(),
        json.dumps({"token": secret}).encode(),
        json.dumps([secret]).encode(),
        json.dumps([{"type": "t", "url": secret}]).encode(),
        json.dumps([{"token": 5}]).encode(),
        json.dumps([{"token": secret, "url": "u" * 5000}]).encode(),
        b"\xff\xfe" + secret.encode(),
    ]
    for body in bodies:
        reply = client.post(URL, data=body, headers=signer.headers(body))
        assert reply.status_code == 400, body[:40]
        assert reply.get_json()["error"]["code"] == "VALIDATION_ERROR"
        assert secret not in reply.get_data(as_text=True)
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    # Bounded: a report over 512 KiB is refused before it is verified or read.
    huge = report(*([secret] * 10_000))
    assert len(huge) > 512 * 1024
    reply = client.post(URL, data=huge, headers=signer.headers(huge))
    assert reply.status_code == 413
    assert secret not in reply.get_data(as_text=True)


def test_notify_only_signals_and_records(database_url: str, signer: Signer) -> None:
    app, db, keyauth = make_app(
        database_url,
        KEYAUTH_LEAK_REPORT_KEYS={signer.key_id: signer.pem},
        KEYAUTH_LEAK_ACTION="notify",
    )
    app.register_blueprint(keyauth_blueprint())
    seen: list[Any] = []

    def leaked(sender: Any, **kw: Any) -> None:
        seen.append(kw["key"].status)

    key_leaked.connect(leaked)
    try:
        with app.app_context():
            info, secret = keyauth.create_key("acme", "k")
        body = report(secret)
        reply = app.test_client().post(URL, data=body, headers=signer.headers(body))
        assert reply.get_json()[0]["label"] == "true_positive"
        assert seen == ["active"]
        assert app.test_client().get("/read", headers=bearer(secret)).status_code == 200
        assert len(events_of(app, info.id, "leaked")) == 1
        assert events_of(app, info.id, "revoked") == []
    finally:
        key_leaked.disconnect(leaked)
        dispose(app, db)


def test_the_host_csrf_protection_does_not_block_reports(tmp_path: Any, signer: Signer) -> None:
    from flask_wtf.csrf import CSRFProtect

    for order in ("csrf first", "blueprint first"):
        app = Flask(__name__)
        app.config.update(
            SECRET_KEY="s",
            SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / (order[0] + '.db')}",
            RATELIMIT_STORAGE_URI="memory://",
            KEYAUTH_LEAK_REPORT_KEYS={signer.key_id: signer.pem},
            **FAST_ARGON2,
        )
        csrf = CSRFProtect()
        if order == "csrf first":
            csrf.init_app(app)
        keyauth = KeyAuth(app)
        app.register_blueprint(keyauth_blueprint(), url_prefix="/settings/keys")
        if order != "csrf first":
            csrf.init_app(app)

        @app.post("/form")
        def form() -> str:
            return "posted"

        with app.app_context():
            info, secret = keyauth.create_key("acme", "k")
        client = app.test_client()
        assert client.post("/form").status_code == 400, order  # CSRF is on
        body = report(secret)
        reply = client.post("/settings/keys" + URL, data=body, headers=signer.headers(body))
        if order == "csrf first":
            assert reply.status_code == 200, reply.get_data(as_text=True)
            assert reply.get_json()[0]["label"] == "true_positive"
        else:
            # Set up after the blueprint, CSRFProtect is told by the host
            # (documented); until then it refuses, and nothing changes.
            assert reply.status_code == 400
            csrf.exempt("flask_keyauth.views.api.github_leaks")
            reply = client.post("/settings/keys" + URL, data=body, headers=signer.headers(body))
            assert reply.status_code == 200
        with app.app_context():
            assert keyauth.list_keys("acme")[0].status == "revoked"
        service_of(app).usage.take()


def test_bad_leak_settings_fail_at_start_up(tmp_path: Any) -> None:
    cases = {
        "KEYAUTH_LEAK_REPORT_KEYS": [
            {"id": "not a pem"},
            ["a", "list"],
            {"id": ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()},
        ],
        "KEYAUTH_LEAK_ACTION": ["delete", None],
    }
    for name, values in cases.items():
        for value in values:
            app = Flask(__name__)
            app.config.update(
                SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'k.db'}",
                RATELIMIT_STORAGE_URI="memory://",
                **{name: value},
            )
            with pytest.raises(ConfigError, match=name):
                KeyAuth(app)


def test_keys_from_githubs_document() -> None:
    one, two = Signer("one"), Signer("two")
    document = {
        "public_keys": [
            {"key_identifier": "one", "key": one.pem, "is_current": False},
            {"key_identifier": "two", "key": two.pem, "is_current": True},
        ]
    }
    assert keys_from_github(document) == {"one": one.pem, "two": two.pem}
    with pytest.raises(ValueError, match="public_keys"):
        keys_from_github({})


def test_flask_keys_leaked_handles_a_mailed_report(
    app: Flask, keyauth: KeyAuth, heard: list[Any]
) -> None:
    with app.app_context():
        first, secret = keyauth.create_key("acme", "mailed")
        second, piped = keyauth.create_key("acme", "piped")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["keys", "leaked", secret, "not-a-key", "--url", "https://paste.example/x",
              "--source", "security@ report"],
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"true_positive: {first.id} {first.redacted} (revoked now)"
    assert lines[1] == "false_positive: key text 2 is not a key of this app"
    assert secret not in result.output
    # From stdin, which keeps the key out of the shell's history; a repeat
    # says so and changes nothing.
    result = runner.invoke(
        args=["keys", "leaked", "-", "--url", "https://paste.example/x"],
        input=f"{piped}\n{secret}\n",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"true_positive: {second.id} {second.redacted} (revoked now)",
        f"true_positive: {first.id} {first.redacted} (revoked, reported before)",
    ]
    assert piped not in result.output
    [event] = events_of(app, first.id, "leaked")
    assert (event.detail, event.actor) == ("https://paste.example/x", "cli")
    assert [kind for kind, _ in heard] == ["leaked", "revoked", "leaked", "revoked"]
    result = runner.invoke(args=["keys", "leaked", "-", "--action", "notify"], input="")
    assert result.exit_code == 0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_same_report_at_once_on_two_hosts_is_handled_once(
    leak_app: tuple[Flask, KeyAuth], signer: Signer, heard: list[Any], app_factory: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    app, keyauth = leak_app
    other, _, _ = app_factory(KEYAUTH_LEAK_REPORT_KEYS={signer.key_id: signer.pem})
    other.register_blueprint(keyauth_blueprint())
    with app.app_context():
        info, secret = keyauth.create_key("acme", "leaked")
    body = report(secret)
    headers = signer.headers(body)
    apps = [app, other] * 4
    with ThreadPoolExecutor(len(apps)) as pool:
        replies = list(pool.map(lambda a: a.test_client().post(URL, data=body, headers=headers),
                                apps))
    assert {r.status_code for r in replies} == {200}
    assert all(r.get_json()[0]["label"] == "true_positive" for r in replies)
    assert len(events_of(app, info.id, "leaked")) == 1
    assert len(events_of(app, info.id, "revoked")) == 1
    assert sorted(kind for kind, _ in heard) == ["leaked", "revoked"]


def test_the_key_page_shows_the_leak_in_both_languages(
    leak_app: tuple[Flask, KeyAuth], signer: Signer
) -> None:
    from flask import session

    app, keyauth = leak_app
    keyauth.owner_loader(lambda: session.get("org_id"))
    with app.app_context():
        info, secret = keyauth.create_key("acme", "pushed")
    client = app.test_client()
    body = report(secret, url="https://github.com/octo/app/blob/abc/.env")
    assert client.post(URL, data=body, headers=signer.headers(body)).status_code == 200
    with client.session_transaction() as browser:
        browser["org_id"] = "acme"
    english = client.get(f"/{info.id}").get_data(as_text=True)
    assert "Reported leaked" in english and "GitHub secret scanning" in english
    assert "Found at https://github.com/octo/app/blob/abc/.env" in english
    spanish = client.get(f"/{info.id}", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert "Notificada como filtrada" in spanish and "Escaneo de secretos de GitHub" in spanish
    assert "Encontrada en https://github.com/octo/app/blob/abc/.env" in spanish
    assert secret not in english + spanish
