"""The JSON API of the blueprint: key management, usage, events, whoami.

Key management answers to the browser session's owner (state changes need
the CSRF token in ``X-CSRFToken``) or to a key holding ``admin``, which
manages its own owner's keys only. When a request presents a key, the key
decides, session or not. Every error is the one JSON envelope of
:mod:`flask_keyauth.errors`; bad input is a 4xx that changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from flask import current_app, g, request, url_for
from flask.typing import ResponseReturnValue
from flask.wrappers import Response
from werkzeug.exceptions import InternalServerError, RequestEntityTooLarge

from .. import keys, leaks
from ..decorators import authorize, extract_key, get_state, render_error
from ..errors import (
    InsufficientScope,
    InvalidApiKey,
    InvalidSignature,
    KeyAuthError,
    KeyLimitReachedError,
    KeyNotFound,
    KeyNotFoundError,
    MissingApiKey,
    PayloadTooLarge,
    ValidationError,
)
from ..models import NAME_MAX, UTC, ApiKeyInfo
from ..service import (
    USAGE_DAYS_MAX,
    KeyLimitReached,
    check_allowed_ips,
    check_description,
    check_metadata,
    is_plain_text,
)
from ..store import is_unavailable, unavailable
from . import blueprint
from .common import (
    SAFE_METHODS,
    check_csrf,
    key_actor,
    session_actor,
    session_may_change,
    session_owner,
)

#: Who the audit trail names for what a GitHub report did.
LEAK_ACTOR = "github"
#: The scope a key needs to manage its owner's keys.
MANAGE_SCOPE = "admin"
#: The largest request body the API reads (the app's ``MAX_CONTENT_LENGTH``
#: lowers it). Every valid body is far smaller.
BODY_MAX = 16 * 1024
#: The longest ``expires_in_days`` accepted: ten years.
EXPIRES_IN_DAYS_MAX = 3650
#: ``grace_seconds`` of a rotation when the body names none: one day.
DEFAULT_GRACE_SECONDS = 86400
#: The longest grace a rotation may give the old key: one year.
GRACE_SECONDS_MAX = 365 * 86400
#: ``days`` of a usage history when the query names none.
DEFAULT_USAGE_DAYS = 30
#: Longest ``expires_at`` text read; any valid timestamp is shorter.
TIMESTAMP_MAX = 64

#: The fields each request body may carry; anything else is a 400.
#: Fields whose rule is the service's own (its checker's ValueError is a 400).
OPTIONAL_FIELDS = ("limits", "description", "metadata", "allowed_ips")
CREATE_FIELDS = frozenset(
    {"name", "scopes", "environment", "expires_at", "expires_in_days", *OPTIONAL_FIELDS}
)
UPDATE_FIELDS = frozenset({"name", "expires_at", *OPTIONAL_FIELDS})
ROTATE_FIELDS = frozenset({"grace_seconds", "expires_at", "expires_in_days"})

#: Local endpoint names of the JSON API (the pages have others).
API_ENDPOINTS = frozenset(
    {
        "api_list_keys",
        "api_create_key",
        "api_get_key",
        "api_update_key",
        "api_revoke_key",
        "api_rotate_key",
        "api_disable_key",
        "api_enable_key",
        "api_key_usage",
        "api_events",
        "api_whoami",
        "api_openapi",
        "api_leaks_github",
    }
)

_KEY_ID = re.compile(rf"[0-9A-Za-z]{{{keys.ID_LENGTH}}}", re.ASCII)
_DAYS = re.compile(r"[0-9]{1,3}", re.ASCII)
# ISO 8601 as APIs write it (RFC 3339 and its relatives): a date, optionally
# a time, optionally ``Z`` or an offset. Parsed here rather than with
# ``datetime.fromisoformat``, whose accepted forms differ between Pythons.
_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<zone>[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?",
    re.ASCII,
)
_MISSING: Any = object()


# -- who is calling -------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Whose keys this request manages, and how the audit trail names it."""

    owner_id: str
    actor: str
    #: The admin key managing, or ``None`` for a browser session.
    key: ApiKeyInfo | None = None

    def may_hand_out(self, scopes: frozenset[str], environment: str) -> None:
        """An admin key hands out no more than it holds: scopes it holds
        itself (expanded), in its own environment (403 otherwise)."""
        if self.key is None:
            return
        if environment != self.key.environment:
            raise InsufficientScope(
                f"A {self.key.environment} key cannot manage {environment} keys.",
                details={"required_scopes": sorted(scopes)},
            )
        missing = scopes - self.key.scopes
        if missing:
            raise InsufficientScope(
                "An admin key cannot hand out scopes it does not hold: "
                + ", ".join(sorted(missing)),
                details={"required_scopes": sorted(scopes)},
            )


