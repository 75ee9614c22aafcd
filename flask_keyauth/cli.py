"""``flask keys …``: manage keys and plans from the command line.

The full key is printed once, by ``create`` and ``rotate``, and nowhere
else. A bad argument prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, NoReturn

import click
from flask.cli import AppGroup

from .audit import audit_keys
from .decorators import get_state
from .errors import KeyNotFound
from .models import ApiKeyInfo, isoformat
from .scan import scan

_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "": "seconds"}


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(2)


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``24h``, ``90d`` or ``0`` -> a timedelta."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h, 90d or 0")
    number, unit = match.groups()
    try:
        return dt.timedelta(**{_UNITS[unit]: int(number)})
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def one_line(text: str) -> str:
    """``text`` with control and bidi characters escaped: labels are shown
    on one line, and a carriage return or an escape sequence in one cannot
    rewrite what the terminal shows."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif char in _BIDI:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def _row(key: ApiKeyInfo, with_owner: bool) -> str:
    parts = [key.id]
    if with_owner:
        parts.append(one_line(key.owner_id))
    parts += [
        key.redacted,
        key.status,
        key.environment,
        ",".join(key.granted_scopes),
        isoformat(key.expires_at) or "never",
        isoformat(key.last_used_at) or "never used",
        one_line(key.name),
    ]
    return "  ".join(parts)


keys_cli = AppGroup("keys", help="Manage API keys and plans.")


def _service() -> Any:
    return get_state().service


@keys_cli.command("create")
@click.option("--owner", required=True, help="Owner (account or organisation) id.")
@click.option("--name", required=True, help="A label for the key (at most 128 characters).")
@click.option("--scopes", default="read", show_default=True, help="Comma-separated scopes.")
@click.option(
    "--env", "environment", type=click.Choice(["live", "test"]), default="live", show_default=True
)
@click.option("--expires-in", default=None, help="Lifetime such as 30d or 24h; none by default.")
def create_command(
    owner: str, name: str, scopes: str, environment: str, expires_in: str | None
) -> None:
    """Create a key and print it once."""
    service = _service()
    expires_at = None
    try:
        if expires_in is not None:
            lifetime = parse_duration(expires_in)
            if not lifetime:
                fail("--expires-in must be longer than 0")
            try:
                expires_at = service.clock() + lifetime
            except OverflowError:
                fail(f"--expires-in {expires_in} ends past the year 9999")
        scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
        info, secret = service.create_key(
            owner, name, scope_list, environment, expires_at, actor="cli"
        )
    except ValueError as error:
        fail(str(error))
    click.echo(f"Created key {info.id} ({info.environment}) for {info.owner_id}.")
    click.echo("Copy it now; it will not be shown again:")
    click.echo(secret)


@keys_cli.command("list")
@click.option("--owner", default=None, help="Only this owner's keys (default: every owner).")
def list_command(owner: str | None) -> None:
    """List keys: id, redacted key, status, scopes, expiry, last use, name."""
    service = _service()
    try:
        keys = service.list_keys(owner) if owner is not None else service.all_keys()
    except ValueError as error:
        fail(str(error))
    for key in keys:
        click.echo(_row(key, with_owner=owner is None))
    if not keys:
        click.echo("No keys.", err=True)


@keys_cli.command("revoke")
@click.argument("key_id")
def revoke_command(key_id: str) -> None:
    """Revoke a key at once."""
    try:
        info = _service().revoke_key(key_id, actor="cli")
    except KeyNotFound as error:
        fail(str(error))
    click.echo(f"Revoked key {info.id} ({info.redacted}).")


@keys_cli.command("rotate")
@click.argument("key_id")
@click.option("--grace", default="24h", show_default=True, help="How long the old key still works.")
def rotate_command(key_id: str, grace: str) -> None:
    """Replace a key by a new one and print the new key once."""
    try:
        lifetime = parse_duration(grace)
        info, secret = _service().rotate_key(key_id, lifetime, actor="cli")
    except (KeyNotFound, ValueError) as error:
        fail(str(error))
    if lifetime:
        click.echo(f"Rotated {key_id} into {info.id}; the old key works for {grace} more.")
    else:
        click.echo(f"Rotated {key_id} into {info.id}; the old key is revoked.")
    click.echo("Copy it now; it will not be shown again:")
    click.echo(secret)


@keys_cli.command("plan")
@click.argument("owner")
@click.argument("plan")
@click.option("--limits", default=None, help="Custom limits, e.g. '5000/hour;100000/day'.")
def plan_command(owner: str, plan: str, limits: str | None) -> None:
    """Put an owner on a plan."""
    try:
        _service().set_plan(owner, plan, limits, actor="cli")
        name, applied = _service().get_plan(owner)
    except ValueError as error:
        fail(str(error))
    click.echo(f"{owner} is on plan {name}: {'; '.join(applied)}.")


@keys_cli.command("audit")
@click.option("--owner", default=None, help="Only this owner's keys (default: every owner).")
def audit_command(owner: str | None) -> None:
    """Hygiene report of active keys: never used, idle 90+ days, never
    expiring, past the rotation reminder, live keys with admin."""
    service = _service()
    try:
        keys = service.list_keys(owner) if owner is not None else service.all_keys()
    except ValueError as error:
        fail(str(error))
    findings = audit_keys(keys, service.clock(), service.settings.rotation_reminder_days)
    for finding in findings:
        key = finding.key
        click.echo(
            f"{key.id}  {one_line(key.owner_id)}  {key.redacted}  {'; '.join(finding.problems)}"
        )
    if not findings:
        click.echo("No findings.", err=True)


@keys_cli.command("scan", with_appcontext=False)
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=True)
)
def scan_command(paths: tuple[str, ...]) -> None:
    """Find committed keys in files and folders (exit status 1 when found).

    Only real keys are reported: the pattern and the checksum must both
    match. Findings are printed redacted, ``path:line: sk_live_<id>…<last 4>``.
    """
    findings = scan(paths)
    for finding in findings:
        click.echo(str(finding))
    if findings:
        click.echo(
            f"{len(findings)} API key(s) found: revoke them and remove them from the files.",
            err=True,
        )
        raise click.exceptions.Exit(1)
