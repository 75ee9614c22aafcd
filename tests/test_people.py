"""People, teams and least privilege on the key pages (SPEC §12): who created
and who changed what, viewers who see everything and change nothing, keys
switched off and on, a key's own details and limits, the permission table,
the confirmation before a live admin key, and the longest lifetime."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import sqlalchemy as sa
from werkzeug.test import TestResponse

from flask_keyauth.models import ApiKeyInfo

from .conftest import bearer, install_clock, service_of, session_people
from .test_pages import (
    KEY_PATTERN,
    PREFIX,
    MakeSite,
    Site,
    create_form,
    hidden_fields,
    make_site,  # noqa: F401 - a fixture, reached through `sites`
    row_with_id,
    secret_in,
)

SCOPES = {
    "read": {"implies": [], "description": "Read entities and reports"},
    "write": {"implies": ["read"], "description": "Create and change entities"},
    "admin": {"implies": ["write"], "description": "Manage this account's API keys"},
    "billing": [],  # the list form: no description
}


@pytest.fixture
def sites(request: pytest.FixtureRequest) -> MakeSite:
    """``make_site`` of the page tests: ``sites(**config)``."""
    factory: MakeSite = request.getfixturevalue("make_site")
    return factory


@pytest.fixture
def team(sites: MakeSite) -> Site:
    """The blueprint for an organisation whose people sign in: the person in
    ``session["person"]`` acts, ``session["role"]`` is their role."""
    made = sites(KEYAUTH_SCOPES=SCOPES)
    session_people(made.keyauth)
    return made


def as_person(site: Site, person: str, role: str = "manager") -> None:
    with site.client.session_transaction() as sess:
        sess["org"], sess["person"], sess["role"] = "acme", person, role


def make(site: Site, name: str, **details: Any) -> ApiKeyInfo:
    """A key of acme's made by host code, with the service's optional fields."""
    with site.app.app_context():
        return service_of(site.app).create_key("acme", name, **details)[0]


def events_of(site: Site, key_id: str) -> list[tuple[str, str | None]]:
    with site.app.app_context():
        return [(e.action, e.actor) for e in service_of(site.app).events("acme", key_id=key_id)]


def event_rows(html: str) -> list[tuple[str, str]]:
    """(action label, who) of each row of a key page's activity table."""
    table = html[html.index('<table class="ka-table ka-table--events">') :]
    table = table[: table.index("</table>")]
    return [
        (label, who.strip())
        for label, who in re.findall(
            r'<span class="ka-event ka-event--\w+">([^<]+)</span>.*?'
            r'<td data-label="By">(.*?)</td>',
            table,
            re.S,
        )
    ]


# -- who did it ------------------------------------------------------------------------


def test_the_key_page_and_the_list_say_who_created_a_key(team: Site) -> None:
    as_person(team, "alice@acme.test")
    assert create_form(team, name="Deploys").status_code == 201
    (key,) = team.key_list()
    assert key.created_by == "alice@acme.test"
    # Another person of the organisation sees who it was.
    as_person(team, "bob@acme.test")
    html = team.page(f"/{key.id}")
    assert '<dt>Created by</dt><dd class="ka-created-by">alice@acme.test</dd>' in html
    row = row_with_id(team.page("/"), key.id)
    assert '<span class="ka-sub ka-created-by">by alice@acme.test</span>' in row
    # Keys made elsewhere say how; host code records nobody.
    with team.app.app_context():
        by_cli, _ = service_of(team.app).create_key("acme", "From CLI", actor="cli")
        by_key, _ = service_of(team.app).create_key("acme", "By key", actor=f"key:{key.id}")
    by_host, _ = team.create(name="By host")
    for info, shown in [
        (by_cli, "Command line"),
        (by_key, f"API key {key.id}"),
        (by_host, '<span class="ka-muted">Not recorded</span>'),
    ]:
        assert f'<dd class="ka-created-by">{shown}</dd>' in team.page(f"/{info.id}")
    assert "ka-created-by" not in row_with_id(team.page("/"), by_host.id)


def test_without_an_actor_loader_the_session_owner_is_recorded(sites: MakeSite) -> None:
    site = sites()
    site.sign_in()
    assert create_form(site, name="Deploys").status_code == 201
    (key,) = site.key_list()
    assert key.created_by == "session:acme"
    assert '<dd class="ka-created-by">acme (web)</dd>' in site.page(f"/{key.id}")