def _presents_key() -> bool:
    try:
        return extract_key(request.headers, get_state().settings.header_names) is not None
    except InvalidApiKey:
        return True  # two different keys: a key was presented, and is refused


def manager() -> Caller:
    """Authenticate a key-management request.

    A presented key must be valid (401), is counted against its owner's
    plan (429), then must hold ``admin`` (403), as in ``require_key``.
    Without a key, the session owner manages; a state change must then
    pass the CSRF check. A body over the cap is refused (413) before the
    CSRF check and before anything parses it.
    """
    state = get_state()
    if _presents_key():
        auth = authorize(
            frozenset({MANAGE_SCOPE}),
            1,
            f"Managing API keys needs a key with the '{MANAGE_SCOPE}' scope.",
        )
        if request.method not in SAFE_METHODS:
            _read_body()
        return Caller(auth.key.owner_id, key_actor(auth.key.id), auth.key)
    owner = session_owner()
    if owner is None:
        forms = " or ".join(
            f"'{name}: Bearer <key>'" if name.lower() == "authorization" else f"'{name}: <key>'"
            for name in state.settings.header_names
        )
        raise MissingApiKey(f"Sign in, or send a key with the '{MANAGE_SCOPE}' scope as {forms}.")
    if request.method not in SAFE_METHODS:
        _read_body()
        check_csrf()
        if not session_may_change():
            # The same body as a key without the scope to change keys.
            raise InsufficientScope(
                "A viewer cannot change API keys.", details={"required_scopes": [MANAGE_SCOPE]}
            )
    return Caller(owner, session_actor(owner))


def _owned_key(caller: Caller, key_id: str) -> ApiKeyInfo:
    """The caller's key ``key_id``; another owner's key is as unknown as none."""
    if not _KEY_ID.fullmatch(key_id):
        raise KeyNotFoundError()
    try:
        info = get_state().service.get_key(key_id)
    except KeyNotFound:
        raise KeyNotFoundError() from None
    if info.owner_id != caller.owner_id:
        raise KeyNotFoundError()
    return info


# -- reading the body -----------------------------------------------------


def body_cap(largest: int = BODY_MAX) -> int:
    """The largest body the API reads: ``largest`` or ``MAX_CONTENT_LENGTH``."""
    configured = current_app.config.get("MAX_CONTENT_LENGTH")
    if isinstance(configured, int) and not isinstance(configured, bool) and configured >= 0:
        return min(largest, configured)
    return largest


def _too_large(cap: int) -> NoReturn:
    raise PayloadTooLarge(
        f"The request body is larger than {cap} bytes.", details={"max_bytes": cap}
    )


