"""The JSON API of the blueprint."""

from __future__ import annotations
