"""A few weeks of one organisation's keys, made the way they would be made.

``populate`` replays a history on the demo app: people of ``acme`` create
keys on the days they would have, rotate, disable and revoke some, and the
keys call the demo's protected API over real HTTP day after day. The
service's clock is set to each moment of the story while it plays, so every
date on the pages (created, last used, each day's requests, each event)
comes from what happened, not from rows written behind the pages' back.

The accessibility test plays it with few requests; the screenshots
(``python -m tests.browser.screenshots``) with a realistic number.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from .conftest import LiveServer

#: An owner with a high enough limit that the story is never rate limited.
PLAN = ("enterprise", "100000/hour;1000000/day")
#: Who acts, from where: alice and bob manage acme's keys (the demo's people).
ALICE = {"actor": "alice", "remote_addr": "198.51.100.7"}
BOB = {"actor": "bob", "remote_addr": "203.0.113.24"}


@dataclass
class Story:
    """The ids of the keys a page test wants, by what they show."""

    base: str
    #: In use, with description, metadata, allowed addresses and own limits.
    busy: str = ""
    #: Over the rotation reminder's age.
    old: str = ""
    #: A test key.
    staging: str = ""
    #: Rotated a few days ago: its grace period ends soon.
    rotated: str = ""
    #: The rotated key's replacement.
    replacement: str = ""
    disabled: str = ""
    revoked: str = ""
    #: Another organisation's key, never shown to acme.
    foreign: str = ""
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


@contextmanager
def clock_at(service: Any) -> Iterator[Callable[[dt.datetime], None]]:
    """Set the service's clock to given moments, then give it back."""
    real = service.clock
    moment: list[dt.datetime] = [real()]
    service.clock = lambda: moment[0]
    try:
        yield lambda at: moment.__setitem__(0, at)
    finally:
        service.clock = real


