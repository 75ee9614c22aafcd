"""The OpenAPI 3.1 document of the JSON API, built from the tables below.

Each operation is one row of :data:`OPERATIONS`; who may call it decides
its security requirements and most of its error responses, so the document
cannot forget a 401 on one route while listing it on the others. The
limits in the schemas are the constants :mod:`.api` enforces.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .. import keys, leaks
from ..config import Settings
from ..models import DESCRIPTION_MAX, NAME_MAX
from ..plans import LIMITS_MAX, LIMITS_TEXT_MAX
from ..service import ALLOWED_IPS_MAX, EVENT_ACTIONS, METADATA_MAX_BYTES, USAGE_DAYS_MAX
from . import api

OPENAPI_VERSION = "3.1.0"

# Who may call an operation.
MANAGE = "manage"  # the session owner (CSRF on changes) or an admin key
KEY = "key"  # any valid key
PUBLIC = "public"
SIGNED = "signed"  # GitHub's signature of the body, nothing else


@dataclass(frozen=True)
class Operation:
    """One route of the JSON API, as the document describes it."""

    method: str
    #: OpenAPI path template, relative to the blueprint's prefix.
    path: str
    #: The view's local endpoint name in the blueprint.
    endpoint: str
    operation_id: str
    summary: str
    description: str
    access: str
    #: Success status and the schema of its body.
    success: tuple[int, str]
    #: Error statuses this operation adds to those its access implies.
    errors: tuple[int, ...] = ()
    #: Request body schema, when the operation reads a body.
    request: str | None = None
    request_required: bool = False
    #: Names of components/parameters.
    parameters: tuple[str, ...] = ()
    #: Whether the success response carries a secret.
    secret: bool = False

    @property
    def changes_state(self) -> bool:
        return self.method not in ("get", "head", "options")


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/api/keys",
        "api_list_keys",
        "listKeys",
        "List the owner's keys",
        "Newest first, revoked and expired keys included. Never a secret or a hash.",
        MANAGE,
        (200, "KeyList"),
    ),
    Operation(
        "post",
        "/api/keys",
        "api_create_key",
        "createKey",
        "Create a key",
        "The response is the only time the secret is shown: store it now.",
        MANAGE,
        (201, "CreatedKey"),
        errors=(400, 413),
        request="CreateKeyRequest",
        request_required=True,
        secret=True,
    ),
    Operation(
        "get",
        "/api/keys/{key_id}",
        "api_get_key",
        "getKey",
        "One key",
        "Another owner's key answers 404, exactly as an unknown id.",
        MANAGE,
        (200, "KeyEnvelope"),
        errors=(404,),
        parameters=("KeyId",),
    ),
    Operation(
        "patch",
        "/api/keys/{key_id}",
        "api_update_key",
        "updateKey",
        "Rename a key or change its expiry",
        "`expires_at: null` removes the expiry. A revoked key cannot be changed (400).",
        MANAGE,
        (200, "KeyEnvelope"),
        errors=(400, 404, 413),
        request="UpdateKeyRequest",
        parameters=("KeyId",),
    ),
    Operation(
        "delete",
        "/api/keys/{key_id}",
        "api_revoke_key",
        "revokeKey",
        "Revoke a key",
        "At once, for every worker and host. Revoking a revoked key returns it unchanged.",
        MANAGE,
        (200, "KeyEnvelope"),
        errors=(400, 404, 413),
        parameters=("KeyId",),
    ),
    Operation(
        "post",
        "/api/keys/{key_id}/disable",
        "api_disable_key",
        "disableKey",
        "Disable a key",
        "Refused (401) on the next request in every worker until it is enabled again.",
        MANAGE,
        (200, "KeyEnvelope"),
        errors=(400, 404, 413),
        parameters=("KeyId",),
    ),
    Operation(
        "post",
        "/api/keys/{key_id}/enable",
        "api_enable_key",
        "enableKey",
        "Enable a disabled key",
        "At once, in every worker. A revoked key cannot be enabled (400).",
        MANAGE,
        (200, "KeyEnvelope"),
        errors=(400, 404, 413),
        parameters=("KeyId",),
    ),
    Operation(
        "post",
        "/api/keys/{key_id}/rotate",
        "api_rotate_key",
        "rotateKey",
        "Rotate a key",
        "Creates a key with the same owner, name, scopes and environment. The old "
        "key keeps working for `grace_seconds` (default one day; 0 revokes it now). "
        "The response is the only time the new secret is shown.",
        MANAGE,
        (201, "RotatedKey"),
        errors=(400, 404, 413),
        request="RotateKeyRequest",
        parameters=("KeyId",),
        secret=True,
    ),
    Operation(
        "get",
        "/api/keys/{key_id}/usage",
        "api_key_usage",
        "getKeyUsage",
        "Requests per day",
        "Every day of the range, oldest first, zeros included; today last. Counts may "
        "lag by up to KEYAUTH_LAST_USED_INTERVAL seconds.",
        MANAGE,
        (200, "Usage"),
        errors=(400, 404),
        parameters=("KeyId", "Days"),
    ),
    Operation(
        "get",
        "/api/events",
        "api_events",
        "listEvents",
        "The owner's audit trail",
        "Newest first, at most 500 events.",
        MANAGE,
        (200, "EventList"),
        errors=(404,),
        parameters=("EventKeyId",),
    ),
    Operation(
        "get",
        "/api/whoami",
        "api_whoami",
        "whoami",
        "The presented key and its owner's budget",
        "Any valid key. Reports the rate-limit windows without spending them, so it "
        "answers 200 even when the budget is spent.",
        KEY,
        (200, "Whoami"),
    ),
    Operation(
        "post",
        "/api/leaks/github",
        "api_leaks_github",
        "reportLeaks",
        "GitHub secret scanning reports",
        "GitHub's secret scanning partner messages, signed with ECDSA P-256 "
        "(`Github-Public-Key-Identifier`, `Github-Public-Key-Signature`, checked against "
        "KEYAUTH_LEAK_REPORT_KEYS; a bad or missing signature is 401 and changes nothing). "
        "Every reported token that is one of this app's keys is labelled `true_positive`, "
        "recorded as a `leaked` event and, with KEYAUTH_LEAK_ACTION `revoke` (the default), "
        "revoked. A repeat of the same token and URL changes nothing.",
        SIGNED,
        (200, "LeakLabels"),
        errors=(400, 413),
        request="LeakReport",
        request_required=True,
    ),
    Operation(
        "get",
        "/api/openapi.json",
        "api_openapi",
        "getOpenApi",
        "This document",
        "Public.",
        PUBLIC,
        (200, "OpenApiDocument"),
    ),
)

#: Error statuses: description and the error codes each one carries.
ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Invalid input, or a failed CSRF check.", ("VALIDATION_ERROR", "CSRF_FAILED")),
    401: (
        "No valid key (and no signed-in session where one is accepted).",
        ("MISSING_API_KEY", "INVALID_API_KEY", "EXPIRED_API_KEY"),
    ),
    403: ("The key lacks a required scope, or HTTPS is required.", ("FORBIDDEN", "HTTPS_REQUIRED")),
    404: ("No such key for this owner.", ("NOT_FOUND",)),
    413: ("The request body is too large.", ("PAYLOAD_TOO_LARGE",)),
    429: (
        "The owner's plan limit is spent, or too many failed attempts from this address.",
        ("RATE_LIMIT_EXCEEDED", "TOO_MANY_FAILED_ATTEMPTS"),
    ),
    500: ("An unexpected error; the body carries no detail of it.", ("INTERNAL_ERROR",)),
    503: ("The key store or the rate-limit storage is unreachable.", ("SERVICE_UNAVAILABLE",)),
}

#: The 401 of a leak report, in place of a key's.
BAD_SIGNATURE = "INVALID_SIGNATURE"

#: Statuses every operation of an access kind can answer.
ACCESS_ERRORS: dict[str, tuple[int, ...]] = {
    MANAGE: (401, 403, 429, 500, 503),
    KEY: (401, 403, 429, 500, 503),
    PUBLIC: (),
    SIGNED: (401, 500, 503),
}

#: Rate-limit headers of each ``KEYAUTH_RATELIMIT_HEADERS`` style.
RATE_LIMIT_HEADERS: dict[str, dict[str, dict[str, Any]]] = {
    "x-ratelimit": {
        "X-RateLimit-Limit": {"type": "integer"},
        "X-RateLimit-Remaining": {"type": "integer"},
        "X-RateLimit-Reset": {"type": "string", "format": "date-time"},
    },
    "ratelimit": {
        "RateLimit-Limit": {"type": "integer"},
        "RateLimit-Remaining": {"type": "integer"},
        "RateLimit-Reset": {"type": "integer", "description": "Unix time"},
    },
    "ietf": {
        "RateLimit-Policy": {"type": "string"},
        "RateLimit": {"type": "string"},
    },
}

_TIMESTAMP = {"type": "string", "format": "date-time", "examples": ["2030-01-15T10:00:00Z"]}
_MAYBE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_KEY_ID = {"type": "string", "pattern": f"^[0-9A-Za-z]{{{keys.ID_LENGTH}}}$"}
# Printable text with at least one non-space character: what api.py accepts.
_LABEL_PATTERN = (
    "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
)
_EVENT_ACTIONS = list(EVENT_ACTIONS)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _object(
    properties: dict[str, Any],
    *,
    closed: bool = False,
    required: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An object schema; every property is required unless ``required`` says."""
    schema: dict[str, Any] = {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
    }
    if closed:
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def _schemas(settings: Settings) -> dict[str, Any]:
    scope_names = sorted(settings.scopes)
    secret = {
        "type": "string",
        "pattern": f"^{settings.key_prefix}_(live|test)_[0-9A-Za-z]{{{keys.BODY_LENGTH}}}$",
        "description": "The full key. Shown in this response only; store it now.",
    }
    expiry_properties = {
        "expires_at": {
            **_MAYBE_TIMESTAMP,
            "description": "ISO 8601, strictly in the future; `Z` or an offset, naive is "
            "read as UTC; null means never.",
        },
        "expires_in_days": {"type": "integer", "minimum": 1, "maximum": api.EXPIRES_IN_DAYS_MAX},
    }
    one_expiry = {"not": {"required": ["expires_at", "expires_in_days"]}}
    name = {
        "type": "string",
        "minLength": 1,
        "maxLength": NAME_MAX,
        "pattern": _LABEL_PATTERN,
    }
    limits = {
        "type": ["string", "null"],
        "maxLength": LIMITS_TEXT_MAX,
        "examples": ["10/minute", "200/second burst 500;2000/day"],
        "description": "The key's own limits, beside its owner's plan: `;`-separated "
        f"windows (`100/hour`) or buckets (`200/second burst 500`), at most {LIMITS_MAX}.",
    }
    optional = {
        "limits": limits,
        "description": {"type": ["string", "null"], "maxLength": DESCRIPTION_MAX},
        "metadata": {
            "type": ["object", "null"],
            "additionalProperties": {"type": "string"},
            "description": f"Labels of the host's own: string values, {METADATA_MAX_BYTES} "
            "bytes at most as JSON.",
        },
        "allowed_ips": {
            "type": ["array", "null"],
            "items": {"type": "string", "examples": ["203.0.113.7", "2001:db8::/48"]},
            "maxItems": ALLOWED_IPS_MAX,
            "description": "Addresses and CIDR blocks the key may be used from; "
            "elsewhere it is refused with 403 IP_NOT_ALLOWED.",
        },
    }
    create_properties = {
        "name": name,
        "scopes": {
            "type": "array",
            "items": {"type": "string", "enum": scope_names},
            "minItems": 1,
            "default": ["read"],
        },
        "environment": {"type": "string", "enum": list(keys.ENVIRONMENTS), "default": "live"},
        **expiry_properties,
        **optional,
    }
    update_properties = {"name": name, "expires_at": expiry_properties["expires_at"], **optional}
    rotate_properties = {
        "grace_seconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": api.GRACE_SECONDS_MAX,
            "default": api.DEFAULT_GRACE_SECONDS,
            "description": "How long the old key keeps working; 0 revokes it now.",
        },
        **expiry_properties,
    }
    key = _object(
        {
            "id": _KEY_ID,
            "name": {"type": "string"},
            "redacted": {"type": "string", "examples": ["sk_live_Ab3dEf6hIj9k\u2026x9Qz"]},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "environment": {"type": "string", "enum": list(keys.ENVIRONMENTS)},
            "status": {"type": "string", "enum": ["active", "expired", "revoked", "disabled"]},
            "created_at": _TIMESTAMP,
            "expires_at": _MAYBE_TIMESTAMP,
            "revoked_at": _MAYBE_TIMESTAMP,
            "last_used_at": _MAYBE_TIMESTAMP,
            "limits": {"type": ["string", "null"]},
            "created_by": {"type": ["string", "null"]},
            "description": {"type": ["string", "null"]},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "allowed_ips": {"type": "array", "items": {"type": "string"}},
        },
        description="A key as its owner sees it: never its secret or hash. `scopes` as granted.",
    )
    nullable_text = {"type": ["string", "null"]}
    return {
        "Key": key,
        "KeyList": _object({"keys": {"type": "array", "items": _ref("schemas", "Key")}}),
        "KeyEnvelope": _object({"key": _ref("schemas", "Key")}),
        "CreatedKey": _object({"key": _ref("schemas", "Key"), "secret": secret}),
        "RotatedKey": _object(
            {
                "key": _ref("schemas", "Key"),
                "secret": secret,
                "previous": _ref("schemas", "Key"),
            }
        ),
        "Usage": _object(
            {
                "key_id": _KEY_ID,
                "days": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": USAGE_DAYS_MAX,
                    "items": _object(
                        {
                            "date": {"type": "string", "format": "date"},
                            "requests": {"type": "integer", "minimum": 0},
                        }
                    ),
                },
            }
        ),
        "Event": _object(
            {
                "action": {"type": "string", "enum": _EVENT_ACTIONS},
                "key_id": {"type": ["string", "null"]},
                "actor": {
                    **nullable_text,
                    "description": "`session:<owner>`, `key:<key id>`, `cli`, or null (host code).",
                },
                "remote_addr": nullable_text,
                "detail": {
                    **nullable_text,
                    "description": "The new key of a rotation, the new expiry, the plan.",
                },
                "at": _TIMESTAMP,
            }
        ),
        "EventList": _object({"events": {"type": "array", "items": _ref("schemas", "Event")}}),
        "RateLimitWindow": _object(
            {
                "limit": {"type": "integer", "minimum": 0},
                "remaining": {"type": "integer", "minimum": 0},
                "reset_at": _TIMESTAMP,
                "window": {"type": "string", "examples": ["hour", "day"]},
            }
        ),
        "Whoami": _object(
            {
                "authenticated": {"const": True},
                "organization_id": {"type": "string"},
                "key_id": _KEY_ID,
                "permissions": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Every scope the key grants, implied ones included.",
                },
                "key_type": {"type": "string", "enum": list(keys.ENVIRONMENTS)},
                "plan": {"type": "string"},
                "created_by": {"type": ["string", "null"]},
                "scope_descriptions": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Each granted scope and what it allows.",
                },
                "rate_limits": {"type": "array", "items": _ref("schemas", "RateLimitWindow")},
            }
        ),
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {
                            "type": "string",
                            "enum": sorted(
                                {c for _, codes in ERRORS.values() for c in codes}
                                | {BAD_SIGNATURE}
                            ),
                        },
                        "message": {"type": "string"},
                        "details": {"type": "object"},
                    }
                )
            },
            description="The one error envelope. `details.fields` (400) maps each bad field "
            "to a message; `details.required_scopes` (403) lists what the route needs.",
        ),
        "OpenApiDocument": {"type": "object"},
        "LeakReport": {
            "type": "array",
            "maxItems": leaks.MATCHES_MAX,
            "items": _object(
                {
                    "token": {"type": "string", "maxLength": leaks.FIELD_MAX},
                    "type": {"type": "string", "maxLength": leaks.FIELD_MAX},
                    "url": {"type": "string", "maxLength": leaks.FIELD_MAX},
                    "source": {"type": "string", "maxLength": leaks.FIELD_MAX},
                },
                required=["token"],
            ),
        },
        "LeakLabels": {
            "type": "array",
            "items": _object(
                {
                    "token_raw": {"type": "string"},
                    "token_type": {"type": "string"},
                    "label": {"type": "string", "enum": ["true_positive", "false_positive"]},
                }
            ),
        },
        "CreateKeyRequest": _object(
            create_properties, closed=True, required=["name"], **one_expiry
        ),
        "UpdateKeyRequest": _object(update_properties, closed=True, required=[]),
        "RotateKeyRequest": _object(rotate_properties, closed=True, required=[], **one_expiry),
    }