def test_each_event_names_the_person_who_made_it(team: Site) -> None:
    as_person(team, "alice")
    assert create_form(team, name="Deploy").status_code == 201
    (key,) = team.key_list()
    as_person(team, "bob")
    edit = hidden_fields(team.page(f"/{key.id}/edit"))
    response = team.client.post(
        f"{PREFIX}/{key.id}/edit",
        data={
            **edit,
            "name": "Deploys",
            "description": "CI",
            "metadata": "",
            "allowed_ips": "",
            "limits": "",
        },
    )
    assert response.status_code == 303
    token = hidden_fields(team.page(f"/{key.id}/disable"))
    assert team.client.post(f"{PREFIX}/{key.id}/disable", data=token).status_code == 303
    as_person(team, "alice")
    assert team.client.post(f"{PREFIX}/{key.id}/enable", data=token).status_code == 303
    as_person(team, "carol")
    assert team.client.post(f"{PREFIX}/{key.id}/revoke", data=token).status_code == 303
    assert events_of(team, key.id) == [
        ("revoked", "carol"),
        ("enabled", "alice"),
        ("disabled", "bob"),
        ("details_changed", "bob"),
        ("renamed", "bob"),
        ("created", "alice"),
    ]
    html = team.page(f"/{key.id}")
    assert event_rows(html) == [
        ("Revoked", "carol"),
        ("Enabled", "alice"),
        ("Disabled", "bob"),
        ("Details changed", "bob"),
        ("Renamed", "bob"),
        ("Created", "alice"),
    ]
    # A rename keeps the old and the new name.
    assert '<span class="ka-sub">Deploy → Deploys</span>' in html


def test_a_rotation_is_recorded_as_the_persons(team: Site) -> None:
    as_person(team, "alice")
    old, _ = team.create(name="Worker")
    data = {**hidden_fields(team.page(f"/{old.id}/rotate")), "grace": "0"}
    assert team.client.post(f"{PREFIX}/{old.id}/rotate", data=data).status_code == 201
    (new,) = [k for k in team.key_list() if k.id != old.id]
    assert new.created_by == "alice"
    assert events_of(team, old.id)[0] == ("rotated", "alice")
    assert events_of(team, new.id) == [("created", "alice")]


# -- viewers ------------------------------------------------------------------------------------


#: Every page that changes a key, with what its POST would send.
CHANGES: list[tuple[str, dict[str, Any]]] = [
    ("/new", {"name": "x", "scopes": "read", "environment": "live", "expires": "never"}),
    ("/{id}/edit", {"name": "Renamed", "description": "changed"}),
    ("/{id}/disable", {}),
    ("/{id}/enable", {}),
    ("/{id}/revoke", {}),
    ("/{id}/rotate", {"grace": "0", "expires": "same"}),
]
ACTIONS = ("new", "edit", "disable", "enable", "revoke", "rotate")


def snapshot(site: Site) -> list[dict[str, Any]]:
    return [{**key.to_dict(), "last_used_at": None} for key in site.key_list()]


def seeded(site: Site) -> tuple[ApiKeyInfo, ApiKeyInfo, str]:
    """An active key with usage, a disabled one, and the active one's secret."""
    active, secret = site.create(name="Active key")
    paused, _ = site.create(name="Paused key")
    with site.app.app_context():
        service_of(site.app).disable_key(paused.id, actor="alice")
    assert site.client.get("/read", headers=bearer(secret)).status_code == 200
    site.flush_usage()
    return active, paused, secret


def test_a_viewer_sees_keys_usage_and_events_but_no_action(team: Site) -> None:
    active, paused, _ = seeded(team)
    as_person(team, "carol", role="viewer")
    listing = team.page("/")
    assert "Active key" in listing and "Paused key" in listing
    assert "View only." in listing
    for key in (active, paused):
        html = team.page(f"/{key.id}")
        assert key.redacted in html and "Requests, last 30 days" in html
        assert event_rows(html)  # the history is there
        assert "View only." in html
    assert '<span class="ka-stat__value">1</span>' in team.page(f"/{active.id}")
    assert event_rows(team.page(f"/{paused.id}"))[0] == ("Disabled", "alice")
    # Old keys: the reminder to rotate is there, as words, not as a link.
    install_clock(team.app).advance(days=100, hours=1)
    listing = team.page("/")
    assert (
        '<span class="ka-hint" title="Created 100 days ago">Rotate: 100 days old</span>' in listing
    )
    assert "This key is 100 days old." in team.page(f"/{active.id}")
    for html in (listing, team.page(f"/{active.id}"), team.page(f"/{paused.id}")):
        for action in ACTIONS:
            assert not re.search(rf'href="{PREFIX}(/\w+)?/{action}"', html), action
        assert "<form" not in html and "<button" not in html
        assert "Create API key" not in html


