"""Every ``KEYAUTH_*`` setting, named once here with its default.

``init_app`` sets these defaults on ``app.config`` and reads them once into a
:class:`Settings`; a bad value fails at start-up with a message naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import keys
from .plans import parse_limits, split_limits

#: The first part of every key: ``sk`` gives ``sk_live_…`` and ``sk_test_…``.
KEY_PREFIX = "sk"
#: Scope name -> scopes it implies, or ``{"implies": [...], "description":
#: "..."}``. Hosts add their own, e.g. ``"webhook": []``.
SCOPES: dict[str, list[str]] = {"read": [], "write": ["read"], "admin": ["write"]}
#: Environments whose keys this deployment accepts; drop ``"live"`` on
#: developer machines.
ENVIRONMENTS_ACCEPTED = {"live", "test"}
#: Plan name -> limits in Flask-Limiter's notation (``;``-separated), where
#: an item may also be a token bucket, ``"200/second burst 500"``. ``None``
#: means the limits are set per owner with ``set_plan(..., limits=...)``.
PLANS: dict[str, str | None] = {
    "free": "100/hour;10000/day",
    "starter": "300/hour;100000/day",
    "professional": "1200/hour;500000/day",
    "enterprise": None,
}
#: The plan of an owner that was never given one.
DEFAULT_PLAN = "free"
#: Failed authentications allowed per remote address.
FAILED_AUTH_LIMIT = "30/minute"
#: Rate-limit header style, or a list of styles: ``x-ratelimit``,
#: ``ratelimit``, ``ietf``.
RATELIMIT_HEADERS: str | list[str] = "x-ratelimit"
#: Serve requests (and log a warning) when the limiter storage is down,
#: instead of answering 503.
RATELIMIT_FAIL_OPEN = False
#: Refuse key-authenticated requests that did not come over HTTPS (403).
REQUIRE_HTTPS = False
#: The request headers a key is read from, in order.
HEADER_NAMES = ["Authorization", "X-API-Key"]
#: argon2id iterations (OWASP minimum: 2).
ARGON2_TIME_COST = 2
#: argon2id memory in KiB (OWASP minimum: 19456, i.e. 19 MiB).
ARGON2_MEMORY_COST = 19456
#: argon2id lanes.
ARGON2_PARALLELISM = 1
#: Seconds between two writes of a key's last use and request counts.
LAST_USED_INTERVAL = 60
#: Endpoint that the key pages redirect anonymous visitors to; ``None``
#: answers 401 instead.
LOGIN_VIEW: str | None = None
#: Template the key pages extend.
BASE_TEMPLATE = "keyauth/base.html"
#: Keys older than this many days get a "rotate" hint.
ROTATION_REMINDER_DAYS = 90
#: Seconds a process trusts a key's cached row (with a Redis storage, whose
#: stamps carry every change made through flask-keyauth at once): changes
#: made around flask-keyauth, in hand-written SQL, apply within this.
ROW_MAX_AGE = 10
#: IPv6 addresses count against the failed-auth limit per network of this
#: prefix length: one client holds a whole /64.
FAILED_AUTH_IPV6_PREFIX = 64
#: argon2 verifications allowed at once in a process; one more answers 503
#: at once instead of queueing. ``None``: twice the CPUs, at least 4.
ARGON2_MAX_CONCURRENT: int | None = None
#: Keys an owner may hold that are not revoked; past it, creating one is a
#: 409 ``KEY_LIMIT_REACHED`` (``ValueError`` in the service API).
MAX_KEYS_PER_OWNER = 100
#: When set, every new key expires within this many days (no expiry given:
#: the most; a later one is refused).
MAX_LIFETIME_DAYS: int | None = None
#: GitHub's secret scanning public keys, key id -> PEM, for
#: ``POST /api/leaks/github`` (``leaks.keys_from_github`` reads GitHub's
#: document). Empty: every report is refused (401).
LEAK_REPORT_KEYS: dict[str, str] = {}
#: What a leaked-key report does to a live key: ``"revoke"`` it, or only
#: ``"notify"`` (the ``key_leaked`` signal and a ``leaked`` event).
LEAK_ACTION = "revoke"
#: The ``prometheus_client`` registry the metrics are registered on.
#: ``None``: its default registry (the one gunicorn's multiprocess collector
#: reads); ``False``: no metrics. Without ``prometheus_client``, none.
METRICS_REGISTRY: Any = None

DEFAULTS: dict[str, Any] = {
    f"KEYAUTH_{name}": value
    for name, value in list(globals().items())
    if name.isupper() and name != "DEFAULTS"
}

HEADER_STYLES = ("x-ratelimit", "ratelimit", "ietf")
SCOPE_NAME_MAX = 64


class ConfigError(RuntimeError):
    """A ``KEYAUTH_*`` setting has a value that cannot work."""


@dataclass(frozen=True)
class Settings:
    """The ``KEYAUTH_*`` settings of one app, read once at ``init_app``."""

    key_prefix: str
    scopes: Mapping[str, frozenset[str]]  # scope -> every scope it grants
    #: Scope -> description: text, or ``lazy_gettext`` text (``str()`` it).
    scope_descriptions: Mapping[str, Any]
    environments_accepted: frozenset[str]
    plans: Mapping[str, tuple[str, ...] | None]
    default_plan: str
    failed_auth_limit: str
    ratelimit_headers: tuple[str, ...]
    ratelimit_fail_open: bool
    require_https: bool
    header_names: tuple[str, ...]
    argon2_time_cost: int
    argon2_memory_cost: int
    argon2_parallelism: int
    last_used_interval: float
    login_view: str | None
    base_template: str
    rotation_reminder_days: int
    row_max_age: float
    failed_auth_ipv6_prefix: int
    argon2_max_concurrent: int
    max_keys_per_owner: int
    max_lifetime_days: int | None
    leak_report_keys: Mapping[str, Any]  # key id -> ECDSA P-256 public key
    leak_action: str
    metrics_registry: Any

    def expand(self, scopes: frozenset[str] | tuple[str, ...]) -> frozenset[str]:
        """Every scope the given scopes grant, implied ones included."""
        granted: set[str] = set()
        for scope in scopes:
            granted |= self.scopes.get(scope, frozenset({scope}))
        return frozenset(granted)


def _closure(implies: Mapping[str, list[str]]) -> dict[str, frozenset[str]]:
    # Each scope's own walk, not a memo shared between scopes: with a cycle a
    # memo would keep the partial set found while the cycle was being walked.
    expanded: dict[str, frozenset[str]] = {}
    for scope in implies:
        granted = {scope}
        todo = [scope]
        while todo:
            for implied in implies[todo.pop()]:
                if implied not in granted:
                    granted.add(implied)
                    todo.append(implied)
        expanded[scope] = frozenset(granted)
    return expanded


def _fail(name: str, message: str) -> ConfigError:
    return ConfigError(f"KEYAUTH_{name} {message}")


def _iterable(value: Any) -> Iterable[Any]:
    """``value`` if it can be iterated, else nothing (so the check names the key)."""
    return value if isinstance(value, Iterable) else ()


def _int(config: Mapping[str, Any], name: str, minimum: int) -> int:
    value = config[f"KEYAUTH_{name}"]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(name, f"must be a whole number of at least {minimum}, not {value!r}")
    return value


def _prefix(config: Mapping[str, Any]) -> str:
    prefix = config["KEYAUTH_KEY_PREFIX"]
    try:
        keys.check_prefix(prefix)
    except (ValueError, TypeError) as error:
        raise _fail("KEY_PREFIX", f"is invalid: {error}") from None
    return str(prefix)


def _valid_scope_name(scope: Any) -> bool:
    return (
        isinstance(scope, str)
        and 0 < len(scope) <= SCOPE_NAME_MAX
        and all(c.isalnum() or c in "_:.-" for c in scope)
    )


def _is_text(value: Any) -> bool:
    """A string, or Flask-Babel's ``lazy_gettext`` string (said in each
    request's language)."""
    from flask_babel import LazyString

    return isinstance(value, (str, LazyString))


