"""Limits as text, parsed once: fixed windows in Flask-Limiter's notation
(``"100/hour;10000/day"``) and token buckets with a burst
(``"200/second burst 500"``), and the in-process buckets of ``memory://``.

A bucket is GCRA (the generic cell rate algorithm): it holds ``burst``
units and refills ``rate`` units per ``period``; each request takes its
cost. Only one number is kept per bucket, the theoretical arrival time
(TAT): the moment the bucket will be full again.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse

#: The most limits one text may hold.
LIMITS_MAX = 10
#: The longest limits text stored (the column's size).
LIMITS_TEXT_MAX = 512
_BURST = re.compile(
    r"\s*(\d+)\s*(?:/|\s+per\s+)\s*(\d*)\s*(second|minute|hour|day)s?\s+burst\s+(\d+)\s*",
    re.IGNORECASE,
)
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Bucket:
    """``rate`` units per ``period`` seconds, holding at most ``burst``."""

    rate: int
    period: int
    burst: int

    @property
    def amount(self) -> int:
        return self.burst

    @property
    def interval(self) -> float:
        """Seconds to earn one unit back."""
        return self.period / self.rate

    def get_expiry(self) -> int:
        """Seconds to refill from empty (the ietf header's window)."""
        return math.ceil(self.burst * self.interval)

    def key_for(self, *identifiers: str) -> str:
        return "/".join((*identifiers, "burst", str(self.rate), str(self.period), str(self.burst)))

    def __repr__(self) -> str:
        unit = "second" if self.period == 1 else f"{self.period} seconds"
        return f"{self.rate} per {unit} burst {self.burst}"


#: One limit: a fixed window of ``limits``, or a token bucket.
Item = RateLimitItem | Bucket


def split_limits(text: str) -> tuple[str, ...]:
    """``"100/hour;10000/day"`` -> ``("100/hour", "10000/day")``."""
    return tuple(part.strip() for part in text.split(";") if part.strip())


def parse_item(text: str) -> Item:
    """One limit; ``ValueError`` with a message when it cannot be read."""
    match = _BURST.fullmatch(text)
    if match is not None:
        rate, multiple, unit, burst = match.groups()
        period = int(multiple or 1) * _SECONDS[unit.lower()]
        if int(rate) < 1 or int(burst) < 1 or period < 1:
            raise ValueError(f"{text!r}: rate, period and burst must be at least 1")
        return Bucket(int(rate), period, int(burst))
    try:
        item = parse(text)
    except ValueError:
        raise ValueError(
            f"limit {text!r} cannot be parsed: give one such as '100/hour' or "
            "'200/second burst 500'"
        ) from None
    if item.amount < 1:
        raise ValueError(f"{text!r}: a limit allows at least 1 request")
    return item


def parse_limits(text: str) -> list[Item]:
    """Every limit of a ``;``-separated text (``ValueError`` if any is bad)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("limits must be a text such as '5000/hour;100000/day'")
    if len(text) > LIMITS_TEXT_MAX:
        raise ValueError(f"limits must be at most {LIMITS_TEXT_MAX} characters")
    parts = split_limits(text)
    if len(parts) > LIMITS_MAX:
        raise ValueError(f"give at most {LIMITS_MAX} limits, not {len(parts)}")
    return [parse_item(part) for part in parts]


def check_limits(text: str) -> str:
    """The limits text as stored: checked, one space-free ``;`` between parts."""
    parse_limits(text)
    return ";".join(split_limits(text))


class LocalBuckets:
    """Token buckets in this process's memory (``memory://``), exact under
    one lock. A bucket that has refilled is the same as no bucket, so it is
    dropped when next touched, and the table is swept only when it has
    doubled since the last sweep: the cost per request stays flat however
    many owners are active."""

    SWEEP_FLOOR = 1024

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sweep_at = self.SWEEP_FLOOR

    def take(self, key: str, bucket: Bucket, cost: int) -> tuple[int, float, float]:
        """Take ``cost`` units (0 only looks): (units in use, when full, when
        the cost fits); in use beyond ``burst`` means refused, nothing taken."""
        now = time.time()
        with self._lock:
            tat = max(self._tats.get(key, now), now)
            new_tat = tat + cost * bucket.interval
            allowed = new_tat - now <= bucket.burst * bucket.interval + 1e-9
            if allowed and cost:
                if key not in self._tats and len(self._tats) >= self._sweep_at:
                    self._sweep(now)
                self._tats[key] = new_tat
            elif tat <= now:
                self._tats.pop(key, None)
        shown = new_tat if allowed and cost else tat
        used = math.ceil((shown - now) / bucket.interval - 1e-9)
        if not allowed:
            used = bucket.burst + cost
        retry = now + max(0.0, new_tat - now - bucket.burst * bucket.interval)
        return used, shown, retry

    def _sweep(self, now: float) -> None:
        self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        self._sweep_at = max(self.SWEEP_FLOOR, 2 * len(self._tats))

    def clear(self) -> None:
        with self._lock:
            self._tats.clear()

    def __len__(self) -> int:
        return len(self._tats)
