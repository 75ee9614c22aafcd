"""The key format (SPEC §3): generate, checksum, parse, redact, custom prefix."""

from __future__ import annotations

import ast
import re
import string
import zlib
from pathlib import Path
from typing import Any

import pytest

from flask_keyauth import keys

from .conftest import bearer, make_app

DOCUMENTED = re.compile(r"sk_(live|test)_[0-9A-Za-z]{50}")
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def crc_base62(text: str) -> str:
    """SPEC §3, written out independently of the package."""
    number = zlib.crc32(text.encode("ascii"))
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = BASE62[rest] + digits
    return digits.rjust(6, "0")


def forge(prefix: str, environment: str, key_id: str, secret: str) -> str:
    """A key with a correct checksum for whatever parts it is given."""
    head = f"{prefix}_{environment}_{key_id}{secret}"
    return head + crc_base62(head)


def test_alphabet_is_0_9_A_Z_a_z() -> None:
    assert keys.ALPHABET == BASE62


@pytest.mark.parametrize("environment", ["live", "test"])
def test_generated_keys_match_the_documented_pattern(environment: str) -> None:
    seen_ids, seen_secrets = set(), set()
    for _ in range(200):
        key = keys.generate("sk", environment)
        text = key.text
        assert DOCUMENTED.fullmatch(text)
        assert text.startswith(f"sk_{environment}_")
        assert len(text) == len(f"sk_{environment}_") + 50
        assert keys.pattern().fullmatch(text)
        body = text.split("_")[-1]
        assert body == key.key_id + key.secret + key.checksum
        assert len(key.key_id) == 12 and len(key.secret) == 32 and len(key.checksum) == 6
        assert key.checksum == crc_base62(text[:-6])
        seen_ids.add(key.key_id)
        seen_secrets.add(key.secret)
    assert len(seen_ids) == 200 and len(seen_secrets) == 200


def test_documented_scanner_pattern() -> None:
    assert keys.pattern().pattern == r"sk_(live|test)_[0-9A-Za-z]{50}"


def test_whole_key_is_one_word() -> None:
    # \w+ is what a double click selects in most editors and terminals.
    text = keys.generate().text
    assert re.fullmatch(r"\w+", text)


def test_checksum_is_crc32_in_base62_most_significant_first() -> None:
    assert keys.base62(0, 6) == "000000"
    assert keys.base62(61, 6) == "00000z"
    assert keys.base62(62, 6) == "000010"
    assert keys.base62(62**5 * 7 + 3, 6) == "700003"
    assert keys.base62(2**32 - 1, 6) == crc_base62_number(2**32 - 1)
    for text in ["sk_live_", "sk_test_" + "a" * 44, "acme_live_" + "Z9" * 22]:
        assert keys.checksum(text) == crc_base62(text)