def _scope_entry(scope: Any, entry: Any) -> tuple[list[str], Any]:
    """A scope's implied scopes and description, from either form."""
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"implies", "description"}
        description = entry.get("description", "")
        if unknown or not _is_text(description):
            raise _fail(
                "SCOPES", f"scope {scope!r} takes {{'implies': [...], 'description': '...'}}"
            )
        entry = entry.get("implies", [])
    else:
        description = ""
    if isinstance(entry, str) or not isinstance(entry, Iterable):
        raise _fail("SCOPES", f"scope {scope!r} must imply a list of known scopes")
    return list(entry), description


def _scopes(config: Mapping[str, Any]) -> tuple[dict[str, frozenset[str]], dict[str, Any]]:
    """Scope -> every scope it grants, and scope -> its description."""
    raw = config["KEYAUTH_SCOPES"]
    if not isinstance(raw, Mapping) or not raw:
        raise _fail("SCOPES", "must be a non-empty mapping of scope -> implied scopes")
    implies: dict[str, list[str]] = {}
    descriptions: dict[str, Any] = {}
    for scope, entry in raw.items():
        if not _valid_scope_name(scope):
            raise _fail("SCOPES", f"has an invalid scope name {scope!r}")
        implies[scope], descriptions[scope] = _scope_entry(scope, entry)
    for scope, implied in implies.items():
        if not all(i in implies for i in implied):
            raise _fail("SCOPES", f"scope {scope!r} must imply a list of known scopes")
    return _closure(implies), descriptions


