"""The ``keyauth`` blueprint: the key pages and the JSON API.

Hosts register it with ``app.register_blueprint(blueprint, url_prefix=...)``,
before or after ``init_app``.
"""

from __future__ import annotations

from flask import Blueprint
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App

from ..decorators import get_state

blueprint = Blueprint(
    "keyauth",
    __name__,
    template_folder="../templates",
    static_folder="../static/keyauth",
    static_url_path="/static",
)


@blueprint.before_request
def _require_init() -> None:
    get_state()  # a clear RuntimeError when init_app never ran on this app


from . import api, pages  # noqa: E402, F401  (routes register on import)


def exempt_from_csrf(app: App) -> None:
    """Let GitHub's leak reports past the host's ``CSRFProtect``, if it has
    one by now: their signature stands for the token they cannot carry."""
    csrf = app.extensions.get("csrf")
    if csrf is not None and hasattr(csrf, "exempt"):
        csrf.exempt(api.github_leaks)


@blueprint.record_once
def _on_register(state: BlueprintSetupState) -> None:
    exempt_from_csrf(state.app)
