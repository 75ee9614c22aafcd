"""Plan limits through Flask-Limiter, the failed-auth throttle and headers.

Flask-Limiter stays the engine: its storage (``RATELIMIT_STORAGE_URI``),
strategy (``RATELIMIT_STRATEGY``), key prefix and enabled flag keep their
meaning. ``require_key`` counts each authenticated request against its
owner's plan itself, after authenticating, so the order of decorators does
not matter; Flask-Limiter's own headers are left off in favour of ours,
which describe the window that binds first.

With the fixed-window strategy (Flask-Limiter's default) a request costs
one storage round trip for all of its plan's windows: on Redis one script
increments every window and returns its count and time to live; with
``memory://`` the windows are counted in this process by
:class:`LocalWindows`, which expires counters lazily instead of sweeping
every counter on a timer, so its cost does not grow with the number of
owners. Other strategies go through Flask-Limiter's strategy object.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Flask, after_this_request, current_app, request
from flask.wrappers import Response
from limits import RateLimitItem, parse, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.datastructures import Headers

from . import signals
from .config import Settings
from .errors import RateLimitExceeded, StorageUnavailable, TooManyFailedAttempts
from .models import UTC, isoformat

if TYPE_CHECKING:
    from flask_limiter import Limiter

    from .service import Authenticated

logger = logging.getLogger("flask_keyauth")

#: Seconds a client is told to wait when the limiter storage is down.
STORAGE_RETRY_AFTER = 5
#: Socket timeouts given to a Redis storage unless the host sets its own, so
#: a dead or paused Redis answers 503 quickly instead of hanging a worker.
#: Most window resets remembered per process (expired ones are dropped first).
RESETS_KEPT = 100_000
REDIS_TIMEOUTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


class Window(NamedTuple):
    """One limit's state after this request."""

    # A named tuple, not a dataclass: a few are built on every request.
    item: RateLimitItem
    remaining: int
    reset: float  # seconds since the epoch

    @property
    def name(self) -> str:
        granularity = self.item.GRANULARITY.name
        return granularity if self.item.multiples == 1 else f"{self.item.multiples}{granularity}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.item.amount,
            "remaining": self.remaining,
            "reset_at": reset_iso(self.reset),
            "window": self.name,
        }


def reset_iso(reset: float) -> str:
    """A reset time as ISO 8601 UTC, rounded up to the whole second."""
    second = math.ceil(reset)
    text = _ISO_SECONDS.get(second)
    if text is None:
        # Formatting a datetime is a sizeable part of a request's cost, and
        # a window's reset stays the same for its whole length.
        if len(_ISO_SECONDS) >= 4096:
            _ISO_SECONDS.clear()
        text = _ISO_SECONDS[second] = (
            isoformat(dt.datetime.fromtimestamp(second, UTC)) or ""
        )
    return text


_ISO_SECONDS: dict[int, str] = {}


def binding(windows: Sequence[Window]) -> Window:
    """The window that binds first: lowest remaining, then earliest reset."""
    return min(windows, key=lambda w: (w.remaining, w.reset))


def _header_reset(reset: float) -> int:
    return math.ceil(reset)


def rate_limit_headers(styles: Sequence[str], windows: Sequence[Window]) -> list[tuple[str, str]]:
    """The rate-limit headers of the given styles for these windows."""
    if not windows:
        return []
    first = binding(windows)
    reset = _header_reset(first.reset)
    headers: list[tuple[str, str]] = []
    for style in styles:
        if style == "x-ratelimit":
            headers += [
                ("X-RateLimit-Limit", str(first.item.amount)),
                ("X-RateLimit-Remaining", str(first.remaining)),
                ("X-RateLimit-Reset", reset_iso(first.reset)),
            ]
        elif style == "ratelimit":
            headers += [
                ("RateLimit-Limit", str(first.item.amount)),
                ("RateLimit-Remaining", str(first.remaining)),
                ("RateLimit-Reset", str(reset)),
            ]
        elif style == "ietf":
            now = time.time()
            names = _unique_names(windows)
            headers += [
                (
                    "RateLimit-Policy",
                    ", ".join(
                        f'"{n}";q={w.item.amount};w={w.item.get_expiry()}'
                        for n, w in zip(names, windows, strict=True)
                    ),
                ),
                (
                    "RateLimit",
                    ", ".join(
                        f'"{n}";r={w.remaining};t={max(0, math.ceil(w.reset - now))}'
                        for n, w in zip(names, windows, strict=True)
                    ),
                ),
            ]
    return headers