def test_a_managers_pages_offer_every_action(team: Site) -> None:
    active, paused, _ = seeded(team)
    as_person(team, "bob")
    listing = team.page("/")
    assert f'href="{PREFIX}/new"' in listing and "View only." not in listing
    html = team.page(f"/{active.id}")
    for action in ("edit", "disable", "revoke", "rotate"):
        assert f'href="{PREFIX}/{active.id}/{action}"' in html, action
    assert f'href="{PREFIX}/{paused.id}/enable"' in team.page(f"/{paused.id}")


@pytest.mark.parametrize(("path", "fields"), CHANGES, ids=[p for p, _ in CHANGES])
def test_a_viewer_is_refused_every_change_page(
    team: Site, path: str, fields: dict[str, Any]
) -> None:
    active, paused, secret = seeded(team)
    as_person(team, "bob")
    token = hidden_fields(team.page("/new"))  # a valid CSRF token and form id
    key = paused if path.endswith("/enable") else active
    url = PREFIX + path.format(id=key.id)
    assert team.client.get(url).status_code == 200  # a manager may open it
    before = snapshot(team)
    as_person(team, "carol", role="viewer")
    for method in ("GET", "HEAD"):
        assert team.client.open(url, method=method).status_code == 403, method
    response = team.client.post(url, data={**token, **fields})
    assert response.status_code == 403
    body = response.get_data(as_text=True)
    assert "FORBIDDEN" in body and "only a manager can" in body
    assert KEY_PATTERN.search(body) is None
    # Without the CSRF token, the CSRF check answers first.
    assert team.client.post(url, data=fields).status_code == 400
    assert snapshot(team) == before
    assert events_of(team, active.id) == [("created", None)]
    assert team.client.get("/read", headers=bearer(secret)).status_code == 200
    # A role the host does not know is a viewer too.
    as_person(team, "mallory", role="owner")
    assert team.client.post(url, data={**token, **fields}).status_code == 403
    assert snapshot(team) == before


def test_a_viewer_is_refused_another_owners_key_the_same_way(team: Site) -> None:
    theirs, _ = team.create(owner="globex", name="Theirs")
    as_person(team, "carol", role="viewer")
    for path in ("/{id}/edit", "/{id}/revoke"):
        # No word on whether the key exists: the same 403 as for any key.
        mine = team.client.get(PREFIX + path.format(id="A" * 12))
        other = team.client.get(PREFIX + path.format(id=theirs.id))
        assert mine.status_code == other.status_code == 403
        assert mine.get_data() == other.get_data()


# -- disable and enable -------------------------------------------------------------------------


def test_disable_asks_then_refuses_the_key_until_it_is_enabled(team: Site) -> None:
    as_person(team, "bob")
    key, secret = team.create(name="Worker")
    confirm = team.page(f"/{key.id}/disable")
    assert "Disable “Worker”?" in confirm and "this can be undone" in confirm
    assert team.get_key(key.id).status == "active"  # GET changes nothing
    response = team.client.post(f"{PREFIX}/{key.id}/disable", data=hidden_fields(confirm))
    assert response.status_code == 303
    assert response.location == f"{PREFIX}/{key.id}?done=disabled"
    assert team.get_key(key.id).status == "disabled"
    refused = team.client.get("/read", headers=bearer(secret))
    assert (refused.status_code, refused.json["error"]["code"]) == (  # type: ignore[index]
        401,
        "INVALID_API_KEY",
    )
    html = team.page(f"/{key.id}?done=disabled")
    assert "Key disabled." in html and "This key is disabled since" in html
    assert '<span class="ka-status ka-status--disabled">Disabled</span>' in html
    assert "This key is already disabled" in team.page(f"/{key.id}/disable")
    assert 'class="ka-row ka-row--disabled"' in row_with_id(team.page("/"), key.id)

    confirm = team.page(f"/{key.id}/enable")
    assert "Enable “Worker”?" in confirm
    response = team.client.post(f"{PREFIX}/{key.id}/enable", data=hidden_fields(confirm))
    assert (response.status_code, response.location) == (303, f"{PREFIX}/{key.id}?done=enabled")
    assert team.get_key(key.id).status == "active"
    assert team.client.get("/read", headers=bearer(secret)).status_code == 200
    assert "Key enabled." in team.page(f"/{key.id}?done=enabled")
    assert "This key is not disabled" in team.page(f"/{key.id}/enable")
    # Again: no second event.
    assert (
        team.client.post(f"{PREFIX}/{key.id}/enable", data=hidden_fields(confirm)).status_code
        == 303
    )
    assert events_of(team, key.id) == [("enabled", "bob"), ("disabled", "bob"), ("created", None)]


