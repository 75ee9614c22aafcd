"""``python -m bench``: the per-request cost table, then the HTTP table.

The per-request counts are what the servers see: PostgreSQL's
``pg_stat_user_tables`` (table reads and row writes of flask-keyauth's
tables), Redis's ``MONITOR`` (commands this process sent, scripts' inner
commands left out). SQLite has no server: its rows count statements with a
SQLAlchemy listener, marked ``*``. argon2 runs are calls of the verify of
the hasher the app uses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import signal
import sys
import time
from typing import Any

from . import apps
from .apps import PROTECTED, Target, bearer, environ
from .cleanup import at_end, temporary_directory
from .observe import RedisMonitor
from .timing import Observers, Variant, account, interleave, median


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Per-request cost of flask-keyauth next to a bare Flask route and its peers.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds, smaller batches, 10,000 owners, short HTTP runs")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9, quick 3)")
    parser.add_argument("--batch", type=int, help="requests per variant per round (default 300)")
    parser.add_argument("--owners", type=int,
                        help="active owners of the scale rows (default 50000, quick 10000)")
    parser.add_argument("--cold", type=int, default=2,
                        help="cold first requests per round (each one argon2 run)")
    parser.add_argument("--skip-http", action="store_true", help="no gunicorn + wrk part")
    parser.add_argument("--skip-peers", action="store_true", help="no peer rows")
    parser.add_argument("--skip-scale", action="store_true", help="no many-owners rows")
    parser.add_argument("--skip-services", action="store_true",
                        help="no PostgreSQL + Redis rows (SQLite and memory only)")
    parser.add_argument("--http-seconds", type=float, help="seconds per wrk run (default 4)")
    parser.add_argument("--http-rounds", type=int, help="wrk rounds (default 2, quick 1)")
    parser.add_argument("--only", help="comma-separated row keys to keep (bare is always kept)")
    parser.add_argument("--profile", metavar="ROW",
                        help="profile one row with pyinstrument instead of timing")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 9)
    args.batch = args.batch or (100 if args.quick else 300)
    args.owners = args.owners or (10_000 if args.quick else 50_000)
    args.http_seconds = args.http_seconds or (2.0 if args.quick else 4.0)
    args.http_rounds = args.http_rounds or (1 if args.quick else 2)
    return args


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import version

    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"Flask {version('flask')}, Flask-Limiter {version('flask-limiter')}, "
        f"limits {version('limits')}, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def keyauth_target(ka: apps.KeyauthApp, owners: int, bulk: bool = False,
                   measure_rss: bool = False) -> Target:
    secrets_ = apps.bulk_keys(ka, owners) if bulk else [
        apps.new_key(ka, f"owner-{n}") for n in range(owners)
    ]
    random.Random(2).shuffle(secrets_)
    return Target(
        ka.app,
        [environ(PROTECTED, bearer(s)) for s in secrets_],
        keyauth=ka.app, database_url=ka.database_url, measure_rss=measure_rss,
    )


#: Rows left out of the table, and why.
SKIPPED: list[str] = []


def build(args: argparse.Namespace, tmp: str) -> list[Variant]:
    rows: list[Variant] = []
    only = set(args.only.split(",")) if args.only else None

    def want(key: str) -> bool:
        return only is None or key in only or key == "bare"

    def add(key: str, label: str, make: Any) -> None:
        if want(key):
            say(f"  setting up {key}")
            try:
                rows.append(Variant(key, label, make()))
            except Exception as error:
                # The package may be mid-change: one row that cannot be
                # built is left out, and said so, rather than the whole run.
                if key == "bare":
                    raise
                SKIPPED.append(f"{label}: not set up ({error.__class__.__name__}: {error})")

    add("bare", "1. bare Flask JSON route", lambda: Target(
        apps.bare_app(), [environ(apps.BARE)]))

    local = apps.keyauth_app(f"sqlite:///{tmp}/keyauth.db", "memory://", key_prefix="b1")
    add("bare-in-app", "1b. bare route of the flask-keyauth app (Flask-Limiter's hooks)",
        lambda: Target(local.app, [environ(apps.BARE)], keyauth=local.app,
                       database_url=local.database_url))

    pg_url = redis_pfx = None
    if not args.skip_services:
        pg_url = apps.postgres_database()
        redis_pfx = apps.redis_prefix()
    args.redis_prefix = redis_pfx
    if redis_pfx:
        add("floor", "1c. bare route + one Redis script call (the floor of any exact design)",
            lambda: Target(apps.floor_app(apps.REDIS_URL, redis_pfx + "floor"),
                           [environ(apps.BARE)]))
    add("keyauth", "2. require_key + plan limits, warm, SQLite + memory (10 owners)",
        lambda: keyauth_target(local, 10))

    remote = None
    if pg_url and redis_pfx:
        # PostgreSQL's statistics take 10 s to arrive (see observe), as long
        # as KEYAUTH_ROW_MAX_AGE: at its default, waiting for them would age
        # every row and make the counted batch re-read each key once, and a
        # usage flush (once a minute) might fall into the wait. Both are
        # periodic, not per request; set longer than the run here, so that
        # the counts are those of a steady-state request.
        remote = apps.keyauth_app(pg_url, apps.REDIS_URL, key_prefix=redis_pfx,
                                  **apps.STEADY_STATE)
        add("keyauth-pg-redis", "3. the same on PostgreSQL + Redis (10 owners) †",
            lambda: keyauth_target(remote, 10))
        quiet = apps.keyauth_app(pg_url, apps.REDIS_URL, key_prefix=redis_pfx + "q",
                                 KEYAUTH_METRICS_REGISTRY=False, **apps.STEADY_STATE)
        add("keyauth-no-metrics", "3c. row 3 without Prometheus metrics †",
            lambda: keyauth_target(quiet, 10))
        burst = apps.keyauth_app(
            pg_url, apps.REDIS_URL, key_prefix=redis_pfx + "b",
            KEYAUTH_PLANS={"bench": apps.BURST_LIMITS, "enterprise": None}, **apps.STEADY_STATE,
        )
        add("keyauth-burst", "3b. row 3 with a token bucket in the plan (rate + burst + day) †",
            lambda: keyauth_target(burst, 10))

    def cold() -> Target:
        def prepare() -> dict[str, Any]:
            return environ(PROTECTED, bearer(apps.new_key(local, "cold")))

        return Target(local.app, [], batch=args.cold, prepare=prepare, keyauth=local.app,
                      database_url=local.database_url)

    add("cold", "4. cold first request of a new key (one argon2 verify, default cost)", cold)
    add("garbage", "5. garbage and bad-checksum keys (401)", lambda: Target(
        local.app, [environ(PROTECTED, bearer(k)) for k in apps.garbage_keys()],
        status=401, keyauth=local.app, database_url=local.database_url))
    if remote is not None:
        add("garbage-pg-redis", "5b. garbage and bad-checksum keys, PostgreSQL + Redis (401) †",
            lambda: Target(
                remote.app, [environ(PROTECTED, bearer(k)) for k in apps.garbage_keys()],
                status=401, keyauth=remote.app, database_url=remote.database_url))
    add("unknown", "6. unknown id, valid checksum (401; one dummy argon2)", lambda: Target(
        local.app, [environ(PROTECTED, bearer(apps.unknown_id_key()))],
        status=401, batch=args.cold, keyauth=local.app, database_url=local.database_url))

    if not args.skip_scale:
        many = apps.keyauth_app(f"sqlite:///{tmp}/many.db", "memory://", key_prefix="b2",
                                cheap_argon2=True)
        add("keyauth-many", f"2b. row 2 with {args.owners:,} active owners",
            lambda: keyauth_target(many, args.owners, bulk=True, measure_rss=True))

    if not args.skip_peers:
        tokens = [apps.token() for _ in range(10)]
        token_envs = [environ(PROTECTED, bearer(t)) for t in tokens]
        add("peer-httpauth", "P1. Flask-HTTPAuth + SHA-256 token dict", lambda: Target(
            apps.peer_httpauth(tokens), token_envs))
        add("peer-limiter", "P2. Flask-Limiter alone, memory, two limits + headers",
            lambda: Target(apps.peer_limiter("memory://", "p2"), [environ(PROTECTED)]))
        add("peer-glued", "P3. P1 + P2 glued, per-token limits, memory", lambda: Target(
            apps.peer_glued(tokens, "memory://", "p3"), token_envs))
        if redis_pfx:
            add("peer-glued-redis", "P4. P3 with Flask-Limiter on Redis", lambda: Target(
                apps.peer_glued(tokens, apps.REDIS_URL, redis_pfx + "p4"), token_envs))
        peer_db = f"sqlite:///{tmp}/peer.db"
        add("peer-sqlalchemy", "P5. Flask-HTTPAuth + SQLAlchemy lookup per request, SQLite",
            lambda: Target(apps.peer_sqlalchemy(peer_db, tokens), token_envs,
                           database_url=peer_db))
        if not args.skip_scale:
            many_tokens = [apps.token() for _ in range(args.owners)]
            add("peer-glued-many", f"P3b. P3 with {args.owners:,} active tokens",
                lambda: Target(apps.peer_glued(many_tokens, "memory://", "p3b"),
                               [environ(PROTECTED, bearer(t)) for t in many_tokens]))
    return rows


def number(value: float | None, mark: str = "") -> str:
    if value is None:
        return "n/a"
    return (f"{value:.2f}".rstrip("0").rstrip(".") or "0") + mark


def table(rows: list[Variant]) -> str:
    lines = [
        f"{'row':<74} {'µs/req':>9} {'× bare':>7} {'max ms':>7} {'reads':>6} {'writes':>6} "
        f"{'Redis RT':>8} {'argon2':>6}",
        "-" * 131,
    ]
    for row in rows:
        c = row.counts
        mark = "*" if c.get("sql_from") == "sqlite" else ""
        label = row.label + (" !" if c.get("redis_interference") else "")
        lines.append(
            f"{label:<74} {median(row.samples):>9.1f} {median(row.ratios):>6.2f}× "
            f"{row.worst / 1000:>7.2f} {number(c.get('reads'), mark):>6} "
            f"{number(c.get('writes'), mark):>6} {number(c.get('redis')):>8} "
            f"{number(c.get('argon2')):>6}"
        )
    return "\n".join(lines)


def details(rows: list[Variant]) -> list[str]:
    lines = []
    for row in rows:
        if row.rss_per_key is not None and row.rss_added is not None:
            keys = len(row.target.environs)
            lines.append(
                f"{row.label.split('.')[0]}: RSS per cached key at {keys:,} keys: "
                f"{row.rss_per_key:,.0f} bytes ({row.rss_added / 2**20:,.1f} MiB added by "
                "warming them: all the warm-up keeps, the memory:// limiter's counters of "
                f"each owner included); worst single request of its timed rounds: "
                f"{row.worst / 1000:.2f} ms"
            )
    for row in rows:
        if row.counts.get("redis_interference"):
            lines.append(
                f"{row.label.split('.')[0]}: ! this run's Redis keys were deleted by another "
                "client of the shared server while this row was counted, twice (a limits "
                "storage reset deletes every LIMITS* key): its counts include the row reads "
                "and stamp writes that follow. Run again, or give the bench a Redis database "
                "of its own with KEYAUTH_BENCH_REDIS."
            )
    for row in rows:
        sent = row.counts.get("redis_commands") or {}
        if not sent:
            continue
        inner = row.counts.get("redis_scripted") or {}
        text = ", ".join(f"{name} {number(n)}" for name, n in sorted(sent.items()))
        if inner:
            text += " (run inside scripts, not round trips: " + ", ".join(
                f"{name} {number(n)}" for name, n in sorted(inner.items())) + ")"
        stats = row.counts.get("redis_commandstats")
        if stats is not None:
            text += f"; INFO commandstats: {number(stats)} calls (every client of the server)"
        lines.append(f"{row.label.split('.')[0]}: per request, MONITOR saw {text}")
    return lines


def profile(rows: list[Variant], key: str, n: int) -> None:
    from pyinstrument import Profiler

    row = next(r for r in rows if r.key == key)
    row.warm()
    row.batch(n)
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for _ in range(10):
        row.batch(n)
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def run(args: argparse.Namespace, tmp: str) -> bool:
    """Build, time and print; ``True`` when it only profiled."""
    say("setting up")
    rows = build(args, tmp)
    say("warming up (every key verified once, then used once more)")
    for row in rows[:]:
        began = time.monotonic()
        try:
            row.warm()
        except Exception as error:
            if row is rows[0]:
                raise
            rows.remove(row)
            SKIPPED.append(f"{row.label}: failed warming up ({error.__class__.__name__}: {error})")
        say(f"  {row.key}: {time.monotonic() - began:.1f} s")
    if args.profile:
        profile(rows, args.profile, args.batch)
        return True
    observers = Observers()
    at_end(observers.close)
    if not args.skip_services:
        try:
            observers.redis = RedisMonitor(apps.REDIS_URL)
        except OSError as error:
            say(f"  (no MONITOR on Redis: {error!r}; Redis round trips n/a)")
    if observers.redis is not None and getattr(args, "redis_prefix", None):
        observers.redis.mark(args.redis_prefix)
    counted = min(args.batch, 50)
    say(f"counting table reads and writes, Redis round trips and argon2 runs "
        f"over {counted} requests per row (PostgreSQL rows wait for its statistics)")
    for row in rows:
        began = time.monotonic()
        try:
            account(row, counted, observers)
            if row.counts.get("redis_interference"):
                # Another client deleted this run's Redis keys: warm the
                # row again and count once more.
                say(f"  {row.key}: this run's Redis keys were deleted meanwhile; counting again")
                row.warm(measure_rss=False)
                account(row, counted, observers)
        except Exception as error:  # noqa: BLE001 - counts are n/a, the timing still runs
            row.counts = {}
            say(f"  {row.key}: counts n/a ({error.__class__.__name__}: {error})")
        say(f"  {row.key}: {time.monotonic() - began:.1f} s")
    bare = rows[0]
    say(f"{args.rounds} interleaved rounds of {args.batch} requests per row")
    interleave(rows, args.rounds, args.batch, bare,
               progress=lambda done: say(f"  round {done}/{args.rounds}"))
    print()
    print(
        "Calling the WSGI app directly (no test client); medians of "
        f"{args.rounds} interleaved rounds of {args.batch} requests (cold and unknown-id rows: "
        f"{args.cold} per round); max ms: the slowest single request of those rounds.\n"
        f"Per request, over {counted} requests after warm-up, as the servers see them: "
        "reads = seq_scan + idx_scan and writes = n_tup_ins + n_tup_upd of the keyauth_* tables "
        "in PostgreSQL's pg_stat_user_tables; * = SQLite, which has no server: statements "
        "(SELECT / INSERT, UPDATE, DELETE) counted by a SQLAlchemy listener in the process. "
        "Redis RT = commands this process sent, as Redis's MONITOR saw them (commands run "
        "inside a Lua script are not round trips). argon2 = calls of the app's hasher's verify. "
        "n/a = could not be seen.\n"
        f"† KEYAUTH_ROW_MAX_AGE and KEYAUTH_LAST_USED_INTERVAL {apps.STEADY_SECONDS} s "
        "(defaults 10 and 60): PostgreSQL publishes a backend's counters 10 s after it goes "
        "idle, and that wait must not age the rows into a re-read; the once-per-interval "
        "work (a row read per key per 10 s, a batched write per minute) is not in these counts."
    )
    print(table(rows))
    for line in details(rows):
        print(line)
    for line in SKIPPED:
        print(f"left out: {line}")
    if not args.skip_http:
        from .http import http_table

        print()
        print(http_table(args, tmp))
    return False


def _interrupted(signum: int, frame: Any) -> None:
    # Unwind normally, so the throwaway database and Redis keys are removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.monotonic()
    print(f"flask-keyauth bench — {machine()}")
    # The temporary directory, the throwaway database and the Redis keys go
    # at exit, after flask-keyauth has written its buffered usage.
    tmp = temporary_directory()
    if run(args, tmp):
        return 0
    print(f"\n(run took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
