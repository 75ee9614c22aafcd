"""What the pages, the JSON API and the command line share: the session
owner, its person and role, CSRF, and the ``key=value`` form of metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from flask import request
from flask_wtf.csrf import generate_csrf, validate_csrf
from wtforms.validators import ValidationError as WTFValidationError

from ..decorators import get_state
from ..errors import CsrfFailed

#: Methods that change nothing and need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_owner() -> str | None:
    """The owner id of this browser session, from ``@keyauth.owner_loader``."""
    return get_state().extension.current_owner()


def session_actor(owner_id: str) -> str:
    """How the audit trail names a change made from a browser session: the
    person from ``@keyauth.actor_loader``, else ``session:<owner>``."""
    return get_state().extension.current_actor() or f"session:{owner_id}"


def session_may_change() -> bool:
    """Whether this browser session may change keys (not a viewer)."""
    return get_state().extension.current_role() == "manager"


def key_actor(key_id: str) -> str:
    """How the audit trail names a change made with an ``admin`` key."""
    return f"key:{key_id}"


def csrf_token() -> str:
    """The CSRF token for this session's forms and ``X-CSRFToken`` headers."""
    return str(generate_csrf())  # type: ignore[no-untyped-call]


def check_csrf() -> None:
    """Refuse a state-changing session request without a valid CSRF token.

    The token comes from the ``csrf_token`` form field or the
    ``X-CSRFToken`` header (Flask-WTF's). A request a browser marks as
    cross-site, or whose ``Origin`` is another site, is refused too.
    """
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        raise CsrfFailed("Cross-site requests cannot change API keys.")
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        parts = urlsplit(origin)
        if parts.netloc != request.host:
            raise CsrfFailed("Cross-site requests cannot change API keys.")
    token = request.headers.get("X-CSRFToken") or request.form.get("csrf_token")
    try:
        validate_csrf(token)  # type: ignore[no-untyped-call]
    except WTFValidationError as error:
        raise CsrfFailed(f"The CSRF token is missing or invalid: {error}") from None


def parse_labels(lines: Iterable[str]) -> dict[str, str]:
    """Metadata written as ``key=value`` lines (the key pages' text box, the
    command line's ``--metadata``): blank lines are skipped, the key and the
    value are trimmed. The service's ``check_metadata`` then applies its own
    rule (strings, 4 KiB); this only reads the notation.

    >>> parse_labels(["team = payments", "", "ticket=OPS-12"])
    {'team': 'payments', 'ticket': 'OPS-12'}
    """
    labels: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            continue
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals:
            raise ValueError(f"{line.strip()!r} has no '=': write each label as key=value")
        if not key:
            raise ValueError(f"{line.strip()!r} has no key before '='")
        if key in labels:
            raise ValueError(f"the key {key!r} is given twice")
        labels[key] = value.strip()
    return labels


def format_labels(labels: Mapping[str, str]) -> str | None:
    """``labels`` as ``key=value`` lines, or ``None`` when :func:`parse_labels`
    would not read them back as they are (a value on several lines, a key
    holding ``=``, spaces at either end): such metadata is changed through
    the JSON API only."""
    text = "\n".join(f"{key}={value}" for key, value in labels.items())
    try:
        same = parse_labels(text.split("\n")) == dict(labels)
    except ValueError:
        same = False
    return text if same else None
