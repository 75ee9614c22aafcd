"""The committed-key scanner finds real keys and only real keys."""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest

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
    single.write_text(f"key: {key}.")
    assert len(scan([str(single)])) == 1


def redacted(key: str) -> str:
    parsed = keys.parse(key, key.split("_")[0])
    assert parsed is not None
    return keys.redact(parsed.prefix, parsed.environment, parsed.key_id, key[-4:])


@pytest.mark.parametrize(
    "before",
    ["%20", "%3D", "\\n", "\\t", "x", "0", "_", "Bearer%20", "token=", "\"", "\t", " "],
)
@pytest.mark.parametrize("prefix", ["sk", "acme", "k2"])
def test_finds_keys_wherever_the_documented_pattern_does(
    tmp_path: Path, before: str, prefix: str
) -> None:
    # Glued to a URL escape, an escaped newline in JSON or another word: the
    # documented pattern matches there, and so does the scanner; the
    # checksum alone tells a key from a string of the same shape.
    key = keys.generate(prefix, "test").text
    path = tmp_path / "log.txt"
    path.write_text(f"first line\nGET /v1?q={before}{key}%26x=1 HTTP/1.1\n")
    assert keys.pattern(prefix).search(path.read_text())
    assert [(f.line, f.redacted) for f in scan([str(path)])] == [(2, redacted(key))]


def test_keys_glued_together_are_each_found(tmp_path: Path) -> None:
    first, second = keys.generate("sk").text, keys.generate("sk", "test").text
    path = tmp_path / "glued.txt"
    path.write_text(f"{first}{second}\n{first}0{second}X\n")
    assert [(f.line, f.redacted) for f in scan([str(path)])] == [
        (1, redacted(first)), (1, redacted(second)), (2, redacted(first)), (2, redacted(second)),
    ]


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"]
)
def test_reads_utf16_and_utf32_files(tmp_path: Path, encoding: str) -> None:
    # "utf-16" and "utf-32" write a byte order mark; "-le"/"-be" write none.
    key = keys.generate().text
    path = tmp_path / "export.txt"
    text = "".join(f"line {n}\r\n" for n in range(1, 3000)) + f"API_KEY={key}\r\n"
    path.write_bytes(text.encode(encoding))
    assert b"\0" in path.read_bytes()[:8192] or encoding == "utf-8-sig"
    assert [(f.line, f.redacted) for f in scan([str(path)])] == [(3000, redacted(key))]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_never_opens_a_named_pipe(tmp_path: Path) -> None:
    key = keys.generate().text
    os.mkfifo(tmp_path / "a.pipe")
    (tmp_path / "b.txt").write_text(key)
    notes: list[tuple[str, str]] = []
    result: list[Any] = []
    # In a thread: opening the pipe for reading would wait for a writer for ever.
    worker = threading.Thread(
        target=lambda: result.append(
            scan([str(tmp_path), str(tmp_path / "a.pipe")], lambda *n: notes.append(n))
        ),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "the scan blocked on a named pipe"
    ((finding,),) = result
    assert Path(finding.path).name == "b.txt"
    assert notes == [(str(tmp_path / "a.pipe"), "skipped, a named pipe")] * 2


def test_devices_are_not_read(tmp_path: Path) -> None:
    notes: list[tuple[str, str]] = []
    assert scan([os.devnull], lambda *n: notes.append(n)) == []
    assert notes == [(os.devnull, "skipped, a device")]
