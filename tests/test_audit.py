"""The hygiene report of ``flask keys audit``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from flask_keyauth.audit import (
    IDLE,
    LIVE_ADMIN,
    NEVER_EXPIRES,
    NEVER_USED,
    ROTATE,
    audit_keys,
)

UTC = dt.timezone.utc


def backdate(app: Any, key_id: str, **values: Any) -> None:
    state = app.extensions["keyauth"]
    table = state.store.tables.keys
    with app.app_context(), state.store.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.key_id == key_id).values(**values))


def test_audit_finds_each_problem(app: Any, keyauth: Any, make_key: Any) -> None:
    now = dt.datetime.now(UTC)
    soon = now + dt.timedelta(days=30)
    fresh, _ = make_key(["read"], expires_at=soon)
    unused, _ = make_key(["read"], environment="test")
    idle, _ = make_key(["read"], expires_at=soon)
    old, _ = make_key(["read"], expires_at=soon)
    admin, _ = make_key(["admin"], expires_at=soon)
    revoked, _ = make_key(["admin"])
    backdate(app, fresh.id, last_used_at=now)
    backdate(app, idle.id, last_used_at=now - dt.timedelta(days=91))
    backdate(app, old.id, created_at=now - dt.timedelta(days=91), last_used_at=now)
    backdate(app, admin.id, last_used_at=now)
    with app.app_context():
        keyauth.revoke_key(revoked.id)
        listed = keyauth.list_keys("acme")
    report = {f.key.id: f.problems for f in audit_keys(listed, now, 90)}
    assert report == {
        unused.id: (NEVER_USED, NEVER_EXPIRES),
        idle.id: (IDLE,),
        old.id: (ROTATE,),
        admin.id: (LIVE_ADMIN,),
    }
