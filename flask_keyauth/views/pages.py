"""The HTML pages of the blueprint."""

from __future__ import annotations
