"""Over HTTP: gunicorn (2 workers) on 127.0.0.1, loaded by wrk for a bounded time."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from . import apps

ROOT = Path(__file__).resolve().parent.parent
WRK = os.environ.get("KEYAUTH_BENCH_WRK", "/usr/bin/wrk")
WORKERS = 2
CONNECTIONS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    label: str
    env: dict[str, str]
    header: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    runs: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(WORKERS),
             "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
             "bench.serve:create_app()"],
            cwd=ROOT, env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                # The URL is ours: http on 127.0.0.1.
                urllib.request.urlopen(self.base + apps.BARE, timeout=2).read()  # noqa: S310
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"gunicorn for {self.label} did not start") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS[unit]


def wrk(url: str, seconds: float, header: str | None) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency (ms) of one wrk run."""
    command = [WRK, "-t2", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency"]
    if header:
        command += ["-H", header]
    out = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses under wrk")
    return rps, p50, p99


def http_table(args: argparse.Namespace, tmp: str) -> str:
    if not os.access(WRK, os.X_OK) and shutil.which("wrk") is None:
        return "(HTTP part skipped: wrk not found)"
    print("over HTTP: gunicorn, 2 sync workers, wrk -t2 -c8", file=sys.stderr, flush=True)
    servers: list[Server] = []
    with ExitStack() as stack:
        local_db = f"sqlite:///{tmp}/http.db"
        local = apps.keyauth_app(local_db, "memory://", key_prefix="h1")
        servers.append(Server(
            "flask-keyauth, SQLite + memory",
            {"BENCH_APP": "keyauth", "BENCH_DATABASE_URL": local_db,
             "BENCH_STORAGE_URI": "memory://", "BENCH_KEY_PREFIX": "h1"},
            f"Authorization: Bearer {apps.new_key(local)}",
        ))
        token = apps.token()
        servers.append(Server(
            "peers glued (P3), memory",
            {"BENCH_APP": "glued", "BENCH_STORAGE_URI": "memory://",
             "BENCH_KEY_PREFIX": "h3", "BENCH_TOKEN": token},
            f"Authorization: Bearer {token}",
        ))
        if not args.skip_services:
            # Dropped and deleted at exit, after the apps' own exit flush.
            pg_url = apps.postgres_database()
            prefix = apps.redis_prefix()
            if pg_url and prefix:
                remote = apps.keyauth_app(pg_url, apps.REDIS_URL, key_prefix=prefix)
                servers.append(Server(
                    "flask-keyauth, PostgreSQL + Redis",
                    {"BENCH_APP": "keyauth", "BENCH_DATABASE_URL": pg_url,
                     "BENCH_STORAGE_URI": apps.REDIS_URL, "BENCH_KEY_PREFIX": prefix},
                    f"Authorization: Bearer {apps.new_key(remote)}",
                ))
                servers.append(Server(
                    "peers glued (P4), Redis",
                    {"BENCH_APP": "glued", "BENCH_STORAGE_URI": apps.REDIS_URL,
                     "BENCH_KEY_PREFIX": prefix + "h4", "BENCH_TOKEN": token},
                    f"Authorization: Bearer {token}",
                ))
        for server in servers:
            stack.callback(server.stop)
            server.start()
            # Each worker verifies the key once (argon2) before timing.
            wrk(server.base + apps.PROTECTED, 1, server.header)
        for _ in range(args.http_rounds):
            for server in servers:
                for path, header in ((apps.BARE, None), (apps.PROTECTED, server.header)):
                    server.runs.setdefault(path, []).append(
                        wrk(server.base + path, args.http_seconds, header)
                    )
    lines = [
        f"Over HTTP ({WORKERS} gunicorn sync workers, wrk -t2 -c{CONNECTIONS}, "
        f"{args.http_seconds:g} s per run, median of {args.http_rounds}; "
        "bare = the /bare route of the same server):",
        f"{'server':<36} {'bare req/s':>10} {'p50':>7} {'p99':>7}  "
        f"{'protected req/s':>15} {'p50':>7} {'p99':>7} {'% of bare':>9}",
        "-" * 106,
    ]
    for server in servers:
        bare = [median(r[i] for r in server.runs[apps.BARE]) for i in range(3)]
        prot = [median(r[i] for r in server.runs[apps.PROTECTED]) for i in range(3)]
        lines.append(
            f"{server.label:<36} {bare[0]:>10.0f} {bare[1]:>5.2f}ms {bare[2]:>5.2f}ms  "
            f"{prot[0]:>15.0f} {prot[1]:>5.2f}ms {prot[2]:>5.2f}ms {prot[0] / bare[0]:>8.0%}"
        )
    return "\n".join(lines)
