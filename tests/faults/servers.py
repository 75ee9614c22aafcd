"""Throwaway servers for the fault tests: Redis and PostgreSQL on their own
loopback ports, started, stopped, paused and restarted by the tests. Never
the machine's shared servers."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..services import free_port, unavailable


class ThrowawayRedis:
    def __init__(self, tmp_path: Any) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        wait_for_ping(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.stop()


def pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class ThrowawayPostgres:
    def __init__(self, root: Path, settings: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        #: Server settings given on the command line (``-c name=value``).
        self.settings = dict(settings or {})
        self.paused: list[int] = []
        self.pg_ctl = pg_bin("pg_ctl")
        initdb = pg_bin("initdb")
        if self.pg_ctl is None or initdb is None:
            unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
        subprocess.run(
            as_postgres([str(initdb), "-D", str(self.data), "-A", "trust", "-U", "postgres"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return self.url_of("postgres")

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> str:
        """The server's log so far."""
        path = self.root / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        for name, value in self.settings.items():
            options += f" -c {name}={value}"
        subprocess.run(
            as_postgres([str(self.pg_ctl), "-D", str(self.data), "-o", options,
                         "-l", str(self.root / "log"), "-w", "start"]),
            check=True, stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.resume()  # a stopped process would not hear pg_ctl
        subprocess.run(
            as_postgres([str(self.pg_ctl), "-D", str(self.data), "-m", "immediate", "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    # -- freezing the whole cluster ------------------------------------------

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def processes(self) -> list[int]:
        """The postmaster and every process it started (backends, walwriter…)."""
        postmaster = self.postmaster_pid()
        return [postmaster, *children_of(postmaster)]

    def pause(self) -> None:
        """SIGSTOP the postmaster, then every one of its processes: no
        connection is accepted past the kernel's backlog, no query answered."""
        postmaster = self.postmaster_pid()
        os.kill(postmaster, signal.SIGSTOP)
        self.paused.append(postmaster)
        # Stopped first, the postmaster forks no new backend behind our back.
        for pid in children_of(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self.paused.append(pid)

    def resume(self) -> None:
        # Backends first, the postmaster last, the reverse of pause().
        while self.paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.paused.pop(), signal.SIGCONT)

    # -- administration ------------------------------------------------------

    def execute(self, *statements: str, database: str = "postgres") -> list[Any]:
        """Run statements in autocommit on a connection of their own; the
        first row of each (``None`` for those returning none)."""
        import sqlalchemy as sa

        engine = sa.create_engine(
            self.url_of(database), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            with engine.connect() as conn:
                results = [conn.execute(sa.text(sql)) for sql in statements]
                return [r.first() if r.returns_rows else None for r in results]
        finally:
            engine.dispose()

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def set_read_only(self, read_only: bool) -> None:
        """What a hot standby after failover looks like to its clients: every
        transaction read-only, existing sessions included (on reload)."""
        value = "on" if read_only else "off"
        self.execute(
            f"ALTER SYSTEM SET default_transaction_read_only = {value}",
            "SELECT pg_reload_conf()",
        )
        # Each backend applies the reload when it next waits for a command.
        time.sleep(0.3)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: no pgrep needed)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = text.rpartition(")")[2].split()
        if int(fields[1]) == pid:
            found.append(int(text.split(" ", 1)[0]))
    return found


@contextlib.contextmanager
def throwaway_postgres(settings: dict[str, str] | None = None) -> Iterator[ThrowawayPostgres]:
    """A started throwaway cluster, stopped and removed after, also on failure."""
    # Not under pytest's tmp_path: the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="keyauth-pg-"))
    server: ThrowawayPostgres | None = None
    try:
        server = ThrowawayPostgres(root, settings)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_server() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as server:
        yield server


# -- a Redis Cluster of three masters ---------------------------------------------


class ThrowawayRedisCluster:
    """Three ``redis-server --cluster-enabled yes`` masters on loopback ports,
    joined by ``redis-cli --cluster create``, no replicas."""

    def __init__(self, root: Path, masters: int = 3) -> None:
        self.root = root
        if redis_major_version() >= 7:
            # The cluster bus port is set too: the default (port + 10000)
            # may be taken, or past 65535.
            self.ports = [free_port() for _ in range(masters)]
            self.bus_ports: list[int | None] = [free_port() for _ in range(masters)]
        else:
            # No --cluster-port before Redis 7: ports whose port + 10000 is free.
            self.ports = [free_port_with_bus() for _ in range(masters)]
            self.bus_ports = [None] * masters
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def nodes(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    @property
    def url(self) -> str:
        """The storage URI ``limits`` reads: ``redis+cluster://host:port,host:port``."""
        return "redis+cluster://" + ",".join(self.nodes)

    def start(self) -> None:
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            node_dir = self.root / str(port)
            node_dir.mkdir()
            self.processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes",
                 *(["--cluster-port", str(bus)] if bus is not None else []),
                 "--cluster-config-file", str(node_dir / "nodes.conf"),
                 "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
                 "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL,
            ))
        for port in self.ports:
            wait_for_ping(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *self.nodes,
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, stdout=subprocess.DEVNULL, timeout=60,
        )
        import redis

        deadline = time.monotonic() + 30
        for port in self.ports:
            client = redis.Redis(port=port, socket_timeout=2)
            try:
                # redis-py parses CLUSTER INFO into a dict.
                while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":  # type: ignore[no-untyped-call]
                    if time.monotonic() > deadline:
                        raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
                    time.sleep(0.1)
            finally:
                client.close()

    def client(self) -> Any:
        from redis.cluster import RedisCluster

        return RedisCluster(host="127.0.0.1", port=self.ports[0], socket_timeout=2)

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)
        self.processes = []


def redis_major_version() -> int:
    out = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "Redis server v=7.0.15 sha=…"
    return int(out.split("v=", 1)[1].split(".", 1)[0])


def free_port_with_bus() -> int:
    import socket

    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def wait_for_ping(port: int) -> None:
    """Return once the Redis on ``port`` answers (10 s at most)."""
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture
def redis_cluster() -> Iterator[ThrowawayRedisCluster]:
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            unavailable(f"{binary} is not installed (needed for a throwaway Redis Cluster)")
    root = Path(tempfile.mkdtemp(prefix="keyauth-rc-"))
    cluster = ThrowawayRedisCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def until_every_worker_answers(base: str, workers: int, seconds: float = 30) -> None:
    """Wait until ``workers`` gunicorn workers (told apart by the test app's
    ``X-Worker-Pid``) have answered: gunicorn serves once the first is up."""
    from concurrent.futures import ThreadPoolExecutor

    from ..security.servers import get

    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    with ThreadPoolExecutor(2 * workers) as pool:
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(seen)} of {workers} workers answered")
            replies = pool.map(lambda _: get(base + "/read", {}, timeout=10), range(4 * workers))
            seen |= {r.headers.get("x-worker-pid", "") for r in replies} - {""}
