"""The plaintext key lives only in the creation response (SPEC §3, §9).

After a full life (create, use, fail, rotate, revoke, plans, CLI), no
column of any table and no log line, SQL echo included, holds a key or its
secret part; and the stored hash is not itself a way in.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_keyauth import keys

from .conftest import AppFactory, bearer, install_clock, service_of
from .test_auth import unknown_id, wrong_secret
from .test_cli import KEY_IN_TEXT
from .test_keys import forge


def secret_parts(key: str) -> list[str]:
    """The whole key and the 32 characters that are its secret."""
    return [key, key.split("_")[-1][12:44]]


def every_value(app: Flask) -> list[tuple[str, str, str]]:
    """(table, column, text) for every value of every table in the database."""
    with app.app_context():
        engine = app.extensions["keyauth"].store.engine
        metadata = sa.MetaData()
        metadata.reflect(engine)
        found = []
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(sa.select(table)).mappings():
                    for column, value in row.items():
                        found.append((table.name, column, "" if value is None else str(value)))
    return found


@pytest.fixture
def lived(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[Flask, list[str], list[logging.LogRecord]]]:
    """An app after a full life of keys, with every log record it made."""
    # SQLAlchemy's echo adds a stdout handler for good; take it away after.
    echo_logger = logging.getLogger("sqlalchemy.engine.Engine")
    handlers = list(echo_logger.handlers)
    try:
        yield live_a_life(app_factory, caplog)
    finally:
        for handler in echo_logger.handlers[:]:
            if handler not in handlers:
                echo_logger.removeHandler(handler)


def live_a_life(
    app_factory: AppFactory, caplog: pytest.LogCaptureFixture
) -> tuple[Flask, list[str], list[logging.LogRecord]]:
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy", "sqlalchemy.engine", "flask_keyauth", "werkzeug", "flask"):
        caplog.set_level(logging.DEBUG, logger=name)
    app, _, keyauth = app_factory(KEYAUTH_LAST_USED_INTERVAL=0, SQLALCHEMY_ECHO="debug")
    clock = install_clock(app)
    client = app.test_client()
    runner = app.test_cli_runner()
    presented: list[str] = []

    with app.app_context():
        _, live = keyauth.create_key("acme", "live", ["read"])
        _, test = keyauth.create_key("acme", "test", ["write"], "test")
        _, short = keyauth.create_key("acme", "short", expires_at=clock.now + dt.timedelta(1))
        keyauth.set_plan("acme", "enterprise", "1000/hour")
    presented += [live, test, short]

    for key in (live, test, short):
        for headers in (bearer(key), {"X-API-Key": key}):
            assert client.get("/read", headers=headers).status_code == 200
        assert client.get("/any", headers=bearer(key)).status_code == 200
    assert client.post("/write", headers=bearer(live)).status_code == 403
    for bad in (wrong_secret(live), unknown_id(live), live[:-1] + "!", live + live):
        presented.append(bad)
        assert client.get("/read", headers=bearer(bad)).status_code == 401
    assert client.get("/read", query_string={"api_key": test}).status_code == 401
    clock.advance(days=2)
    assert client.get("/read", headers=bearer(short)).status_code == 401

    with app.app_context():
        rotated, rotated_key = keyauth.rotate_key(live[8:20], dt.timedelta(hours=1))
        _, instant = keyauth.rotate_key(test[8:20], dt.timedelta(0))
        service_of(app).update_key(rotated.id, name="renamed")
    presented += [rotated_key, instant]
    for key in (live, rotated_key, instant):
        client.get("/read", headers=bearer(key))
    with app.app_context():
        keyauth.revoke_key(rotated.id)
    assert client.get("/read", headers=bearer(rotated_key)).status_code == 401

    result = runner.invoke(args=["keys", "create", "--owner", "globex", "--name", "cli"])
    (cli_key,) = KEY_IN_TEXT.findall(result.stdout)
    presented.append(cli_key)
    result = runner.invoke(args=["keys", "rotate", cli_key[8:20], "--grace", "0"])
    (cli_rotated,) = KEY_IN_TEXT.findall(result.stdout)
    presented.append(cli_rotated)
    assert client.get("/read", headers=bearer(cli_rotated)).status_code == 200
    assert runner.invoke(args=["keys", "list"]).exit_code == 0
    with app.app_context():
        service_of(app).flush_usage()
    return app, presented, list(caplog.records)


def test_no_table_holds_a_secret(lived: tuple[Flask, list[str], list[logging.LogRecord]]) -> None:
    app, presented, _ = lived
    values = every_value(app)
    tables = {table for table, _, _ in values}
    assert {"keyauth_api_keys", "keyauth_events", "keyauth_usage", "keyauth_owners"} <= tables
    hashes = [text for table, column, text in values if column == "secret_hash"]
    assert len(hashes) == 7 and all(h.startswith("$argon2id$") for h in hashes)
    for table, column, text in values:
        for secret in presented:
            for part in secret_parts(secret):
                assert part not in text, f"{table}.{column} holds a secret"


def test_no_log_line_holds_a_secret(
    lived: tuple[Flask, list[str], list[logging.LogRecord]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, presented, records = lived
    captured = capsys.readouterr()
    formatter = logging.Formatter()
    lines = [formatter.format(record) for record in records]
    lines += [repr(record.args) for record in records]
    lines += [captured.out, captured.err]
    # The SQL echo was on, with its parameters and result rows.
    assert any("keyauth_api_keys" in line for line in lines)
    assert any("$argon2id$" in line for line in lines)
    for line in lines:
        for secret in presented:
            for part in secret_parts(secret):
                assert part not in line


def test_the_stored_hash_does_not_authenticate(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory()
    client = app.test_client()
    with app.app_context():
        info, key = keyauth.create_key("acme", "k")
        table = app.extensions["keyauth"].store.tables.keys
        with app.extensions["keyauth"].store.engine.connect() as conn:
            stored = conn.execute(
                sa.select(table.c.secret_hash).where(table.c.key_id == info.id)
            ).scalar_one()
    assert key.split("_")[-1][12:44] not in stored
    alnum = "".join(c for c in stored.split("$")[-1] if c.isalnum())
    attempts = [
        bearer(stored),
        {"X-API-Key": stored},
        bearer(stored.split("$")[-1]),
        bearer(forge("sk", "live", info.id, alnum[:32])),
        bearer(f"sk_live_{info.id}{stored}"),
    ]
    for headers in attempts:
        response = client.get("/read", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "INVALID_API_KEY"
        assert stored not in response.get_data(as_text=True)
    hasher = service_of(app).hasher
    assert not hasher.verify(stored, stored)
    assert hasher.verify(stored, key.split("_")[-1][12:44])
    assert client.get("/read", headers=bearer(key)).status_code == 200


def test_a_parsed_key_does_not_show_its_secret() -> None:
    key = keys.generate()
    parsed = keys.parse(key.text)
    assert parsed is not None
    assert key.secret not in repr(parsed) and key.secret not in str(parsed)


def test_service_results_hold_no_secret(app_factory: AppFactory) -> None:
    app, _, keyauth = app_factory()
    with app.app_context():
        info, key = keyauth.create_key("acme", "k")
        listed = keyauth.list_keys("acme")
        rotated, new_key = keyauth.rotate_key(info.id)
    blob = repr([info, listed, rotated, info.to_dict(), rotated.to_dict()])
    for secret in (key, new_key):
        for part in secret_parts(secret):
            assert part not in blob
    assert "$argon2" not in blob
    assert set(info.to_dict()) == {
        "id", "name", "redacted", "scopes", "environment", "status", "created_at",
        "expires_at", "revoked_at", "last_used_at", "limits", "created_by", "description",
        "metadata", "allowed_ips",
    }