def test_revoked_and_expired_keys_cannot_be_switched(team: Site) -> None:
    as_person(team, "bob")
    clock = install_clock(team.app)
    gone, _ = team.create(name="Gone")
    lapsed, _ = team.create(name="Lapsed", expires_at=clock.now + dt.timedelta(hours=1))
    token = hidden_fields(team.page("/new"))
    with team.app.app_context():
        team.keyauth.revoke_key(gone.id)
    clock.advance(hours=2)
    for key in (gone, lapsed):
        for action in ("disable", "enable"):
            assert "cannot be" in team.page(f"/{key.id}/{action}")
            response = team.client.post(f"{PREFIX}/{key.id}/{action}", data=token)
            assert response.status_code == 409
            assert "KEY_NOT_ACTIVE" in response.get_data(as_text=True)
    assert team.get_key(gone.id).status == "revoked"
    assert team.get_key(lapsed.id).disabled_at is None


def test_a_disabled_key_can_be_revoked_but_not_rotated_or_edited(team: Site) -> None:
    as_person(team, "bob")
    key, _ = team.create(name="Paused")
    with team.app.app_context():
        service_of(team.app).disable_key(key.id)
    assert "Enable it first" in team.page(f"/{key.id}/rotate")
    token = hidden_fields(team.page("/new"))
    rotated = team.client.post(f"{PREFIX}/{key.id}/rotate", data={**token, "grace": "0"})
    assert rotated.status_code == 409 and "enable it first" in rotated.get_data(as_text=True)
    edit = team.client.get(f"{PREFIX}/{key.id}/edit")
    assert edit.status_code == 409 and "enable it first" in edit.get_data(as_text=True)
    edited = team.client.post(f"{PREFIX}/{key.id}/edit", data={**token, "name": "x"})
    assert edited.status_code == 409
    assert team.client.post(f"{PREFIX}/{key.id}/revoke", data=token).status_code == 303
    assert team.get_key(key.id).status == "revoked"
    assert len(team.key_list()) == 1 and team.get_key(key.id).name == "Paused"


# -- a key's own details ------------------------------------------------------------------------


def edit_form(site: Site, key_id: str, **fields: Any) -> TestResponse:
    """Open the edit form of ``key_id`` and post it with ``fields`` changed."""
    html = site.page(f"/{key_id}/edit")
    data = {**hidden_fields(html), **current_values(html), **fields}
    return site.client.post(f"{PREFIX}/{key_id}/edit", data=data)


def current_values(html: str) -> dict[str, str]:
    values = dict(re.findall(r'<input id="ka-\w+" name="(\w+)" type="text" value="([^"]*)"', html))
    for name, text in re.findall(r'<textarea [^>]*name="(\w+)"[^>]*>(.*?)</textarea>', html, re.S):
        values[name] = text
    return values


