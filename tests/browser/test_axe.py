"""axe-core on every page of the demo, in a real browser (SPEC §15).

Each page a person of the demo can reach (signed out, as a manager, as a
viewer, the forms with and without errors, the new and rotated key pages,
the confirmations and the error pages) is checked with axe-core's default
rules, in light and dark colour schemes, at desktop (1280 wide) and phone
(390 wide) widths, in English and Spanish; the test fails on any violation
and prints each one. One browser context per language loads each page once
and changes the width and ``prefers-color-scheme`` in place; as the dark
scheme changes nothing but colours, it runs the rules about colours.
Two more tests check what axe does not: every control shows a clear focus
indicator, and nothing moves for those who ask for reduced motion.

axe-core comes from the npm registry (``npm ci`` in this folder, as
``.ci/run`` does). The pages send ``Content-Security-Policy:
frame-ancestors 'none'``, which leaves scripts alone: the script tag that
Playwright injects runs without weakening or bypassing it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..services import unavailable
from .conftest import demo_app, serving
from .demo_data import Story, populate

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
KEYS = "/settings/api-keys"
SCHEMES = ("light", "dark")
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
LANGUAGES = ("en", "es")
#: The rules of axe-core whose outcome a colour scheme can change.
COLOUR_RULES = ["color-contrast", "link-in-text-block"]


@pytest.fixture(scope="module")
def axe_script() -> Path:
    if not AXE.is_file():
        unavailable(f"axe-core is not installed at {AXE}: run `npm ci` in {AXE.parents[2]}")
    return AXE


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """The demo with a few weeks of acme's keys, served for the whole module."""
    database = tmp_path_factory.mktemp("axe") / "demo.db"
    with serving(demo_app(database)) as server:
        yield populate(server, volume=0.03)


@dataclass
class Visit:
    """The pages seen so far and what axe found on them."""

    page: Any
    axe: Path
    language: str
    found: list[str]

    def check(self, label: str) -> None:
        """Run axe on the page as it is now, at each width in each scheme."""
        # Each page, the demo's own included, speaks the reader's language.
        assert self.page.evaluate("document.documentElement.lang") == self.language, label
        self.page.add_script_tag(path=str(self.axe))
        for width, viewport in WIDTHS.items():
            self.page.set_viewport_size(viewport)
            for scheme in SCHEMES:
                self.page.emulate_media(color_scheme=scheme)
                # The dark scheme changes colours and nothing else: there,
                # the rules about colours (the others ran in the light one).
                rules = COLOUR_RULES if scheme == "dark" else None
                violations = self.page.evaluate(RUN_AXE, rules)
                self.record(f"{label} ({scheme}, {width})", violations)

    def record(self, label: str, violations: list[dict[str, Any]]) -> None:
        for violation in violations:
            nodes = "\n".join(
                f"      {json.dumps(node['target'])}: {node['summary']}".replace("\n", " ")
                for node in violation["nodes"]
            )
            self.found.append(
                f"{label} [{violation['impact']}] {violation['id']}: {violation['help']}"
                f" ({violation['url']})\n{nodes}"
            )

    def go(self, label: str, path: str, status: int = 200) -> None:
        response = self.page.goto(path)
        assert response is not None and response.status == status, (label, path)
        assert "script-src" not in (response.headers.get("content-security-policy") or "")
        self.check(label)


#: axe-core's default rules (WCAG 2.x A and AA, and its best practices);
#: each violation with its nodes' selectors and what to fix.
RUN_AXE = """async rules => {
  // A change of scheme eases the controls' colours: check where they end.
  await Promise.all(document.getAnimations().map(a => a.finished));
  const options = {resultTypes: ['violations']};
  if (rules) { options.runOnly = {type: 'rule', values: rules}; }
  const result = await axe.run(document, options);
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help, url: v.helpUrl,
    nodes: v.nodes.map(n => ({target: n.target, summary: n.failureSummary})),
  }));
}"""


def sign_in(page: Any, org: str, person: str) -> None:
    response = page.request.post("/login", form={"org": org, "person": person})
    assert response.ok


