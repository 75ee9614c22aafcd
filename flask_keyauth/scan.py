"""Find committed keys of our format in files, for pre-commit hooks and CI.

A candidate is whatever the documented pattern
``<prefix>_(live|test)_[0-9A-Za-z]{50}`` matches, wherever it stands (glued
to ``%20``, ``%3D``, an escaped ``\\n`` or another word), and it is reported
only when its checksum is valid, so random strings of the right shape are
not. Every prefix a deployment may configure is looked for. Findings are
shown redacted: the scanner never prints a key it finds.

Files are read as UTF-8, or as UTF-16/UTF-32 when they start with a byte
order mark or look like UTF-16 text; other files holding NUL bytes are
binary and skipped, and so are named pipes, devices and sockets, which are
never opened.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import keys

#: The part of the documented pattern after the prefix; the prefix is found
#: by looking back from it, so a word glued in front cannot hide a key.
ANCHOR = re.compile(rf"_(live|test)_[0-9A-Za-z]{{{keys.BODY_LENGTH}}}")
#: Characters a prefix may hold, the longest prefix ``check_prefix`` allows.
PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
PREFIX_MAX = 16
SKIPPED_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox"}
#: How much of a file decides its encoding (and whether it is binary).
SAMPLE_SIZE = 8192
#: Byte order marks, the four-byte ones first (UTF-32-LE's starts like UTF-16-LE's).
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

Note = Callable[[str, str], None]


def _ignore(path: str, reason: str) -> None:
    """Notes go nowhere unless the caller asks for them."""


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    redacted: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.redacted}"


def _prefixes_before(line: str, end: int) -> Iterator[str]:
    """The prefixes that may end at ``end``: every tail of the run of
    prefix characters before it that starts with a letter, longest first."""
    start = end
    while start > 0 and end - start < PREFIX_MAX and line[start - 1] in PREFIX_CHARS:
        start -= 1
    for i in range(start, end):
        if line[i].isalpha():
            yield line[i:end]


def find_in_line(line: str) -> Iterator[str]:
    """The redacted form of every real key in one line."""
    if "_live_" not in line and "_test_" not in line:
        return
    for match in ANCHOR.finditer(line):
        for prefix in _prefixes_before(line, match.start()):
            parsed = keys.parse(prefix + match.group(0), prefix)
            if parsed is not None:
                yield keys.redact(
                    parsed.prefix, parsed.environment, parsed.key_id, parsed.text[-4:]
                )
                break


def find_in_text(text: str) -> Iterator[tuple[int, str]]:
    """(line number, redacted key) for every real key in ``text``."""
    for number, line in enumerate(text.split("\n"), start=1):
        for redacted in find_in_line(line):
            yield number, redacted


def encoding_of(sample: bytes) -> str | None:
    """The codec to read a file that starts with ``sample``, or ``None``
    when it is binary."""
    for bom, codec in BOMS:
        if sample.startswith(bom):
            return codec
    if b"\0" not in sample:
        return "utf-8"
    # Without a byte order mark, UTF-16 text of mostly ASCII characters (a
    # key is ASCII) has a NUL in every other byte and nowhere else.
    even, odd = sample[0::2], sample[1::2]
    if odd.count(0) * 2 >= len(odd) and even.count(0) * 100 <= len(even):
        return "utf-16-le"
    if even.count(0) * 2 >= len(even) and odd.count(0) * 100 <= len(odd):
        return "utf-16-be"
    return None


def files_under(paths: Iterable[str], note: Note = _ignore) -> Iterator[Path]:
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            yield path  # named on the command line: read it, or say why not
            continue

        def unreadable(error: OSError) -> None:
            note(str(error.filename), f"skipped, {error.strerror or error}")

        for root, dirs, files in os.walk(path, onerror=unreadable):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            for name in sorted(files):
                candidate = Path(root, name)
                if not candidate.is_symlink():
                    yield candidate


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _open_regular(path: Path, note: Note) -> BinaryIO | None:
    """``path`` opened for reading, or ``None`` (with a note) when it is not
    a regular file. Nothing else is opened: reading a named pipe would wait
    for a writer for ever, and opening some devices has effects."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            note(str(path), f"skipped, {_kind(mode)}")
            return None
        # Non-blocking, and checked again once open: the path may have been
        # replaced by a pipe in between.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        note(str(path), f"skipped, {error.strerror or error}")
        return None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        note(str(path), f"skipped, {_kind(mode)}")
        return None
    return os.fdopen(fd, "rb")


def _scan_file(path: Path, note: Note) -> list[Finding]:
    file = _open_regular(path, note)
    if file is None:
        return []
    findings = []
    try:
        encoding = encoding_of(file.read(SAMPLE_SIZE))
        if encoding is None:
            file.close()
            return []  # binary
        file.seek(0)
        # Line by line: a key in a large dump is found as surely as in a
        # small file, without reading it whole. Lines end at "\n" only, as
        # editors and grep count them.
        with io.TextIOWrapper(file, encoding=encoding, errors="replace", newline="\n") as text:
            for number, line in enumerate(text, start=1):
                findings += [Finding(str(path), number, red) for red in find_in_line(line)]
    except OSError as error:
        note(str(path), f"could not be read to the end: {error.strerror or error}")
    finally:
        file.close()
    return findings


def scan(paths: Iterable[str], note: Note = _ignore) -> list[Finding]:
    """Every real key in the files under ``paths``, redacted.

    ``note(path, reason)`` hears about each file that was skipped (not a
    regular file, unreadable) so a command can say so.
    """
    findings = []
    for path in files_under(paths, note):
        findings += _scan_file(path, note)
    return findings


def main(argv: list[str] | None = None) -> None:
    """``python -m flask_keyauth.scan PATH...``: the scan without a Flask app."""
    from .cli import scan_command

    scan_command.main(argv, prog_name="python -m flask_keyauth.scan")


if __name__ == "__main__":
    main()
