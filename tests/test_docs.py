"""Every Python example of the documentation runs, as a reader would run it.

The convention (also in CONTRIBUTING.md):

- A fenced block opened with ```` ```python ```` is run. The blocks of one
  page run in order in one namespace, so a page can build an app in its
  first block and use it in the next ones.
- The quickstart's first block is ``app.py``. Pages that say they run on the
  quickstart's app import it (``from app import create_app``); each page gets
  a fresh copy of that module.
- A fragment that cannot run on its own (a line of configuration, a
  recipe that needs a server) is written as ```` ```{code-block} python ````
  with ``:class: fragment``: it is shown highlighted, and only checked to
  be valid Python. No other Python fence is allowed.
- Everything runs in a temporary folder with ``SECRET_KEY`` set, on SQLite
  and ``memory://``: the defaults, nothing else installed.

The README's blocks follow the same rules; its example is the quickstart's
``app.py`` itself, and its two commands are the ones ``.ci/run`` and the
quickstart use.
"""

from __future__ import annotations

import ast
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
# CommonMark: a backtick fence's info string holds no backtick, so a line
# that starts with inline code (```` ```python ````) opens no fence.
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<ticks>`{3,}(?=[^`]*$)|~{3,})(?P<info>.*)$")
RUN, FRAGMENT = "run", "fragment"
PYTHON_INFOS = {"python", "py", "python3", "pycon", "{code-block} python", "{code} python"}


@dataclass
class Block:
    page: Path
    line: int
    kind: str  # RUN or FRAGMENT
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fences(text: str) -> list[tuple[int, str, list[str]]]:
    """Every fenced block of a Markdown page, nested ones included, as
    (line number, info string, lines)."""
    found: list[tuple[int, str, list[str]]] = []
    lines = text.splitlines()
    stack: list[tuple[str, int, str, list[str]]] = []
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if stack:
            ticks, start, info, body = stack[-1]
            if match and match["ticks"][0] == ticks[0] and len(match["ticks"]) >= len(ticks) \
                    and not match["info"].strip():
                stack.pop()
                found.append((start, info, body))
                if stack:
                    stack[-1][3].append(line)
                continue
            body.append(line)
            # A directive ({note}, {admonition}...) may hold fences of its own.
            if match and match["info"].strip() and info.startswith("{") \
                    and len(match["ticks"]) < len(ticks):
                stack.append((match["ticks"], number, match["info"].strip(), []))
            continue
        if match and match["info"].strip():
            stack.append((match["ticks"], number, match["info"].strip(), []))
    assert not stack, f"unclosed fence at line {stack[-1][1]}"
    return found


def python_blocks(page: Path) -> list[Block]:
    blocks = []
    for start, info, body in fences(page.read_text(encoding="utf-8")):
        if info not in PYTHON_INFOS:
            continue
        where = f"{page.relative_to(ROOT)}:{start}"
        if info == "python":
            blocks.append(Block(page, start, RUN, "\n".join(body) + "\n"))
            continue
        assert info.startswith("{code-block}"), (
            f"{where}: write ```python (run) or ```{{code-block}} python with "
            f":class: fragment, not ```{info}"
        )
        options = [line for line in body if line.startswith(":")]
        code = [line for line in body if not line.startswith(":")]
        kind = FRAGMENT if ":class: fragment" in options else RUN
        blocks.append(Block(page, start, kind, "\n".join(code).strip("\n") + "\n"))
    return blocks


def quickstart_app() -> str:
    blocks = python_blocks(DOCS / "quickstart.md")
    assert blocks and blocks[0].kind == RUN
    return blocks[0].code


def pages_with_python() -> list[Path]:
    return [page for page in PAGES if page.exists() and python_blocks(page)]


def flask_apps(namespace: dict[str, Any]) -> list[Flask]:
    return [value for value in namespace.values() if isinstance(value, Flask)]


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A reader's folder: ``app.py`` importable, ``SECRET_KEY`` set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SECRET_KEY", "documentation-secret")
    # A fresh module per page, with no file: Flask then roots the app (and
    # its instance folder, where app.db goes) in the current folder.
    module = types.ModuleType("app")
    exec(compile(quickstart_app(), "docs/quickstart.md (app.py)", "exec"), module.__dict__)  # noqa: S102
    monkeypatch.setitem(sys.modules, "app", module)
    namespaces: list[dict[str, Any]] = [module.__dict__]
    yield namespaces
    for namespace in namespaces:
        for app in flask_apps(namespace):
            state = app.extensions.get("keyauth")
            if state is None:
                continue
            # Buffered usage would otherwise be written at exit, to a folder
            # that is gone; the pools' connections are closed now, not at exit.
            state.service.usage.take()
            with app.app_context():
                state.store.engine.dispose()


