"""One Redis round trip per request: every plan window and the key's stamps.

A *stamp* is a random token kept in Redis for each key and each owner's
plan. Every change made through flask-keyauth deletes the stamp after its
commit (:meth:`PlanScript.bump`); a process that cached a key's row keeps
the stamps it read *before* reading that row. The script compares them with
the current ones: equal, the row is unchanged and the request is counted in
the same call; different or missing (a change, a restart, a flush, a
failover), nothing is counted and the process reads the row again.

All of an owner's keys carry the same hash tag, so the script's keys share
one slot on Redis Cluster. Works on any client ``limits``' Redis storages
hand out (Redis, Sentinel, Cluster): only ``register_script`` and ``delete``
are used, on the storage's key prefix.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .plans import Bucket, Item

#: KEYS: key stamp, owner stamp, then each window's key.
#: ARGV: expected key stamp, expected owner stamp ("" counts without
#: comparing), a token for a missing stamp, the cost (0 only reads), then
#: for each window its kind and two numbers: "w", period and limit (a fixed
#: window), or "b", seconds per unit and burst (a token bucket, GCRA).
#: Returns {fresh, key stamp, owner stamp, then per window: units in use,
#: ms until it resets (a bucket: until it is full), ms until this cost fits}.
#: Like the fixed-window strategy, a window starts at its first hit and
#: counting stops at the first window over its limit; the windows past it
#: are read, not counted, so that a refusal knows every spent window.
SCRIPT = """
local stamps = {}
for i = 1, 2 do
    local stamp = redis.call('get', KEYS[i])
    if not stamp then
        stamp = ARGV[3] .. i
        redis.call('set', KEYS[i], stamp, 'EX', 86400)
    end
    stamps[i] = stamp
end
local out = {1, stamps[1], stamps[2]}
if ARGV[1] ~= '' and (stamps[1] ~= ARGV[1] or stamps[2] ~= ARGV[2]) then
    out[1] = 0
    return out
end
local cost = tonumber(ARGV[4])
local counting = cost > 0
local now = nil
for i = 3, #KEYS do
    local j = 5 + 3 * (i - 3)
    local a, b = tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
    if ARGV[j] == 'w' then
        local current
        if counting then
            current = redis.call('incrby', KEYS[i], cost)
            if current == cost then
                redis.call('expire', KEYS[i], a)
            end
            if current > b then
                counting = false
            end
        else
            current = tonumber(redis.call('get', KEYS[i]) or '0')
        end
        local ttl = redis.call('pttl', KEYS[i])
        out[#out + 1] = current
        out[#out + 1] = ttl
        out[#out + 1] = ttl
    else
        if not now then
            local t = redis.call('time')
            now = tonumber(t[1]) + tonumber(t[2]) / 1000000
        end
        local tat = tonumber(redis.call('get', KEYS[i]) or '0')
        if tat < now then
            tat = now
        end
        local new_tat = tat + cost * a
        local fits = new_tat - now <= b * a + 0.000001
        local shown, used = tat, math.ceil((tat - now) / a - 0.000001)
        if counting and fits then
            shown = new_tat
            used = math.ceil((new_tat - now) / a - 0.000001)
            redis.call('set', KEYS[i], string.format('%.6f', new_tat),
                'PX', math.ceil((new_tat - now) * 1000) + 1000)
        elseif counting then
            used = b + cost
            counting = false
        end
        local retry = new_tat - now - b * a
        if retry < 0 then
            retry = 0
        end
        out[#out + 1] = used
        out[#out + 1] = math.ceil((shown - now) * 1000)
        out[#out + 1] = math.ceil(retry * 1000)
    end
end
return out
"""


def hash_tag(owner_id: str) -> str:
    """The Redis Cluster hash tag of an owner: its id, braces escaped."""
    escaped = owner_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return "{" + escaped + "}"


@dataclass(frozen=True)
class ScriptResult:
    fresh: bool
    key_stamp: str
    owner_stamp: str
    #: (units in use, ms to reset, ms until the cost fits; negative: no
    #: such key) for each window read.
    counts: list[tuple[int, int, int]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PlanScript:
    """The script registered on one ``limits`` Redis storage."""

    def __init__(self, storage: Any, key_prefix: str) -> None:
        self._storage = storage
        self._client = storage.get_connection()
        self._script = self._client.register_script(SCRIPT)
        self._prefix = key_prefix

    def _key(self, owner_id: str, *parts: str) -> str:
        return str(
            self._storage.prefixed_key(
                "/".join((self._prefix, "keyauth", hash_tag(owner_id), *parts))
            )
        )

    def stamp_keys(self, owner_id: str, key_id: str) -> list[str]:
        return [self._key(owner_id, "stamp", key_id), self._key(owner_id, "stamp")]

    def window_key(self, owner_id: str, item: Item, scope: tuple[str, ...] = ()) -> str:
        """The key of a window: the owner's plan, or ``scope`` (one key's)."""
        if isinstance(item, Bucket):
            return self._key(owner_id, *scope, "burst", str(item.rate), str(item.period),
                             str(item.burst))
        return self._key(
            owner_id, *scope, str(item.amount), str(item.multiples), item.GRANULARITY.name
        )

    def run(
        self,
        owner_id: str,
        key_id: str,
        windows: Sequence[tuple[Item, str]],
        expected: tuple[str, str] | None,
        cost: int,
    ) -> ScriptResult:
        """Check the stamps (``expected=None``: do not) and, if they hold,
        spend ``cost`` in every ``(item, key)`` window (0 only reads them)."""
        keys = self.stamp_keys(owner_id, key_id) + [key for _, key in windows]
        args: list[Any] = [*(expected or ("", "")), secrets.token_hex(8), cost]
        for item, _ in windows:
            if isinstance(item, Bucket):
                args += ["b", repr(item.interval), item.burst]
            else:
                args += ["w", item.get_expiry(), item.amount]
        out = self._script(keys=keys, args=args)
        counts = [(int(out[i]), int(out[i + 1]), int(out[i + 2])) for i in range(3, len(out), 3)]
        return ScriptResult(bool(int(out[0])), _text(out[1]), _text(out[2]), counts)

    def bump(self, owner_id: str, key_ids: Sequence[str] = ()) -> None:
        """Invalidate the stamps of these keys (none: the owner's plan)."""
        if key_ids:
            names = [self._key(owner_id, "stamp", key_id) for key_id in key_ids]
        else:
            names = [self._key(owner_id, "stamp")]
        for name in names:
            # One key per call: on Redis Cluster the keys of several owners
            # may live on different nodes.
            self._client.delete(name)
