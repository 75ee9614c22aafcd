"""``require_key`` and ``current_key``.

One lazy loader, :func:`load_key`, authenticates the request at most once
and keeps the outcome in ``g._keyauth_auth``; the decorator, the JSON API and
``current_key`` all read it from there.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Flask, current_app, g, make_response, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import Headers
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from . import keys, signals
from .errors import (
    AuthenticationError,
    HttpsRequired,
    InsufficientScope,
    InvalidApiKey,
    KeyAuthError,
    MissingApiKey,
    TooManyFailedAttempts,
)
from .models import ApiKeyInfo
from .service import Authenticated

if TYPE_CHECKING:
    from .extension import KeyAuthState

logger = logging.getLogger("flask_keyauth")

F = TypeVar("F", bound=Callable[..., Any])


def get_state() -> KeyAuthState:
    """The flask-keyauth state of the current app."""
    try:
        return cast("KeyAuthState", current_app.extensions["keyauth"])
    except KeyError:
        raise RuntimeError(
            "flask-keyauth is not initialised on this app: call KeyAuth(app) or "
            "keyauth.init_app(app) before using require_key, the blueprint or the service API."
        ) from None


def extract_key(headers: Headers, names: Iterable[str]) -> str | None:
    """The key presented in the request headers, or ``None``.

    ``Authorization`` counts only with the ``Bearer`` scheme (any case);
    an empty value, ``Bearer`` alone or another scheme is no key at all. The
    same key in several headers is one key; two different keys are refused.
    """
    return _pick((name, raw) for name in names for raw in headers.getlist(name))


#: HTTP's own whitespace (RFC 9110 OWS). ``str.strip()`` would also drop
#: control characters such as ``\x1c`` and non-ASCII spaces such as
#: ``\xa0``, and a key wrapped in them must be refused, not cleaned up.
_OWS = " \t"
_SCHEME = re.compile(r"([^ \t]+)[ \t]+(.*)", re.DOTALL)


def _pick(presented: Iterable[tuple[str, str]]) -> str | None:
    found: str | None = None
    for name, raw in presented:
        value = raw.strip(_OWS)
        if name.lower() == "authorization":
            match = _SCHEME.fullmatch(value)
            if match is None or match.group(1).lower() != "bearer":
                continue
            value = match.group(2).strip(_OWS)
        if value:
            if found is None:
                found = value
            elif value != found:
                raise InvalidApiKey()
    return found


@functools.lru_cache(maxsize=64)
def _environ_names(names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # A WSGI server puts each header in the environ once (repeats joined),
    # under HTTP_<NAME>: what request.headers.getlist would find, without
    # building the headers view on every request.
    found = []
    for name in names:
        key = name.upper().replace("-", "_")
        found.append((name, key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key))
    return tuple(found)


def _presented_key(environ: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return _pick([(name, environ[key]) for name, key in _environ_names(names) if key in environ])


def _authenticate(state: KeyAuthState, environ: dict[str, Any]) -> Authenticated:
    settings = state.settings
    if settings.require_https and not request.is_secure:
        raise HttpsRequired()
    limits = state.limits
    gate = limits.failed_auth_gate(environ.get("REMOTE_ADDR")) if limits else None
    try:
        # Two different keys raise InvalidApiKey here: a failed attempt too.
        text = _presented_key(environ, tuple(settings.header_names))
        if text is None:
            raise MissingApiKey()
        parsed = keys.parse(text, settings.key_prefix)
        if parsed is None:
            raise InvalidApiKey()
        return state.service.authenticate(parsed, gate)
    except InvalidApiKey:
        if gate is not None:
            gate.count_failure()
        raise


def load_key(*, refusing: bool = True) -> Authenticated:
    """Authenticate the current request once; raise its ``KeyAuthError``.

    ``refusing=False`` is for callers that only look (``current_key``): the
    request is not refused for it, so ``auth_failed`` is not sent for it.
    """
    return _load(None, refusing)


def _load(state: KeyAuthState | None, refusing: bool) -> Authenticated:
    # The request's g and environ, looked up once (each proxy access costs).
    ctx_g = g._get_current_object()
    outcome = ctx_g.__dict__.get("_keyauth_auth")
    if outcome is None:
        try:
            outcome = _authenticate(state or get_state(), request.environ)
        except KeyAuthError as error:
            outcome = error
        ctx_g._keyauth_auth = outcome
    if isinstance(outcome, KeyAuthError):
        if (
            refusing
            and isinstance(outcome, (AuthenticationError, TooManyFailedAttempts))
            and not ctx_g.__dict__.get("_keyauth_failure_sent")
        ):
            ctx_g._keyauth_failure_sent = True
            # Nobody listening: skip finding the sender and the address.
            if signals.auth_failed.receivers:
                signals.auth_failed.send(
                    signals.sender(),
                    reason=outcome.code_name,
                    remote_addr=request.remote_addr,
                )
        raise outcome
    return cast(Authenticated, outcome)


def _current_key() -> ApiKeyInfo | None:
    try:
        return load_key(refusing=False).key
    except KeyAuthError:
        return None


#: The key that authenticated this request (an :class:`ApiKeyInfo`), or
#: ``None`` when the request carries no valid key.
current_key: ApiKeyInfo = cast(ApiKeyInfo, LocalProxy(_current_key))


def error_response(
    error: KeyAuthError, state: KeyAuthState | None = None
) -> ResponseReturnValue:
    """Answer a ``KeyAuthError``, through ``@keyauth.error_handler`` if set."""
    handler = (state or get_state()).extension.error_handler_callback
    if handler is None:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        spec = app.error_handler_spec
        if any(spec.values()) and any(spec.get(name) for name in (*request.blueprints, None)):
            # The host may handle it (@app.errorhandler): Flask decides.
            raise error
        # Nobody else answers it: build the response here rather than have
        # Flask run the exception as a WSGI app to get the same one.
        response_class = app.response_class
        if response_class.set_data is not Response.set_data:
            return response_class(error.get_body(), error.status, error.get_headers())
        body, headers = error.response_parts()
        # The body as a one-item list with its length among the headers is
        # what set_data would make of it.
        return response_class([body], error.status, _headers(headers))
    response = make_response(handler(error))
    error.apply_headers(response)
    return response


#: Whether werkzeug keeps a Headers' items in a plain list (it has for
#: years); if that ever changes, headers are added the public way.
_RAW_HEADERS = type(getattr(Headers(), "_list", None)) is list


def _headers(items: list[tuple[str, str]]) -> Headers | list[tuple[str, str]]:
    # These items were checked when they were first built: Headers(items)
    # would check each name and value again on every refused request.
    if not _RAW_HEADERS:
        return items
    headers = Headers()
    headers._list = items
    return headers


def require_key(*scopes: str) -> Callable[[F], F]:
    """Allow only requests with a valid key holding every one of ``scopes``.

    With no scope, any valid key passes. The order is: authenticate (401),
    count the request against the owner's plan (429), check scopes (403).

    >>> @app.get("/v1/entities")
    ... @require_key("read")
    ... def entities():
    ...     return {"org": current_key.owner_id}
    """
    for scope in scopes:
        if not isinstance(scope, str) or not scope:
            raise TypeError(f"require_key takes scope names, not {scope!r}")
    required = frozenset(scopes)

    def decorator(view: F) -> F:
        # What current_app.ensure_sync(view) decides, decided once: a plain
        # function is called as it is.
        plain = not inspect.iscoroutinefunction(view)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            state = get_state()
            unknown = required - state.settings.scopes.keys()
            if unknown:
                raise RuntimeError(
                    f"require_key names unknown scope(s) {sorted(unknown)}: add them to "
                    "KEYAUTH_SCOPES"
                )
            try:
                auth = _load(state, True)
                if state.limits is not None:
                    state.limits.consume(auth)
                if not required <= auth.key.scopes:
                    raise InsufficientScope(
                        details={"required_scopes": sorted(required)}
                    )
            except KeyAuthError as error:
                return error_response(error, state)
            if plain:
                return view(*args, **kwargs)
            return current_app.ensure_sync(view)(*args, **kwargs)

        wrapper._keyauth_scopes = required  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorator
