"""Two people of one organisation and a viewer, in a real browser, against
the demo app over real HTTP (SPEC §12): alice creates a key, bob sees that
she did and disables it, the history names each of them, and carol, a
viewer, is offered no action at all. Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

from .conftest import LiveServer

KEY_PATTERN = re.compile(r"^sk_live_[0-9A-Za-z]{50}$")
ACTIONS = ("Create API key", "Edit", "Rotate", "Disable", "Enable", "Revoke")


def status_of(url: str, secret: str) -> tuple[int, str | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {secret}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, None
    except HTTPError as error:
        with error:
            return error.code, json.loads(error.read())["error"]["code"]


def sign_in(page: Any, base: str, person: str) -> None:
    """Sign out, then sign in to acme as ``person`` on the demo's home page."""
    page.goto(f"{base}/logout")
    page.get_by_label("Organisation id").fill("acme")
    page.get_by_label("Person").select_option(person)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    assert page.locator(".ka-account").get_by_text(person, exact=True).is_visible()


def fact(page: Any, term: str) -> str:
    """The text of one fact of the key page (``<dt>term</dt><dd>…</dd>``)."""
    item = page.locator("dl.ka-facts > div").filter(
        has=page.locator("dt", has_text=re.compile(f"^{term}$"))
    )
    return str(item.locator("dd").inner_text()).strip()


def history(page: Any) -> list[tuple[str, str]]:
    """(action, who) of each row of the key page's activity, newest first."""
    rows = page.locator(".ka-table--events tbody tr")
    return [
        (
            rows.nth(n).locator(".ka-event").inner_text().strip(),
            rows.nth(n).locator('td[data-label="By"]').inner_text().strip(),
        )
        for n in range(rows.count())
    ]


def test_two_people_and_a_viewer(browser: Any, demo_server: LiveServer, artifacts: Path) -> None:
    base = demo_server.url
    keys_url = f"{base}/settings/api-keys/"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    def shot(name: str) -> None:
        page.screenshot(path=str(artifacts / f"team-{name}.png"), full_page=True)

    try:
        # alice creates a key; the permission table says what each permission does.
        sign_in(page, base, "alice")
        page.goto(f"{keys_url}new")
        table = page.locator("table.ka-table--scopes")
        assert table.locator("tr", has_text="write").get_by_text("Create entities.").is_visible()
        # A live key with admin needs a confirmation, shown only when it applies.
        confirm = page.get_by_label("I understand: create a live key with admin")
        assert confirm.is_hidden()
        page.locator("input[name=scopes][value=admin]").check()
        assert confirm.is_visible()
        shot("admin-confirmation")
        page.locator("input[name=scopes][value=admin]").uncheck()
        assert confirm.is_hidden()
        page.get_by_label("Name", exact=True).fill("Shared deploy key")
        page.locator("input[name=scopes][value=write]").check()
        page.get_by_label("Description").fill("Deploys from CI.")
        shot("create-form")
        page.get_by_role("button", name="Create key").click()
        page.wait_for_load_state()
        secret = page.locator("#ka-secret").inner_text().strip()
        assert KEY_PATTERN.match(secret), secret
        assert status_of(f"{base}/v1/entities", secret) == (200, None)

        # bob, of the same organisation, sees who created it, and disables it.
        sign_in(page, base, "bob")
        page.goto(keys_url)
        row = page.locator("tbody tr", has_text="Shared deploy key")
        assert row.locator(".ka-created-by").inner_text() == "by alice"
        row.get_by_role("link", name="Shared deploy key", exact=True).click()
        key_url = page.url
        assert fact(page, "Created by") == "alice"
        assert page.locator(".ka-description").inner_text() == "Deploys from CI."
        assert history(page) == [("Created", "alice")]
        page.get_by_role("link", name="Disable").click()
        assert page.get_by_role("heading", name="Disable “Shared deploy key”?").is_visible()
        shot("disable-confirm")
        page.get_by_role("button", name="Disable key").click()
        page.get_by_text("Key disabled.").wait_for()
        assert page.url.startswith(key_url)
        assert page.locator(".ka-pagehead .ka-status").inner_text() == "Disabled"
        assert history(page) == [("Disabled", "bob"), ("Created", "alice")]
        shot("disabled-by-bob")
        assert status_of(f"{base}/v1/entities", secret) == (401, "INVALID_API_KEY")

        # carol is a viewer: the keys, their usage and history, and no action.
        page.goto(f"{base}/")
        page.get_by_label("Switch to another person of acme").select_option("carol")
        page.get_by_role("button", name="Switch person").click()
        page.wait_for_url(f"{base}/")
        page.goto(keys_url)
        assert page.get_by_text("View only.").is_visible()
        assert page.locator("tbody tr", has_text="Shared deploy key").is_visible()
        for name in ACTIONS:
            assert page.get_by_role("link", name=name, exact=True).count() == 0, name
        page.goto(key_url)
        assert fact(page, "Created by") == "alice"
        assert history(page) == [("Disabled", "bob"), ("Created", "alice")]
        assert page.get_by_role("heading", name="Requests, last 30 days").is_visible()
        for name in ACTIONS:
            assert page.get_by_role("link", name=name).count() == 0, name
        assert page.locator("main button, main form").count() == 0
        shot("viewer")
        # Typing the address of an action is no way round it.
        response = page.goto(f"{key_url}/enable")
        assert response is not None and response.status == 403
        assert page.get_by_role("heading", name="View only").is_visible()
    finally:
        context.close()
    assert status_of(f"{base}/v1/entities", secret) == (401, "INVALID_API_KEY")
