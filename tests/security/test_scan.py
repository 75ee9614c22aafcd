"""The committed-key scanner finds real keys and only real keys."""

from __future__ import annotations

import secrets
from pathlib import Path

from flask_keyauth import keys
from flask_keyauth.scan import scan


def test_finds_real_keys_redacted(tmp_path: Path) -> None:
    live = keys.generate("sk", "live").text
    test = keys.generate("acme", "test").text
    (tmp_path / "settings.py").write_text(f'API_KEY = "{live}"\nOTHER = 1\n')
    nested = tmp_path / "deploy" / "env"
    nested.mkdir(parents=True)
    (nested / ".env").write_text(f"\n\nTOKEN={test}\n")
    findings = scan([str(tmp_path)])
    assert [(Path(f.path).name, f.line) for f in findings] == [("settings.py", 1), (".env", 3)]
    for finding, key in zip(findings, [live, test], strict=True):
        parsed = keys.parse(key, key.split("_")[0])
        assert parsed is not None
        assert key not in str(finding)
        assert finding.redacted == keys.redact(
            parsed.prefix, parsed.environment, parsed.key_id, key[-4:]
        )


def test_random_strings_of_the_right_shape_are_not_keys(tmp_path: Path) -> None:
    alphabet = keys.ALPHABET
    fakes = [
        "sk_live_" + "".join(secrets.choice(alphabet) for _ in range(50)) for _ in range(200)
    ]
    (tmp_path / "fixtures.txt").write_text("\n".join(fakes))
    real = keys.generate().text
    broken = real[:-1] + ("A" if real[-1] != "A" else "B")
    (tmp_path / "typo.txt").write_text(broken)
    assert scan([str(tmp_path)]) == []


def test_skips_binary_files_and_vcs_folders(tmp_path: Path) -> None:
    key = keys.generate().text
    (tmp_path / "blob.bin").write_bytes(b"\0\1" + key.encode())
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_text(key)
    assert scan([str(tmp_path)]) == []
    single = tmp_path / "one.txt"
    single.write_text(f"x{key}")  # glued to another word: not a whole key
    assert scan([str(single)]) == []
    single.write_text(f"key: {key}.")
    assert len(scan([str(single)])) == 1
