"""Sphinx configuration of the flask-keyauth documentation.

Build it with ``sphinx-build -W --keep-going -b html docs docs/_build/html``
(install the ``docs`` extra first). Nothing is fetched from the network: the
JSON API reference is rendered from the package's own OpenAPI document by
``_ext/keyauth_openapi.py``.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "flask-keyauth"
author = "flask-keyauth contributors"
copyright = "flask-keyauth contributors"  # noqa: A001 - Sphinx's own name
release = metadata.version("flask-keyauth-kit")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "keyauth_openapi",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", ".gitignore"]

myst_enable_extensions = ["colon_fence", "deflist"]
# Pages link to each other's sections as [text](page.md#section).
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types only where a docstring describes the parameter: no lists of bare names.
autodoc_typehints_description_target = "documented"


html_theme = "alabaster"
html_title = f"flask-keyauth {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "API keys for Flask APIs",
    "fixed_sidebar": False,
    "page_width": "1160px",
}
