"""Find committed keys of our format in files, for pre-commit hooks and CI.

A candidate must match the key pattern *and* carry a valid checksum, so
random strings of the right shape are not reported. Findings are shown
redacted: the scanner never prints a key it finds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from . import keys

CANDIDATE = re.compile(
    rf"(?<![0-9A-Za-z_])([a-z][a-z0-9]{{0,15}})_(live|test)_([0-9A-Za-z]{{{keys.BODY_LENGTH}}})"
    r"(?![0-9A-Za-z])"
)
SKIPPED_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox"}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    redacted: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.redacted}"


def find_in_line(line: str) -> Iterator[str]:
    """The redacted form of every real key in one line."""
    if "_live_" not in line and "_test_" not in line:
        return
    for match in CANDIDATE.finditer(line):
        parsed = keys.parse(match.group(0), match.group(1))
        if parsed is not None:
            yield keys.redact(parsed.prefix, parsed.environment, parsed.key_id, parsed.text[-4:])


def find_in_text(text: str) -> Iterator[tuple[int, str]]:
    """(line number, redacted key) for every real key in ``text``."""
    for number, line in enumerate(text.splitlines(), start=1):
        for redacted in find_in_line(line):
            yield number, redacted


def files_under(paths: Iterable[str]) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                candidate = Path(root, name)
                if not candidate.is_symlink():
                    yield candidate


def scan(paths: Iterable[str]) -> list[Finding]:
    """Every real key in the files under ``paths``, redacted."""
    findings = []
    for path in files_under(paths):
        try:
            with path.open("rb") as file:
                if b"\0" in file.read(8192):
                    continue  # binary
                file.seek(0)
                # Line by line: a key in a large dump is found as surely as
                # in a small file, without reading it whole.
                for number, raw in enumerate(file, start=1):
                    line = raw.decode("utf-8", errors="replace")
                    findings += [Finding(str(path), number, red) for red in find_in_line(line)]
        except OSError:
            continue
    return findings


def main(argv: list[str] | None = None) -> None:
    """``python -m flask_keyauth.scan PATH...``: the scan without a Flask app."""
    from .cli import scan_command

    scan_command.main(argv, prog_name="python -m flask_keyauth.scan")


if __name__ == "__main__":
    main()
