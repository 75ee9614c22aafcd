"""The OpenAPI document of the JSON API (SPEC §7), checked against the app.

schemathesis generates requests from the document and checks every answer
against it: no 5xx, only documented statuses and content types, bodies that
match their schemas. Positive, negative and stateful (create → use the
new id) runs, all with an admin key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask, session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31

from flask_keyauth import blueprint
from flask_keyauth.views import api

from .conftest import dispose, make_app, service_of

PREFIX = "/settings/api-keys"
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Enough cases to reach every operation with valid and invalid input many
# times over, while the whole file stays well under a minute.
EXAMPLES = 150


def both_headers(secret: str) -> dict[str, str]:
    # Both key headers, so that no value generated from the security schemes
    # for either of them replaces the admin key (the same key twice is one key).
    return {"Authorization": f"Bearer {secret}", "X-API-Key": secret}


def build(tmp_path: Path, prefix: str = PREFIX, **config: Any) -> tuple[Flask, Any, Any]:
    app, db, keyauth = make_app(f"sqlite:///{tmp_path / 'keys.db'}", **config)
    app.register_blueprint(blueprint, url_prefix=prefix)

    @keyauth.owner_loader
    def owner() -> Any:
        return session.get("org_id")

    return app, db, keyauth


@pytest.fixture
def admin_app(tmp_path: Path) -> Iterator[tuple[Flask, str, list[str]]]:
    # Thousands of calls: a budget that does not run out, and no failed-auth
    # throttle once a scenario has revoked its own key.
    app, db, keyauth = build(tmp_path, KEYAUTH_FAILED_AUTH_LIMIT="1000000/minute")
    with app.app_context():
        keyauth.set_plan("acme", "enterprise", "1000000/hour")
        _, secret = keyauth.create_key("acme", "admin", ["admin"])
        targets = [keyauth.create_key("acme", f"target {i}", ["read"])[0].id for i in range(3)]
    yield app, secret, targets
    dispose(app, db)


def load(app: Flask) -> Any:
    return schemathesis.openapi.from_wsgi(f"{PREFIX}/api/openapi.json", app)


def document(app: Flask, path: str = f"{PREFIX}/api/openapi.json", **kw: Any) -> dict[str, Any]:
    response = app.test_client().get(path, **kw)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()  # type: ignore[no-any-return]


# -- generated requests ---------------------------------------------------


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_document(
    admin_app: tuple[Flask, str, list[str]], mode: GenerationMode
) -> None:
    app, secret, targets = admin_app
    # Key management only: leak reports need GitHub's signature, generated
    # and checked in their own run below.
    schema = load(app).exclude(tag="leaks")
    with_key_id = schema.include(path_regex=r"\{key_id\}")
    # Random ids all answer 404: real ids reach the success paths too.
    strategy = st.one_of(
        schema.as_strategy(mode),
        st.sampled_from(targets).flatmap(
            lambda key_id: with_key_id.as_strategy(mode, path_parameters={"key_id": key_id})
        ),
    )
    statuses: set[tuple[str, int]] = set()

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=both_headers(secret), checks=CONFORMANCE)
        statuses.add((case.operation.label, response.status_code))

    run()
    # The run reached the API's answers, not only its refusals.
    reached = {status for _, status in statuses}
    if mode == GenerationMode.POSITIVE:
        assert {200, 201} <= reached, statuses
    assert 400 in reached or 404 in reached, statuses
    assert not any(status >= 500 for status in reached)


def test_signed_leak_reports_conform_to_the_document(tmp_path: Path) -> None:
    from .test_leaks import Signer

    signer = Signer()
    app, db, keyauth = build(tmp_path, KEYAUTH_LEAK_REPORT_KEYS={signer.key_id: signer.pem})
    with app.app_context():
        _, secret = keyauth.create_key("acme", "reported")
    operation = load(app).include(tag="leaks")
    labels: set[str] = set()

    @given(case=operation.as_strategy(GenerationMode.POSITIVE))
    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        if isinstance(case.body, list) and case.body:
            case.body[0]["token"] = secret  # one real key in some reports
        body = app.json.dumps(case.body).encode()
        response = case.call_and_validate(
            headers=signer.headers(body), data=body, checks=CONFORMANCE
        )
        if response.status_code == 200:
            labels.update(entry["label"] for entry in response.json())

    try:
        run()
        assert labels == {"true_positive", "false_positive"}
    finally:
        dispose(app, db)


def test_stateful_runs_conform(admin_app: tuple[Flask, str, list[str]]) -> None:
    app, _, _ = admin_app
    keyauth = app.extensions["keyauth"].extension
    db = app.extensions["sqlalchemy"]
    machine = load(app).as_state_machine()

    class Machine(machine):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            # Every scenario starts from the same empty database. Steps draw
            # from earlier responses (a key id picked from a listing), so keys
            # left by earlier scenarios would change what the same choices
            # draw, which Hypothesis rejects as a flaky strategy definition.
            service_of(app).usage.take()
            with app.app_context():
                db.drop_all()
                db.create_all()
                keyauth.set_plan("acme", "enterprise", "1000000/hour")
                # A fresh admin key per scenario: a scenario may revoke its own.
                self.secret = keyauth.create_key("acme", "scenario", ["admin"])[1]

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": both_headers(self.secret)}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CONFORMANCE, transport_kwargs=kwargs)

    Machine.run(
        settings=settings(
            max_examples=30,
            stateful_step_count=6,
            deadline=None,
            database=None,
            # The same scenarios on every run, alone or in any order.
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
    )


# -- the document itself --------------------------------------------------


def test_document_is_valid_openapi_3_1(admin_app: tuple[Flask, str, list[str]]) -> None:
    doc = document(admin_app[0])
    assert doc["openapi"].startswith("3.1.")
    # The version of this distribution, not of another one of a similar name.
    assert doc["info"]["version"] == metadata.version("flask-keyauth-kit")
    jsonschema_rs.Draft202012Validator(OPENAPI_31).validate(doc)
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def rules_of(app: Flask, prefix: str) -> set[tuple[str, str]]:
    """(path relative to the prefix, method) of every JSON API route."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.rpartition(".")[2] not in api.API_ENDPOINTS:
            continue
        assert rule.rule.startswith(prefix + "/api/")
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len(prefix) :])
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((path, method.lower()))
    return found


