"""Buffered last-used times and per-day counts (SPEC §9, issue: usage)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .conftest import bearer, make_app

ROOT = Path(__file__).resolve().parent.parent


def usage_rows(app: Any, key_id: str) -> dict[dt.date, int]:
    state = app.extensions["keyauth"]
    usage = state.store.tables.usage
    with app.app_context(), state.store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(usage.c.day, usage.c.requests).where(usage.c.key_id == key_id)
        ).all()
    return {row.day: row.requests for row in rows}


def writes_during(app: Any, action: Any) -> list[str]:
    with app.app_context():
        engine = app.extensions["keyauth"].store.engine
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    return seen


def test_requests_are_buffered_then_written_once(database_url: str) -> None:
    app, db, keyauth = make_app(database_url, KEYAUTH_LAST_USED_INTERVAL=3600)
    client = app.test_client()
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    writes = writes_during(
        app, lambda: [client.get("/read", headers=bearer(secret)) for _ in range(25)]
    )
    assert writes == []
    assert usage_rows(app, info.id) == {}
    with app.app_context():
        # Pending use already shows in what the service reports.
        assert keyauth.get_key(info.id).last_used_at is not None
        app.extensions["keyauth"].service.flush_usage()
        stored = keyauth.get_key(info.id).last_used_at
    assert stored is not None and stored.tzinfo is not None
    assert sum(usage_rows(app, info.id).values()) == 25
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def test_counts_reach_the_database_within_the_interval_with_no_further_request(
    database_url: str,
) -> None:
    app, db, keyauth = make_app(database_url, KEYAUTH_LAST_USED_INTERVAL=0.2)
    client = app.test_client()
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    in_requests: list[str] = []

    def send() -> None:
        for _ in range(3):
            client.get("/read", headers=bearer(secret))

    with app.app_context():
        engine = app.extensions["keyauth"].store.engine

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            in_requests.append(statement)

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        send()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    # The requests themselves only read; the background writer writes.
    assert [s for s in in_requests if not s.lstrip().upper().startswith("SELECT")] == []
    deadline = time.monotonic() + 5
    while sum(usage_rows(app, info.id).values()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(usage_rows(app, info.id).values()) == 3
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def run_worker(url: str, secret: str, requests: int, mode: str, interval: float = 3600) -> int:
    return subprocess.run(
        [sys.executable, "-m", "tests.usage_worker", url, secret, str(requests), mode,
         str(interval)],
        cwd=ROOT, check=False, timeout=120,
    ).returncode


def test_clean_exit_writes_the_buffer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    app, _, keyauth = make_app(url)
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    assert run_worker(url, secret, 7, "exit") == 0
    assert sum(usage_rows(app, info.id).values()) == 7


def test_crash_loses_at_most_one_interval(tmp_path: Path) -> None:
    from .usage_worker import FLUSHED

    url = f"sqlite:///{tmp_path / 'u.db'}"
    app, _, keyauth = make_app(url)
    with app.app_context():
        info, secret = keyauth.create_key("acme", "k")
    assert run_worker(url, secret, 16, "crash", interval=0.2) == 1
    # The background writer wrote the first requests while the process
    # paused; only the 6 requests after that are lost.
    assert sum(usage_rows(app, info.id).values()) == FLUSHED


def test_counts_exact_across_processes(postgres_url: str) -> None:
    app, db, keyauth = make_app(postgres_url)
    with app.app_context():
        db.create_all()
        info, secret = keyauth.create_key("acme", "shared")
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            codes = list(pool.map(
                lambda _: run_worker(postgres_url, secret, 30, "exit", interval=0), range(4)
            ))
        assert codes == [0, 0, 0, 0]
        # Four processes, each writing every request with an increment: no
        # update is lost to another.
        assert sum(usage_rows(app, info.id).values()) == 120
    finally:
        with app.app_context():
            db.drop_all()
            db.engine.dispose()