def test_the_key_page_shows_its_details_and_own_limits(team: Site) -> None:
    with team.app.app_context():
        key, _ = service_of(team.app).create_key(
            "acme",
            "Billing sync",
            description="Nightly sync.\n<b>Ask</b> the billing team.",
            metadata={"team": "billing", "ticket": "OPS-12"},
            allowed_ips=["203.0.113.7", "10.0.0.0/8"],
            limits="10/minute",
        )
    as_person(team, "bob")
    html = team.page(f"/{key.id}")
    assert (
        '<dd class="ka-description">Nightly sync.\n&lt;b&gt;Ask&lt;/b&gt; the billing team.</dd>'
        in html
    )
    assert "<li><code>team</code> = <code>billing</code></li>" in html
    assert "<li><code>ticket</code> = <code>OPS-12</code></li>" in html
    assert "<li><code>203.0.113.7/32</code></li><li><code>10.0.0.0/8</code></li>" in html
    assert (
        '<code>10/minute</code><span class="ka-sub">beside the free plan\'s limits</span>' in html
    )
    plain, _ = team.create(name="Plain")
    html = team.page(f"/{plain.id}")
    assert '<dd class="ka-description"><span class="ka-muted">None</span></dd>' in html
    assert '<span class="ka-muted">Any address</span>' in html
    assert "None: the free plan's limits apply" in html


def test_the_edit_form_changes_details_through_the_service(team: Site) -> None:
    as_person(team, "bob")
    key, secret = team.create(name="Worker")
    form = team.page(f"/{key.id}/edit")
    assert 'value="Worker"' in form and 'maxlength="1000"' in form
    response = edit_form(
        team,
        key.id,
        name="  Billing worker ",
        description="Runs the nightly sync.\r\nOwner: billing.",
        metadata="team = billing\r\n\r\nticket=OPS-12\r\n",
        allowed_ips="127.0.0.1\r\n10.0.0.0/8, 2001:db8::/32",
        limits="2/minute",
    )
    assert (response.status_code, response.location) == (303, f"{PREFIX}/{key.id}?done=updated")
    info = team.get_key(key.id)
    assert info.name == "Billing worker"
    assert info.description == "Runs the nightly sync.\nOwner: billing."
    assert dict(info.metadata) == {"team": "billing", "ticket": "OPS-12"}
    assert info.allowed_ips == ("127.0.0.1/32", "10.0.0.0/8", "2001:db8::/32")
    assert info.limits == "2/minute"
    assert "Changes saved." in team.page(f"/{key.id}?done=updated")
    assert [action for action, _ in events_of(team, key.id)] == [
        "limits_changed",
        "allowed_ips_changed",
        "details_changed",
        "renamed",
        "created",
    ]
    notes = team.page(f"/{key.id}")
    assert "Now only from 127.0.0.1/32, 10.0.0.0/8, 2001:db8::/32" in notes
    assert "Now 2/minute" in notes
    # The form shows what was saved, and saving it unchanged records nothing.
    form = team.page(f"/{key.id}/edit")
    assert ">team=billing\nticket=OPS-12</textarea>" in form
    assert ">127.0.0.1/32\n10.0.0.0/8\n2001:db8::/32</textarea>" in form
    assert edit_form(team, key.id).status_code == 303
    assert len(events_of(team, key.id)) == 5
    # The rules apply at once: the address, then the key's own limits.
    client = team.app.test_client()
    elsewhere = client.get(
        "/read", headers=bearer(secret), environ_base={"REMOTE_ADDR": "192.0.2.1"}
    )
    assert elsewhere.status_code == 403
    assert [client.get("/read", headers=bearer(secret)).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    # Emptied fields clear them.
    assert (
        edit_form(team, key.id, description="", metadata="", allowed_ips="", limits="").status_code
        == 303
    )
    info = team.get_key(key.id)
    assert (info.description, dict(info.metadata), info.allowed_ips, info.limits) == (
        None,
        {},
        (),
        None,
    )
    notes = team.page(f"/{key.id}")
    assert "From any address now" in notes and "Only the plan&#39;s limits now" in notes


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"name": "  "}, "name", "Give the key a name"),
        ({"name": "n" * 129}, "name", "at most 128 characters long; this one has 129"),
        (
            {"description": "d" * 1001},
            "description",
            "Description must be at most 1000 characters.",
        ),
        ({"description": "a\x00b"}, "description", "must not contain NUL characters"),
        (
            {"metadata": "team=pay\nno equals sign"},
            "metadata",
            "&#39;no equals sign&#39; has no &#39;=&#39;",
        ),
        ({"metadata": "=value"}, "metadata", "has no key before"),
        ({"metadata": "a=1\na=2"}, "metadata", "The key &#39;a&#39; is given twice."),
        ({"metadata": "k=" + "v" * 5000}, "metadata", "Metadata must be at most 4096 bytes"),
        (
            {"allowed_ips": "10.0.0.1\nnot-an-ip"},
            "allowed_ips",
            "&#39;not-an-ip&#39; is not an address or CIDR block.",
        ),
        (
            {"allowed_ips": "\n".join(f"10.0.{n}.0/24" for n in range(65))},
            "allowed_ips",
            "The list of addresses holds at most 64 entries.",
        ),
        ({"limits": "lots"}, "limits", "cannot be parsed"),
    ],
)
def test_the_edit_form_explains_what_the_service_refuses(
    team: Site, fields: dict[str, str], field: str, message: str
) -> None:
    as_person(team, "bob")
    key = make(team, "Worker", description="Kept")
    response = edit_form(team, key.id, **fields)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "Nothing was changed." in html
    error = re.search(rf'<p class="ka-field-error" id="ka-{field}-error">(.*?)</p>', html, re.S)
    assert error is not None and message in error.group(1), html
    assert 'aria-invalid="true"' in html
    info = team.get_key(key.id)
    assert (info.name, info.description, info.allowed_ips) == ("Worker", "Kept", ())
    assert events_of(team, key.id) == [("created", None)]


