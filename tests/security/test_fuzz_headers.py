"""Property-based fuzzing of key headers: whatever arrives, never a 500.

Runs 10,000 generated cases in all under ``CI=true`` (600 on a laptop;
``KEYAUTH_FUZZ_EXAMPLES`` sets the number per test).
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_keyauth import keys
from flask_keyauth.errors import InvalidApiKey, MissingApiKey, TooManyFailedAttempts

from ..conftest import make_app
from ..services import IN_CI

EXAMPLES = int(os.environ.get("KEYAUTH_FUZZ_EXAMPLES", "5000" if IN_CI else "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)

# Header values travel as latin-1 in WSGI; CR and LF cannot be in one.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"),
    max_size=300,
)


@cache
def fuzz_app() -> tuple[Any, str]:
    directory = tempfile.mkdtemp(prefix="keyauth-fuzz-")
    app, _, keyauth = make_app(
        f"sqlite:///{directory}/fuzz.db", KEYAUTH_FAILED_AUTH_LIMIT="1000000/minute"
    )
    with app.app_context():
        _, secret = keyauth.create_key("acme", "fuzz")
    return app, secret


def mutate(secret: str, position: int, char: str) -> str:
    position %= len(secret)
    return secret[:position] + char + secret[position + 1 :]


def check(headers: dict[str, str]) -> None:
    app, secret = fuzz_app()
    response = app.test_client().get("/read", headers=headers)
    assert response.status_code in (200, 401, 429), response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    if response.status_code != 200:
        error = response.get_json()["error"]
        # Only canned messages and no request-derived details: nothing the
        # client sent can be echoed back.
        expected = {
            "MISSING_API_KEY": MissingApiKey.default_message,
            "INVALID_API_KEY": InvalidApiKey.default_message,
            "TOO_MANY_FAILED_ATTEMPTS": TooManyFailedAttempts.default_message,
        }
        assert error["message"] == expected[error["code"]]
        assert set(error["details"]) <= {"retry_after", "headers"}


@FUZZ
@given(
    scheme=st.sampled_from(["Bearer ", "bearer ", "BEARER\t", "Basic ", "", "Bearer", "Token "]),
    value=header_text,
    header=st.sampled_from(["Authorization", "X-API-Key"]),
)
def test_arbitrary_header_values(scheme: str, value: str, header: str) -> None:
    check({header: scheme + value})


@FUZZ
@given(
    position=st.integers(min_value=0, max_value=200),
    char=st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"),
    other=st.sampled_from(["", "same", "junk"]),
    padding=st.sampled_from(["", " ", "  \t", "="]),
)
def test_near_miss_keys(position: int, char: str, other: str, padding: str) -> None:
    _, secret = fuzz_app()
    presented = mutate(secret, position, char)
    headers = {"Authorization": f"Bearer {padding}{presented}{padding}"}
    if other == "same":
        headers["X-API-Key"] = presented
    elif other == "junk":
        headers["X-API-Key"] = presented + "x"
    check(headers)
    app, _ = fuzz_app()
    response = app.test_client().get("/read", headers=headers)
    if presented != secret or other == "junk" or padding == "=":
        assert response.status_code == 401
    parsed = keys.parse(presented)
    if parsed is None:
        assert response.status_code == 401
