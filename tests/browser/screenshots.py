"""The screenshots of the documentation, made from the demo.

Run ``python -m tests.browser.screenshots`` (from the repository's root,
with chromium at ``/usr/bin/chromium`` or ``KEYAUTH_TEST_CHROMIUM``). It
serves the demo on a fresh database, plays a few weeks of acme's keys on it
(``demo_data.populate``: the keys are made, changed and used through the
service and the demo's API over real HTTP, so what the pages say about
their use is what happened), signs in as alice and writes, in the light and
the dark colour scheme:

- ``docs/keys-page.png``, ``docs/keys-page-dark.png``: the key list;
- ``docs/key-created.png``, ``docs/key-created-dark.png``: a key created
  with the form, shown once;
- ``docs/key-page.png``, ``docs/key-page-dark.png``: a key's own page.

``--volume`` scales the traffic (1.0, the default, is about ten thousand
requests, one or two minutes); ``--out`` writes elsewhere than ``docs/``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from .conftest import CHROMIUM, CHROMIUM_ARGS, demo_app, serving
from .demo_data import Story, populate

DOCS = Path(__file__).resolve().parents[2] / "docs"
KEYS = "/settings/api-keys"
VIEWPORT = {"width": 1280, "height": 900}


def shoot(browser: Browser, story: Story, scheme: str, out: Path, *, created: bool) -> list[Path]:
    """The list and a key's page; or, with ``created``, a new key's page
    (after the others: the new key would show in the list)."""
    suffix = "-dark" if scheme == "dark" else ""
    context = browser.new_context(
        base_url=story.base, viewport=VIEWPORT, color_scheme=scheme, locale="en-US"
    )
    page = context.new_page()
    made: list[Path] = []

    def save(name: str, *, full_page: bool) -> None:
        path = out / f"{name}{suffix}.png"
        page.screenshot(path=str(path), full_page=full_page)
        made.append(path)

    try:
        assert page.request.post("/login", form={"org": "acme", "person": "alice"}).ok
        if not created:
            page.goto(f"{KEYS}/")
            save("keys-page", full_page=True)
            page.goto(f"{KEYS}/{story.busy}")
            save("key-page", full_page=True)
        else:
            page.goto(f"{KEYS}/new")
            page.locator("#ka-name").fill("Mobile app backend")
            page.locator("#ka-description").fill("The API behind the iOS and Android apps.")
            page.locator("button[type=submit]").click()
            page.locator("#ka-secret").wait_for()
            save("key-created", full_page=False)
    finally:
        context.close()
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.screenshots")
    parser.add_argument("--volume", type=float, default=1.0, help="scale of the traffic")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder of the PNG files")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as folder,
        serving(demo_app(Path(folder) / "demo.db")) as server,
    ):
        started = time.monotonic()
        story = populate(server, volume=args.volume)
        print(f"played the story in {time.monotonic() - started:.0f}s")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for created in (False, True):
                    for scheme in ("light", "dark"):
                        for path in shoot(browser, story, scheme, args.out, created=created):
                            print(f"wrote {path}")
            finally:
                browser.close()


if __name__ == "__main__":
    main()