def test_document_paths_are_the_blueprint_api_routes(
    admin_app: tuple[Flask, str, list[str]],
) -> None:
    app = admin_app[0]
    doc = document(app)
    assert doc["servers"] == [{"url": PREFIX}]
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    routes = rules_of(app, PREFIX)
    assert documented == routes
    assert len(routes) == 13
    # Every API endpoint is a route.
    endpoints = {r.endpoint.rpartition(".")[2] for r in app.url_map.iter_rules()}
    assert endpoints >= api.API_ENDPOINTS


def test_servers_follow_where_the_blueprint_is_mounted(tmp_path: Path) -> None:
    app, db, _ = build(tmp_path, prefix="/keys")
    doc = document(app, "/keys/api/openapi.json")
    assert doc["servers"] == [{"url": "/keys"}]
    assert rules_of(app, "/keys") == {
        (path, method) for path, item in doc["paths"].items() for method in item
    }
    # Behind a script root (an app mounted under /app), the server URL has it.
    doc = document(app, "/keys/api/openapi.json", environ_overrides={"SCRIPT_NAME": "/app"})
    assert doc["servers"] == [{"url": "/app/keys"}]
    with app.app_context():
        db.drop_all()
        db.engine.dispose()


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[2:]
        node = doc["components"][kind][name]
    return node


