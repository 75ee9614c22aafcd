"""Prometheus metrics, with the ``metrics`` extra (``prometheus_client``).

``keyauth_requests_total{outcome}``
    Key-authenticated requests by how they ended: ``ok``, ``missing``,
    ``invalid``, ``expired``, ``forbidden``, ``rate_limited``,
    ``throttled``, ``ip_not_allowed``, ``unavailable``.
``keyauth_argon2_verifications_total{result}``
    argon2 runs: ``match``, ``mismatch``, or ``busy`` (no free slot, so
    the request got a 503 instead: the process is saturated).
``keyauth_auth_seconds``
    Time to authenticate a request (histogram), from reading its headers
    to the plan's answer.

They are ordinary ``prometheus_client`` metrics, so gunicorn's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) aggregates them like the
host's own. Without ``prometheus_client``, or with
``KEYAUTH_METRICS_REGISTRY = False``, every call here does nothing.
"""

from __future__ import annotations

import weakref
from typing import Any

#: The outcome label of each error code.
OUTCOMES = {
    "MISSING_API_KEY": "missing",
    "INVALID_API_KEY": "invalid",
    "EXPIRED_API_KEY": "expired",
    "FORBIDDEN": "forbidden",
    "HTTPS_REQUIRED": "forbidden",
    "RATE_LIMIT_EXCEEDED": "rate_limited",
    "TOO_MANY_FAILED_ATTEMPTS": "throttled",
    "IP_NOT_ALLOWED": "ip_not_allowed",
    "SERVICE_UNAVAILABLE": "unavailable",
}
#: Buckets of ``keyauth_auth_seconds``: a warm request takes well under a
#: millisecond, a first use an argon2 run (tens of milliseconds).
AUTH_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)


class Metrics:
    """The metrics of one registry; this base class records nothing."""

    def request(self, code: str | None) -> None:
        """Count a request by its error code (``None``: it passed)."""

    def auth_seconds(self, seconds: float) -> None:
        """Observe the time one authentication took."""

    def argon2(self, result: str) -> None:
        """Count an argon2 verification: ``match``, ``mismatch`` or ``busy``."""


class PrometheusMetrics(Metrics):
    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            "keyauth_requests",
            "Key-authenticated requests, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.verifications = Counter(
            "keyauth_argon2_verifications",
            "argon2 verifications of presented keys, by result.",
            ["result"],
            registry=registry,
        )
        self.auth_time = Histogram(
            "keyauth_auth_seconds",
            "Time to authenticate a request and count it against its plan.",
            buckets=AUTH_BUCKETS,
            registry=registry,
        )
        # Children made once: labels() is a dictionary lookup under a lock.
        self._outcomes = {
            outcome: self.requests.labels(outcome)
            for outcome in ("ok", *dict.fromkeys(OUTCOMES.values()))
        }
        self._results = {
            result: self.verifications.labels(result) for result in ("match", "mismatch", "busy")
        }

    def request(self, code: str | None) -> None:
        outcome = "ok" if code is None else OUTCOMES.get(code)
        if outcome is not None:
            self._outcomes[outcome].inc()

    def auth_seconds(self, seconds: float) -> None:
        self.auth_time.observe(seconds)

    def argon2(self, result: str) -> None:
        self._results[result].inc()


NOTHING = Metrics()
# One set of metrics per registry: a registry refuses a name twice, and
# every app of a process (tests, several apps in one server) shares them.
_by_registry: weakref.WeakKeyDictionary[Any, PrometheusMetrics] = weakref.WeakKeyDictionary()


def metrics_for(registry: Any) -> Metrics:
    """The metrics on ``registry`` (``None``: prometheus_client's default;
    ``False``: none), made once per registry."""
    if registry is False:
        return NOTHING
    try:
        import prometheus_client
    except ImportError:
        return NOTHING
    if registry is None:
        registry = prometheus_client.REGISTRY
    found = _by_registry.get(registry)
    if found is None:
        found = _by_registry[registry] = PrometheusMetrics(registry)
    return found
