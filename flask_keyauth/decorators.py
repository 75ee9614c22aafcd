"""``require_key`` and ``current_key``.

One lazy loader authenticates the request at most once and keeps the outcome
in ``g._keyauth_auth``; the decorator, the JSON API and ``current_key`` all
read it from there. The plan is charged at most once per request, however
many ``require_key`` decorators the request passes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from flask import current_app, g, make_response, request
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import Headers
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from . import signals
from ._state import get_state
from .auth import Authenticated, pick_key
from .errors import (
    AuthenticationError,
    InsufficientScope,
    KeyAuthError,
    TooManyFailedAttempts,
)
from .models import ApiKeyInfo

if TYPE_CHECKING:
    from ._state import KeyAuthState

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["authorize", "current_key", "extract_key", "get_state", "load_key", "require_key"]


def extract_key(headers: Headers, names: Iterable[str]) -> str | None:
    """The key presented in the request headers, or ``None`` (see
    :func:`.auth.pick_key`)."""
    return pick_key((name, raw) for name in names for raw in headers.getlist(name))


def load_key(cost: int | None = None, *, refusing: bool = True) -> Authenticated:
    """Authenticate the current request once; raise its ``KeyAuthError``.

    With ``cost``, the request is also charged against its owner's plan,
    once per request (429 when spent). ``refusing=False`` is for callers
    that only look (``current_key``): the request is not refused for it, so
    ``auth_failed`` is not sent for it.
    """
    state = get_state()
    outcome = g.get("_keyauth_auth")
    if outcome is None:
        try:
            outcome = state.auth.authenticate(request.environ, request.is_secure, cost)
        except KeyAuthError as error:
            outcome = error
        g._keyauth_auth = outcome  # noqa: SLF001 - our namespaced name on g
    if isinstance(outcome, KeyAuthError):
        if refusing and isinstance(outcome, (AuthenticationError, TooManyFailedAttempts)):
            _send_auth_failed(outcome)
        raise outcome
    auth = cast(Authenticated, outcome)
    if cost is not None and not g.get("_keyauth_charged"):
        g._keyauth_charged = True  # noqa: SLF001 - our namespaced name on g
        charge = auth.charge
        if charge is None:
            charge = state.limits.spend(auth.key, auth.limits, cost)
        state.limits.enforce(auth.key, charge)
    return auth


def authorize(
    scopes: frozenset[str], cost: int | None, message: str | None = None
) -> Authenticated:
    """Decide a key-authenticated request: :func:`load_key`, then the
    scopes (403 ``FORBIDDEN``, with ``message`` if given).

    The first decision of a request is what the metrics count, with the
    time it took (``keyauth_requests_total``, ``keyauth_auth_seconds``).
    """
    first = not g.get("_keyauth_counted")
    started = time.perf_counter()
    code: str | None = None
    try:
        auth = load_key(cost)
        if not scopes <= auth.key.scopes:
            raise InsufficientScope(message, details={"required_scopes": sorted(scopes)})
        return auth
    except KeyAuthError as error:
        code = error.error_code
        raise
    finally:
        if first:
            g._keyauth_counted = True  # noqa: SLF001 - our namespaced name on g
            metrics = get_state().metrics
            metrics.auth_seconds(time.perf_counter() - started)
            metrics.request(code)


def _check_cost(cost: Any) -> int:
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
        raise TypeError(f"a request's cost is a whole number of at least 1, not {cost!r}")
    return cost


def _send_auth_failed(error: KeyAuthError) -> None:
    if not g.get("_keyauth_failure_sent"):
        g._keyauth_failure_sent = True  # noqa: SLF001 - our namespaced name on g
        signals.auth_failed.send(
            signals.sender(), reason=error.error_code, remote_addr=request.remote_addr
        )


def authenticated_key() -> ApiKeyInfo | None:
    """The key of this request, or ``None``, without refusing anything."""
    try:
        return load_key(refusing=False).key
    except KeyAuthError:
        return None


#: The key that authenticated this request (an :class:`ApiKeyInfo`), or
#: ``None`` when the request carries no valid key.
current_key: ApiKeyInfo = cast(ApiKeyInfo, LocalProxy(authenticated_key))


def error_response(error: KeyAuthError, state: KeyAuthState | None = None) -> ResponseReturnValue:
    """Answer a ``KeyAuthError``, through ``@keyauth.error_handler`` if set,
    else through the host's ``@app.errorhandler`` if it has any."""
    state = state or get_state()
    if state.extension.error_handler_callback is None and any(
        current_app.error_handler_spec.values()
    ):
        raise error  # the host may handle it (@app.errorhandler): Flask decides
    return render_error(error, state)


def render_error(error: KeyAuthError, state: KeyAuthState | None = None) -> Response:
    """The response of a ``KeyAuthError``: ``@keyauth.error_handler``'s, or
    the JSON envelope."""
    handler = (state or get_state()).extension.error_handler_callback
    if handler is None:
        return error.get_response()
    response = make_response(handler(error))
    error.apply_headers(response)
    return response


Cost = int | Callable[[], int]


def require_key(*scopes: str, cost: Cost = 1) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Allow only requests with a valid key holding every one of ``scopes``.

    With no scope, any valid key passes. The order is: authenticate (401),
    count the request against the owner's plan and the key's own limits
    (429), check scopes (403). ``cost`` is how many units of every window
    the request spends: a whole number, or a function of the current
    request returning one. Works on plain and async views and on
    ``MethodView`` classes' methods.

    >>> @app.get("/v1/entities")
    ... @require_key("read")
    ... def entities():
    ...     return {"org": current_key.owner_id}

    >>> @app.post("/v1/completions")
    ... @require_key("write", cost=lambda: 1 + len(request.get_data()) // 4096)
    ... def completions(): ...
    """
    for scope in scopes:
        if not isinstance(scope, str) or not scope:
            raise TypeError(f"require_key takes scope names, not {scope!r}")
    if not callable(cost):
        _check_cost(cost)
    required = frozenset(scopes)

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            state = get_state()
            unknown = required - state.settings.scopes.keys()
            if unknown:
                raise RuntimeError(
                    f"require_key names unknown scope(s) {sorted(unknown)}: add them to "
                    "KEYAUTH_SCOPES"
                )
            try:
                authorize(required, _check_cost(cost()) if callable(cost) else cost)
            except KeyAuthError as error:
                return cast(R, error_response(error, state))
            return current_app.ensure_sync(view)(*args, **kwargs)  # type: ignore[no-any-return]

        wrapper.keyauth_scopes = required  # type: ignore[attr-defined]
        return wrapper

    return decorator
