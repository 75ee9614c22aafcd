"""Property-based fuzzing of the JSON API's inputs: whatever the body,
the path or the query, a 2xx or a 4xx in the one error envelope, never a
500, and a refused request changes nothing.

Runs 10,000 generated cases in all under ``CI=true`` (600 on a laptop;
``KEYAUTH_FUZZ_EXAMPLES`` sets the number per test).
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..conftest import bearer, service_of
from ..services import IN_CI
from .test_management import API, Host, build_host

EXAMPLES = int(os.environ.get("KEYAUTH_FUZZ_EXAMPLES", "2500" if IN_CI else "150"))


def fuzz(weight: float = 1.0) -> settings:
    """Hypothesis settings for ``weight`` times the per-test number of cases
    (the slow rotation test takes fewer, the cheap path test more)."""
    return settings(
        max_examples=int(EXAMPLES * weight),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
timestamps = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from([
        "2030-01-15T10:00:00Z", "2030-01-15", "2030-02-30T00:00:00Z",
        "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-23:59", "2030-01-15T25:00Z",
        "2030-01-15T10:00:00.1234567890Z", "\uff12\uff10\uff13\uff10-01-15",
        "2030-01-15T10:00:00+24:00",
    ]),
    st.text(max_size=70),
)
field_values = {
    "name": st.one_of(st.text(max_size=140), st.sampled_from(["", " ", "x" * 128, "x" * 129]),
                      json_values),
    "scopes": st.one_of(st.lists(st.sampled_from(["read", "write", "admin", "root", ""]),
                                 max_size=4), json_values),
    "environment": st.one_of(st.sampled_from(["live", "test", "LIVE", "prod", ""]), json_values),
    "expires_at": st.one_of(st.none(), timestamps, json_values),
    "expires_in_days": st.one_of(st.integers(-10, 4000), st.sampled_from([0, 1, 3650, 3651,
                                 10**30, True]), json_values),
    "grace_seconds": st.one_of(st.integers(-10, 10**8), st.sampled_from([0, 86400, 31536000,
                               31536001, 10**30, 1.5, "60"]), json_values),
}


def bodies(fields: tuple[str, ...]) -> st.SearchStrategy[Any]:
    known = st.fixed_dictionaries(
        {}, optional={name: field_values[name] for name in fields}
    )
    with_extra = st.tuples(known, st.dictionaries(st.text(max_size=12), json_values,
                                                  max_size=2)).map(lambda t: {**t[1], **t[0]})
    return st.one_of(known, known, with_extra, json_values)


@cache
def fuzz_host() -> tuple[Host, str, str]:
    directory = tempfile.mkdtemp(prefix="keyauth-fuzz-api-")
    host = build_host(f"sqlite:///{directory}/api.db", KEYAUTH_LAST_USED_INTERVAL=3600,
                      KEYAUTH_MAX_KEYS_PER_OWNER=100_000)
    _, admin = host.create("acme", "admin", scopes=["admin"])
    info, _ = host.create("acme", "target")
    return host, admin, info.id


def key_count(host: Host) -> int:
    with host.app.app_context():
        engine = host.app.extensions["keyauth"].store.engine
        table = host.app.extensions["keyauth"].store.tables.keys
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def check(response: Any, allowed: set[int]) -> dict[str, Any] | None:
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    if response.status_code in (308, 404, 405) and response.mimetype != "application/json":
        # A path no route of ours matches ("/api/keys/", "a/b") or one the
        # router normalises ("a//b"): Werkzeug's own answer.
        return {"code": "ROUTING"}
    assert response.status_code in allowed, (response.status_code, text[:300])
    if response.status_code >= 400 and response.request.method != "HEAD":
        body = response.get_json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
        return body["error"]  # type: ignore[no-any-return]
    return None


def send(client: Any, method: str, path: str, body: Any, admin: str, raw: bool) -> Any:
    if raw:
        return client.open(path, method=method, data=body, content_type="application/json",
                           headers=bearer(admin))
    return client.open(path, method=method, json=body, headers=bearer(admin))


@fuzz()
@given(body=bodies(("name", "scopes", "environment", "expires_at", "expires_in_days")))
def test_create_never_500s_and_refusals_create_nothing(body: Any) -> None:
    host, admin, _ = fuzz_host()
    before = key_count(host)
    response = send(host.app.test_client(), "POST", API + "/keys", body, admin, raw=False)
    error = check(response, {201, 400, 403})
    assert key_count(host) == before + (1 if error is None else 0)
    if error is None:
        created = response.get_json()
        assert created["secret"].startswith(f"sk_{created['key']['environment']}_")


@fuzz()
@given(body=bodies(("name", "expires_at")), target=st.sampled_from(["mine", "theirs", "junk"]))
def test_patch_never_500s_and_refusals_change_nothing(body: Any, target: str) -> None:
    host, admin, key_id = fuzz_host()
    with host.app.app_context():
        before = host.keyauth.get_key(key_id)
    path = f"{API}/keys/{key_id if target == 'mine' else 'AAAAAAAAAAAA'}"
    response = send(host.app.test_client(), "PATCH", path, body, admin, raw=False)
    error = check(response, {200, 400, 404})
    with host.app.app_context():
        after = host.keyauth.get_key(key_id)
    if error is not None or target != "mine":
        assert after == before


@fuzz(0.6)
@given(
    body=st.one_of(bodies(("grace_seconds", "expires_at", "expires_in_days")),
                   st.binary(max_size=200)),
)
def test_rotate_with_any_body_never_500s(body: Any) -> None:
    host, admin, _ = fuzz_host()
    # A fresh target each time: a successful rotation may revoke the old one.
    target, _ = host.create("acme", "rotated")
    before = key_count(host)
    raw = isinstance(body, bytes)
    response = send(host.app.test_client(), "POST", f"{API}/keys/{target.id}/rotate", body,
                    admin, raw=raw)
    error = check(response, {201, 400})
    assert key_count(host) == before + (1 if error is None else 0)
    with host.app.app_context():
        assert host.keyauth.get_key(target.id).status == (
            "active" if error is not None or response.get_json()["previous"]["status"] == "active"
            else "revoked"
        )


@fuzz(1.4)
@given(
    key_id=st.text(max_size=40),
    days=st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 200).map(str)),
    route=st.sampled_from(["get", "usage", "events", "delete"]),
    raw_body=st.one_of(st.binary(max_size=100), st.text(max_size=100).map(str.encode)),
)
def test_paths_queries_and_raw_bodies_never_500(
    key_id: str, days: str | None, route: str, raw_body: bytes
) -> None:
    host, admin, own_id = fuzz_host()
    client = host.app.test_client()
    quoted = quote(key_id, safe="")
    before = key_count(host)
    if route == "get":
        response = client.get(f"{API}/keys/{quoted}", headers=bearer(admin))
        check(response, {200, 404} if key_id != own_id else {200})
    elif route == "usage":
        query = {} if days is None else {"days": days}
        response = client.get(f"{API}/keys/{own_id}/usage", query_string=query,
                              headers=bearer(admin))
        check(response, {200, 400})
    elif route == "events":
        response = client.get(f"{API}/events", query_string={"key_id": key_id},
                              headers=bearer(admin))
        check(response, {200, 404})
    else:
        # Not one of ours (the id is junk): revoking it is a 404 whatever
        # the body says, and raw bodies at create must parse or be a 400.
        response = client.delete(f"{API}/keys/{quoted}x", headers=bearer(admin), data=raw_body)
        check(response, {404, 405})
        response = client.post(f"{API}/keys", data=raw_body,
                               content_type="application/json", headers=bearer(admin))
        error = check(response, {201, 400, 403})
        assert key_count(host) == before + (1 if error is None else 0)
    service_of(host.app).usage.take()
