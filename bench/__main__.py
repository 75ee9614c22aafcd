"""``python -m bench``: the per-request cost table, then the HTTP table."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from typing import Any

from . import apps
from .apps import PROTECTED, Target, bearer, environ
from .timing import Variant, account, interleave, median


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Per-request cost of flask-keyauth next to a bare Flask route and its peers.",
    )
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds, smaller batches, 5,000 owners, short HTTP runs")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 9, quick 3)")
    parser.add_argument("--batch", type=int, help="requests per variant per round (default 300)")
    parser.add_argument("--owners", type=int,
                        help="active owners of the scale rows (default 50000, quick 5000)")
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
    args.owners = args.owners or (5000 if args.quick else 50_000)
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


def keyauth_target(ka: apps.KeyauthApp, owners: int, bulk: bool = False) -> Target:
    secrets_ = apps.bulk_keys(ka, owners) if bulk else [
        apps.new_key(ka, f"owner-{n}") for n in range(owners)
    ]
    random.Random(2).shuffle(secrets_)
    return Target(
        ka.app,
        [environ(PROTECTED, bearer(s)) for s in secrets_],
        keyauth=ka.state,
    )


def build(args: argparse.Namespace, stack: ExitStack, tmp: str) -> list[Variant]:
    rows: list[Variant] = []
    only = set(args.only.split(",")) if args.only else None

    def want(key: str) -> bool:
        return only is None or key in only or key == "bare"

    def add(key: str, label: str, make: Any) -> None:
        if want(key):
            say(f"  setting up {key}")
            rows.append(Variant(key, label, make()))

    add("bare", "1. bare Flask JSON route", lambda: Target(
        apps.bare_app(), [environ(apps.BARE)]))

    local = apps.keyauth_app(f"sqlite:///{tmp}/keyauth.db", "memory://", key_prefix="b1")
    add("bare-in-app", "1b. bare route of the flask-keyauth app (Flask-Limiter's hooks)",
        lambda: Target(local.app, [environ(apps.BARE)]))
    add("keyauth", "2. require_key + plan limits, warm, SQLite + memory (10 owners)",
        lambda: keyauth_target(local, 10))

    pg_url = redis_pfx = None
    if not args.skip_services:
        pg_url = stack.enter_context(apps.postgres_database())
        redis_pfx = stack.enter_context(apps.redis_prefix())
    if pg_url and redis_pfx:
        remote = apps.keyauth_app(pg_url, apps.REDIS_URL, key_prefix=redis_pfx)
        stack.callback(apps.close_all)
        add("keyauth-pg-redis", "3. the same on PostgreSQL + Redis (10 owners)",
            lambda: keyauth_target(remote, 10))

    def cold() -> Target:
        def prepare() -> dict[str, Any]:
            return environ(PROTECTED, bearer(apps.new_key(local, "cold")))

        return Target(local.app, [], batch=args.cold, prepare=prepare, keyauth=local.state)

    add("cold", "4. cold first request of a new key (one argon2 verify, default cost)", cold)
    add("garbage", "5. garbage and bad-checksum keys (401)", lambda: Target(
        local.app, [environ(PROTECTED, bearer(k)) for k in apps.garbage_keys()],
        status=401, keyauth=local.state))
    add("unknown", "6. unknown id, valid checksum (401; one dummy argon2)", lambda: Target(
        local.app, [environ(PROTECTED, bearer(apps.unknown_id_key()))],
        status=401, batch=args.cold, keyauth=local.state))

    if not args.skip_scale:
        many = apps.keyauth_app(f"sqlite:///{tmp}/many.db", "memory://", key_prefix="b2",
                                cheap_argon2=True)
        add("keyauth-many", f"2b. row 2 with {args.owners:,} active owners",
            lambda: keyauth_target(many, args.owners, bulk=True))

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
        add("peer-sqlalchemy", "P5. Flask-HTTPAuth + SQLAlchemy lookup per request, SQLite",
            lambda: Target(apps.peer_sqlalchemy(f"sqlite:///{tmp}/peer.db", tokens), token_envs))
        if not args.skip_scale:
            many_tokens = [apps.token() for _ in range(args.owners)]
            add("peer-glued-many", f"P3b. P3 with {args.owners:,} active tokens",
                lambda: Target(apps.peer_glued(many_tokens, "memory://", "p3b"),
                               [environ(PROTECTED, bearer(t)) for t in many_tokens]))
    return rows


def table(rows: list[Variant], bare: Variant) -> str:
    lines = [
        f"{'row':<74} {'µs/req':>9} {'× bare':>7} {'DB q':>5} {'store':>5} {'argon2':>6}",
        "-" * 111,
    ]
    for row in rows:
        def c(name: str, counts: dict[str, float] = row.counts) -> str:
            return f"{counts[name]:.2f}".rstrip("0").rstrip(".") if name in counts else "-"

        lines.append(
            f"{row.label:<74} {median(row.samples):>9.1f} {median(row.ratios):>6.2f}× "
            f"{c('db'):>5} {c('storage'):>5} {c('argon2'):>6}"
        )
    del bare
    return "\n".join(lines)


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


def run(args: argparse.Namespace, stack: ExitStack, tmp: str) -> bool:
    """Build, time and print; ``True`` when it only profiled."""
    say("setting up")
    rows = build(args, stack, tmp)
    bare = rows[0]
    say("warming up (every key verified once)")
    for row in rows:
        began = time.monotonic()
        row.warm()
        say(f"  {row.key}: {time.monotonic() - began:.1f} s")
    if args.profile:
        profile(rows, args.profile, args.batch)
        return True
    say("counting DB statements, storage round trips and argon2 runs")
    for row in rows:
        account(row, min(args.batch, 50))
    say(f"{args.rounds} interleaved rounds of {args.batch} requests per row")
    interleave(rows, args.rounds, args.batch, bare,
               progress=lambda done: say(f"  round {done}/{args.rounds}"))
    print()
    print("Calling the WSGI app directly (no test client); medians of "
          f"{args.rounds} interleaved rounds of {args.batch} requests "
          "(cold and unknown-id rows: "
          f"{args.cold} per round). DB q / store / argon2: per request, "
          "measured after warm-up; store = limiter storage round trips "
          "(Redis socket writes, or calls into Flask-Limiter's memory storage).")
    print(table(rows, bare))
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
    with tempfile.TemporaryDirectory(prefix="keyauth-bench-") as tmp, ExitStack() as stack:
        try:
            if run(args, stack, tmp):
                return 0
        finally:
            apps.close_all()
    print(f"\n(run took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
