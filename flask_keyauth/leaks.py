"""Leaked-key reports: GitHub's secret scanning partner messages.

GitHub scans public repositories (and npm packages) for our key pattern and
posts what it finds to the issuer: a JSON list of ``{"token", "type",
"url", "source"}`` whose raw bytes are signed with ECDSA P-256 / SHA-256.
The signature (base64 DER) comes in ``Github-Public-Key-Signature``, the
id of the signing key in ``Github-Public-Key-Identifier``; GitHub publishes
its public keys at https://api.github.com/meta/public_keys/secret_scanning.

This module checks signatures and reads the message. What a reported key
means for the key store (revoke, signal, audit trail) is the service's
:meth:`~flask_keyauth.service.KeyService.report_leak`. No Flask here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

#: The request headers of a GitHub report.
KEY_ID_HEADER = "Github-Public-Key-Identifier"
SIGNATURE_HEADER = "Github-Public-Key-Signature"
#: The largest report read. GitHub batches matches, each well under 1 KiB.
BODY_MAX = 512 * 1024
#: The most matches one report may carry.
MATCHES_MAX = 1000
#: Longer strings in a match are refused (a URL of GitHub's is far shorter).
FIELD_MAX = 2048
#: ``KEYAUTH_LEAK_ACTION`` values.
ACTIONS = ("revoke", "notify")


class ReportError(ValueError):
    """A report that cannot be read; the message never holds a token."""


@dataclass(frozen=True)
class Match:
    """One reported string: maybe one of our keys, maybe not."""

    # Kept out of repr: a reported token may be a live key.
    token: str = field(repr=False)
    type: str
    url: str
    source: str


def load_public_keys(keys: Mapping[Any, Any]) -> dict[str, ec.EllipticCurvePublicKey]:
    """Key id -> public key, from a mapping of key id -> PEM text.

    Raises ``ValueError`` naming the key id that is not an ECDSA P-256
    public key in PEM.
    """
    loaded = {}
    for key_id, pem in keys.items():
        if not isinstance(key_id, str) or not key_id or not isinstance(pem, (str, bytes)):
            raise ValueError(f"entry {key_id!r} must map a key id to PEM text")
        try:
            public_key = load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
        except (ValueError, TypeError):
            raise ValueError(f"key {key_id!r} is not a PEM public key") from None
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise ValueError(f"key {key_id!r} is not an ECDSA P-256 public key")
        loaded[key_id] = public_key
    return loaded


def keys_from_github(document: Mapping[str, Any]) -> dict[str, str]:
    """``KEYAUTH_LEAK_REPORT_KEYS`` from GitHub's published key document.

    ``document`` is the JSON of
    https://api.github.com/meta/public_keys/secret_scanning, fetched by the
    host (``{"public_keys": [{"key_identifier", "key", "is_current"}]}``).
    Every key is kept, current or not: GitHub may still sign with an older
    one for a while after it rotates.

    >>> keys_from_github({"public_keys": [{"key_identifier": "abc", "key": "PEM"}]})
    {'abc': 'PEM'}
    """
    entries = document.get("public_keys")
    if not isinstance(entries, list):
        raise ValueError("the document has no 'public_keys' list")
    return {str(entry["key_identifier"]): str(entry["key"]) for entry in entries}


def verify(
    body: bytes,
    key_id: str | None,
    signature: str | None,
    public_keys: Mapping[str, ec.EllipticCurvePublicKey],
) -> bool:
    """Whether ``signature`` is the signature of ``body`` by the key ``key_id``."""
    if not key_id or not signature:
        return False
    public_key = public_keys.get(key_id)
    if public_key is None:
        return False
    try:
        der = base64.b64decode(signature, validate=True)
        public_key.verify(der, body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def _text(entry: Mapping[str, Any], name: str, index: int, required: bool) -> str:
    value = entry.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > FIELD_MAX:
        raise ReportError(f"match {index}: '{name}' must be a string of at most {FIELD_MAX}")
    return value


def read_report(body: bytes) -> list[Match]:
    """The matches of a report body; ``ReportError`` when it is not one."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ReportError("the body is not JSON") from None
    if not isinstance(data, list):
        raise ReportError("the body must be a JSON list of matches")
    if len(data) > MATCHES_MAX:
        raise ReportError(f"a report holds at most {MATCHES_MAX} matches")
    matches = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ReportError(f"match {index} must be an object")
        matches.append(
            Match(
                token=_text(entry, "token", index, True),
                type=_text(entry, "type", index, False),
                url=_text(entry, "url", index, False),
                source=_text(entry, "source", index, False),
            )
        )
    return matches