def populate(server: LiveServer, *, volume: float = 1.0, seed: int = 7) -> Story:
    """Play the story on ``server``; ``volume`` scales every day's requests."""
    app = server.app
    service = app.extensions["keyauth"].service
    rng = random.Random(seed)
    now = service.clock().replace(microsecond=0)
    today = now.replace(hour=0, minute=0, second=0)
    story = Story(server.url)
    http = requests.Session()

    def day(days_ago: int, hour: float = 10.0) -> dt.datetime:
        return today - dt.timedelta(days=days_ago) + dt.timedelta(hours=hour)

    with app.app_context(), clock_at(service) as set_clock:
        service.set_plan("acme", PLAN[0], PLAN[1], actor="billing")

        # Who made what, and when (days ago), oldest first.
        set_clock(day(142, 9.5))
        key, secret = service.create_key(
            "acme",
            "Billing sync",
            ["read", "write"],
            "live",
            **ALICE,
            description="Nightly invoice export to the accounting system.",
        )
        story.old, story.secrets[key.id] = key.id, secret

        set_clock(day(75, 14.2))
        key, secret = service.create_key(
            "acme",
            "Production server",
            ["read", "write"],
            "live",
            day(75, 14.2) + dt.timedelta(days=180),
            **ALICE,
            description="The storefront's backend: lists and creates entities.",
            metadata={"team": "web", "service": "storefront"},
            allowed_ips=["127.0.0.1"],
        )
        story.busy, story.secrets[key.id] = key.id, secret

        set_clock(day(40, 11.0))
        key, secret = service.create_key(
            "acme",
            "Staging worker",
            ["read"],
            "test",
            **BOB,
            description="Background jobs of the staging environment.",
        )
        story.staging, story.secrets[key.id] = key.id, secret

        set_clock(day(34, 16.0))
        key, secret = service.create_key("acme", "Legacy export", ["read"], "live", **BOB)
        story.revoked, story.secrets[key.id] = key.id, secret

        set_clock(day(27, 10.4))
        key, secret = service.create_key(
            "acme",
            "CI deploys",
            ["write"],
            "live",
            day(27, 10.4) + dt.timedelta(days=90),
            **BOB,
            description="Deploys from the main branch.",
        )
        story.rotated, story.secrets[key.id] = key.id, secret

        set_clock(day(20, 15.0))
        key, secret = service.create_key("acme", "Analytics import", ["read"], "live", **ALICE)
        story.disabled, story.secrets[key.id] = key.id, secret

        key, _ = service.create_key("globex", "Someone else's key", ["admin"], "live")
        story.foreign = key.id

        def rotate() -> None:
            new, secret = service.rotate_key(
                story.rotated,
                grace=dt.timedelta(days=7),
                **ALICE,
            )
            story.replacement, story.secrets[new.id] = new.id, secret

        # Each day's traffic, from each key's creation on; the changes on
        # the days they happened.
        changes: dict[int, Callable[[], None]] = {
            # Pushed to a public repository: GitHub's secret scanning reports
            # it, and the report revokes it (KEYAUTH_LEAK_ACTION's default).
            12: lambda: service.report_leak(
                story.secrets[story.revoked],
                url="https://github.com/acme-labs/data-scripts/blob/main/export.py",
                source="content",
                actor="github",
            ),
            # The storefront moves onto the private network, then gets a
            # limit of its own.
            22: lambda: service.update_key(
                story.busy, allowed_ips=["127.0.0.1", "10.0.0.0/8"], **BOB
            ),
            9: lambda: service.update_key(story.busy, limits="500/second burst 1000", **ALICE),
            6: rotate,
            3: lambda: service.disable_key(story.disabled, **BOB),
        }

        # Requests a weekday, from the day (days ago) each key came into use.
        traffic = {
            story.busy: (75, 260),
            story.old: (142, 40),
            story.staging: (40, 60),
            story.revoked: (34, 25),
            story.rotated: (27, 6),
            story.disabled: (20, 30),
        }
        for days_ago in range(30, -1, -1):
            # The nightly cron job: reminders of old and expiring keys.
            set_clock(day(days_ago, 6.0))
            service.remind(7, actor="cli")
            start = 0.0
            if days_ago in changes:
                start = 9.0  # the day's traffic after the change
                set_clock(day(days_ago, start))
                changes[days_ago]()
            # Today's traffic stops a few minutes ago.
            end = 24.0 if days_ago else (now - today).total_seconds() / 3600 - 0.1
            calls: list[tuple[float, str]] = []
            for key_id, (since, per_day) in traffic.items():
                if key_id == story.rotated and story.replacement:
                    key_id = story.replacement  # deploys moved to the new key
                if days_ago > since or not usable(service, key_id, day(days_ago, 12)):
                    continue
                weekday = (today - dt.timedelta(days=days_ago)).weekday()
                weight = 0.45 if weekday >= 5 else 1.0
                if key_id == story.old and days_ago % 3:
                    continue  # a nightly job, every third night
                hours = (1.0, 2.5) if key_id == story.old else (0.0, 24.0)
                low, high = max(start, hours[0]), min(end, hours[1])
                if high <= low:
                    continue
                # The share of the day that was played (today: until now),
                # rounded at random so that a small volume keeps the shape.
                share = (high - low) / (hours[1] - hours[0])
                mean = per_day * weight * rng.uniform(0.6, 1.4) * volume * share
                calls += [(rng.uniform(low, high), key_id) for _ in range(int(mean + rng.random()))]
            for hour, key_id in sorted(calls):
                set_clock(day(days_ago, hour))
                call(http, story, key_id, rng)
        set_clock(now)
        service.flush_usage()
    http.close()
    return story


def usable(service: Any, key_id: str, at: dt.datetime) -> bool:
    key = service.get_key(key_id)
    return (
        not key.revoked_at
        and not key.disabled_at
        and (key.expires_at is None or key.expires_at > at)
    )


def call(http: requests.Session, story: Story, key_id: str, rng: random.Random) -> None:
    """One request of the demo's API with a key, as its user's code makes it."""
    headers = {"Authorization": f"Bearer {story.secrets[key_id]}"}
    pick = rng.random()
    writes = key_id in (story.busy, story.old, story.rotated, story.replacement)
    if writes and pick < 0.2:
        response = http.post(
            f"{story.base}/v1/entities",
            json={"name": f"order-{rng.randrange(10**6)}"},
            headers=headers,
            timeout=10,
        )
        assert response.status_code == 201, response.text
        return
    path = "/v1/reports" if pick > 0.95 else "/v1/entities"
    response = http.get(f"{story.base}{path}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