def every_page(visit: Visit, story: Story, tag: str) -> None:
    """Walk every page of the demo, running axe on each."""
    page = visit.page
    visit.go("key list, signed out: the sign-in page", f"{KEYS}/")
    assert page.url.startswith(f"{story.base}/?next=")

    sign_in(page, "acme", "alice")
    visit.go("home, signed in", "/")
    visit.go("key list", f"{KEYS}/")
    visit.go("new key form", f"{KEYS}/new")
    page.locator("input[name=scopes][value=admin]").check()
    page.locator("#ka-admin-warning").wait_for()
    visit.check("new key form, admin confirmation shown")
    page.locator("input[name=scopes][value=admin]").uncheck()
    page.locator("button[type=submit]").click()
    page.wait_for_load_state()
    visit.check("new key form with errors")
    page.locator("#ka-name").fill(f"Axe {tag}")
    page.locator("button[type=submit]").click()
    page.locator("#ka-secret").wait_for()
    visit.check("key created")
    created = page.locator(".ka-actions a.ka-btn--ghost").get_attribute("href")
    page.reload()
    visit.check("form submitted twice (409)")

    for label, key_id in (
        ("busy", story.busy),
        ("old, due for rotation", story.old),
        ("rotated, expiring", story.rotated),
        ("disabled", story.disabled),
        ("revoked", story.revoked),
    ):
        visit.go(f"key page: {label}", f"{KEYS}/{key_id}")
    page.locator(".ka-chart-data summary").click()
    visit.check("key page with the numbers shown")
    visit.go("edit", f"{KEYS}/{story.busy}/edit")
    page.locator("#ka-allowed-ips").fill("not an address")
    page.locator("button[type=submit]").click()
    page.wait_for_load_state()
    visit.check("edit with errors")
    visit.go("rotate", f"{KEYS}/{story.busy}/rotate")
    visit.go("rotate: already rotated", f"{KEYS}/{story.rotated}/rotate")
    visit.go("rotate: revoked key", f"{KEYS}/{story.revoked}/rotate")
    visit.go("rotate: disabled key", f"{KEYS}/{story.disabled}/rotate")
    visit.go("revoke", f"{KEYS}/{story.busy}/revoke")
    visit.go("revoke: already revoked", f"{KEYS}/{story.revoked}/revoke")
    visit.go("disable", f"{KEYS}/{story.busy}/disable")
    visit.go("disable: already disabled", f"{KEYS}/{story.disabled}/disable")
    visit.go("disable: revoked key", f"{KEYS}/{story.revoked}/disable")
    visit.go("enable", f"{KEYS}/{story.disabled}/enable")
    visit.go("enable: not disabled", f"{KEYS}/{story.busy}/enable")
    visit.go("unknown key (404)", f"{KEYS}/k_nosuchkey", 404)

    # Rotate the key made above, through the form: the new key's page.
    assert created is not None
    visit.go("rotate the new key", f"{created}/rotate")
    page.locator("#ka-grace-0").check()
    page.locator("button[type=submit]").click()
    page.locator("#ka-secret").wait_for()
    visit.check("key rotated")

    sign_in(page, "initech", "alice")
    visit.go("key list, no keys yet", f"{KEYS}/")
    sign_in(page, "acme", "carol")
    visit.go("viewer: key list", f"{KEYS}/")
    visit.go("viewer: key page", f"{KEYS}/{story.busy}")
    visit.go("viewer: revoke (403)", f"{KEYS}/{story.busy}/revoke", 403)