def _max_lifetime(config: Mapping[str, Any]) -> int | None:
    if config["KEYAUTH_MAX_LIFETIME_DAYS"] is None:
        return None
    return _int(config, "MAX_LIFETIME_DAYS", 1)


def _environments(config: Mapping[str, Any]) -> frozenset[str]:
    value = config["KEYAUTH_ENVIRONMENTS_ACCEPTED"]
    environments = frozenset((value,) if isinstance(value, str) else _iterable(value))
    if not environments or not environments <= set(keys.ENVIRONMENTS):
        raise _fail("ENVIRONMENTS_ACCEPTED", "must be a non-empty subset of {'live', 'test'}")
    return environments


def _parses(text: Any) -> bool:
    try:
        parse_limits(text)
    except (ValueError, TypeError):
        return False
    return True


def _plans(config: Mapping[str, Any]) -> dict[str, tuple[str, ...] | None]:
    raw_plans = config["KEYAUTH_PLANS"]
    if not isinstance(raw_plans, Mapping) or not raw_plans:
        raise _fail("PLANS", "must be a non-empty mapping of plan -> limits")
    plans: dict[str, tuple[str, ...] | None] = {}
    for plan, text in raw_plans.items():
        if text is not None and not _parses(text):
            raise _fail("PLANS", f"plan {plan!r} has limits {text!r} that cannot be parsed")
        plans[plan] = None if text is None else split_limits(text)
    return plans


def _default_plan(config: Mapping[str, Any], plans: Mapping[str, Any]) -> str:
    default_plan = config["KEYAUTH_DEFAULT_PLAN"]
    if default_plan not in plans or plans[default_plan] is None:
        raise _fail("DEFAULT_PLAN", f"{default_plan!r} must name a plan with fixed limits")
    return str(default_plan)


def _failed_auth_limit(config: Mapping[str, Any]) -> str:
    from limits import parse

    failed = config["KEYAUTH_FAILED_AUTH_LIMIT"]
    try:
        parse(failed)
    except (ValueError, TypeError):
        failed = None
    if failed is None:
        raise _fail(
            "FAILED_AUTH_LIMIT", f"{config['KEYAUTH_FAILED_AUTH_LIMIT']!r} is not one limit"
        )
    return str(failed)


def _styles(config: Mapping[str, Any]) -> tuple[str, ...]:
    styles = config["KEYAUTH_RATELIMIT_HEADERS"]
    if not isinstance(styles, (str, Iterable)) and styles is not None:
        raise _fail("RATELIMIT_HEADERS", f"must be a style or a list of styles, not {styles!r}")
    styles = (styles,) if isinstance(styles, str) else tuple(styles or ())
    for style in styles:
        if style not in HEADER_STYLES:
            raise _fail("RATELIMIT_HEADERS", f"has unknown style {style!r}")
    return styles


