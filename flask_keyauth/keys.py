"""The key format: generate, parse, checksum and redact keys.

A key reads ``{prefix}_{environment}_{body}``; the body is 50 base62
characters: a 12-character public id, a 32-character secret and a
6-character checksum (``zlib.crc32`` of everything before it, in base62).
The checksum lets a mistyped or made-up key be refused before any database
or argon2 work. This module has no Flask import on purpose.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass, field

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ENVIRONMENTS = ("live", "test")
ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
BODY_LENGTH = ID_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH
#: Longer than any key with the longest allowed prefix; anything longer is
#: refused before it is even matched against the pattern.
MAX_KEY_LENGTH = 128

PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{0,15}")


@dataclass(frozen=True)
class ParsedKey:
    """The parts of a well-formed key whose checksum matched."""

    prefix: str
    environment: str
    key_id: str
    # Kept out of repr: a parsed key may end up in a log line or a traceback.
    secret: str = field(repr=False)
    checksum: str

    @property
    def text(self) -> str:
        body = self.key_id + self.secret + self.checksum
        return f"{self.prefix}_{self.environment}_{body}"


def base62(number: int, width: int) -> str:
    """Write ``number`` in base62, most significant digit first, left-padded."""
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(ALPHABET[rest])
    return "".join(reversed(digits)).rjust(width, "0")


def random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def checksum(text: str) -> str:
    """The 6-character checksum of ``text`` (the key up to its checksum)."""
    return base62(zlib.crc32(text.encode("ascii")), CHECKSUM_LENGTH)


def check_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(
            f"key prefix {prefix!r} must be 1 to 16 lowercase letters or digits, "
            "starting with a letter"
        )
    return prefix


def generate(prefix: str = "sk", environment: str = "live") -> ParsedKey:
    """Make a new random key.

    >>> key = generate("sk", "test")
    >>> key.text.startswith("sk_test_") and len(key.text) == 58
    True
    """
    check_prefix(prefix)
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {', '.join(ENVIRONMENTS)}")
    key_id = random_base62(ID_LENGTH)
    secret = random_base62(SECRET_LENGTH)
    head = f"{prefix}_{environment}_{key_id}{secret}"
    return ParsedKey(prefix, environment, key_id, secret, checksum(head))


def pattern(prefix: str = "sk") -> re.Pattern[str]:
    """The regular expression a secret scanner can use for our keys."""
    return re.compile(
        rf"{re.escape(prefix)}_(live|test)_[0-9A-Za-z]{{{BODY_LENGTH}}}"
    )


_BODY = re.compile(rf"[0-9A-Za-z]{{{BODY_LENGTH}}}")


def parse(text: str, prefix: str = "sk") -> ParsedKey | None:
    """Split a presented key into its parts, or ``None`` when it is malformed.

    A key is malformed when it is too long, not of the pattern, or when its
    checksum does not match: a typo or an invented key costs no lookup.
    """
    if len(text) > MAX_KEY_LENGTH:
        return None
    head, sep, body = text.rpartition("_")
    if not sep or not _BODY.fullmatch(body):
        return None
    key_prefix, sep, environment = head.rpartition("_")
    if not sep or key_prefix != prefix or environment not in ENVIRONMENTS:
        return None
    key_id = body[:ID_LENGTH]
    secret = body[ID_LENGTH : ID_LENGTH + SECRET_LENGTH]
    given = body[ID_LENGTH + SECRET_LENGTH :]
    expected = checksum(text[: -CHECKSUM_LENGTH])
    # The checksum is not a secret, but comparing in constant time costs
    # nothing and keeps every comparison of key material alike.
    if not secrets.compare_digest(given, expected):
        return None
    return ParsedKey(prefix, environment, key_id, secret, given)


def redact(prefix: str, environment: str, key_id: str, last4: str) -> str:
    """The display form ``sk_live_<id>…<last 4>``."""
    return f"{prefix}_{environment}_{key_id}\u2026{last4}"