def test_request_schemas_refuse_what_the_api_refuses(
    admin_app: tuple[Flask, str, list[str]],
) -> None:
    doc = document(admin_app[0])
    bodies = {
        ("/api/keys", "post"): api.CREATE_FIELDS,
        ("/api/keys/{key_id}", "patch"): api.UPDATE_FIELDS,
        ("/api/keys/{key_id}/rotate", "post"): api.ROTATE_FIELDS,
    }
    for (path, method), fields in bodies.items():
        body = doc["paths"][path][method]["requestBody"]
        schema = resolve(doc, body["content"]["application/json"]["schema"])
        assert schema["additionalProperties"] is False
        assert set(schema["properties"]) == fields
    create = doc["components"]["schemas"]["CreateKeyRequest"]
    assert create["required"] == ["name"]
    assert create["properties"]["name"]["maxLength"] == 128
    assert create["properties"]["scopes"]["items"]["enum"] == ["admin", "read", "write"]
    others = [
        (path, method)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if "requestBody" in op
    ]
    # GitHub's reports are the one body read openly: GitHub may add fields.
    assert sorted(others) == sorted([*bodies, ("/api/leaks/github", "post")])
    report = doc["components"]["schemas"]["LeakReport"]
    assert report["items"]["required"] == ["token"]
    assert "additionalProperties" not in report["items"]


def statuses(doc: dict[str, Any], path: str, method: str) -> set[int]:
    return {int(s) for s in doc["paths"][path][method]["responses"]}


def test_every_status_each_route_can_answer_is_documented(
    admin_app: tuple[Flask, str, list[str]],
) -> None:
    doc = document(admin_app[0])
    for path, item in doc["paths"].items():
        for method, op in item.items():
            found = statuses(doc, path, method)
            if path.endswith("openapi.json"):
                assert found == {200}
                assert op["security"] == []
                continue
            if path == "/api/leaks/github":
                # Signed, not key-authenticated: no scope, no plan.
                assert found == {200, 400, 401, 413, 500, 503}
                assert op["security"] == [{"githubSignature": []}]
                bad = resolve(doc, op["responses"]["401"])["content"]["application/json"]
                code = bad["schema"]["allOf"][1]["properties"]["error"]["properties"]["code"]
                assert code == {"const": "INVALID_SIGNATURE"}
                continue
            assert {401, 403, 429, 503} <= found, (path, method)
            if method != "get":
                assert {400, 413} <= found, (path, method)
            if "{key_id}" in path:
                assert 404 in found, (path, method)
    assert statuses(doc, "/api/keys", "post") >= {201}
    assert statuses(doc, "/api/keys/{key_id}/rotate", "post") >= {201}
    assert 400 in statuses(doc, "/api/keys/{key_id}/usage", "get")
    # Errors are the one envelope, with the codes each status carries.
    unauthorized = resolve(doc, doc["paths"]["/api/keys"]["get"]["responses"]["401"])
    schema = unauthorized["content"]["application/json"]["schema"]
    assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}
    codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
    assert codes == ["MISSING_API_KEY", "INVALID_API_KEY", "EXPIRED_API_KEY"]


def test_security_schemes_follow_the_settings(tmp_path: Path) -> None:
    app, db, _ = build(
        tmp_path,
        KEYAUTH_HEADER_NAMES=["Authorization", "X-Org-Key"],
        SESSION_COOKIE_NAME="host_session",
    )
    doc = document(app)
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerAuth"]["description"],
    }
    assert schemes["apiKeyHeader"]["name"] == "X-Org-Key"
    assert schemes["sessionCookie"]["in"] == "cookie"
    assert schemes["sessionCookie"]["name"] == "host_session"
    assert schemes["csrfToken"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRFToken",
        "description": schemes["csrfToken"]["description"],
    }
    listing = doc["paths"]["/api/keys"]["get"]["security"]
    creating = doc["paths"]["/api/keys"]["post"]["security"]
    whoami = doc["paths"]["/api/whoami"]["get"]["security"]
    assert {"sessionCookie": []} in listing
    assert {"sessionCookie": [], "csrfToken": []} in creating
    assert {"bearerAuth": ["admin"]} in creating
    assert whoami == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    with app.app_context():
        db.drop_all()
        db.engine.dispose()
