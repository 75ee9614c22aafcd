"""A separate process that uses a key, for the usage tests.

    python -m tests.usage_worker DB_URL KEY REQUESTS MODE [INTERVAL]

MODE ``exit`` ends normally (at-exit flush), ``crash`` ends with
``os._exit`` after REQUESTS requests, having paused for the background
writer after the first FLUSHED requests.
"""

from __future__ import annotations

import os
import sys
import time

from .conftest import bearer, make_app

FLUSHED = 10


def main() -> None:
    url, key, requests, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    interval = float(sys.argv[5]) if len(sys.argv) > 5 else 3600.0
    app, _, _ = make_app(url, KEYAUTH_LAST_USED_INTERVAL=interval)
    client = app.test_client()
    for number in range(1, requests + 1):
        assert client.get("/read", headers=bearer(key)).status_code == 200
        if mode == "crash" and number == FLUSHED:
            time.sleep(interval * 4)  # the background writer's turn
    if mode == "crash":
        os._exit(1)  # no at-exit handlers: what was buffered is lost


if __name__ == "__main__":
    main()