def crc_base62_number(number: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = BASE62[rest] + digits
    return digits.rjust(6, "0")


def test_short_checksums_are_left_padded_with_zero() -> None:
    # Find a head whose crc32 needs fewer than 6 base62 digits.
    for n in range(10_000):
        head = f"sk_live_{n:012d}{'x' * 32}"
        if zlib.crc32(head.encode()) < 62**5:
            break
    else:  # pragma: no cover - about one head in five qualifies
        pytest.fail("no short checksum found")
    assert keys.checksum(head).startswith("0")
    assert keys.checksum(head) == crc_base62(head)
    parsed = keys.parse(head + crc_base62(head))
    assert parsed is not None and parsed.checksum.startswith("0")


def test_checksum_covers_prefix_and_environment() -> None:
    key = keys.generate("sk", "live")
    swapped = key.text.replace("sk_live_", "sk_test_", 1)
    assert keys.parse(swapped) is None


def test_parse_returns_the_parts() -> None:
    key = keys.generate("sk", "test")
    parsed = keys.parse(key.text)
    assert parsed == key
    assert parsed is not None
    assert (parsed.prefix, parsed.environment) == ("sk", "test")
    assert parsed.text == key.text


def _flip(char: str) -> str:
    return "a" if char != "a" else "b"


def _bad_inputs() -> list[tuple[str, Any]]:
    key = keys.generate().text
    key_id, secret = key[8:20], key[20:52]
    return [
        ("bad checksum", key[:-1] + _flip(key[-1])),
        ("typo in the secret", key[:30] + _flip(key[30]) + key[31:]),
        ("wrong prefix", forge("pk", "live", key_id, secret)),
        ("upper-case prefix", forge("SK", "live", key_id, secret)),
        ("unknown environment", forge("sk", "prod", key_id, secret)),
        ("too long", key + "a"),
        ("too long, checksummed", forge("sk", "live", key_id, secret + "a")),
        ("too short", key[:-1]),
        ("far too long", "sk_live_" + "a" * 10_000),
        ("non-ASCII letter", key[:30] + "é" + key[31:]),
        ("full-width digit", key[:30] + "\uff15" + key[31:]),
        ("non-ASCII environment", forge("sk", "live", key_id, secret).replace("live", "lïve")),
        ("control character", key[:30] + "\x00" + key[31:]),
        ("equals sign", key[:-1] + "="),
        ("trailing equals", key + "="),
        ("leading space", " " + key),
        ("missing environment", "sk_" + key[8:]),
        ("extra underscore", key[:20] + "_" + key[20:]),
        ("empty", ""),
        ("just the prefix", "sk_live_"),
        ("two keys", key + "," + key),
    ]


@pytest.mark.parametrize(("case", "text"), _bad_inputs(), ids=[c for c, _ in _bad_inputs()])
def test_parse_rejects(case: str, text: str) -> None:
    assert keys.parse(text) is None


def test_parse_rejects_a_key_of_another_prefix() -> None:
    key = keys.generate("acme").text
    assert keys.parse(key) is None
    assert keys.parse(key, "acme") is not None
    assert keys.parse(keys.generate("sk").text, "acme") is None


def test_redacted_form() -> None:
    key = keys.generate("sk", "live")
    assert keys.redact("sk", "live", key.key_id, key.text[-4:]) == (
        f"sk_live_{key.key_id}\u2026{key.text[-4:]}"
    )


@pytest.mark.parametrize("prefix", ["", "SK", "s_k", "1sk", "s" * 17, "sk-", "sk "])
def test_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        keys.generate(prefix)


def test_generate_refuses_other_environments() -> None:
    with pytest.raises(ValueError, match="environment"):
        keys.generate("sk", "prod")


def test_the_module_has_no_flask_import() -> None:
    tree = ast.parse(Path(keys.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name and name.split(".")[0] == "flask"}


# -- through an app -----------------------------------------------------------


def test_info_redacted_and_secret_from_create(make_key: Any) -> None:
    info, secret = make_key()
    assert DOCUMENTED.fullmatch(secret)
    assert secret[8:20] == info.id
    assert info.redacted == f"sk_live_{info.id}\u2026{secret[-4:]}"
    assert secret not in info.redacted


def test_custom_key_prefix(tmp_path: Any) -> None:
    app, _, keyauth = make_app(f"sqlite:///{tmp_path / 'p.db'}", KEYAUTH_KEY_PREFIX="acme")
    with app.app_context():
        info, secret = keyauth.create_key("org", "k", environment="test")
    assert re.fullmatch(r"acme_test_[0-9A-Za-z]{50}", secret)
    assert keys.pattern("acme").fullmatch(secret)
    assert info.redacted == f"acme_test_{info.id}\u2026{secret[-4:]}"
    client = app.test_client()
    assert client.get("/read", headers=bearer(secret)).status_code == 200
    # The same id and secret under the default prefix: a well-formed sk_
    # key, but not one of this deployment's.
    as_sk = forge("sk", "test", secret[10:22], secret[22:54])
    response = client.get("/read", headers=bearer(as_sk))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "INVALID_API_KEY"