def context_for(browser: Any, story: Story, language: str, **options: Any) -> Any:
    return browser.new_context(
        base_url=story.base,
        viewport=WIDTHS["desktop"],
        locale=language,
        extra_http_headers={"Accept-Language": language},
        **options,
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_page_passes_axe(axe_script: Path, browser: Any, story: Story, language: str) -> None:
    """Each page is loaded once and checked at both widths in both schemes
    (the viewport and ``prefers-color-scheme`` change in place)."""
    context = context_for(browser, story, language)
    visit = Visit(context.new_page(), axe_script, language, [])
    try:
        every_page(visit, story, language)
    finally:
        context.close()
    assert not visit.found, (
        f"axe-core found {len(visit.found)} violation(s) in {language}:\n" + "\n".join(visit.found)
    )


#: Every control of a page, in the order Tab reaches them.
FOCUSABLE = "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]"

#: The focused element's outline, and the contrast of its colour with the
#: nearest opaque background behind the element (WCAG 2.4.11 asks 3:1).
FOCUS_PROBE = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = c => { const [r, g, b] = rgb(c).slice(0, 3).map(v => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  let node = el.parentElement, behind = 'rgb(255, 255, 255)';
  while (node) {
    const bg = getComputedStyle(node).backgroundColor;
    const parts = rgb(bg);
    if (parts.length === 3 || (parts.length === 4 && parts[3] === 1)) { behind = bg; break; }
    node = node.parentElement;
  }
  const [a, b] = [lum(style.outlineColor), lum(behind)].sort((x, y) => y - x);
  return {tag: el.tagName.toLowerCase(), id: el.id, focused: el.matches(':focus'),
          text: (el.textContent || '').trim().slice(0, 40), style: style.outlineStyle,
          width: parseFloat(style.outlineWidth), contrast: (a + 0.05) / (b + 0.05)};
}"""


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_control_shows_where_the_focus_is(browser: Any, story: Story, scheme: str) -> None:
    """Tab through each kind of page: every control it reaches gets a solid
    outline of at least 2px that stands out 3:1 from what is behind it."""
    context = context_for(browser, story, "en", color_scheme=scheme)
    page = context.new_page()
    weak: list[str] = []
    try:
        sign_in(page, "acme", "alice")
        for path in (
            "/",
            f"{KEYS}/",
            f"{KEYS}/new",
            f"{KEYS}/{story.busy}",
            f"{KEYS}/{story.busy}/edit",
            f"{KEYS}/{story.busy}/rotate",
            f"{KEYS}/{story.busy}/disable",
            f"{KEYS}/k_nosuchkey",
        ):
            page.goto(path)
            controls = page.locator(FOCUSABLE).evaluate_all(
                "els => els.filter(e => e.checkVisibility() && !e.disabled).length"
            )
            assert controls > 0, path
            # Until the focus leaves the page; a date field takes several stops.
            for _ in range(4 * controls + 4):
                page.keyboard.press("Tab")
                focus = page.evaluate(FOCUS_PROBE)
                if focus["tag"] == "body":
                    break
                if not focus["focused"]:
                    continue  # on a native control's own part (a date's picker): its own ring
                if focus["style"] in ("none", "hidden") or focus["width"] < 2:
                    weak.append(f"{path}: no outline: {focus}")
                elif focus["contrast"] < 3:
                    weak.append(f"{path}: outline below 3:1: {focus}")
    finally:
        context.close()
    assert not weak, "focus indicators too weak:\n" + "\n".join(weak)


def test_nothing_moves_for_those_who_ask(browser: Any, story: Story) -> None:
    """With ``prefers-reduced-motion: reduce`` no element has a transition
    or an animation; without it the controls do ease their colour changes."""
    durations = """() => [...document.querySelectorAll('*')].flatMap(el => {
      const s = getComputedStyle(el);
      return [s.transitionDuration, s.animationDuration].flatMap(d => d.split(','))
        .map(parseFloat).filter(d => d > 0.001)
        .map(d => el.tagName.toLowerCase() + '.' + el.className + ' ' + d + 's');
    })"""
    moved: dict[str, list[str]] = {}
    for motion in ("reduce", "no-preference"):
        context = context_for(browser, story, "en", reduced_motion=motion)
        page = context.new_page()
        try:
            sign_in(page, "acme", "alice")
            found: list[str] = []
            for path in ("/", f"{KEYS}/", f"{KEYS}/new", f"{KEYS}/{story.busy}"):
                page.goto(path)
                found += page.evaluate(durations)
            moved[motion] = found
        finally:
            context.close()
    assert moved["reduce"] == []
    assert moved["no-preference"], "the controls were meant to ease their colour changes"


def test_a_host_layout_follows_the_dark_scheme_only_when_it_asks(
    browser: Any, story: Story
) -> None:
    """The sheet inside a host's own light page keeps the pages light (their
    text would vanish on its white); ``ka-theme-auto`` around them opts in."""
    context = context_for(browser, story, "en", color_scheme="dark")
    page = context.new_page()
    try:
        page.goto(f"{KEYS}/static/keyauth.css")  # the same origin as the sheet
        colours = {}
        for name, body in (
            ("host", '<div class="keyauth"><p>Keys</p></div>'),
            ("opted in", '<div class="ka-theme-auto"><div class="keyauth"><p>Keys</p></div></div>'),
            ("default layout", '<div class="ka-body"><div class="keyauth"><p>Keys</p></div></div>'),
        ):
            page.set_content(
                f'<link rel="stylesheet" href="{story.base}{KEYS}/static/keyauth.css">{body}'
            )
            colours[name] = page.locator(".keyauth p").evaluate("p => getComputedStyle(p).color")
    finally:
        context.close()
    assert colours["host"] == "rgb(15, 23, 42)"  # the light scheme's text
    assert colours["opted in"] == colours["default layout"] == "rgb(226, 232, 240)"