#: Whether werkzeug keeps a Headers' items in a plain list (it has for years).
_RAW_HEADERS = type(getattr(Headers(), "_list", None)) is list


def _set_headers(response: Response, headers: list[tuple[str, str]]) -> None:
    """``response.headers[name] = value`` for each header, in one pass when
    the response has none of these names yet (the usual case)."""
    target = response.headers
    if _RAW_HEADERS and type(target) is Headers:
        present = target._list
        names = {name.lower() for name, _ in headers}
        if not any(name.lower() in names for name, _ in present):
            # Our values are numbers and timestamps: nothing for Headers.set
            # to refuse.
            present.extend(headers)
            return
    for name, value in headers:
        target[name] = value


def _unique_names(windows: Sequence[Window]) -> list[str]:
    names: list[str] = []
    for window in windows:
        name = window.name
        if name in names:
            name = f"{name}-{window.item.amount}"
        names.append(name)
    return names


class LocalWindows:
    """Fixed-window counters in this process's memory (``memory://``).

    The same windows as Flask-Limiter's memory storage (a window starts at
    its first hit and lasts the limit's period), but an expired counter is
    dropped when it is next touched, and the whole table is swept only when
    it has doubled since the last sweep: the cost per request stays flat
    however many owners are active.
    """

    SWEEP_FLOOR = 1024

    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}  # key -> [count, reset]
        self._lock = threading.Lock()
        self._sweep_at = self.SWEEP_FLOOR

    def incr(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """Add ``amount`` (may be negative, never below 0); the count and reset."""
        now = time.time()
        with self._lock:
            window = self._windows.get(key)
            if window is None or window[1] <= now:
                if amount <= 0:
                    return 0, now
                if window is None and len(self._windows) >= self._sweep_at:
                    self._sweep(now)
                window = self._windows[key] = [0, now + expiry]
            window[0] = max(0, window[0] + amount)
            return int(window[0]), window[1]

    def incr_many(
        self, windows: Sequence[tuple[RateLimitItem, str, float]]
    ) -> list[tuple[int, float]]:
        """:meth:`incr` by one for each ``(item, key, expiry)`` in turn,
        under one lock and one clock reading, stopping after the first
        window over its limit (as a fixed-window hit does)."""
        now = time.time()
        counted: list[tuple[int, float]] = []
        with self._lock:
            entries = self._windows
            for item, key, expiry in windows:
                window = entries.get(key)
                if window is None or window[1] <= now:
                    if window is None and len(entries) >= self._sweep_at:
                        self._sweep(now)
                        entries = self._windows
                    window = entries[key] = [0, now + expiry]
                window[0] += 1
                count = int(window[0])
                counted.append((count, window[1]))
                if count > item.amount:
                    break
        return counted

    def get(self, key: str) -> tuple[int, float]:
        now = time.time()
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            return 0, now
        return int(window[0]), window[1]

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
        self._sweep_at = max(self.SWEEP_FLOOR, 2 * len(self._windows))

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
            self._sweep_at = self.SWEEP_FLOOR

    def __len__(self) -> int:
        return len(self._windows)


#: Every window of a plan in one round trip: KEYS are the windows' keys,
#: ARGV the amount then each window's period and limit. Like the
#: fixed-window strategy, a window starts at its first hit and counting
#: stops at the first window over its limit. Returns count and
#: milliseconds to reset for each window counted.
_REDIS_HIT = """
local amount = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
    local current = redis.call('incrby', key, amount)
    if current == amount then
        redis.call('expire', key, ARGV[2 * i])
    end
    out[#out + 1] = current
    out[#out + 1] = redis.call('pttl', key)
    if current > tonumber(ARGV[2 * i + 1]) then
        break
    end
end
return out
"""


class FailedAuthGate:
    """Counts failed authentications of one request against its address.

    A unit is taken *before* argon2 runs (so many concurrent wrong keys
    cannot all get through) and given back when the key proves valid.
    """

    def __init__(self, limits: PlanLimits, remote_addr: str) -> None:
        self._limits = limits
        self._addr = remote_addr
        self._taken = False

    def acquire(self) -> None:
        if self._taken:
            return
        limits = self._limits
        item = limits.failed_auth_item
        ids = limits.ids("keyauth-failed", self._addr)
        local = limits.local
        try:
            if local is not None:
                count, reset = local.incr(limits.failed_key(self._addr), limits.failed_expiry)
                allowed = count <= item.amount
            else:
                allowed = limits.fixed.hit(item, *ids)
        except limits.storage_errors():
            # This throttle always fails closed: without it nothing bounds
            # the argon2 work an attacker can ask for.
            limits.note_storage_down()
            raise StorageUnavailable(headers=[("Retry-After", str(STORAGE_RETRY_AFTER))]) from None
        self._taken = True
        if not allowed:
            if local is None:
                reset = limits.fixed.get_window_stats(item, *ids).reset_time
            retry = max(1, math.ceil(reset - time.time()))
            raise TooManyFailedAttempts(
                details={"retry_after": retry}, headers=[("Retry-After", str(retry))]
            )

    def release(self) -> None:
        if not self._taken:
            return
        self._taken = False
        limits = self._limits
        item = limits.failed_auth_item
        key = limits.failed_key(self._addr)
        try:
            if limits.local is not None:
                limits.local.incr(key, limits.failed_expiry, amount=-1)
            else:
                limits.storage.incr(key, item.get_expiry(), amount=-1)
        except limits.storage_errors():
            pass  # the unit expires with its window

    def count_failure(self) -> None:
        """Count an invalid key that did not reach argon2 (e.g. malformed)."""
        self.acquire()


def _extra_limit_breached(limit: Any) -> Response:
    """Answer a breach of a host's extra ``@keyauth.limiter.limit`` in our shape."""
    reset = float(limit.window.reset_time)
    retry = max(1, math.ceil(reset - time.time()))
    error = RateLimitExceeded(
        f"Rate limit exceeded: {limit.limit!r}.",
        details={
            "limit": limit.limit.amount,
            "remaining": 0,
            "reset_at": reset_iso(reset),
            "retry_after": retry,
        },
        headers=[("Retry-After", str(retry))],
    )
    # Flask-Limiter uses the callback's response only if it is a Flask one.
    return current_app.response_class(
        error.get_body(), error.status, error.get_headers()
    )


def _owner_or_address() -> str:
    from .decorators import current_key

    key = current_key._get_current_object()  # type: ignore[attr-defined]
    if key is not None:
        return f"owner:{key.owner_id}"
    return request.remote_addr or "unknown"


def _skip_idle_hooks(app: Flask, limiter: Limiter) -> None:
    """Run Flask-Limiter's request hooks only where it has something to do.

    Flask-Limiter looks at every request in a ``before_request`` hook (and
    an ``after_request`` and a teardown one), even where no limit of its own
    applies, as on a ``require_key`` route that counts its plan itself; on
    a small JSON route these hooks cost more than the route. An endpoint is
    left out only when Flask-Limiter has no default, application or meta
    limits, no in-memory fallback, and no limit on the endpoint, its view
    or its blueprint; anything else goes through Flask-Limiter unchanged.
    """
    from flask_limiter.util import get_qualified_name

    idle: dict[str, bool] = {}

    def is_idle(endpoint: str) -> bool:
        try:
            return limiter_is_idle(endpoint)
        except AttributeError:
            # Another Flask-Limiter than the one this was written against:
            # let it look at every request, as it always does.
            return False

    def limiter_is_idle(endpoint: str) -> bool:
        manager = limiter.limit_manager
        if manager.default_limits or manager.application_limits:
            return False
        if limiter._meta_limits or limiter._in_memory_fallback_enabled:
            return False
        view = app.view_functions.get(endpoint)
        if view is None or manager.has_hints(endpoint):
            return False
        name = get_qualified_name(view)
        if manager.decorated_limits(name) or name in limiter._marked_for_limiting:
            return False
        blueprint = endpoint.rpartition(".")[0]
        while blueprint:
            if manager.blueprint_limits(app, blueprint):
                return False
            blueprint = blueprint.rpartition(".")[0]
        return True

    def has_work() -> bool:
        endpoint = request.endpoint
        if endpoint is None:
            return True
        known = idle.get(endpoint)
        if known is None:
            known = idle[endpoint] = is_idle(endpoint)
        return not known

    # The decision of this request, taken in the before hook and read by the
    # other two (None when the before hook did not run).
    decided: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
        "keyauth_limiter_work", default=None
    )

    def guard(hook: Any, kind: str) -> Any:
        if kind == "before":
            @functools.wraps(hook)
            def before() -> Any:
                work = has_work()
                decided.set(work)
                return hook() if work else None

            return before

        if kind == "after":
            @functools.wraps(hook)
            def after(response: Response) -> Response:
                work = decided.get()
                if work is None:
                    work = has_work()
                return hook(response) if work else response

            return after

        @functools.wraps(hook)
        def teardown(*args: Any) -> None:
            work = decided.get()
            decided.set(None)
            if work is None or work:
                hook(*args)

        return teardown

    def ours(hook: Any) -> bool:
        if isinstance(hook, functools.partial):
            return bool(hook.args) and hook.args[0] is limiter
        return getattr(hook, "__self__", None) is limiter

    for kind, registry in (
        ("before", app.before_request_funcs),
        ("after", app.after_request_funcs),
        ("teardown", app.teardown_request_funcs),
    ):
        hooks = registry.get(None, [])
        for n, hook in enumerate(hooks):
            if ours(hook):
                hooks[n] = guard(hook, kind)


