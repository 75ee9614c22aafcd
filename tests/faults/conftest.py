"""Fixtures of the fault tests' throwaway servers (also used elsewhere,
through the top-level conftest)."""

from .servers import redis_cluster  # noqa: F401 - a fixture
