"""The per-request cost of flask-keyauth, next to a bare route and its peers.

Run it with ``python -m bench`` (``--help`` for the options). Every variant
is a Flask app called as a WSGI callable, without the test client, in
interleaved rounds so that the machine's noise falls on all of them alike;
the table gives the median µs per request and the ratio to the bare route
of the same round, the slowest single request, and per request what the
servers saw (see ``observe``): PostgreSQL's table reads and row writes,
Redis's round trips, and the argon2 runs. A last part serves the apps with
gunicorn and loads them with ``wrk``.
"""

# First of all, before flask-keyauth is imported: see cleanup.
from . import cleanup as _cleanup  # noqa: E402, F401
