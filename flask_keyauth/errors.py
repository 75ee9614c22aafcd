"""The errors every part of flask-keyauth raises, and their one JSON body.

Every error is a :class:`KeyAuthError`, itself a werkzeug ``HTTPException``,
so a host can ``@app.errorhandler(KeyAuthError)`` or register
``@keyauth.error_handler``. The body is always
``{"error": {"code": ..., "message": ..., "details": {...}}}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPException,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from werkzeug.sansio.response import Response as SansIOResponse
from werkzeug.wrappers import Response


class KeyAuthError(HTTPException):
    """Root of every error flask-keyauth answers with.

    ``status``, ``code``, ``message`` and ``details`` make the JSON body;
    ``headers`` are added to the response.
    """

    code_name = "KEYAUTH_ERROR"
    default_message = "The request could not be served."

    def __init__(
        self,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = details or {}
        self.extra_headers = list(headers)
        super().__init__(self.message)

    @property
    def status(self) -> int:
        return self.code or 500

    @property
    def error_code(self) -> str:
        return self.code_name

    def body(self) -> dict[str, Any]:
        return {
            "error": {"code": self.code_name, "message": self.message, "details": self.details}
        }

    def get_body(self, environ: Any = None, scope: Any = None) -> str:
        return json.dumps(self.body())

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json"), *self.response_headers()]

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers this error adds to whatever response carries it."""
        return list(self.extra_headers)

    def apply_headers(self, response: SansIOResponse) -> None:
        """Add this error's headers to a response a host's handler built."""
        for name, value in self.response_headers():
            if name not in response.headers:
                response.headers[name] = value

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        return Response(
            self.get_body(), self.status, Headers(self.get_headers(environ, scope))
        )

    def __str__(self) -> str:
        return f"{self.status} {self.code_name}: {self.message}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code_name}>"


class AuthenticationError(KeyAuthError, Unauthorized):
    """A 401: no usable key. Answers ``WWW-Authenticate`` and ``no-store``."""

    code = 401
    #: Whether a key was presented (RFC 6750 then asks for ``invalid_token``).
    key_presented = True

    def response_headers(self) -> list[tuple[str, str]]:
        challenge = 'Bearer error="invalid_token"' if self.key_presented else "Bearer"
        return [
            ("WWW-Authenticate", challenge),
            ("Cache-Control", "no-store"),
            *self.extra_headers,
        ]


class MissingApiKey(AuthenticationError):
    code_name = "MISSING_API_KEY"
    default_message = (
        "No API key was given. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'."
    )
    key_presented = False


class InvalidApiKey(AuthenticationError):
    code_name = "INVALID_API_KEY"
    default_message = "The API key is not valid."


class ExpiredApiKey(AuthenticationError):
    code_name = "EXPIRED_API_KEY"
    default_message = "The API key has expired."


class InsufficientScope(KeyAuthError, Forbidden):
    code = 403
    code_name = "FORBIDDEN"
    default_message = "The API key lacks a scope this request requires."


class IpNotAllowed(KeyAuthError, Forbidden):
    code = 403
    code_name = "IP_NOT_ALLOWED"
    default_message = "This API key may not be used from this address."


class HttpsRequired(KeyAuthError, Forbidden):
    code = 403
    code_name = "HTTPS_REQUIRED"
    default_message = "This API is served over HTTPS only."


class InvalidSignature(KeyAuthError, Unauthorized):
    code = 401
    code_name = "INVALID_SIGNATURE"
    default_message = "The report's signature is missing, or is not a signature of its body."


class ValidationError(KeyAuthError, BadRequest):
    code = 400
    code_name = "VALIDATION_ERROR"
    default_message = "The request has invalid fields."

    @classmethod
    def fields(cls, fields: dict[str, str]) -> ValidationError:
        return cls(details={"fields": fields})


class CsrfFailed(KeyAuthError, BadRequest):
    code = 400
    code_name = "CSRF_FAILED"
    default_message = "The CSRF token is missing or invalid."


class KeyNotFoundError(KeyAuthError, NotFound):
    code = 404
    code_name = "NOT_FOUND"
    default_message = "No such API key."


class KeyLimitReachedError(KeyAuthError, Conflict):
    code = 409
    code_name = "KEY_LIMIT_REACHED"
    default_message = "This account holds as many API keys as it may; revoke one first."


class PayloadTooLarge(KeyAuthError, RequestEntityTooLarge):
    code = 413
    code_name = "PAYLOAD_TOO_LARGE"
    default_message = "The request body is too large."


class RateLimitExceeded(KeyAuthError, TooManyRequests):
    code = 429
    code_name = "RATE_LIMIT_EXCEEDED"
    default_message = "The rate limit of this account's plan is spent."


class TooManyFailedAttempts(KeyAuthError, TooManyRequests):
    code = 429
    code_name = "TOO_MANY_FAILED_ATTEMPTS"
    default_message = "Too many failed authentication attempts from this address."


class StorageUnavailable(KeyAuthError, ServiceUnavailable):
    code = 503
    code_name = "SERVICE_UNAVAILABLE"
    default_message = "The service is temporarily unavailable. Try again shortly."


class KeyNotFound(LookupError):
    """The service API was given a key id that does not exist."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id!r}")
        self.key_id = key_id
