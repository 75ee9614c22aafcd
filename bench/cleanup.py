"""What the run created, removed at exit, after flask-keyauth's own exit flush.

The throwaway databases, the Redis keys under the run's prefix and the
temporary directory go in an exit handler registered when the ``bench``
package is imported, before flask-keyauth is: exit handlers run
last-registered first, so flask-keyauth writes its buffered usage (at
import or per app, wherever it registers that) while the databases still
exist, and only then are they dropped.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections.abc import Callable

_AT_END: list[Callable[[], None]] = []


def at_end(step: Callable[[], None]) -> None:
    """Run ``step`` at exit (steps run last-added first)."""
    _AT_END.append(step)


def _clean_up() -> None:
    while _AT_END:
        step = _AT_END.pop()
        try:
            step()
        except Exception as error:  # noqa: BLE001 - exiting; try the other steps
            print(f"bench: cleanup step failed: {error!r}", file=sys.stderr)


atexit.register(_clean_up)


def temporary_directory() -> str:
    path = tempfile.mkdtemp(prefix="keyauth-bench-")
    at_end(lambda: shutil.rmtree(path, ignore_errors=True))
    return path
