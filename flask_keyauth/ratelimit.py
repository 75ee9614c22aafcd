"""Plan limits on Flask-Limiter's storage, the failed-auth throttle, headers.

Flask-Limiter stays the engine: its storage (``RATELIMIT_STORAGE_URI``),
strategy (``RATELIMIT_STRATEGY``), ``RATELIMIT_KEY_PREFIX`` and enabled flag
keep their meaning, and everything goes through its public API and that of
``limits``. ``require_key`` counts each authenticated request against its
owner's plan itself, after authenticating, so the order of decorators does
not matter.

On a Redis storage (plain, Sentinel or Cluster) with the fixed-window
strategy, one script (:mod:`._plan_script`) counts every window of the plan
and checks the key's stamps in one round trip. Every other storage or
strategy counts through ``limits``' strategy object, one window at a time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Flask, after_this_request, current_app, g, request
from flask.wrappers import Response
from limits import parse
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter
from werkzeug.exceptions import HTTPException

from . import signals
from ._plan_script import PlanScript, ScriptResult, hash_tag
from .config import ConfigError, Settings
from .errors import RateLimitExceeded, StorageUnavailable, TooManyFailedAttempts
from .models import UTC, ApiKeyInfo, isoformat
from .plans import Bucket, Item, LocalBuckets, parse_limits

if TYPE_CHECKING:
    from flask_limiter import Limiter

logger = logging.getLogger("flask_keyauth")

#: Seconds a client is told to wait when the limiter storage is down.
STORAGE_RETRY_AFTER = 5
#: Socket timeouts given to a Redis storage unless the host sets its own, so
#: a dead or paused Redis answers 503 quickly instead of hanging a worker.
REDIS_TIMEOUTS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
#: Parsed limit texts kept (each per-key text is one).
ITEMS_KEPT = 10_000
#: Where a window is counted: () for the owner's plan, ("key", id) for a key's.
Scope = tuple[str, ...]


class Window(NamedTuple):
    """One limit's state after this request."""

    item: Item
    remaining: int
    reset: float  # seconds since the epoch (a bucket: when it is full again)
    retry: float  # when this request's cost would fit again

    @property
    def name(self) -> str:
        if isinstance(self.item, Bucket):
            return "burst"
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
    return isoformat(dt.datetime.fromtimestamp(math.ceil(reset), UTC)) or ""


def binding(windows: Sequence[Window]) -> Window:
    """The window that binds first: lowest remaining, then the latest reset
    (the moment the remaining number can actually grow again)."""
    return min(windows, key=lambda w: (w.remaining, -w.reset))


def refusing(windows: Sequence[Window]) -> Window:
    """On a refusal, the spent window that lets a request through last:
    waiting until then is what lets the next one through."""
    spent = [w for w in windows if w.remaining == 0] or list(windows)
    return max(spent, key=lambda w: w.retry)


def _unique_names(windows: Sequence[Window]) -> list[str]:
    names: list[str] = []
    for window in windows:
        name = window.name
        if name in names:
            name = f"{name}-{window.item.amount}"
        names.append(name)
    return names


def rate_limit_headers(
    styles: Sequence[str], windows: Sequence[Window], first: Window
) -> list[tuple[str, str]]:
    """The headers of the given styles: ``first`` for the one-window styles,
    every window for the ietf style."""
    headers: list[tuple[str, str]] = []
    if "x-ratelimit" in styles:
        headers += [
            ("X-RateLimit-Limit", str(first.item.amount)),
            ("X-RateLimit-Remaining", str(first.remaining)),
            ("X-RateLimit-Reset", reset_iso(first.reset)),
        ]
    if "ratelimit" in styles:
        headers += [
            ("RateLimit-Limit", str(first.item.amount)),
            ("RateLimit-Remaining", str(first.remaining)),
            ("RateLimit-Reset", str(math.ceil(first.reset))),
        ]
    if "ietf" in styles:
        now = time.time()
        named = list(zip(_unique_names(windows), windows, strict=True))
        policy = ", ".join(f'"{n}";q={w.item.amount};w={w.item.get_expiry()}' for n, w in named)
        state = ", ".join(
            f'"{n}";r={w.remaining};t={max(0, math.ceil(w.reset - now))}' for n, w in named
        )
        headers += [("RateLimit-Policy", policy), ("RateLimit", state)]
    return headers


#: The windows after a request was counted, and whether one is over its limit.
Charge = tuple[list["Window"], bool]
NO_CHARGE: Charge = ([], False)


def settle(items: Sequence[Item], counts: Sequence[tuple[int, float, float]]) -> Charge:
    """Windows from each limit's (units in use, reset, retry); whether one
    is over its limit."""
    windows = [
        Window(item, max(0, item.amount - used), reset, retry)
        for item, (used, reset, retry) in zip(items, counts, strict=True)
    ]
    over = any(used > item.amount for item, (used, _, _) in zip(items, counts, strict=True))
    return windows, over