def settle(
    items: Sequence[RateLimitItem], counts: Iterable[tuple[int, float]]
) -> tuple[list[Window], Window | None]:
    """Windows from each limit's (count, reset), up to the first one breached.

    ``counts`` is read lazily, so a storage that counts one window at a time
    counts nothing past a breach (as Flask-Limiter does).
    """
    windows: list[Window] = []
    for item, (count, reset) in zip(items, counts, strict=False):
        amount = item.amount
        window = Window(item, amount - count if count < amount else 0, reset)
        windows.append(window)
        if count > amount:
            return windows, window
    return windows, None


class PlanLimits:
    """The plan limits of one app, on its Flask-Limiter instance."""

    def __init__(self, app: Flask, settings: Settings, limiter: Limiter | None) -> None:
        from flask_limiter import Limiter

        uri = app.config.get("RATELIMIT_STORAGE_URI") or "memory://"
        if uri.startswith(("redis://", "rediss://", "redis+")):
            options = app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {})
            for name, value in REDIS_TIMEOUTS.items():
                options.setdefault(name, value)
        if limiter is None:
            limiter = Limiter(
                _owner_or_address,
                app=app,
                storage_uri=uri,
                # Our own headers describe the binding window of the plan;
                # Flask-Limiter's would describe one window with an epoch
                # reset and add Retry-After to every response.
                headers_enabled=False,
                on_breach=_extra_limit_breached,
            )
        elif limiter not in app.extensions.get("limiter", set()):
            limiter.init_app(app)
        _skip_idle_hooks(app, limiter)
        self.limiter = limiter
        self.settings = settings
        # RATELIMIT_KEY_PREFIX keeps its meaning: apps sharing one storage
        # keep separate counters.
        self.key_prefix: str = getattr(limiter, "_key_prefix", None) or app.config.get(
            "RATELIMIT_KEY_PREFIX", ""
        )
        self._items: dict[tuple[str, ...], list[RateLimitItem]] = {}
        self.failed_auth_item = parse(settings.failed_auth_limit)
        self.failed_expiry = self.failed_auth_item.get_expiry()
        self._failed_keys: dict[tuple[str, str], str] = {}
        self._fixed: FixedWindowRateLimiter | None = None
        # storage key -> (reset time, last count seen), for fixed windows.
        self._resets: dict[str, tuple[float, int]] = {}
        self._outage_logged = False
        self._local = LocalWindows()
        self._local_for: Any = None
        self._script: Any = None
        self._keys_of: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
        self._local_plans: dict[
            tuple[tuple[str, ...], tuple[str, ...]], list[tuple[RateLimitItem, str, float]]
        ] = {}
        self._script_for: Any = None

    # -- storage -------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.limiter.enabled)

    @property
    def storage(self) -> Any:
        return self.limiter.storage

    @property
    def fixed(self) -> FixedWindowRateLimiter:
        # The failed-auth throttle is a fixed window whatever the strategy,
        # so that a valid key can give its unit back.
        if self._fixed is None:
            self._fixed = FixedWindowRateLimiter(self.storage)
        return self._fixed

    def storage_errors(self) -> tuple[type[BaseException], ...]:
        errors = self.storage.base_exceptions
        return (*errors, StorageError) if isinstance(errors, tuple) else (errors, StorageError)

    @property
    def local(self) -> LocalWindows | None:
        """The in-process windows, when the storage is ``memory://``."""
        storage = self.limiter.storage
        if not isinstance(storage, MemoryStorage):
            return None
        if storage is not self._local_for:
            self._local_for = storage
            reset = storage.reset
            local = self._local

            def reset_both() -> int | None:
                # Limiter.reset() keeps its meaning: every counter goes.
                local.clear()
                return reset()

            storage.reset = reset_both  # type: ignore[method-assign]
        return self._local

    def note_storage_down(self) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning("flask-keyauth: the rate-limit storage is unreachable")

    def _note_storage_up(self) -> None:
        if self._outage_logged:
            self._outage_logged = False
            logger.warning("flask-keyauth: the rate-limit storage is reachable again")

    def ids(self, *identifiers: str) -> tuple[str, ...]:
        """Storage identifiers, behind the app's ``RATELIMIT_KEY_PREFIX``."""
        return (self.key_prefix, *identifiers) if self.key_prefix else identifiers

    def items(self, limits: tuple[str, ...]) -> list[RateLimitItem]:
        found = self._items.get(limits)
        if found is None:
            found = [item for text in limits for item in parse_many(text)]
            self._items[limits] = found
        return found

    # -- the failed-auth throttle -------------------------------------------

    def failed_key(self, remote_addr: str) -> str:
        """The storage key of an address's failed-auth window."""
        known = (self.key_prefix, remote_addr)
        key = self._failed_keys.get(known)
        if key is None:
            if len(self._failed_keys) >= RESETS_KEPT:
                self._failed_keys.clear()
            key = self._failed_keys[known] = self.failed_auth_item.key_for(
                *self.ids("keyauth-failed", remote_addr)
            )
        return key

    def failed_auth_gate(self, remote_addr: str | None) -> FailedAuthGate | None:
        if not self.enabled:
            return None
        return FailedAuthGate(self, remote_addr or "unknown")

    # -- plan limits ---------------------------------------------------------

    def _windows(self, auth: Authenticated, spend: bool) -> tuple[list[Window], Window | None]:
        strategy = self.limiter.limiter
        ids = self.ids("keyauth", auth.key.owner_id)
        items = self.items(auth.limits)
        if type(strategy) is FixedWindowRateLimiter:
            local = self.local
            if local is not None:
                if spend:
                    return self._local_hit(local, ids, auth.limits)
                keys = self._keys(ids, auth.limits)
                return settle(items, (local.get(key) for key in keys))
            if spend:
                storage = self.storage
                if type(storage) is RedisStorage:
                    return self._redis_windows(storage, ids, items)
                return self._fixed_windows(ids, items)
        windows: list[Window] = []
        breached: Window | None = None
        for item in items:
            allowed = strategy.hit(item, *ids) if spend else True
            stats = strategy.get_window_stats(item, *ids)
            window = Window(item, max(0, int(stats.remaining)), float(stats.reset_time))
            windows.append(window)
            if not allowed:
                breached = window
                break  # as Flask-Limiter does: the first breach stops counting
        return windows, breached

    def _keys(self, ids: tuple[str, ...], limits: tuple[str, ...]) -> list[str]:
        """The storage keys of an owner's windows (built once per owner and plan)."""
        found = self._keys_of.get((ids, limits))
        if found is None:
            if len(self._keys_of) >= RESETS_KEPT:
                self._keys_of.clear()
            found = self._keys_of[(ids, limits)] = [
                item.key_for(*ids) for item in self.items(limits)
            ]
        return found

    def _local_hit(
        self, local: LocalWindows, ids: tuple[str, ...], limits: tuple[str, ...]
    ) -> tuple[list[Window], Window | None]:
        """Count a request in every window of the plan, in this process."""
        known = (ids, limits)
        plan = self._local_plans.get(known)
        if plan is None:
            if len(self._local_plans) >= RESETS_KEPT:
                self._local_plans.clear()
            plan = self._local_plans[known] = [
                (item, key, item.get_expiry())
                for item, key in zip(self.items(limits), self._keys(ids, limits), strict=True)
            ]
        return settle([item for item, _, _ in plan], local.incr_many(plan))

    def _redis_windows(
        self, storage: RedisStorage, ids: tuple[str, ...], items: list[RateLimitItem]
    ) -> tuple[list[Window], Window | None]:
        """Every window in one round trip (see ``_REDIS_HIT``)."""
        if storage is not self._script_for:
            self._script = storage.storage.register_script(_REDIS_HIT)
            self._script_for = storage
        args: list[int] = [1]
        for item in items:
            args += [item.get_expiry(), item.amount]
        out = self._script(
            keys=[storage.prefixed_key(item.key_for(*ids)) for item in items], args=args
        )
        now = time.time()
        counts = []
        for item, count, ttl in zip(items, out[0::2], out[1::2], strict=False):
            ttl = int(ttl)
            counts.append((int(count), now + (ttl / 1000 if ttl >= 0 else item.get_expiry())))
        return settle(items, counts)

    def _fixed_windows(
        self, ids: tuple[str, ...], items: list[RateLimitItem]
    ) -> tuple[list[Window], Window | None]:
        """The fixed-window strategy's hit, with one storage call per window.

        ``incr`` returns the count, which gives the remaining budget; the
        window's reset is learnt once and remembered until it passes, so a
        steady-state request makes no ``get``/``ttl`` calls.
        """
        storage = self.storage

        def hits() -> Iterator[tuple[int, float]]:
            for item in items:
                key = item.key_for(*ids)
                count = storage.incr(key, item.get_expiry(), amount=1)
                yield count, self._reset(key, item, count)

        return settle(items, hits())

    def _reset(self, key: str, item: RateLimitItem, count: int) -> float:
        now = time.time()
        known = self._resets.get(key)
        # A count that did not grow means the window was restarted elsewhere.
        if known is not None and known[0] > now and count > known[1]:
            self._resets[key] = (known[0], count)
            return known[0]
        reset = now + item.get_expiry() if count == 1 else float(self.storage.get_expiry(key))
        if len(self._resets) >= RESETS_KEPT:
            self._resets = {k: v for k, v in self._resets.items() if v[0] > now}
            if len(self._resets) >= RESETS_KEPT:
                self._resets.clear()
        self._resets[key] = (reset, count)
        return reset

    def consume(self, auth: Authenticated) -> None:
        """Count this request against its owner's plan; raise 429 when spent."""
        if not self.enabled or not auth.limits:
            return
        try:
            windows, breached = self._windows(auth, spend=True)
        except self.storage_errors():
            self.note_storage_down()
            if self.settings.ratelimit_fail_open:
                return
            raise StorageUnavailable(headers=[("Retry-After", str(STORAGE_RETRY_AFTER))]) from None
        self._note_storage_up()
        headers = rate_limit_headers(self.settings.ratelimit_headers, windows)

        @after_this_request
        def add_headers(response: Response) -> Response:
            _set_headers(response, headers)
            return response

        if breached is not None:
            retry = max(1, math.ceil(breached.reset - time.time()))
            signals.rate_limited.send(
                signals.sender(), key=auth.key, limit=repr(breached.item)
            )
            raise RateLimitExceeded(
                details={
                    "limit": breached.item.amount,
                    "remaining": 0,
                    "reset_at": breached.as_dict()["reset_at"],
                    "retry_after": retry,
                },
                headers=[("Retry-After", str(retry))],
            )

    def report(self, auth: Authenticated) -> list[dict[str, Any]]:
        """The owner's windows as they stand, without spending anything."""
        if not self.enabled or not auth.limits:
            return []
        try:
            windows, _ = self._windows(auth, spend=False)
        except self.storage_errors():
            self.note_storage_down()
            raise StorageUnavailable(headers=[("Retry-After", str(STORAGE_RETRY_AFTER))]) from None
        return [window.as_dict() for window in windows]
