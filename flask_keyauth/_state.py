"""``get_state()``: the per-app state, the leaf every module may import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from flask import current_app

if TYPE_CHECKING:
    from .auth import Authenticator
    from .config import Settings
    from .extension import KeyAuth
    from .hashing import Hasher
    from .metrics import Metrics
    from .ratelimit import PlanLimits
    from .service import KeyService
    from .store import Store


@dataclass
class KeyAuthState:
    """Everything flask-keyauth keeps for one app, in ``app.extensions["keyauth"]``."""

    extension: KeyAuth
    settings: Settings
    store: Store
    hasher: Hasher
    service: KeyService
    limits: PlanLimits
    auth: Authenticator
    metrics: Metrics


def get_state() -> KeyAuthState:
    """The flask-keyauth state of the current app."""
    try:
        return cast("KeyAuthState", current_app.extensions["keyauth"])
    except KeyError:
        raise RuntimeError(
            "flask-keyauth is not initialised on this app: call KeyAuth(app) or "
            "keyauth.init_app(app) before using require_key, the blueprint or the service API."
        ) from None
