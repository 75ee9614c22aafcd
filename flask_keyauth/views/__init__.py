"""The ``keyauth`` blueprint: the key pages and the JSON API."""

from __future__ import annotations

from flask import Blueprint

from ..decorators import get_state

blueprint = Blueprint("keyauth", __name__, template_folder="../templates")


@blueprint.before_request
def _require_init() -> None:
    get_state()  # a clear RuntimeError when init_app never ran on this app
