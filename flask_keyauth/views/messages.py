"""What the key pages say when the service refuses a value, or a request
fails, in the pages' language.

The rules stay in the service (``check_description``, ``check_metadata``,
``check_allowed_ips``, ``check_limits``, ``check_expiry``...): their
``ValueError`` sentences are the JSON API's, in English. The pages read
each known sentence once, here, and say it again through the catalogue
with the same values; a sentence this table does not know is shown as the
service wrote it. ``tests/test_i18n.py`` makes every checker refuse a value
and asserts that its sentence is known here, so a changed wording fails a
test instead of going untranslated.
"""

from __future__ import annotations

import re

from ..errors import KeyAuthError
from ..i18n import N_, gettext

#: A service sentence (matched whole) -> the pages' message, whose
#: ``%(name)s`` are the pattern's named groups.
SERVICE_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), message)
    for pattern, message in (
        (
            r"description must be at most (?P<max>\d+) characters",
            N_("Description must be at most %(max)s characters."),
        ),
        (
            r"description must not contain NUL characters or lone surrogates",
            N_("Description must not contain NUL characters or lone surrogates."),
        ),
        (
            r"name must not contain NUL characters or lone surrogates",
            N_("The name must not contain NUL characters or lone surrogates."),
        ),
        (
            r"(?P<line>.+) has no '=': write each label as key=value",
            N_("%(line)s has no '=': write each label as key=value."),
        ),
        (r"(?P<line>.+) has no key before '='", N_("%(line)s has no key before '='.")),
        (r"the key (?P<key>.+) is given twice", N_("The key %(key)s is given twice.")),
        (
            r"metadata must be at most (?P<max>\d+) bytes as JSON",
            N_("Metadata must be at most %(max)s bytes as JSON."),
        ),
        (
            r"allowed_ips: (?P<entry>.+) is not an address or CIDR block",
            N_("%(entry)s is not an address or CIDR block."),
        ),
        (
            r"allowed_ips holds at most (?P<max>\d+) entries",
            N_("The list of addresses holds at most %(max)s entries."),
        ),
        (
            r"(?P<text>.+): rate, period and burst must be at least 1",
            N_("%(text)s: rate, period and burst must be at least 1."),
        ),
        (
            r"limit (?P<text>.+) cannot be parsed: give one such as '100/hour' or "
            r"'200/second burst 500'",
            N_(
                "Limit %(text)s cannot be parsed: give one such as '100/hour' or "
                "'200/second burst 500'."
            ),
        ),
        (
            r"(?P<text>.+): a limit allows at least 1 request",
            N_("%(text)s: a limit allows at least 1 request."),
        ),
        (
            r"limits must be at most (?P<max>\d+) characters",
            N_("Limits must be at most %(max)s characters."),
        ),
        (
            r"give at most (?P<max>\d+) limits, not (?P<count>\d+)",
            N_("Give at most %(max)s limits, not %(count)s."),
        ),
        (
            r"limits with a burst need a memory:// or Redis limiter storage "
            r"with the fixed-window strategy",
            N_(
                "Limits with a burst need a memory:// or Redis limiter storage "
                "with the fixed-window strategy."
            ),
        ),
        (r"expires_at must be in the future", N_("The expiry must be in the future.")),
        (
            r"expires_at must be within (?P<days>\d+) days \(KEYAUTH_MAX_LIFETIME_DAYS\)",
            N_("Keys expire within %(days)s days here: choose an earlier expiry."),
        ),
        (
            r"owner .+ already holds (?P<held>\d+) keys, the most allowed "
            r"\(KEYAUTH_MAX_KEYS_PER_OWNER\); revoke one first",
            N_("This account already holds %(held)s keys, the most allowed: revoke one first."),
        ),
    )
)


def known_message(text: str) -> str | None:
    """The pages' message for a service sentence, if this table knows it."""
    for pattern, message in SERVICE_MESSAGES:
        match = pattern.fullmatch(text)
        if match is not None:
            return gettext(message, **match.groupdict())
    return None


def sentence(error: Exception) -> str:
    """A checker's refusal as a form shows it: the pages' message when the
    table knows it, else the service's own sentence, capitalised, with a
    full stop and the allowed addresses named in words."""
    text = str(error)
    known = known_message(text)
    if known is not None:
        return known
    text = text.replace("allowed_ips: ", "").replace("allowed_ips", "the list of addresses")
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else f"{text}."


#: Error codes of the extension -> the error page's title and message (the
#: JSON API's own messages stay English).
PAGE_ERRORS: dict[str, tuple[str, str]] = {
    "CSRF_FAILED": (
        N_("Request refused"),
        N_(
            "This form has expired or was sent from another site, so nothing was changed. "
            "Go back, reload the page and try again."
        ),
    ),
    "SERVICE_UNAVAILABLE": (
        N_("Temporarily unavailable"),
        N_("The service is temporarily unavailable. Try again shortly."),
    ),
    "PAYLOAD_TOO_LARGE": (N_("Request refused"), N_("The form sent too much data.")),
    "KEY_LIMIT_REACHED": (
        N_("Too many keys"),
        N_("This account holds as many API keys as it may; revoke one first."),
    ),
    "HTTPS_REQUIRED": (
        N_("HTTPS required"),
        N_("These pages are served over HTTPS only. Open them with an https:// address."),
    ),
}


def page_error_text(error: KeyAuthError) -> tuple[str, str]:
    """The error page's title and message for one of the extension's errors."""
    title, message = PAGE_ERRORS.get(error.code_name, ("", ""))
    if not title:
        title = N_("Request refused") if error.status == 400 else N_("Something went wrong")
        message = N_("The request could not be served.")
    return gettext(title), gettext(message)