def test_fields_the_edit_form_leaves_out_are_kept(team: Site) -> None:
    as_person(team, "bob")
    with team.app.app_context():
        key, _ = service_of(team.app).create_key(
            "acme",
            "Worker",
            description="Kept",
            limits="5/minute",
            metadata={"note": "two\nlines", "a=b": "c"},  # not key=value lines
        )
    form = team.page(f"/{key.id}/edit")
    # Such labels are shown, but not sent: the form would change them.
    assert re.search(r'<textarea id="ka-metadata" rows="3" disabled', form)
    assert 'name="metadata"' not in form
    token = hidden_fields(form)
    assert (
        team.client.post(f"{PREFIX}/{key.id}/edit", data={**token, "name": "Renamed"}).status_code
        == 303
    )
    info = team.get_key(key.id)
    assert info.name == "Renamed"
    assert (info.description, info.limits) == ("Kept", "5/minute")
    assert dict(info.metadata) == {"note": "two\nlines", "a=b": "c"}


# -- the create form ------------------------------------------------------------------------------


def test_the_create_form_lists_each_permission_with_what_it_allows_and_includes(
    team: Site,
) -> None:
    as_person(team, "bob")
    html = team.page("/new")
    table = html[html.index('<table class="ka-table ka-table--scopes">') :]
    table = table[: table.index("</table>")]
    rows = re.findall(
        r'value="(\w+)".*?<td data-label="Allows"[^>]*>(.*?)</td>\s*'
        r'<td data-label="Includes">(.*?)</td>',
        table,
        re.S,
    )
    scopes = {
        name: (allows, re.findall(r'<li class="ka-scope">(\w+)</li>', includes))
        for name, allows, includes in rows
    }
    assert scopes == {
        "read": ("Read entities and reports", []),
        "write": ("Create and change entities", ["read"]),
        "admin": ("Manage this account&#39;s API keys", ["read", "write"]),
        "billing": ('<span class="ka-muted">—</span>', []),
    }
    assert table.count("Nothing else") == 2
    assert re.search(r'value="admin"\s+aria-describedby="[^"]+"\s+data-grants-admin', table)
    assert "data-grants-admin" not in table.split('value="admin"')[0]


def test_a_live_key_with_admin_asks_for_a_confirmation(team: Site) -> None:
    as_person(team, "bob")
    form = team.page("/new")
    assert "A live key with admin can manage every key of this account." in form
    assert 'name="confirm_admin" value="yes"' in form
    refused = create_form(team, name="Root", scopes=["admin"])
    assert refused.status_code == 400
    html = refused.get_data(as_text=True)
    assert "tick the box to confirm" in html and KEY_PATTERN.search(html) is None
    assert team.key_list() == []
    # The form comes back as it was, to be confirmed.
    assert re.search(r'value="admin"[^>]*checked', html)
    assert hidden_fields(html)["form_id"]
    created = create_form(team, name="Root", scopes=["admin"], confirm_admin="yes")
    assert created.status_code == 201
    (key,) = team.key_list()
    assert key.granted_scopes == ("admin",) and key.environment == "live"
    # No question for a test key with admin, nor a live key without it.
    assert (
        create_form(team, name="Test root", scopes=["admin"], environment="test").status_code == 201
    )
    assert create_form(team, name="Writer", scopes=["write", "billing"]).status_code == 201


