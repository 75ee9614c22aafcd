"""``flask keys …`` (SPEC §8, §11)."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth

from .conftest import Clock, MakeKey, bearer, dispose, service_of
from .test_keys import DOCUMENTED

KEY_IN_TEXT = re.compile(r"sk_(?:live|test)_[0-9A-Za-z]{50}")


def keys(runner: Any, *args: str) -> Any:
    return runner.invoke(args=["keys", *args])


def printed_key(result: Any) -> str:
    assert result.exit_code == 0, result.output
    found = KEY_IN_TEXT.findall(result.stdout)
    assert len(found) == 1, result.stdout
    assert result.stdout.count(found[0]) == 1
    assert found[0] not in result.stderr
    return str(found[0])


def one_line_error(result: Any) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return str(lines[0])


# -- usage errors: one line, exit 2 ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", "k"], "Missing option '--owner'"),
        (["create", "--owner", "acme"], "Missing option '--name'"),
        (["create", "--owner"], "'--owner' requires an argument"),
        (["create", "--owner", "acme", "--name", "k", "--env", "prod"], "'prod' is not one of"),
        (["list", "--bogus"], "No such option"),
        (["revoke"], "Missing argument 'KEY_ID'"),
        (["revoke", "AAAAAAAAAAAA", "again"], "unexpected extra argument"),
        (["rotate"], "Missing argument 'KEY_ID'"),
        (["plan", "acme"], "Missing argument 'PLAN'"),
        (["disable"], "Missing argument 'KEY_ID'"),
        (["enable"], "Missing argument 'KEY_ID'"),
        (["enable", "AAAAAAAAAAAA", "--bogus"], "No such option"),
        (["create", "--owner", "acme", "--name", "k", "--actor", ""], "'--actor': must not be"),
        (["revoke", "AAAAAAAAAAAA", "--actor", "  "], "'--actor': must not be empty"),
        (["rotate", "AAAAAAAAAAAA", "--actor"], "'--actor' requires an argument"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line(app: Flask, runner: Any, args: list[str], message: str) -> None:
    line = one_line_error(keys(runner, *args))
    assert line.startswith("Error: ") and message in line, line
    assert "--help" in line  # where to look next, on the same line
    assert "Usage:" not in line
    with app.app_context():
        assert service_of(app).all_keys() == []


def test_usage_errors_do_not_echo_control_characters(runner: Any) -> None:
    line = one_line_error(keys(runner, "create", "--owner", "a", "--name", "k",
                               "--env", "\x1b[2J\rlive"))
    assert "\x1b" not in line and "\r" not in line
    assert "\\x1b[2J\\rlive" in line


@pytest.mark.parametrize(
    "args",
    [
        ["revoke", "{bad}"],
        ["rotate", "{bad}"],
        ["list", "--owner", "{bad}"],
        ["audit", "--owner", "{bad}"],
        ["create", "--owner", "{bad}", "--name", "k"],
        ["create", "--owner", "acme", "--name", "{bad}"],
        ["plan", "{bad}", "free"],
        ["disable", "{bad}"],
        ["enable", "{bad}"],
        ["revoke", "AAAAAAAAAAAA", "--actor", "{bad}"],
        ["create", "--owner", "acme", "--name", "k", "--description", "{bad}"],
        ["create", "--owner", "acme", "--name", "k", "--metadata", "ok=1", "--metadata", "k={bad}"],
    ],
)
def test_arguments_that_were_not_utf8(
    app: Flask, runner: Any, make_key: MakeKey, args: list[str]
) -> None:
    # What Python makes of argv bytes that are not UTF-8 (PEP 383): lone
    # surrogates, which no database driver can encode.
    bad = os.fsdecode(b"\xff\xfeAAAAAAAAAA")
    info, _ = make_key()
    line = one_line_error(keys(runner, *[a.format(bad=bad) for a in args]))
    assert "not UTF-8" in line and "\\xff\\xfe" in line
    with app.app_context():
        assert [k.id for k in service_of(app).all_keys()] == [info.id]
        assert service_of(app).get_key(info.id).status == "active"


# -- create ---------------------------------------------------------------------------


def test_create_prints_the_key_once(app: Flask, runner: Any, client: Any) -> None:
    result = keys(runner, "create", "--owner", "acme", "--name", "deploys",
                  "--scopes", "read,write", "--env", "test")
    secret = printed_key(result)
    assert secret.startswith("sk_test_")
    with app.app_context():
        info = service_of(app).get_key(secret[8:20])
    assert info.id in result.stdout
    assert (info.owner_id, info.name, info.environment) == ("acme", "deploys", "test")
    assert info.granted_scopes == ("read", "write") and info.expires_at is None
    assert client.post("/write", headers=bearer(secret)).status_code == 200


def test_create_defaults(app: Flask, runner: Any) -> None:
    secret = printed_key(keys(runner, "create", "--owner", "acme", "--name", "k"))
    assert DOCUMENTED.fullmatch(secret) and secret.startswith("sk_live_")
    with app.app_context():
        assert service_of(app).get_key(secret[8:20]).granted_scopes == ("read",)


def test_create_with_the_keys_own_limits(app: Flask, runner: Any, client: Any) -> None:
    secret = printed_key(
        keys(runner, "create", "--owner", "acme", "--name", "k", "--limits", "2/minute")
    )
    assert [client.get("/read", headers=bearer(secret)).status_code for _ in range(3)] == [
        200, 200, 429,
    ]
    line = one_line_error(
        keys(runner, "create", "--owner", "acme", "--name", "k", "--limits", "lots")
    )
    assert "cannot be parsed" in line


def test_create_with_a_description_metadata_and_allowed_addresses(
    app: Flask, runner: Any, client: Any
) -> None:
    secret = printed_key(
        keys(runner, "create", "--owner", "acme", "--name", "office",
             "--description", "The office printer", "--metadata", "site = paris",
             "--metadata", "floor=3", "--allowed-ips", "198.51.100.0/24, 2001:db8::1")
    )
    with app.app_context():
        info = service_of(app).get_key(secret[8:20])
    assert info.description == "The office printer"
    assert dict(info.metadata) == {"site": "paris", "floor": "3"}
    assert info.allowed_ips == ("198.51.100.0/24", "2001:db8::1/128")
    assert client.get("/read", headers=bearer(secret)).status_code == 403  # from 127.0.0.1
    inside = {"REMOTE_ADDR": "198.51.100.9"}
    assert client.get("/read", headers=bearer(secret), environ_base=inside).status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--allowed-ips", "10.0.0.1,somewhere"], "'somewhere' is not an address or CIDR block"),
        (["--description", "d" * 1001], "description must be at most 1000 characters"),
        (["--metadata", "no-equals"], "--metadata: 'no-equals' has no '='"),
        (["--metadata", "a=1", "--metadata", "a=2"], "--metadata: the key 'a' is given twice"),
        (["--metadata", "k=" + "v" * 5000], "metadata must be at most 4096 bytes"),
    ],
)
def test_create_refuses_bad_details(app: Flask, runner: Any, args: list[str], message: str) -> None:
    line = one_line_error(keys(runner, "create", "--owner", "acme", "--name", "k", *args))
    assert message in line, line
    with app.app_context():
        assert service_of(app).all_keys() == []


@pytest.mark.parametrize(
    ("text", "delta"),
    [("30m", dt.timedelta(minutes=30)), ("24h", dt.timedelta(hours=24)),
     ("90d", dt.timedelta(days=90)), ("45s", dt.timedelta(seconds=45))],
)
def test_create_with_expiry(
    app: Flask, runner: Any, clock: Clock, text: str, delta: dt.timedelta
) -> None:
    secret = printed_key(
        keys(runner, "create", "--owner", "acme", "--name", "k", "--expires-in", text)
    )
    with app.app_context():
        assert service_of(app).get_key(secret[8:20]).expires_at == clock.now + delta


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scopes", "read,superuser"], "unknown scope 'superuser'"),
        (["--expires-in", "soon"], "duration"),
        (["--expires-in", "90"], "give a unit"),  # never 90 seconds
        (["--expires-in", "1"], "give a unit"),
        (["--expires-in", "10w"], "duration"),
        (["--expires-in", "-5d"], "duration"),
        (["--expires-in", "0"], "longer than 0"),
        (["--expires-in", "99999999999d"], "too long"),
        (["--expires-in", "3000000d"], "9999"),
        (["--name", "n" * 129], "128"),
    ],
)
def test_create_refuses_bad_arguments(
    app: Flask, runner: Any, args: list[str], message: str
) -> None:
    base = {"--owner": "acme", "--name": "k"}
    for flag in args[::2]:
        base.pop(flag, None)
    flat = [part for pair in base.items() for part in pair]
    line = one_line_error(keys(runner, "create", *flat, *args))
    assert message in line
    with app.app_context():
        assert service_of(app).all_keys() == []


# -- list -----------------------------------------------------------------------------


def test_list_never_prints_a_key(app: Flask, runner: Any, make_key: MakeKey) -> None:
    acme, acme_secret = make_key(owner="acme", name="acme key")
    globex, globex_secret = make_key(owner="globex", name="globex key", environment="test")
    revoked, revoked_secret = make_key(owner="acme", name="old one")
    with app.app_context():
        service_of(app).revoke_key(revoked.id)

    everyone = keys(runner, "list")
    assert everyone.exit_code == 0
    header, *lines = everyone.stdout.splitlines()
    assert header.split() == [
        "ID", "OWNER", "KEY", "STATUS", "ENV", "SCOPES", "EXPIRES", "LAST", "USED", "NAME"
    ]
    assert len(lines) == 3
    # In columns: every row's key starts where the header's KEY does.
    for line in lines:
        assert line[header.index("KEY"):].startswith("sk_")
    for info in (acme, globex, revoked):
        (line,) = [ln for ln in lines if ln.startswith(info.id)]
        assert info.owner_id in line and info.redacted in line and info.name in line
    assert "revoked" in next(ln for ln in lines if ln.startswith(revoked.id))

    only_acme = keys(runner, "list", "--owner", "acme")
    assert only_acme.exit_code == 0
    header, *lines = only_acme.stdout.splitlines()
    assert header.split()[:3] == ["ID", "KEY", "STATUS"]  # one owner: no owner column
    ids = [line.split()[0] for line in lines]
    assert sorted(ids) == sorted([acme.id, revoked.id])

    for result in (everyone, only_acme):
        for secret in (acme_secret, globex_secret, revoked_secret):
            assert secret not in result.output
            assert secret[20:52] not in result.output
        assert not KEY_IN_TEXT.search(result.output)


def test_list_with_no_keys(runner: Any) -> None:
    result = keys(runner, "list", "--owner", "nobody")
    assert result.exit_code == 0 and result.stdout == ""


# -- revoke ---------------------------------------------------------------------------


def test_revoke(app: Flask, runner: Any, client: Any, make_key: MakeKey) -> None:
    info, secret = make_key()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    result = keys(runner, "revoke", info.id)
    assert result.exit_code == 0 and info.id in result.stdout
    assert secret not in result.output
    assert client.get("/read", headers=bearer(secret)).status_code == 401
    # Again: a no-op, not an error.
    assert keys(runner, "revoke", info.id).exit_code == 0


@pytest.mark.parametrize("key_id", ["AAAAAAAAAAAA", "nope"])
@pytest.mark.parametrize("command", ["revoke", "disable", "enable"])
def test_unknown_ids_are_bad_arguments(runner: Any, command: str, key_id: str) -> None:
    assert key_id in one_line_error(keys(runner, command, key_id))


# -- disable and enable ------------------------------------------------------------------


def test_disable_and_enable(app: Flask, runner: Any, client: Any, make_key: MakeKey) -> None:
    info, secret = make_key()
    result = keys(runner, "disable", info.id)
    assert result.exit_code == 0, result.output
    assert f"Disabled key {info.id} ({info.redacted})" in result.stdout
    assert secret not in result.output
    refused = client.get("/read", headers=bearer(secret))
    assert (refused.status_code, refused.json["error"]["code"]) == (401, "INVALID_API_KEY")
    assert "disabled" in keys(runner, "list").stdout
    result = keys(runner, "enable", info.id, "--actor", "alice")
    assert result.exit_code == 0 and "it is active" in result.stdout
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    # Again: a no-op, not an error; no second event.
    assert keys(runner, "enable", info.id).exit_code == 0
    with app.app_context():
        events = service_of(app).events("acme", key_id=info.id)
    assert [(e.action, e.actor) for e in events] == [
        ("enabled", "alice"), ("disabled", "cli"), ("created", None),
    ]


def test_a_revoked_key_cannot_be_switched(app: Flask, runner: Any, make_key: MakeKey) -> None:
    info, _ = make_key()
    assert keys(runner, "revoke", info.id).exit_code == 0
    for command in ("disable", "enable"):
        assert "revoked" in one_line_error(keys(runner, command, info.id))
    with app.app_context():
        assert service_of(app).get_key(info.id).disabled_at is None


# -- who acted --------------------------------------------------------------------------


def test_changes_are_recorded_as_cli_or_the_actor_given(
    app: Flask, runner: Any, make_key: MakeKey
) -> None:
    by_default = printed_key(keys(runner, "create", "--owner", "acme", "--name", "a"))
    by_alice = printed_key(
        keys(runner, "create", "--owner", "acme", "--name", "b", "--actor", "alice@acme.test")
    )
    rotated = printed_key(keys(runner, "rotate", by_alice[8:20], "--actor", "bob"))
    assert keys(runner, "revoke", by_default[8:20], "--actor", "carol").exit_code == 0
    assert keys(runner, "disable", rotated[8:20], "--actor", "dave").exit_code == 0
    assert keys(runner, "plan", "acme", "starter", "--actor", "erin").exit_code == 0
    with app.app_context():
        service = service_of(app)
        assert service.get_key(by_default[8:20]).created_by == "cli"
        assert service.get_key(by_alice[8:20]).created_by == "alice@acme.test"
        assert service.get_key(rotated[8:20]).created_by == "bob"
        events = [(e.action, e.key_id, e.actor) for e in service.events("acme")]
    assert events == [
        ("plan_changed", None, "erin"),
        ("disabled", rotated[8:20], "dave"),
        ("revoked", by_default[8:20], "carol"),
        ("created", rotated[8:20], "bob"),
        ("rotated", by_alice[8:20], "bob"),
        ("created", by_alice[8:20], "alice@acme.test"),
        ("created", by_default[8:20], "cli"),
    ]


# -- rotate ---------------------------------------------------------------------------


def test_rotate_prints_the_new_key_once(
    app: Flask, runner: Any, client: Any, make_key: MakeKey, clock: Clock
) -> None:
    old, old_secret = make_key(["write"], name="deploys")
    result = keys(runner, "rotate", old.id, "--grace", "30m")
    new_secret = printed_key(result)
    assert new_secret != old_secret and old_secret not in result.output
    with app.app_context():
        new = service_of(app).get_key(new_secret[8:20])
        assert service_of(app).get_key(old.id).expires_at == clock.now + dt.timedelta(minutes=30)
    assert (new.name, new.granted_scopes) == ("deploys", ("write",))
    assert client.get("/read", headers=bearer(old_secret)).status_code == 200
    assert client.get("/read", headers=bearer(new_secret)).status_code == 200


def test_rotate_default_grace_is_24h(app: Flask, runner: Any, make_key: MakeKey,
                                     clock: Clock) -> None:
    old, _ = make_key()
    printed_key(keys(runner, "rotate", old.id))
    with app.app_context():
        assert service_of(app).get_key(old.id).expires_at == clock.now + dt.timedelta(hours=24)


def test_rotate_with_zero_grace(app: Flask, runner: Any, client: Any, make_key: MakeKey) -> None:
    old, old_secret = make_key()
    result = keys(runner, "rotate", old.id, "--grace", "0")
    new_secret = printed_key(result)
    assert "revoked" in result.stdout
    assert client.get("/read", headers=bearer(old_secret)).status_code == 401
    assert client.get("/read", headers=bearer(new_secret)).status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["AAAAAAAAAAAA"], "AAAAAAAAAAAA"),
        (["{id}", "--grace", "a while"], "duration"),
        (["{id}", "--grace", "3600"], "give a unit"),
        (["{id}", "--grace", "-1h"], "duration"),
        (["{id}", "--grace", "99999999999d"], "too long"),
    ],
)
def test_rotate_refuses_bad_arguments(
    app: Flask, runner: Any, make_key: MakeKey, args: list[str], message: str
) -> None:
    info, _ = make_key()
    line = one_line_error(keys(runner, "rotate", *[a.format(id=info.id) for a in args]))
    assert message in line
    with app.app_context():
        assert [k.id for k in service_of(app).all_keys()] == [info.id]


# -- plan -----------------------------------------------------------------------------


def test_plan(app: Flask, runner: Any) -> None:
    result = keys(runner, "plan", "acme", "starter")
    assert result.exit_code == 0 and "starter" in result.stdout
    result = keys(runner, "plan", "acme", "enterprise", "--limits", "5000/hour;100000/day")
    assert result.exit_code == 0 and "5000/hour" in result.stdout
    with app.app_context():
        assert service_of(app).get_plan("acme") == ("enterprise", ("5000/hour", "100000/day"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["acme", "platinum"], "unknown plan 'platinum'"),
        (["acme", "enterprise"], "give --limits"),
        (["acme", "enterprise", "--limits", "plenty"], "cannot be parsed"),
    ],
)
def test_plan_refuses_bad_arguments(
    app: Flask, runner: Any, args: list[str], message: str
) -> None:
    line = one_line_error(keys(runner, "plan", *args))
    assert message in line and "limits=" not in line
    with app.app_context():
        assert service_of(app).get_plan("acme")[0] == "free"


@pytest.fixture
def postgres_runner(postgres_url: str) -> Iterator[tuple[Flask, Any]]:
    from .conftest import make_app

    app, db, _ = make_app(postgres_url)
    yield app, app.test_cli_runner()
    dispose(app, db)


@pytest.mark.postgres
def test_plan_limits_too_long_for_postgresql(postgres_runner: tuple[Flask, Any]) -> None:
    app, runner = postgres_runner
    # Valid limits, too long to store: past the 512 characters of the column.
    limits = ";".join(f"{n}/hour" for n in range(1000, 1080))
    line = one_line_error(keys(runner, "plan", "acme", "enterprise", "--limits", limits))
    assert "at most 512 characters" in line
    with app.app_context():
        assert service_of(app).get_plan("acme")[0] == "free"


# -- audit ----------------------------------------------------------------------------


def test_audit(app: Flask, runner: Any, client: Any, make_key: MakeKey, clock: Clock) -> None:
    start = clock.now
    fresh, _ = make_key(owner="acme", name="billing sync",
                        expires_at=start + dt.timedelta(days=365))
    unused, _ = make_key(owner="acme", name="forgotten", environment="test",
                         expires_at=start + dt.timedelta(400))
    admin, admin_secret = make_key(["admin"], owner="globex", name="ops console")
    revoked, _ = make_key(owner="acme")
    with app.app_context():
        service_of(app).revoke_key(revoked.id)
    clock.advance(days=100)
    assert client.get("/read", headers=bearer(admin_secret)).status_code == 200
    clock.advance(days=1)
    # fresh was last used 101 days ago; unused never was.
    service = service_of(app)
    service.usage.record(fresh.id, start)
    with app.app_context():
        service.flush_usage()

    result = keys(runner, "audit")
    assert result.exit_code == 1, result.output  # findings, like scan
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "OWNER", "KEY", "FINDINGS", "NAME"]
    lines = {line.split()[0]: line for line in rows}
    assert set(lines) == {fresh.id, unused.id, admin.id}  # the revoked key is left out
    for info in (fresh, unused, admin):
        assert lines[info.id].endswith(info.name)
    assert "3 key(s) need attention" in result.stderr
    assert "idle 90+ days" in lines[fresh.id] and "never expires" not in lines[fresh.id]
    assert "never used" in lines[unused.id]
    assert "past the rotation reminder" in lines[unused.id]
    assert "live key with admin" in lines[admin.id] and "never expires" in lines[admin.id]
    assert "never used" not in lines[admin.id] and "idle" not in lines[admin.id]
    assert "live key with admin" not in lines[fresh.id]
    for info in (fresh, unused, admin):
        assert info.redacted in lines[info.id]
    assert not KEY_IN_TEXT.search(result.output)

    only = keys(runner, "audit", "--owner", "globex")
    assert only.exit_code == 1
    header, *rows = only.stdout.splitlines()
    assert header.split() == ["ID", "KEY", "FINDINGS", "NAME"]
    assert [line.split()[0] for line in rows] == [admin.id]


def test_audit_with_nothing_to_say(app: Flask, runner: Any, keyauth: KeyAuth,
                                   clock: Clock) -> None:
    with app.app_context():
        (key, _) = keyauth.create_key("acme", "k", environment="test",
                                      expires_at=clock.now + dt.timedelta(days=30))
    service_of(app).usage.record(key.id, clock.now)
    result = keys(runner, "audit")
    assert result.exit_code == 0 and result.stdout == ""
    assert keys(runner, "audit", "--owner", "").exit_code == 2


# -- scan ------------------------------------------------------------------------------


@pytest.fixture
def scan_runner(tmp_path: Any) -> Any:
    from .conftest import make_app

    scan_app, _, _ = make_app(f"sqlite:///{tmp_path / 'scan.db'}")
    return scan_app.test_cli_runner()


def plant(tmp_path: Any) -> tuple[Any, list[str]]:
    """A small repository with three real keys (one of another prefix) and decoys."""
    from flask_keyauth import keys as key_format

    tree = tmp_path / "repo"
    (tree / "config").mkdir(parents=True)
    live = key_format.generate("sk", "live").text
    test = key_format.generate("sk", "test").text
    other = key_format.generate("acme", "live").text
    (tree / "config" / "settings.py").write_text(f'DEBUG = True\nAPI_KEY = "{live}"\n')
    (tree / ".env").write_text(f"# test key\n\nKEYAUTH_TEST={test} OTHER={other}\n")
    decoy = "sk_live_" + "A" * 50
    (tree / "README.md").write_text(f"Keys look like `{decoy}`.\n")
    return tree, [live, test, other]


def test_scan_finds_committed_keys_redacted_and_exits_1(tmp_path: Any, scan_runner: Any) -> None:
    tree, planted = plant(tmp_path)
    result = scan_runner.invoke(args=["keys", "scan", str(tree)])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert {line.split(": ")[0] for line in lines} == {
        f"{tree / 'config' / 'settings.py'}:2",
        f"{tree / '.env'}:3",
    }
    for key in planted:
        # Never the key nor its secret part, on either stream.
        assert key not in result.output and key[-44:-6] not in result.output
        redacted = f"{key[:-38]}\u2026{key[-4:]}"  # prefix_env_<id>…<last 4>
        assert any(line.endswith(redacted) for line in lines), (redacted, lines)
    assert "3 API key(s) found" in result.stderr


def test_scan_of_a_clean_tree_exits_0(tmp_path: Any, scan_runner: Any) -> None:
    import secrets

    from flask_keyauth import keys as key_format

    tree = tmp_path / "clean"
    tree.mkdir()
    shaped = [
        f"sk_{env}_" + "".join(secrets.choice(key_format.ALPHABET) for _ in range(50))
        for env in ("live", "test") * 250
    ]
    (tree / "fixtures.txt").write_text("\n".join(shaped))
    real = key_format.generate().text
    (tree / "typo.txt").write_text(real[:-1] + ("0" if real[-1] != "0" else "1"))
    result = scan_runner.invoke(args=["keys", "scan", str(tree), str(tree / "typo.txt")])
    assert (result.exit_code, result.stdout) == (0, "")


def test_scan_finds_a_key_deep_in_a_large_file(tmp_path: Any, scan_runner: Any) -> None:
    from flask_keyauth import keys as key_format

    key = key_format.generate().text
    dump = tmp_path / "dump.log"
    with dump.open("w") as file:
        for n in range(200_000):
            file.write(f"{n:08d} some line of an old log, padding the file out\n")
        file.write(f"00000000 request with Authorization: Bearer {key}\n")
    assert dump.stat().st_size > 10 * 1024 * 1024
    result = scan_runner.invoke(args=["keys", "scan", str(dump)])
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{dump}:200001: sk_live_")
    assert key not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "Missing argument 'PATHS...'"), (["/no/such/path"], "does not exist")],
    ids=["no path", "missing path"],
)
def test_scan_bad_arguments_exit_2(scan_runner: Any, args: list[str], message: str) -> None:
    assert message in one_line_error(scan_runner.invoke(args=["keys", "scan", *args]))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_scan_skips_named_pipes_and_devices_with_a_note(tmp_path: Any) -> None:
    import subprocess
    import sys

    from flask_keyauth import keys as key_format

    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "pipe")  # nobody ever writes to it
    key = key_format.generate().text
    (tree / "after.txt").write_text(f"token={key}\n")
    found = subprocess.run(
        [sys.executable, "-m", "flask_keyauth.scan", str(tree), str(tree / "pipe"), os.devnull],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert found.returncode == 1, found.stderr
    assert found.stdout == f"{tree / 'after.txt'}:1: {key[:-38]}\u2026{key[-4:]}\n"
    notes = [line for line in found.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        f"note: {tree / 'pipe'}: skipped, a named pipe",
        f"note: {tree / 'pipe'}: skipped, a named pipe",
        f"note: {os.devnull}: skipped, a device",
    ]
    assert "Traceback" not in found.stderr


def test_scan_runs_without_an_app_for_pre_commit(tmp_path: Any) -> None:
    import subprocess
    import sys

    tree, planted = plant(tmp_path)
    found = subprocess.run(
        [sys.executable, "-m", "flask_keyauth.scan", str(tree / ".env"), str(tree / "README.md")],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert found.returncode == 1, found.stderr
    assert len(found.stdout.splitlines()) == 2
    assert not any(key in found.stdout + found.stderr for key in planted)
    clean = subprocess.run(
        [sys.executable, "-m", "flask_keyauth.scan", str(tree / "README.md")],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert (clean.returncode, clean.stdout) == (0, "")
    bad = subprocess.run(
        [sys.executable, "-m", "flask_keyauth.scan", str(tmp_path / "nope")],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert bad.returncode == 2