def _read_body(largest: int = BODY_MAX) -> bytes:
    """The raw body, read once and at most ``body_cap(largest)`` bytes of it."""
    cached: bytes | None = g.get("_keyauth_api_body")
    if cached is not None:
        return cached
    cap = body_cap(largest)
    length = request.content_length
    if length is not None and length > cap:
        _too_large(cap)
    chunks: list[bytes] = []
    total = 0
    try:
        # A chunked body has no length to check up front: read a byte more
        # than allowed to know it is too long, never the whole of it.
        while total <= cap:
            chunk = request.stream.read(cap + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except RequestEntityTooLarge:
        _too_large(cap)
    if total > cap:
        _too_large(cap)
    data = b"".join(chunks)
    g._keyauth_api_body = data  # noqa: SLF001 - our namespaced name on g
    return data


def _invalid(fields: Mapping[str, str]) -> ValidationError:
    name, problem = next(iter(fields.items()))
    more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
    return ValidationError(f"Invalid '{name}': {problem}{more}.", details={"fields": dict(fields)})


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def json_body(allowed: frozenset[str]) -> dict[str, Any]:
    """The body as a JSON object with no field outside ``allowed``.

    An empty body is an empty object.
    """
    data = _read_body()
    if not data.strip():
        return {}
    if request.mimetype and not _is_json(request.mimetype):
        raise _invalid({"body": "send a JSON object with 'Content-Type: application/json'"})
    try:
        value = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise _invalid({"body": "the body is not valid JSON"}) from None
    if not isinstance(value, dict):
        raise _invalid({"body": "the body must be a JSON object"})
    unknown = sorted(set(value) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise _invalid({name: f"unknown field; known fields: {known}" for name in unknown})
    return value


# -- checking fields ------------------------------------------------------


def _name(value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid({"name": "must be a string"})
    if not value.strip():
        raise _invalid({"name": "must not be blank"})
    if len(value) > NAME_MAX:
        raise _invalid({"name": f"must be at most {NAME_MAX} characters, not {len(value)}"})
    if not is_plain_text(value):
        raise _invalid({"name": "must not contain control characters"})
    return value


def _scopes(value: Any) -> list[str]:
    known = get_state().settings.scopes
    names = ", ".join(sorted(known))
    if not isinstance(value, list) or not value:
        raise _invalid({"scopes": f"must be a non-empty list of scope names ({names})"})
    for scope in value:
        if not isinstance(scope, str) or scope not in known:
            raise _invalid({"scopes": f"unknown scope; known scopes: {names}"})
    return sorted(set(value))


def _optional(body: Mapping[str, Any]) -> dict[str, Any]:
    """The optional fields given, each checked by the service's own rule
    (``null`` clears it)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "limits": get_state().service.check_limits,
        "description": check_description,
        "metadata": check_metadata,
        "allowed_ips": check_allowed_ips,
    }
    given = {}
    for field in OPTIONAL_FIELDS:
        if field in body:
            value = body[field]
            if value is not None and field == "allowed_ips" and not isinstance(value, list):
                raise _invalid({field: "must be a list of addresses or CIDR blocks"})
            try:
                checks[field](value) if value is not None else None
            except (ValueError, TypeError) as error:
                raise _invalid({field: str(error)}) from None
            given[field] = value
    return given


def _environment(value: Any) -> str:
    if value not in keys.ENVIRONMENTS:
        raise _invalid({"environment": "must be 'live' or 'test'"})
    return str(value)


def parse_timestamp(text: str) -> dt.datetime | None:
    """An ISO 8601 date or date-time as aware UTC; naive is UTC; ``None`` if invalid.

    >>> parse_timestamp("2030-01-15T10:00:00+01:00")
    datetime.datetime(2030, 1, 15, 9, 0, tzinfo=datetime.timezone.utc)
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    parts = match.groupdict()
    zone = parts["zone"]
    try:
        tz: dt.tzinfo = UTC
        if zone and zone not in "Zz":
            digits = zone[1:].replace(":", "")
            if int(digits[2:]) > 59:
                return None
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            tz = dt.timezone(-offset if zone[0] == "-" else offset)
        fraction = (parts["fraction"] or "")[:6].ljust(6, "0")
        value = dt.datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction),
            tzinfo=tz,
        )
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _future(value: dt.datetime, field: str) -> dt.datetime:
    if value <= get_state().service.clock():
        raise _invalid({field: "must be in the future"})
    return value


def _expiry(body: Mapping[str, Any]) -> dt.datetime | None | Any:
    """The expiry a body asks for: a datetime, ``None`` (never), or ``_MISSING``."""
    if "expires_at" in body and "expires_in_days" in body:
        raise _invalid({"expires_in_days": "give expires_at or expires_in_days, not both"})
    if "expires_in_days" in body:
        days = body["expires_in_days"]
        if isinstance(days, bool) or not isinstance(days, int):
            raise _invalid({"expires_in_days": "must be a whole number of days"})
        if not 1 <= days <= EXPIRES_IN_DAYS_MAX:
            raise _invalid({"expires_in_days": f"must be from 1 to {EXPIRES_IN_DAYS_MAX}"})
        return get_state().service.clock() + dt.timedelta(days=days)
    if "expires_at" not in body:
        return _MISSING
    value = body["expires_at"]
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid({"expires_at": "must be an ISO 8601 timestamp or null"})
    parsed = parse_timestamp(value) if len(value) <= TIMESTAMP_MAX else None
    if parsed is None:
        raise _invalid({"expires_at": "must be an ISO 8601 timestamp such as 2030-01-15T10:00:00Z"})
    return _future(parsed, "expires_at")


def _grace(body: Mapping[str, Any]) -> dt.timedelta:
    seconds = body.get("grace_seconds", DEFAULT_GRACE_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise _invalid({"grace_seconds": "must be a whole number of seconds"})
    if seconds < 0:
        raise _invalid({"grace_seconds": "must not be negative (0 revokes the key now)"})
    if seconds > GRACE_SECONDS_MAX:
        raise _invalid({"grace_seconds": f"must be at most {GRACE_SECONDS_MAX} (one year)"})
    return dt.timedelta(seconds=seconds)


T = TypeVar("T")


def _service_call(field: str, call: Callable[[], T]) -> T:
    """Run a service call; its ``ValueError`` (a state the request cannot
    change, such as a revoked key) becomes a 400 on ``field``."""
    try:
        return call()
    except KeyLimitReached as error:
        raise KeyLimitReachedError(str(error)) from None
    except ValueError as error:
        raise _invalid({field: str(error)}) from None


# -- responses ------------------------------------------------------------


def _reply(body: dict[str, Any] | list[Any], status: int = 200) -> Response:
    response = current_app.response_class(current_app.json.dumps(body), mimetype="application/json")
    response.status_code = status
    # Key lists, usage and secrets are private to one owner: no cache keeps them.
    response.headers["Cache-Control"] = "no-store"
    return response


# -- routes ---------------------------------------------------------------


@blueprint.get("/api/keys", endpoint="api_list_keys")
def list_keys() -> ResponseReturnValue:
    """The owner's keys, newest first, revoked ones included."""
    caller = manager()
    infos = get_state().service.list_keys(caller.owner_id)
    return _reply({"keys": [info.to_dict() for info in infos]})


@blueprint.post("/api/keys", endpoint="api_create_key")
def create_key() -> ResponseReturnValue:
    """Create a key; the only response that ever carries its secret."""
    caller = manager()
    body = json_body(CREATE_FIELDS)
    if "name" not in body:
        raise _invalid({"name": "is required"})
    name = _name(body["name"])
    scopes = _scopes(body["scopes"]) if "scopes" in body else ["read"]
    environment = _environment(body["environment"]) if "environment" in body else "live"
    expires_at = _expiry(body)
    optional = _optional(body)
    state = get_state()
    caller.may_hand_out(state.settings.expand(tuple(scopes)), environment)
    info, secret = _service_call(
        "body",
        lambda: state.service.create_key(
            caller.owner_id,
            name,
            scopes,
            environment,
            None if expires_at is _MISSING else expires_at,
            actor=caller.actor,
            **optional,
            remote_addr=request.remote_addr,
        ),
    )
    return _reply({"key": info.to_dict(), "secret": secret}, 201)


@blueprint.get("/api/keys/<key_id>", endpoint="api_get_key")
def get_key(key_id: str) -> ResponseReturnValue:
    """One of the owner's keys."""
    caller = manager()
    return _reply({"key": _owned_key(caller, key_id).to_dict()})


@blueprint.patch("/api/keys/<key_id>", endpoint="api_update_key")
def update_key(key_id: str) -> ResponseReturnValue:
    """Rename a key or change its expiry (``null`` clears it)."""
    caller = manager()
    body = json_body(UPDATE_FIELDS)
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _name(body["name"])
    expires_at = _expiry(body)
    if expires_at is not _MISSING:
        changes["expires_at"] = expires_at
    changes.update(_optional(body))
    _owned_key(caller, key_id)
    info = _service_call(
        "key_id",
        lambda: get_state().service.update_key(
            key_id, actor=caller.actor, remote_addr=request.remote_addr, **changes
        ),
    )
    return _reply({"key": info.to_dict()})


@blueprint.delete("/api/keys/<key_id>", endpoint="api_revoke_key")
def revoke_key(key_id: str) -> ResponseReturnValue:
    """Revoke a key at once; revoking a revoked key returns it unchanged."""
    caller = manager()
    _owned_key(caller, key_id)
    info = get_state().service.revoke_key(
        key_id, actor=caller.actor, remote_addr=request.remote_addr
    )
    return _reply({"key": info.to_dict()})


@blueprint.post("/api/keys/<key_id>/disable", endpoint="api_disable_key")
def disable_key(key_id: str) -> ResponseReturnValue:
    """Switch a key off until it is enabled again (401 in the meantime)."""
    return _switch(key_id, off=True)


@blueprint.post("/api/keys/<key_id>/enable", endpoint="api_enable_key")
def enable_key(key_id: str) -> ResponseReturnValue:
    """Switch a disabled key back on."""
    return _switch(key_id, off=False)


def _switch(key_id: str, off: bool) -> ResponseReturnValue:
    caller = manager()
    json_body(frozenset())
    _owned_key(caller, key_id)
    service = get_state().service
    switch = service.disable_key if off else service.enable_key
    info = _service_call(
        "key_id", lambda: switch(key_id, actor=caller.actor, remote_addr=request.remote_addr)
    )
    return _reply({"key": info.to_dict()})


@blueprint.post("/api/keys/<key_id>/rotate", endpoint="api_rotate_key")
def rotate_key(key_id: str) -> ResponseReturnValue:
    """Replace a key; the old one works for ``grace_seconds`` more (0: revoked now)."""
    caller = manager()
    body = json_body(ROTATE_FIELDS)
    grace = _grace(body)
    expires_at = _expiry(body)
    old = _owned_key(caller, key_id)
    caller.may_hand_out(old.scopes, old.environment)
    service = get_state().service
    expiry = {} if expires_at is _MISSING else {"expires_at": expires_at}
    new, secret = _service_call(
        "key_id",
        lambda: service.rotate_key(
            key_id, grace, actor=caller.actor, remote_addr=request.remote_addr, **expiry
        ),
    )
    previous = service.get_key(key_id)
    return _reply({"key": new.to_dict(), "secret": secret, "previous": previous.to_dict()}, 201)


@blueprint.get("/api/keys/<key_id>/usage", endpoint="api_key_usage")
def key_usage(key_id: str) -> ResponseReturnValue:
    """Requests per day, oldest first, every day of the range listed."""
    caller = manager()
    _owned_key(caller, key_id)
    raw = request.args.get("days")
    days = DEFAULT_USAGE_DAYS
    if raw is not None:
        if not _DAYS.fullmatch(raw) or not 1 <= int(raw) <= USAGE_DAYS_MAX:
            raise _invalid({"days": f"must be a whole number from 1 to {USAGE_DAYS_MAX}"})
        days = int(raw)
    counts = get_state().service.daily_usage(key_id, days)
    return _reply(
        {
            "key_id": key_id,
            "days": [{"date": day.isoformat(), "requests": n} for day, n in counts],
        }
    )


@blueprint.get("/api/events", endpoint="api_events")
def events() -> ResponseReturnValue:
    """The owner's audit trail, newest first; ``?key_id=`` narrows it to one key."""
    caller = manager()
    key_id = request.args.get("key_id")
    if key_id is not None:
        _owned_key(caller, key_id)
    found = get_state().service.events(caller.owner_id, key_id)
    return _reply({"events": [event.to_dict() for event in found]})


@blueprint.get("/api/whoami", endpoint="api_whoami")
def whoami() -> ResponseReturnValue:
    """The presented key, its owner and plan budget; spends nothing."""
    state = get_state()
    auth = authorize(frozenset(), None)
    rate_limits = state.limits.report(auth.key, auth.limits)
    key = auth.key
    return _reply(
        {
            "authenticated": True,
            "organization_id": key.owner_id,
            "key_id": key.id,
            "permissions": sorted(key.scopes),
            "key_type": key.environment,
            "plan": key.plan,
            "created_by": key.created_by,
            "scope_descriptions": {
                scope: str(state.settings.scope_descriptions.get(scope, ""))
                for scope in sorted(key.scopes)
            },
            "rate_limits": rate_limits,
        }
    )


@blueprint.get("/api/openapi.json", endpoint="api_openapi")
def openapi_document() -> ResponseReturnValue:
    """The OpenAPI 3.1 document of this API, where this app serves it."""
    from .openapi import build_document

    here = url_for(f"{request.blueprint}.api_openapi")
    prefix = here[: -len("/api/openapi.json")]
    cookie = current_app.config.get("SESSION_COOKIE_NAME") or "session"
    return current_app.json.response(build_document(get_state().settings, prefix, cookie))


@blueprint.post("/api/leaks/github", endpoint="api_leaks_github")
def github_leaks() -> ResponseReturnValue:
    """GitHub's secret scanning partner reports (SPEC §14).

    Neither a key nor a session authenticates this: GitHub's signature of
    the raw body does, so there is no CSRF token either. A bad or missing
    signature is a 401 that reads nothing further and changes nothing.
    The answer is GitHub's label list, the only place a reported token is
    ever written back.
    """
    service = get_state().service
    body = _read_body(leaks.BODY_MAX)
    if not leaks.verify(
        body,
        request.headers.get(leaks.KEY_ID_HEADER),
        request.headers.get(leaks.SIGNATURE_HEADER),
        service.settings.leak_report_keys,
    ):
        raise InvalidSignature()
    try:
        matches = leaks.read_report(body)
    except leaks.ReportError as error:
        raise _invalid({"body": str(error)}) from None
    answer = []
    for match in matches:
        outcome = service.report_leak(
            match.token, url=match.url, source=match.source, actor=LEAK_ACTOR
        )
        answer.append({"token_raw": match.token, "token_type": match.type, "label": outcome.label})
    return _reply(answer)


# -- unexpected errors ----------------------------------------------------

#: Database errors that mean the key store cannot be reached or used now.
def is_api_request() -> bool:
    """Whether the current request was routed to the JSON API."""
    endpoint = request.endpoint or ""
    return endpoint.rpartition(".")[2] in API_ENDPOINTS and bool(request.blueprint)


@blueprint.errorhandler(KeyAuthError)
def api_error(error: KeyAuthError) -> ResponseReturnValue:
    """The JSON API's refusals, shaped by ``@keyauth.error_handler`` when the
    host registered one (the pages render their own error pages)."""
    if not is_api_request():
        return error
    return render_error(error)


@blueprint.errorhandler(InternalServerError)
def internal_error(error: InternalServerError) -> ResponseReturnValue:
    """Unexpected errors of the JSON API answer in its JSON envelope.

    Nothing of the exception reaches the body (Flask has logged it). The
    pages keep the app's own handling.
    """
    if not is_api_request():
        # Registered on the blueprint, this handler shadows the app's own
        # 500 handler for the pages: hand back to it.
        app_handlers = current_app.error_handler_spec.get(None, {}).get(500, {})
        handler = next(
            (app_handlers[cls] for cls in type(error).__mro__ if cls in app_handlers), None
        )
        if handler is not None:
            return current_app.ensure_sync(handler)(error)  # type: ignore[no-any-return]
        return error.get_response()
    if error.original_exception is not None and is_unavailable(error.original_exception):
        down = unavailable()
        return down.get_response()
    body = {
        "error": {
            "code": "INTERNAL_ERROR",
            "message": "An unexpected error occurred; it has been logged.",
            "details": {},
        }
    }
    return _reply(body, 500)