def test_a_scope_that_implies_admin_asks_too(sites: MakeSite) -> None:
    made = sites(KEYAUTH_SCOPES={"read": [], "admin": ["read"], "owner": ["admin"]})
    made.sign_in()
    assert create_form(made, scopes=["owner"]).status_code == 400
    assert create_form(made, scopes=["owner"], confirm_admin="yes").status_code == 201


def test_the_create_form_takes_a_description_metadata_and_addresses(team: Site) -> None:
    as_person(team, "alice")
    response = create_form(
        team,
        name="Office",
        description="Used by the office printer.",
        metadata="site=paris\r\nfloor=3",
        allowed_ips="198.51.100.0/24\r\n",
    )
    assert response.status_code == 201
    secret = secret_in(response)
    (key,) = team.key_list()
    assert key.description == "Used by the office printer."
    assert dict(key.metadata) == {"floor": "3", "site": "paris"}
    assert key.allowed_ips == ("198.51.100.0/24",)
    refused = team.client.get("/read", headers=bearer(secret))
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "IP_NOT_ALLOWED"  # type: ignore[index]
    allowed = team.client.get(
        "/read", headers=bearer(secret), environ_base={"REMOTE_ADDR": "198.51.100.20"}
    )
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"description": "d" * 1001}, "Description must be at most 1000 characters."),
        ({"metadata": "just words"}, "has no &#39;=&#39;: write each label as key=value"),
        ({"metadata": "k=" + "v" * 5000}, "Metadata must be at most 4096 bytes"),
        ({"allowed_ips": "10.0.0.300"}, "&#39;10.0.0.300&#39; is not an address or CIDR block."),
    ],
)
def test_the_create_form_explains_refused_details(
    team: Site, fields: dict[str, str], message: str
) -> None:
    as_person(team, "alice")
    response = create_form(team, **fields)
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert message in html and "The key was not created." in html
    assert team.key_list() == []
    assert create_form(team, name="Fixed").status_code == 201


# -- the longest lifetime ---------------------------------------------------------------


def expiry_values(html: str) -> list[str]:
    return re.findall(r'name="expires" value="(\w+)"', html)