def _header_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    value = config["KEYAUTH_HEADER_NAMES"]
    names = (value,) if isinstance(value, str) else tuple(_iterable(value))
    if not names or not all(isinstance(n, str) and n for n in names):
        raise _fail("HEADER_NAMES", "must name at least one header")
    return names


def _memory_cost(config: Mapping[str, Any]) -> int:
    parallelism = _int(config, "ARGON2_PARALLELISM", 1)
    memory_cost = _int(config, "ARGON2_MEMORY_COST", 8)
    if memory_cost < 8 * parallelism:
        # argon2 itself refuses this, but only at the first hash.
        raise _fail(
            "ARGON2_MEMORY_COST",
            f"must be at least 8 KiB per lane (8 * KEYAUTH_ARGON2_PARALLELISM = "
            f"{8 * parallelism}), not {memory_cost}",
        )
    return memory_cost


def _leak_report_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    from .leaks import load_public_keys

    value = config["KEYAUTH_LEAK_REPORT_KEYS"] or {}
    if not isinstance(value, Mapping):
        raise _fail("LEAK_REPORT_KEYS", "must map GitHub's key ids to PEM public keys")
    try:
        return load_public_keys(value)
    except ValueError as error:
        raise _fail("LEAK_REPORT_KEYS", f"has a bad {error}") from None


def _leak_action(config: Mapping[str, Any]) -> str:
    from .leaks import ACTIONS

    action = config["KEYAUTH_LEAK_ACTION"]
    if action not in ACTIONS:
        raise _fail("LEAK_ACTION", f"must be 'revoke' or 'notify', not {action!r}")
    return str(action)


def load(config: Mapping[str, Any]) -> Settings:
    """Read and check the ``KEYAUTH_*`` settings of an app's config."""
    plans = _plans(config)
    scopes, descriptions = _scopes(config)
    return Settings(
        key_prefix=_prefix(config),
        scopes=scopes,
        scope_descriptions=descriptions,
        environments_accepted=_environments(config),
        plans=plans,
        default_plan=_default_plan(config, plans),
        failed_auth_limit=_failed_auth_limit(config),
        ratelimit_headers=_styles(config),
        ratelimit_fail_open=bool(config["KEYAUTH_RATELIMIT_FAIL_OPEN"]),
        require_https=bool(config["KEYAUTH_REQUIRE_HTTPS"]),
        header_names=_header_names(config),
        argon2_time_cost=_int(config, "ARGON2_TIME_COST", 1),
        argon2_memory_cost=_memory_cost(config),
        argon2_parallelism=_int(config, "ARGON2_PARALLELISM", 1),
        last_used_interval=_seconds(config, "LAST_USED_INTERVAL"),
        login_view=config["KEYAUTH_LOGIN_VIEW"],
        base_template=config["KEYAUTH_BASE_TEMPLATE"],
        rotation_reminder_days=_int(config, "ROTATION_REMINDER_DAYS", 1),
        row_max_age=_seconds(config, "ROW_MAX_AGE"),
        failed_auth_ipv6_prefix=_ipv6_prefix(config),
        argon2_max_concurrent=_max_concurrent(config),
        max_keys_per_owner=_int(config, "MAX_KEYS_PER_OWNER", 1),
        max_lifetime_days=_max_lifetime(config),
        leak_report_keys=_leak_report_keys(config),
        leak_action=_leak_action(config),
        metrics_registry=config["KEYAUTH_METRICS_REGISTRY"],
    )


def _seconds(config: Mapping[str, Any], name: str) -> float:
    value = config[f"KEYAUTH_{name}"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _fail(name, f"must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _ipv6_prefix(config: Mapping[str, Any]) -> int:
    value = _int(config, "FAILED_AUTH_IPV6_PREFIX", 1)
    if value > 128:
        raise _fail("FAILED_AUTH_IPV6_PREFIX", f"must be at most 128, not {value}")
    return value


def _max_concurrent(config: Mapping[str, Any]) -> int:
    if config["KEYAUTH_ARGON2_MAX_CONCURRENT"] is None:
        return max(4, 2 * (os.cpu_count() or 1))
    return _int(config, "ARGON2_MAX_CONCURRENT", 1)