def client_address(remote_addr: str | None, ipv6_prefix: int) -> str:
    """The address the failed-auth throttle counts: IPv6 per network
    (one client holds a whole /64), IPv4 as it is."""
    if not remote_addr or ":" not in remote_addr:
        return remote_addr or "unknown"
    try:
        address = ipaddress.IPv6Address(remote_addr.split("%", 1)[0])
    except ValueError:
        return remote_addr
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, ipv6_prefix), strict=False))


def _keyauth_route() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return hasattr(view, "keyauth_scopes") or g.get("_keyauth_auth") is not None


def _host_429_handler(error: HTTPException) -> Any:
    """What the host registered for a 429 (by class, most specific first),
    leaving out our own handler of Flask-Limiter's breaches."""
    for name in (*request.blueprints, None):
        handlers = current_app.error_handler_spec.get(name, {}).get(429, {})
        for cls in type(error).__mro__:
            handler = handlers.get(cls)
            if handler is not None and handler is not limiter_breached:
                return handler
    return None


def limiter_breached(error: HTTPException) -> Any:
    """A breach of a Flask-Limiter limit (a route's extra
    ``@keyauth.limiter.limit``): on a ``require_key`` route, our 429 with
    ``Retry-After``, through ``@keyauth.error_handler``; elsewhere what the
    host's own handler, or Flask-Limiter, answers."""
    from .decorators import render_error

    if not _keyauth_route():
        handler = _host_429_handler(error)
        return current_app.ensure_sync(handler)(error) if handler is not None else error
    current = current_app.extensions["keyauth"].limits.limiter.current_limit
    limit = getattr(error, "limit", None)
    item = current.limit if current is not None else getattr(limit, "limit", None)
    reset = float(current.window.reset_time) if current is not None else time.time() + 1
    retry = max(1, math.ceil(reset - time.time()))
    refusal = RateLimitExceeded(
        f"Rate limit exceeded: {item!r}." if item is not None else None,
        details={
            "limit": item.amount if item is not None else None,
            "remaining": 0,
            "reset_at": reset_iso(reset),
            "retry_after": retry,
        },
        headers=[("Retry-After", str(retry))],
    )
    return render_error(refusal)


def _owner_or_address() -> str:
    from .decorators import authenticated_key

    key = authenticated_key()
    if key is not None:
        return f"owner:{key.owner_id}"
    return request.remote_addr or "unknown"


def _keyed(
    script: PlanScript, key: ApiKeyInfo, windows: list[tuple[Item, Scope]]
) -> list[tuple[Item, str]]:
    return [(item, script.window_key(key.owner_id, item, scope)) for item, scope in windows]


def storage_down() -> StorageUnavailable:
    return StorageUnavailable(headers=[("Retry-After", str(STORAGE_RETRY_AFTER))])