@pytest.mark.parametrize(
    ("most", "choices", "default"),
    [
        (90, ["30", "60", "90"], "90"),
        (60, ["30", "60"], "60"),
        (45, ["30", "45"], "45"),
        (7, ["7"], "7"),
        (1, ["1"], "1"),
    ],
)
def test_with_a_longest_lifetime_only_choices_within_it_are_offered(
    sites: MakeSite, most: int, choices: list[str], default: str
) -> None:
    made = sites(KEYAUTH_MAX_LIFETIME_DAYS=most)
    made.sign_in()
    clock = install_clock(made.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    html = made.page("/new")
    assert expiry_values(html) == [*choices, "date"]  # no "never"
    assert re.search(rf'value="{default}"\s+checked', html)
    assert f"Keys here expire within {most} days." in html
    last = (clock.now + dt.timedelta(days=most - 1)).date().isoformat()
    assert f'max="{last}"' in html
    label = "1 day" if most == 1 else f"{most} days"
    assert f'<label for="ka-expires-{most}">{label}</label>' in html
    # The default creates a key with the longest lifetime, or within it.
    response = create_form(made, expires=default)
    assert response.status_code == 201
    (key,) = made.key_list()
    assert key.expires_at == clock.now + dt.timedelta(days=int(default))


def test_choices_past_the_longest_lifetime_are_refused(sites: MakeSite) -> None:
    made = sites(KEYAUTH_MAX_LIFETIME_DAYS=45)
    made.sign_in()
    clock = install_clock(made.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    for fields, message in [
        ({"expires": "never"}, "Choose when the key expires."),
        ({"expires": "60"}, "Choose when the key expires."),
        (
            {"expires": "date", "expires_on": "2027-01-07"},
            "Keys expire within 45 days here: choose Jan 6, 2027 or an earlier day.",
        ),
    ]:
        response = create_form(made, **fields)
        assert response.status_code == 400, fields
        assert message in response.get_data(as_text=True)
    assert made.key_list() == []
    dated = create_form(made, expires="date", expires_on="2027-01-06")
    assert dated.status_code == 201
    (key,) = made.key_list()
    assert key.expires_at == dt.datetime(2027, 1, 6, 23, 59, 59, 999999, tzinfo=dt.timezone.utc)
    assert key.expires_at < clock.now + dt.timedelta(days=45)


def test_the_rotate_form_keeps_within_the_longest_lifetime(sites: MakeSite) -> None:
    made = sites(KEYAUTH_MAX_LIFETIME_DAYS=60)
    made.sign_in()
    clock = install_clock(made.app, dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.timezone.utc))
    old, _ = made.create(name="Old")
    # Made before the setting, say: it never expires.
    state = made.app.extensions["keyauth"]
    keys_table = state.store.tables.keys
    with made.app.app_context(), state.store.engine.begin() as conn:
        conn.execute(
            sa.update(keys_table).where(keys_table.c.key_id == old.id).values(expires_at=None)
        )
    form = made.page(f"/{old.id}/rotate")
    assert expiry_values(form) == ["same", "30", "60", "date"]
    assert "60 days from now: the longest allowed here" in form
    data = {**hidden_fields(form), "grace": "3600", "expires": "never"}
    refused = made.client.post(f"{PREFIX}/{old.id}/rotate", data=data)
    assert refused.status_code == 400
    data = {**hidden_fields(made.page(f"/{old.id}/rotate")), "grace": "3600", "expires": "same"}
    assert made.client.post(f"{PREFIX}/{old.id}/rotate", data=data).status_code == 201
    (new,) = [k for k in made.key_list() if k.id != old.id]
    assert new.expires_at == clock.now + dt.timedelta(days=60)


# -- the demo -------------------------------------------------------------------------------------


def test_the_demo_signs_in_people_of_one_organisation(tmp_path: Any, monkeypatch: Any) -> None:
    from example.app import create_app

    monkeypatch.delenv("DEMO_SECRET_KEY", raising=False)
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'demo.db'}",
            "KEYAUTH_ARGON2_TIME_COST": 1,
            "KEYAUTH_ARGON2_MEMORY_COST": 8,
        }
    )
    client = app.test_client()
    keys = "/settings/api-keys"

    def sign_in(person: str) -> None:
        client.get("/logout")
        client.post("/login", data={"org": "acme", "person": person})

    home = client.get("/").get_data(as_text=True)
    assert re.findall(r'<option value="(\w+)"', home) == ["alice", "bob", "carol"]
    sign_in("alice")
    form = client.get(f"{keys}/new").get_data(as_text=True)
    assert "List entities and run reports." in form  # the demo's scope descriptions
    created = client.post(
        f"{keys}/new",
        data={
            **hidden_fields(form),
            "name": "Shared",
            "scopes": "read",
            "environment": "live",
            "expires": "30",
        },
    )
    assert created.status_code == 201
    with app.app_context():
        (key,) = app.extensions["keyauth"].service.list_keys("acme")
    assert key.created_by == "alice"
    sign_in("bob")
    page = client.get(f"{keys}/{key.id}").get_data(as_text=True)
    assert '<dd class="ka-created-by">alice</dd>' in page
    token = hidden_fields(client.get(f"{keys}/{key.id}/disable").get_data(as_text=True))
    assert client.post(f"{keys}/{key.id}/disable", data=token).status_code == 303
    assert event_rows(client.get(f"{keys}/{key.id}").get_data(as_text=True)) == [
        ("Disabled", "bob"),
        ("Created", "alice"),
    ]
    # carol only looks.
    sign_in("carol")
    assert "(viewer)" in client.get("/").get_data(as_text=True)
    assert client.get(f"{keys}/{key.id}").status_code == 200
    assert client.get(f"{keys}/new").status_code == 403
    assert client.post(f"{keys}/{key.id}/enable", data=token).status_code == 403
    with app.app_context():
        assert app.extensions["keyauth"].service.get_key(key.id).status == "disabled"
    # Nobody else of acme can sign in; the home page offers the three.
    client.get("/logout")
    client.post("/login", data={"org": "acme", "person": "mallory"})
    assert client.get(f"{keys}/").status_code == 302  # still signed out
