"""The distribution's name, and the install lines of the README and the docs.

``flask-keyauth`` on the package index is an unrelated project, so this one
is distributed as ``flask-keyauth-kit`` (import name ``flask_keyauth``) and
every install line in the README and the docs installs this checkout.
"""

from __future__ import annotations

import re
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TAKEN = "flask-keyauth"  # somebody else's project on the package index
PIP_INSTALL = re.compile(r"pip install ([^`&;\n)]*)")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def test_the_distribution_name_is_not_the_taken_one() -> None:
    meta = project()
    name = meta["name"]
    assert normalized(name) != TAKEN
    assert normalized(name) == "flask-keyauth-kit"
    # The extras that name the project itself use its own name.
    for requirement in meta["optional-dependencies"]["dev"]:
        assert not normalized(requirement).startswith(f"{TAKEN}["), requirement
    assert f"{name}[test]" in meta["optional-dependencies"]["dev"]
    # Installed under that name, the import name unchanged.
    assert name in metadata.packages_distributions()["flask_keyauth"]
    assert metadata.version(name) == meta["version"]


#: Where install lines are written: the README, the contributors' guide and
#: every page of the documentation.
DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def install_lines() -> list[list[str]]:
    text = "\n".join(path.read_text() for path in DOCUMENTS if path.exists())
    found = []
    for match in PIP_INSTALL.finditer(text):
        args = shlex.split(match.group(1), comments=True)
        found.append([arg for arg in args if not arg.startswith("-")])
    return found


def test_every_documented_install_line_installs_this_checkout() -> None:
    extras = set(project()["optional-dependencies"])
    lines = install_lines()
    assert len(lines) >= 3, lines
    for requirements in lines:
        ours = [r for r in requirements if r == "." or r.startswith(".[")]
        assert len(ours) == 1, requirements
        wanted = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", ours[0])
        assert wanted is not None, ours
        assert set(filter(None, (wanted.group(1) or "").split(","))) <= extras, ours
        # Nothing else in the line names this project: the index would
        # answer with the unrelated one (or with nothing).
        for other in set(requirements) - set(ours):
            assert not normalized(other).startswith(TAKEN), requirements