class PlanLimits:
    """The plan limits and the failed-auth throttle of one app."""

    def __init__(self, app: Flask, settings: Settings, limiter: Limiter | None) -> None:
        from flask_limiter import Limiter

        uri = app.config.get("RATELIMIT_STORAGE_URI") or "memory://"
        if uri.startswith(("redis://", "rediss://", "redis+", "valkey")):
            options = app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {})
            for name, value in REDIS_TIMEOUTS.items():
                options.setdefault(name, value)
        if limiter is None:
            limiter = Limiter(
                _owner_or_address,
                app=app,
                storage_uri=uri,
                # Our own headers describe the binding window of the plan.
                headers_enabled=False,
            )
        elif limiter not in app.extensions.get("limiter", set()):
            limiter.init_app(app)
        from flask_limiter import RateLimitExceeded as LimiterBreach

        app.register_error_handler(LimiterBreach, limiter_breached)
        self.limiter = limiter
        self.settings = settings
        # RATELIMIT_KEY_PREFIX keeps its meaning: apps sharing one storage
        # keep separate counters.
        self.key_prefix: str = app.config.get("RATELIMIT_KEY_PREFIX", "") or ""
        self.failed_auth_item = parse(settings.failed_auth_limit)
        self._items: dict[tuple[str, ...], list[Item]] = {}
        #: Token buckets of storages without a script (``memory://``).
        self.buckets = LocalBuckets()
        self._script: tuple[Any, PlanScript | None] | None = None
        self._outage_logged = False
        for plan, texts in settings.plans.items():
            try:
                self.check_countable(self.items(texts or ()))
            except ValueError as error:
                raise ConfigError(f"KEYAUTH_PLANS plan {plan!r}: {error}") from None

    # -- storage -------------------------------------------------------------

    def check_countable(self, items: Sequence[Item]) -> None:
        """``ValueError`` when these limits need what the storage lacks: a
        token bucket is exact on ``memory://`` and on Redis, nowhere else."""
        if not self.enabled or not any(isinstance(item, Bucket) for item in items):
            return
        storage = self.limiter.storage
        if self.script is None and not isinstance(storage, MemoryStorage):
            raise ValueError(
                "limits with a burst need a memory:// or Redis limiter storage "
                "with the fixed-window strategy"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.limiter.enabled)

    @property
    def script(self) -> PlanScript | None:
        """The one-round-trip script, where the storage and strategy allow it."""
        if not self.enabled:
            return None
        storage = self.limiter.storage
        known = self._script
        if known is None or known[0] is not storage:
            script = None
            if isinstance(storage, RedisStorage) and isinstance(
                self.limiter.limiter, FixedWindowRateLimiter
            ):
                script = PlanScript(storage, self.key_prefix)
            known = self._script = (storage, script)
        return known[1]

    def _ids(self, *identifiers: str) -> tuple[str, ...]:
        return (self.key_prefix, *identifiers) if self.key_prefix else identifiers

    def items(self, limits: tuple[str, ...]) -> list[Item]:
        found = self._items.get(limits)
        if found is None:
            if len(self._items) >= ITEMS_KEPT:
                self._items.clear()
            found = self._items[limits] = [item for text in limits for item in parse_limits(text)]
        return found

    def _failed(self, error: Exception, fail_open: bool) -> None:
        """A storage call failed: log once per outage; 503 unless failing open."""
        if not self._outage_logged:
            self._outage_logged = True
            logger.warning("flask-keyauth: the rate-limit storage is unreachable: %r", error)
        if not fail_open:
            raise storage_down() from None

    def _reached(self) -> None:
        if self._outage_logged:
            self._outage_logged = False
            logger.warning("flask-keyauth: the rate-limit storage is reachable again")

    # -- the failed-auth throttle -------------------------------------------

    def throttle_check(self, remote_addr: str) -> None:
        """429 while this address is over the failed-auth limit (fails closed)."""
        if not self.enabled:
            return
        strategy = FixedWindowRateLimiter(self.limiter.storage)
        ids = self._ids("keyauth-failed", remote_addr)
        try:
            allowed = strategy.test(self.failed_auth_item, *ids)
            reset = 0.0 if allowed else strategy.get_window_stats(
                self.failed_auth_item, *ids
            ).reset_time
        except Exception as error:  # noqa: BLE001 - any storage failure is an outage
            # Always closed: nothing else bounds the argon2 work asked for.
            self._failed(error, fail_open=False)
            return
        if not allowed:
            retry = max(1, math.ceil(reset - time.time()))
            raise TooManyFailedAttempts(
                details={"retry_after": retry}, headers=[("Retry-After", str(retry))]
            )

    def throttle_fail(self, remote_addr: str) -> None:
        """Count one failed authentication of this address."""
        if not self.enabled:
            return
        strategy = FixedWindowRateLimiter(self.limiter.storage)
        try:
            strategy.hit(self.failed_auth_item, *self._ids("keyauth-failed", remote_addr))
        except Exception as error:  # noqa: BLE001 - any storage failure is an outage
            self._failed(error, fail_open=False)

    # -- plan limits ---------------------------------------------------------

    def _windows(self, key: ApiKeyInfo, limits: tuple[str, ...]) -> list[tuple[Item, Scope]]:
        """Every window a request of this key passes: its owner's plan, then
        the key's own limits (counted for that key alone)."""
        windows: list[tuple[Item, Scope]] = [(item, ()) for item in self.items(limits)]
        if key.limits:
            windows += [(item, ("key", key.id)) for item in self.items((key.limits,))]
        return windows

    @staticmethod
    def _affordable(key: ApiKeyInfo, windows: list[tuple[Item, Scope]], cost: int) -> None:
        """A cost larger than a whole window can never be served: a 429 that
        says so, before anything is counted."""
        for item, _ in windows:
            if cost > item.amount:
                retry = item.get_expiry()
                signals.rate_limited.send(signals.sender(), key=key, limit=repr(item))
                raise RateLimitExceeded(
                    f"This request costs {cost} units; the limit {item!r} allows "
                    f"{item.amount} at most.",
                    details={"limit": item.amount, "remaining": 0, "cost": cost,
                             "retry_after": retry},
                    headers=[("Retry-After", str(retry))],
                )

    def check(
        self, key: ApiKeyInfo, limits: tuple[str, ...], stamps: tuple[str, str], cost: int
    ) -> tuple[bool, Charge]:
        """For a cached key: whether its stamps still hold and, if they do
        and ``cost`` > 0, what spending it left (one round trip). Not fresh
        when the storage has no stamps or fails open while down."""
        script = self.script
        if script is None:
            return False, NO_CHARGE
        windows = self._windows(key, limits) if cost else []
        self._affordable(key, windows, cost)
        try:
            result = script.run(key.owner_id, key.id, _keyed(script, key, windows), stamps, cost)
        except Exception as error:  # noqa: BLE001 - any storage failure is an outage
            self._failed(error, self.settings.ratelimit_fail_open)
            return False, NO_CHARGE
        self._reached()
        if not result.fresh:
            return False, NO_CHARGE
        return True, self._script_windows([item for item, _ in windows], result)

    def stamps(self, owner_id: str, key_id: str) -> tuple[str, str] | None:
        """The key's current stamps (created where missing), or ``None``."""
        script = self.script
        if script is None:
            return None
        try:
            result = script.run(owner_id, key_id, [], None, 0)
        except Exception as error:  # noqa: BLE001 - any storage failure is an outage
            self._failed(error, self.settings.ratelimit_fail_open)
            return None
        return result.key_stamp, result.owner_stamp

    def bump(self, owner_id: str, key_ids: Sequence[str] = ()) -> None:
        """After a committed change: every process reads the rows again.
        Raises :class:`StorageUnavailable` when the storage cannot be told."""
        script = self.script
        if script is None:
            return
        try:
            script.bump(owner_id, key_ids)
        except Exception as error:
            logger.error(
                "flask-keyauth: a change was saved but the rate-limit storage could not be "
                "told (%r); other processes apply it within KEYAUTH_ROW_MAX_AGE seconds", error
            )
            raise storage_down() from None

    @staticmethod
    def _script_windows(items: list[Item], result: ScriptResult) -> Charge:
        now = time.time()

        def at(ms: int, item: Item) -> float:
            if ms >= 0:
                return now + ms / 1000
            return now if isinstance(item, Bucket) else now + item.get_expiry()

        counts = [
            (used, at(reset, item), at(retry, item))
            for item, (used, reset, retry) in zip(items, result.counts, strict=True)
        ]
        return settle(items, counts)

    def spend(self, key: ApiKeyInfo, limits: tuple[str, ...], cost: int) -> Charge:
        """Spend ``cost`` (0: only read) of every window, without a stamp check."""
        if not self.enabled:
            return NO_CHARGE
        windows = self._windows(key, limits)
        if not windows:
            return NO_CHARGE
        self._affordable(key, windows, cost)
        try:
            script = self.script
            if script is not None:
                charge = self._script_windows(
                    [item for item, _ in windows],
                    script.run(key.owner_id, key.id, _keyed(script, key, windows), None, cost),
                )
            else:
                charge = self._strategy_windows(key.owner_id, windows, cost)
        except Exception as error:  # noqa: BLE001 - any storage failure is an outage
            self._failed(error, self.settings.ratelimit_fail_open)
            return NO_CHARGE
        self._reached()
        return charge

    def _strategy_windows(
        self, owner_id: str, windows: list[tuple[Item, Scope]], cost: int
    ) -> Charge:
        strategy = self.limiter.limiter
        over = False
        found = []
        for item, scope in windows:
            ids = self._ids("keyauth", hash_tag(owner_id), *scope)
            # As Flask-Limiter does: the first breach stops the counting; the
            # windows past it are read, not counted.
            spend = 0 if over else cost
            if isinstance(item, Bucket):
                used, full, retry = self.buckets.take(item.key_for(*ids), item, spend)
                over = over or used > item.amount
                found.append(Window(item, max(0, item.amount - used), full, retry))
                continue
            if spend:
                over = not strategy.hit(item, *ids, cost=spend)
            stats = strategy.get_window_stats(item, *ids)
            reset = float(stats.reset_time)
            found.append(Window(item, max(0, int(stats.remaining)), reset, reset))
        return found, over

    def enforce(self, key: ApiKeyInfo, charge: Charge) -> None:
        """Add the headers to this request's response; 429 when over."""
        windows, over = charge
        if not windows:
            return
        first = refusing(windows) if over else binding(windows)
        headers = rate_limit_headers(self.settings.ratelimit_headers, windows, first)

        @after_this_request
        def add_headers(response: Response) -> Response:
            for name, value in headers:
                response.headers[name] = value
            return response

        if over:
            retry = max(1, math.ceil(first.retry - time.time()))
            signals.rate_limited.send(signals.sender(), key=key, limit=repr(first.item))
            raise RateLimitExceeded(
                details={
                    "limit": first.item.amount,
                    "remaining": 0,
                    "reset_at": reset_iso(first.reset),
                    "retry_after": retry,
                },
                headers=[("Retry-After", str(retry))],
            )

    def report(self, key: ApiKeyInfo, limits: tuple[str, ...]) -> list[dict[str, Any]]:
        """The owner's windows as they stand, without spending anything."""
        windows, _ = self.spend(key, limits, 0)
        return [window.as_dict() for window in windows]