@pytest.mark.parametrize(
    "page", pages_with_python(), ids=lambda page: str(page.relative_to(ROOT))
)
def test_the_python_blocks_of_a_page_run_in_order(page: Path, reader: Any) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    reader.append(namespace)
    for block in python_blocks(page):
        if block.kind == FRAGMENT:
            ast.parse(block.code, block.where)
            continue
        exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102


def test_only_the_documented_python_fences_are_used() -> None:
    for page in PAGES:
        if page.exists():
            python_blocks(page)  # asserts on every other Python fence


#: What fits a code block of the built pages without a scroll bar.
CODE_WIDTH = 84


def test_python_lines_fit_the_page() -> None:
    for page in PAGES:
        if page.exists():
            for block in python_blocks(page):
                for number, line in enumerate(block.code.splitlines(), block.line + 1):
                    assert len(line) <= CODE_WIDTH, f"{page.relative_to(ROOT)}:{number}"


def test_the_readme_example_is_the_quickstart_app() -> None:
    readme = python_blocks(ROOT / "README.md")
    assert readme, "the README shows the example"
    assert readme[0].code == quickstart_app()
    assert all(block.kind == RUN for block in readme)
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 160


def shell_lines(page: Path) -> list[str]:
    return [
        line.strip()
        for _, info, body in fences(page.read_text(encoding="utf-8"))
        if info in ("sh", "console", "bash")
        for line in body
    ]


def ci_step(name: str) -> list[str]:
    """The commands of one ``== name`` step of .ci/run."""
    text = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    step = text.split(f'echo "== {name}', 1)[1].split('echo "==', 1)[0]
    return [line.strip() for line in step.splitlines()[1:] if line.strip()]


def test_the_readme_test_command_is_what_ci_runs() -> None:
    step = ci_step("tests")
    install = next(line for line in step if line.startswith(".venv/bin/pip install"))
    run = next(line for line in step if " -m pytest" in line)
    wanted = " && ".join(
        [
            "python3 -m venv .venv",
            install.replace(" -q ", " "),
            run,
        ]
    )
    assert wanted in shell_lines(ROOT / "README.md")
    assert wanted in shell_lines(ROOT / "CONTRIBUTING.md")


def test_the_readme_demo_command_is_the_quickstart_one() -> None:
    demo = [line for line in shell_lines(DOCS / "quickstart.md") if "example.app run" in line]
    assert len(demo) == 1
    assert demo[0] in shell_lines(ROOT / "README.md")


def test_the_reference_names_every_public_name() -> None:
    import flask_keyauth

    text = (DOCS / "reference.md").read_text(encoding="utf-8")
    for name in flask_keyauth.__all__:
        assert f"flask_keyauth.{name}" in text or f"flask_keyauth.signals.{name}" in text, name


def docs_extension() -> Any:
    """The docs' own Sphinx extension, a plain module for these tests."""
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import keyauth_openapi
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return keyauth_openapi


def test_the_json_api_page_lists_every_operation() -> None:
    keyauth_openapi = docs_extension()
    document = keyauth_openapi.build_document()
    text = keyauth_openapi.render_markdown(document)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert f"### `{method.upper()} {path}`" in text
            assert f"Operation id `{operation['operationId']}`" in text
            for status in operation["responses"]:
                assert f"| {status} |" in text
    for name in document["components"]["schemas"]:
        assert f"### `{name}`" in text
    assert "{include} _generated/openapi.md" in (DOCS / "api.md").read_text(encoding="utf-8")


def test_the_configuration_page_lists_every_setting() -> None:
    from flask_keyauth import config

    keyauth_docs = docs_extension()
    rows = keyauth_docs.settings()
    assert [name for name, _, _ in rows] == list(config.DEFAULTS)
    assert all(comment for _, _, comment in rows), "every setting has a #: comment"
    table = keyauth_docs.render_settings(rows)
    for name in config.DEFAULTS:
        assert f"| `{name}` |" in table
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert "{include} _generated/configuration.md" in page
