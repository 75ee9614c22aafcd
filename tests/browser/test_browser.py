"""The key pages in a real browser, against the demo app over real HTTP.

One walk through what a user does: sign in, create a key, see it once,
call the API with it, read its usage, revoke it. Every step is
screenshotted into ``tests/artifacts/``. The documentation's screenshots
come from ``python -m tests.browser.screenshots`` instead.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import pytest
import sqlalchemy as sa
from babel.dates import format_date

from .conftest import LiveServer

KEY_PATTERN = re.compile(r"^sk_live_[0-9A-Za-z]{50}$")


def call_api(url: str, secret: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def seed_other_keys(server: LiveServer) -> None:
    """Keys a real account would have, so the list shows every state."""
    app = server.app
    state = app.extensions["keyauth"]
    service = state.service
    tables = state.store.tables
    today = service.clock().date()
    with app.app_context():
        staging, _ = service.create_key("acme", "Staging worker", ["read"], "test")
        old, _ = service.create_key("acme", "Billing sync", ["read", "write"], "live")
        legacy, _ = service.create_key("acme", "Legacy export", ["read"], "live")
        service.revoke_key(legacy.id, actor="session:acme")
        service.create_key("globex", "Someone else's key", ["admin"], "live")
        with state.store.engine.begin() as conn:
            # Old enough for the rotation reminder.
            conn.execute(
                sa.update(tables.keys)
                .where(tables.keys.c.key_id == old.id)
                .values(created_at=service.clock() - dt.timedelta(days=142))
            )
            for key_id, base in ((staging.id, 40), (old.id, 220)):
                conn.execute(
                    sa.insert(tables.usage),
                    [
                        {
                            "key_id": key_id,
                            "day": today - dt.timedelta(days=n),
                            "requests": base + (n * 37) % (base // 2) - (n % 6) * base // 12,
                        }
                        for n in range(1, 30)
                        if n % 9
                    ],
                )


def test_create_use_and_revoke_a_key(
    browser: Any, demo_server: LiveServer, artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    base = demo_server.url
    keys_url = f"{base}/settings/api-keys/"
    seed_other_keys(demo_server)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page = context.new_page()
    shots: list[Path] = []

    def shot(name: str, full_page: bool = True) -> None:
        path = artifacts / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        shots.append(path)

    try:
        # Anonymous: the key pages send visitors to the demo's sign-in page.
        page.goto(keys_url)
        assert page.url.startswith(f"{base}/?next=")
        shot("sign-in")
        page.get_by_label("Organisation id").fill("acme")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(keys_url)
        assert page.get_by_role("heading", name="API keys").is_visible()
        assert page.get_by_text("Someone else's key").count() == 0
        assert page.locator(".ka-hint").filter(has_text="Rotate").count() == 1

        # Create a key.
        page.get_by_role("link", name="Create API key").click()
        page.get_by_label("Name", exact=True).fill("Production server")
        page.locator("input[name=scopes][value=write]").check()
        shot("create-form")
        page.get_by_role("button", name="Create key").click()
        page.wait_for_load_state()
        secret = page.locator("#ka-secret").inner_text().strip()
        assert KEY_PATTERN.match(secret), secret
        assert page.get_by_text("It will not be shown again").is_visible()
        copy = page.get_by_role("button", name="Copy key")
        assert copy.is_visible()
        shot("key-created", full_page=False)
        copy.click()
        page.get_by_role("status").filter(has_text="copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == secret
        assert secret not in page.url

        # Reloading resubmits the form: no second key, and the key is not shown.
        page.reload()
        assert secret not in page.content()
        assert page.get_by_role("heading", name="This form was already submitted").is_visible()
        shot("reload-after-create")
        page.goto(keys_url)
        html = page.content()
        assert secret not in html
        assert page.locator("tbody tr", has_text="Production server").count() == 1

        # Use it over real HTTP.
        for _ in range(3):
            status, body = call_api(f"{base}/v1/entities", secret)
            assert (status, body["org"]) == (200, "acme")

        page.reload()
        row = page.locator("tr", has_text="Production server")
        sparkline = row.locator("svg.ka-sparkline title").text_content()
        assert sparkline is not None and "3 requests in the last 30 days" in sparkline
        shot("keys-list")

        # Its page: the usage chart shows today's 3 requests.
        row.get_by_role("link", name="Production server", exact=True).click()
        key_url = page.url
        # Days are written as everywhere on the pages: "Nov 23, 2026".
        today = format_date(demo_server.app.extensions["keyauth"].service.clock().date(),
                            "medium", locale="en")
        assert page.locator(".ka-chart--narrow").is_hidden()
        bar = page.locator(".ka-chart--wide g.ka-bar title", has_text=today)
        assert bar.text_content() == f"{today}: 3 requests"
        assert page.locator(".ka-stat__value").inner_text() == "3"
        assert page.locator(".ka-table--events").get_by_text("Created").count() == 1
        shot("key-detail")

        # Revoke, through the confirmation step.
        page.get_by_role("link", name="Revoke").click()
        assert page.get_by_role("heading", name="Revoke “Production server”?").is_visible()
        shot("revoke-confirm")
        page.get_by_role("button", name="Revoke key").click()
        page.get_by_text("Key revoked.").wait_for()
        assert page.locator(".ka-pagehead .ka-status").inner_text() == "Revoked"
        shot("key-revoked")
        status, body = call_api(f"{base}/v1/entities", secret)
        assert (status, body["error"]["code"]) == (401, "INVALID_API_KEY")

        # A phone: the table stacks into one card per key.
        phone = browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            storage_state=context.storage_state(),
        )
        try:
            page = phone.new_page()
            page.goto(keys_url)
            first_row = page.locator("tbody tr").first
            box = first_row.bounding_box()
            assert box is not None and box["width"] <= 390
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            shot("keys-list-phone")
            page.goto(key_url)
            assert page.locator(".ka-chart--wide").is_hidden()
            narrow = page.locator(".ka-chart--narrow")
            assert narrow.is_visible()
            assert narrow.locator("g.ka-bar title", has_text=today).text_content() == (
                f"{today}: 3 requests"
            )
            shot("key-detail-phone")
        finally:
            phone.close()
    finally:
        context.close()

    assert secret not in caplog.text


def test_without_javascript_nothing_shows_that_does_nothing(
    browser: Any, demo_server: LiveServer, artifacts: Path
) -> None:
    """No script: no copy button (its hidden attribute wins over the
    stylesheet), the key itself selectable, every row a visible link to its
    key's page, and rotation still offers an expiry."""
    base = demo_server.url
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, java_script_enabled=False
    )
    page = context.new_page()
    try:
        page.goto(f"{base}/settings/api-keys/")
        page.get_by_label("Organisation id").fill("acme")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/settings/api-keys/")

        page.get_by_role("link", name="Create API key").first.click()
        page.get_by_label("Name", exact=True).fill("No script")
        page.get_by_role("button", name="Create key").click()
        page.wait_for_load_state()
        secret = page.locator("#ka-secret").inner_text().strip()
        assert KEY_PATTERN.match(secret), secret
        copy = page.locator(".ka-secret__copy")
        assert copy.count() == 1 and copy.is_hidden()
        page.screenshot(path=str(artifacts / "no-script-key-created.png"))

        page.get_by_role("link", name="I have saved my key").click()
        details = page.locator("tr", has_text="No script").locator("a.ka-rowlink")
        assert details.is_visible() and details.inner_text().startswith("Details")
        details.click()
        assert page.get_by_role("heading", name="No script").is_visible()

        page.get_by_role("link", name="Rotate").click()
        assert page.get_by_label("Same lifetime as the old key").is_checked()
        page.get_by_label("30 days").check()
        page.get_by_role("button", name="Rotate key").click()
        page.wait_for_load_state()
        assert page.get_by_role("heading", name="API key rotated").is_visible()
        assert page.locator(".ka-secret__copy").is_hidden()
        page.get_by_role("link", name="I have saved my key").click()
        rows = page.locator("tr", has_text="No script")
        assert rows.count() == 2
        assert rows.filter(has_text="Replaced by").count() == 1
        assert rows.filter(has_text="Replaces").count() == 1
    finally:
        context.close()
