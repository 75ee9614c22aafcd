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

:func:`scan_git` reads a repository's history instead: every line that any
commit reachable from any ref added, so a key committed and later deleted
is still found, with the commit that added it.
"""

from __future__ import annotations

import codecs
import io
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
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
    #: The key found; only its redacted form is ever shown.
    key: keys.ParsedKey = field(repr=False)
    #: The commit that added it, for a finding in git history.
    commit: str | None = None

    @property
    def redacted(self) -> str:
        key = self.key
        return keys.redact(key.prefix, key.environment, key.key_id, key.text[-4:])

    @property
    def where(self) -> str:
        """``path:line``, after ``commit:`` for a finding in history."""
        place = f"{self.path}:{self.line}"
        return f"{self.commit[:12]}:{place}" if self.commit else place

    def __str__(self) -> str:
        return f"{self.where}: {self.redacted}"


def _prefixes_before(line: str, end: int) -> Iterator[str]:
    """The prefixes that may end at ``end``: every tail of the run of
    prefix characters before it that starts with a letter, longest first."""
    start = end
    while start > 0 and end - start < PREFIX_MAX and line[start - 1] in PREFIX_CHARS:
        start -= 1
    for i in range(start, end):
        if line[i].isalpha():
            yield line[i:end]


def find_in_line(line: str) -> Iterator[keys.ParsedKey]:
    """Every real key in one line."""
    if "_live_" not in line and "_test_" not in line:
        return
    for match in ANCHOR.finditer(line):
        for prefix in _prefixes_before(line, match.start()):
            parsed = keys.parse(prefix + match.group(0), prefix)
            if parsed is not None:
                yield parsed
                break


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
                findings += [Finding(str(path), number, key) for key in find_in_line(line)]
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


class GitError(RuntimeError):
    """``git`` is missing, or the folder is not a repository it can read."""


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def _unquote(path: str) -> str:
    """A path as git prints it: C-quoted when it holds unusual characters."""
    if len(path) >= 2 and path[0] == path[-1] == '"':
        raw = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        return raw.encode("latin-1", "replace").decode("utf-8", "replace")
    return path


def _added_lines(lines: Iterable[str]) -> Iterator[tuple[str, str, int, str]]:
    """(commit, path, line number, text) of every added line of a
    ``git log -p`` whose commit headers are ``commit <sha>``.

    Inside a hunk, its header's line counts say which lines belong to it,
    so an added line that itself reads like a header (``++ x`` shows as
    ``+++ x``) is still content.
    """
    commit = path = ""
    number = old = new = 0
    for raw in lines:
        line = raw.rstrip("\n")
        if old > 0 or new > 0:
            if line.startswith("+"):
                if path:
                    yield commit, path, number, line[1:]
                number, new = number + 1, new - 1
            elif line.startswith("-"):
                old -= 1
            elif line.startswith(" "):
                number, old, new = number + 1, old - 1, new - 1
            continue  # "\ No newline at end of file" counts as nothing
        if line.startswith("commit "):
            commit, path = line[7:].strip(), ""
        elif line.startswith("+++ "):
            # git ends a path holding a space with a tab, to tell it apart.
            target = line[4:].rstrip("\t")
            path = "" if target == "/dev/null" else _unquote(target)[2:]
        elif line.startswith("@@") and (hunk := _HUNK.match(line)):
            old = int(hunk.group(1) or 1)
            number, new = int(hunk.group(2)), int(hunk.group(3) or 1)


def scan_git(repository: str) -> list[Finding]:
    """Every real key that a commit reachable from any ref of
    ``repository`` added, with the commit, path and line.

    Each key is reported where it was added, even when a later commit
    deleted it: what was pushed once stays in the history. Binary files are
    not read, as in :func:`scan`.
    """
    command = [
        "git", "-C", repository, "-c", "core.quotePath=true", "log", "--all",
        "--format=commit %H", "-p", "--no-color", "--no-ext-diff", "--no-textconv",
        "--no-renames", "--unified=0",
    ]  # fmt: skip
    try:
        process = subprocess.Popen(  # noqa: S603 - a fixed command, no shell
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "GIT_PAGER": "cat", "LC_ALL": "C"},
        )
    except OSError as error:
        raise GitError(f"git could not be run: {error.strerror or error}") from None
    findings = []
    with process:
        assert process.stdout is not None and process.stderr is not None
        out = io.TextIOWrapper(process.stdout, encoding="utf-8", errors="replace")
        for commit, path, number, text in _added_lines(out):
            findings += [Finding(path, number, key, commit) for key in find_in_line(text)]
        said = process.stderr.read().decode("utf-8", "replace").strip()
    if process.returncode != 0:
        reason = said.splitlines()[-1] if said else "git log failed"
        raise GitError(f"{repository} could not be read as a git repository: {reason}")
    return findings


def main(argv: list[str] | None = None) -> None:
    """``python -m flask_keyauth.scan PATH...``: the scan without a Flask app."""
    from .cli import scan_command

    scan_command.main(argv, prog_name="python -m flask_keyauth.scan")


if __name__ == "__main__":
    main()