def _responses(settings: Settings) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, codes) in ERRORS.items():
        headers: dict[str, Any] = {}
        if status == 401:
            headers["WWW-Authenticate"] = {"schema": {"type": "string"}}
        if status in (429, 503):
            headers["Retry-After"] = {
                "schema": {"type": "integer"},
                "description": "Seconds to wait.",
            }
        body: dict[str, Any] = {
            "allOf": [
                _ref("schemas", "Error"),
                {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
            ]
        }
        response: dict[str, Any] = {
            "description": f"{description} Codes: {', '.join(codes)}.",
            "content": {"application/json": {"schema": body}},
        }
        if headers:
            response["headers"] = headers
        responses[f"Error{status}"] = response
    code = {"properties": {"error": {"properties": {"code": {"const": BAD_SIGNATURE}}}}}
    responses["BadSignature"] = {
        "description": f"The signature is missing or wrong. Code: {BAD_SIGNATURE}.",
        "content": {"application/json": {"schema": {"allOf": [_ref("schemas", "Error"), code]}}},
    }
    return responses


def _rate_limit_headers(settings: Settings) -> dict[str, Any]:
    return {
        name: {
            "schema": schema,
            "description": "The owner's plan window that binds first (key-authenticated "
            "calls only).",
        }
        for style in settings.ratelimit_headers
        for name, schema in RATE_LIMIT_HEADERS[style].items()
    }


def _security_schemes(settings: Settings, session_cookie: str) -> dict[str, Any]:
    schemes: dict[str, Any] = {}
    for header in settings.header_names:
        if header.lower() == "authorization":
            schemes["bearerAuth"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <key>`.",
            }
        else:
            name = (
                "apiKeyHeader" if "apiKeyHeader" not in schemes else f"apiKeyHeader{len(schemes)}"
            )
            schemes[name] = {"type": "apiKey", "in": "header", "name": header}
    schemes["sessionCookie"] = {
        "type": "apiKey",
        "in": "cookie",
        "name": session_cookie,
        "description": "The host app's signed-in browser session.",
    }
    schemes["githubSignature"] = {
        "type": "apiKey",
        "in": "header",
        "name": leaks.SIGNATURE_HEADER,
        "description": f"GitHub's ECDSA signature of the body, by the key that "
        f"`{leaks.KEY_ID_HEADER}` names.",
    }
    schemes["csrfToken"] = {
        "type": "apiKey",
        "in": "header",
        "name": "X-CSRFToken",
        "description": "The session's CSRF token, required with the session cookie on "
        "POST, PATCH and DELETE.",
    }
    return schemes


def _security(op: Operation, schemes: dict[str, Any]) -> list[dict[str, list[str]]]:
    key_schemes = [
        name for name in schemes if name not in ("sessionCookie", "csrfToken", "githubSignature")
    ]
    if op.access == PUBLIC:
        return []
    if op.access == SIGNED:
        return [{"githubSignature": []}]
    if op.access == KEY:
        return [{name: []} for name in key_schemes]
    # OpenAPI 3.1 lets a non-OAuth requirement name the roles it needs.
    requirements: list[dict[str, list[str]]] = [{name: [api.MANAGE_SCOPE]} for name in key_schemes]
    session: dict[str, list[str]] = {"sessionCookie": []}
    if op.changes_state:
        session["csrfToken"] = []
    requirements.append(session)
    return requirements


def _parameters() -> dict[str, Any]:
    return {
        "KeyId": {
            "name": "key_id",
            "in": "path",
            "required": True,
            "description": "The 12-character public key id.",
            "schema": _KEY_ID,
        },
        "EventKeyId": {
            "name": "key_id",
            "in": "query",
            "required": False,
            "description": "Only this key's events.",
            "schema": _KEY_ID,
        },
        "Days": {
            "name": "days",
            "in": "query",
            "required": False,
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": USAGE_DAYS_MAX,
                "default": api.DEFAULT_USAGE_DAYS,
            },
        },
    }


def _links(op: Operation) -> dict[str, Any]:
    """Where a created key's id can be used next (OpenAPI links)."""
    if op.operation_id not in ("createKey", "rotateKey"):
        return {}
    targets = [o for o in OPERATIONS if "KeyId" in o.parameters]
    return {
        target.operation_id[0].upper() + target.operation_id[1:]: {
            "operationId": target.operation_id,
            "parameters": {"key_id": "$response.body#/key/id"},
        }
        for target in targets
    }


def _operation(op: Operation, settings: Settings, schemes: dict[str, Any]) -> dict[str, Any]:
    status, schema = op.success
    success: dict[str, Any] = {
        "description": op.summary,
        "content": {"application/json": {"schema": _ref("schemas", schema)}},
    }
    headers: dict[str, Any] = {}
    if op.access != PUBLIC:
        headers["Cache-Control"] = {"schema": {"type": "string", "const": "no-store"}}
    if op.access == MANAGE:
        headers.update(_rate_limit_headers(settings))
    if headers:
        success["headers"] = headers
    links = _links(op)
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(status): success}
    statuses = set(ACCESS_ERRORS[op.access]) | set(op.errors)
    if op.access == MANAGE and op.changes_state:
        statuses |= {400, 413}
    for error in sorted(statuses):
        name = "BadSignature" if op.access == SIGNED and error == 401 else f"Error{error}"
        responses[str(error)] = _ref("responses", name)
    operation: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description,
        "tags": ["keys"] if op.access == MANAGE else ["leaks"] if op.access == SIGNED else ["meta"],
        "responses": responses,
        "security": _security(op, schemes),
    }
    if op.parameters:
        operation["parameters"] = [_ref("parameters", name) for name in op.parameters]
    if op.request is not None:
        operation["requestBody"] = {
            "required": op.request_required,
            "content": {"application/json": {"schema": _ref("schemas", op.request)}},
        }
    return operation


def _version() -> str:
    try:
        return metadata.version("flask-keyauth-kit")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def build_document(
    settings: Settings, prefix: str, session_cookie: str = "session"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for an app with ``settings`` that serves the
    blueprint under ``prefix`` (its ``url_prefix``, script root included)."""
    schemes = _security_schemes(settings, session_cookie)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, settings, schemes)
    document = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "API key management",
            "version": _version(),
            "description": (
                "Create, list, rotate and revoke API keys; usage and audit trail. Key "
                "management answers to the signed-in owner (changes need the "
                "`X-CSRFToken` header) or to a key with the `admin` scope, which "
                "manages its own owner's keys. When a request presents a key, the key "
                "decides. Unknown fields in a body are refused."
            ),
        },
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(settings),
            "responses": _responses(settings),
            "parameters": _parameters(),
            "securitySchemes": schemes,
        },
        "tags": [
            {"name": "keys", "description": "Key management"},
            {"name": "meta", "description": "The caller and this document"},
            {"name": "leaks", "description": "Reports of keys found in public"},
        ],
    }
    return copy.deepcopy(document)
