"""``flask keys …``: manage keys and plans from the command line.

The full key is printed once, by ``create`` and ``rotate``, and nowhere
else. Changes are recorded in the keys' history as made by ``cli``, or by
the person ``--actor NAME`` names. A bad argument (a missing option or
argument, a bad choice, a path that does not exist, a value the service
refuses) prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, Any, NoReturn

import click
from flask.cli import AppGroup, NoAppException, ScriptInfo
from sqlalchemy.exc import DataError

from .audit import audit_keys
from .decorators import get_state
from .errors import KeyNotFound
from .models import ApiKeyInfo, isoformat
from .scan import Finding, GitError, scan, scan_git
from .views.common import parse_labels

# A unit is required: "90" could mean seconds as well as days. Only 0 stands alone.
_DURATION = re.compile(r"(?:(\d+)([smhd]))|0")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> dt.timedelta:
    """``30m``, ``24h``, ``90d`` or ``0`` -> a timedelta; a number without
    a unit is refused."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        hint = " (give a unit)" if text.strip().isdigit() else ""
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h, 90d or 0{hint}")
    number, unit = match.groups()
    if number is None:
        return dt.timedelta(0)
    try:
        return dt.timedelta(**{_UNITS[unit]: int(number)})
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None


_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BIDI = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def one_line(text: str) -> str:
    """``text`` with control and bidi characters escaped: labels are shown
    on one line, and a carriage return or an escape sequence in one cannot
    rewrite what the terminal shows. Bytes that were not UTF-8 (decoded by
    Python as lone surrogates) are shown as ``\\xNN``."""
    out = []
    for char in text:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif char in _BIDI:
            out.append(f"\\u{code:04x}")
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {one_line(message)}", err=True)
    raise click.exceptions.Exit(2)


# -- one-line usage errors --------------------------------------------------------------


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line on stderr (exit status 2), instead
    of Click's usage block."""

    def show(self, file: IO[Any] | None = None) -> None:
        hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {one_line(self.format_message())}{hint}", file=file, err=file is None)


@contextmanager
def _one_line_usage(ctx: click.Context) -> Iterator[None]:
    try:
        yield
    except OneLineUsageError:
        raise
    except click.UsageError as error:
        raise OneLineUsageError(error.format_message(), error.ctx or ctx) from None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class KeysCommand(click.Command):
    """A command whose usage errors are one line, and whose text arguments
    were valid UTF-8 on the command line: other bytes cannot be a key id,
    an owner or a name, and would only fail further in. (Paths are left
    alone: a file name may be any bytes.)"""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_usage(ctx):
            rest = super().parse_args(ctx, args)
            for param in self.params:
                value = ctx.params.get(param.name) if param.name else None
                if param.type is not click.STRING:
                    continue
                # A repeated option (--metadata) gives a tuple.
                for text in value if isinstance(value, tuple) else (value,):
                    if isinstance(text, str) and not _is_utf8(text):
                        message = f"'{one_line(text)}' is not UTF-8 text"
                        raise click.BadParameter(message, ctx, param)
            return rest


class KeysGroup(AppGroup):
    """``flask keys``: its commands' usage errors, and its own, are one line."""

    command_class = KeysCommand

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _one_line_usage(ctx):
            return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        with _one_line_usage(ctx):
            return super().resolve_command(ctx, args)


# -- tables -----------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Iterator[str]:
    """A header row and rows, in columns; the last column (a free-text label)
    is not padded."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        yield "  ".join([*cells, row[-1]])


def _key_row(key: ApiKeyInfo, with_owner: bool) -> list[str]:
    return [
        key.id,
        *([one_line(key.owner_id)] if with_owner else []),
        key.redacted,
        key.status,
        key.environment,
        ",".join(key.granted_scopes),
        isoformat(key.expires_at) or "never",
        isoformat(key.last_used_at) or "never used",
        one_line(key.name),
    ]


def _header(with_owner: bool, *columns: str) -> list[str]:
    return ["ID", *(["OWNER"] if with_owner else []), *columns]


LIST_COLUMNS = ("KEY", "STATUS", "ENV", "SCOPES", "EXPIRES", "LAST USED", "NAME")
AUDIT_COLUMNS = ("KEY", "FINDINGS", "NAME")


# -- commands ---------------------------------------------------------------------------


keys_cli = KeysGroup("keys", help="Manage API keys and plans.")


def _service() -> Any:
    return get_state().service


def _actor(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("must not be empty", ctx, param)
    return value


#: ``--actor``: who the audit trail records for a change (SPEC §12).
actor_option = click.option(
    "--actor",
    default="cli",
    show_default=True,
    callback=_actor,
    help="Who is acting, as the key's history records it (a name or an email).",
)


def _list_option(text: str | None) -> list[str] | None:
    """``a,b`` -> ``["a", "b"]``; ``None`` when the option was not given."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _keys_of(owner: str | None) -> list[ApiKeyInfo]:
    service = _service()
    try:
        keys: list[ApiKeyInfo] = (
            service.list_keys(owner) if owner is not None else service.all_keys()
        )
    except ValueError as error:
        fail(str(error))
    return keys


@keys_cli.command("create")
@click.option("--owner", required=True, help="Owner (account or organisation) id.")
@click.option("--name", required=True, help="A label for the key (at most 128 characters).")
@click.option("--scopes", default="read", show_default=True, help="Comma-separated scopes.")
@click.option(
    "--env", "environment", type=click.Choice(["live", "test"]), default="live", show_default=True
)
@click.option("--expires-in", default=None, help="Lifetime: 30m, 24h, 90d; no expiry by default.")
@click.option(
    "--limits", default=None, help="The key's own limits, beside its owner's plan: '10/minute'."
)
@click.option("--description", default=None, help="What the key is for (at most 1,000 characters).")
@click.option(
    "--metadata", "labels", multiple=True, metavar="KEY=VALUE",
    help="A label for the host's own use; repeat the option for more.",
)
@click.option(
    "--allowed-ips", default=None, metavar="A,B",
    help="Comma-separated addresses or CIDR blocks the key may be used from (default: any).",
)
@actor_option
def create_command(
    owner: str, name: str, scopes: str, environment: str, expires_in: str | None,
    limits: str | None, description: str | None, labels: tuple[str, ...],
    allowed_ips: str | None, actor: str,
) -> None:
    """Create a key and print it once."""
    service = _service()
    expires_at = None
    try:
        metadata = parse_labels(labels) if labels else None
    except ValueError as error:
        fail(f"--metadata: {error}")
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
            owner, name, scope_list, environment, expires_at, limits=limits,
            description=description, metadata=metadata,
            allowed_ips=_list_option(allowed_ips), actor=actor,
        )
    except ValueError as error:
        fail(str(error))
    click.echo(f"Created key {info.id} ({info.environment}) for {one_line(info.owner_id)}.")
    click.echo("Copy it now; it will not be shown again:")
    click.echo(secret)


@keys_cli.command("list")
@click.option("--owner", default=None, help="Only this owner's keys (default: every owner).")
def list_command(owner: str | None) -> None:
    """List keys: id, owner, redacted key, status, environment, scopes,
    expiry, last use and name, under a header row."""
    keys = _keys_of(owner)
    if not keys:
        click.echo("No keys.", err=True)
        return
    with_owner = owner is None
    rows = [_key_row(key, with_owner) for key in keys]
    for line in table(_header(with_owner, *LIST_COLUMNS), rows):
        click.echo(line)


@keys_cli.command("revoke")
@click.argument("key_id")
@actor_option
def revoke_command(key_id: str, actor: str) -> None:
    """Revoke a key at once."""
    try:
        info = _service().revoke_key(key_id, actor=actor)
    except (KeyNotFound, ValueError) as error:
        fail(str(error))
    click.echo(f"Revoked key {info.id} ({info.redacted}).")


@keys_cli.command("disable")
@click.argument("key_id")
@actor_option
def disable_command(key_id: str, actor: str) -> None:
    """Switch a key off until it is enabled: refused at once, in every
    process. Unlike revoking, this can be undone."""
    try:
        info = _service().disable_key(key_id, actor=actor)
    except (KeyNotFound, ValueError) as error:
        fail(str(error))
    click.echo(f"Disabled key {info.id} ({info.redacted}); 'flask keys enable' undoes it.")


@keys_cli.command("enable")
@click.argument("key_id")
@actor_option
def enable_command(key_id: str, actor: str) -> None:
    """Switch a disabled key back on, at once."""
    try:
        info = _service().enable_key(key_id, actor=actor)
    except (KeyNotFound, ValueError) as error:
        fail(str(error))
    click.echo(f"Enabled key {info.id} ({info.redacted}): it is {info.status}.")


@keys_cli.command("rotate")
@click.argument("key_id")
@click.option("--grace", default="24h", show_default=True, help="How long the old key still works.")
@actor_option
def rotate_command(key_id: str, grace: str, actor: str) -> None:
    """Replace a key by a new one and print the new key once."""
    try:
        lifetime = parse_duration(grace)
        info, secret = _service().rotate_key(key_id, lifetime, actor=actor)
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
@actor_option
def plan_command(owner: str, plan: str, limits: str | None, actor: str) -> None:
    """Put an owner on a plan (a plan without fixed limits needs --limits)."""
    service = _service()
    plans = service.settings.plans
    if limits is None and plan in plans and plans[plan] is None:
        fail(f"plan {plan!r} has no fixed limits: give --limits, e.g. --limits '5000/hour'")
    try:
        service.set_plan(owner, plan, limits, actor=actor)
        name, applied = service.get_plan(owner)
    except ValueError as error:
        fail(str(error))
    except DataError:
        # The owner and the plan are checked above; what the database can
        # refuse as too long is the limits text.
        fail(f"--limits is too long to store ({len(limits or '')} characters)")
    click.echo(f"{one_line(owner)} is on plan {name}: {'; '.join(applied)}.")


@keys_cli.command("audit")
@click.option("--owner", default=None, help="Only this owner's keys (default: every owner).")
def audit_command(owner: str | None) -> None:
    """Hygiene report of active keys: never used, idle 90+ days, never
    expiring, past the rotation reminder, live keys with admin. Exit status
    1 when it finds something, 0 when not."""
    service = _service()
    keys = _keys_of(owner)
    findings = audit_keys(keys, service.clock(), service.settings.rotation_reminder_days)
    if not findings:
        click.echo("No findings.", err=True)
        return
    with_owner = owner is None
    rows = [
        [
            finding.key.id,
            *([one_line(finding.key.owner_id)] if with_owner else []),
            finding.key.redacted,
            "; ".join(finding.problems),
            one_line(finding.key.name),
        ]
        for finding in findings
    ]
    for line in table(_header(with_owner, *AUDIT_COLUMNS), rows):
        click.echo(line)
    click.echo(f"{len(findings)} key(s) need attention.", err=True)
    raise click.exceptions.Exit(1)


def _found(paths: tuple[str, ...], git: bool) -> list[Finding]:
    """The keys in ``paths``: files and folders, or repositories' history."""

    def note(path: str, reason: str) -> None:
        click.echo(f"note: {one_line(path)}: {reason}", err=True)

    if not git:
        return scan(paths, note)
    findings = []
    for repository in paths:
        try:
            findings += scan_git(repository)
        except GitError as error:
            fail(str(error))
    return findings


def _statuses(findings: list[Finding], revoke: bool, actor: str) -> dict[str, str]:
    """Key text -> what this app says of it, each key looked up once."""
    service = _service()
    said: dict[str, str] = {}
    for finding in findings:
        text = finding.key.text
        if text in said:
            continue
        if revoke:
            outcome = service.report_leak(
                text, url=finding.where, source="scan", action="revoke", actor=actor
            )
            key, revoked = outcome.key, outcome.revoked
        else:
            key, revoked = service.identify(text), False
        if key is None:
            said[text] = "not a key of this app"
        elif revoked:
            said[text] = "revoked now"
        else:
            said[text] = key.status
    return said


def _load_app(ctx: click.Context) -> Any:
    try:
        return ctx.ensure_object(ScriptInfo).load_app()
    except NoAppException:
        fail("--check and --revoke need the app: run them as 'flask --app APP keys scan ...'")


@keys_cli.command("scan", with_appcontext=False)
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=True))
@click.option(
    "--git", is_flag=True,
    help="Read the history of the repositories at PATHS (default: .): every commit "
    "reachable from any ref.",
)
@click.option(
    "--check", is_flag=True, help="Tell which found keys are still active (needs the app)."
)
@click.option(
    "--revoke", is_flag=True,
    help="Revoke every found key of this app, recorded as leaked (needs the app).",
)
@actor_option
@click.pass_context
def scan_command(
    ctx: click.Context, paths: tuple[str, ...], git: bool, check: bool, revoke: bool, actor: str
) -> None:
    """Find committed keys in files and folders, or in git history (exit
    status 1 when found).

    Only real keys are reported: the pattern and the checksum must both
    match. Findings are printed redacted, ``path:line: sk_live_<id>…<last 4>``,
    or ``commit:path:line: …`` with ``--git``. Files that are not regular
    files (named pipes, devices) are skipped with a note on stderr.
    """
    if not paths:
        if not git:
            raise OneLineUsageError("Missing argument 'PATHS...'.", ctx)
        paths = (".",)
    findings = _found(paths, git)
    said: dict[str, str] = {}
    if findings and (check or revoke):
        with _load_app(ctx).app_context():
            said = _statuses(findings, revoke, actor)
    for finding in findings:
        status = said.get(finding.key.text)
        click.echo(f"{one_line(str(finding))}{f' ({status})' if status else ''}")
    if findings:
        click.echo(
            f"{len(findings)} API key(s) found: revoke them and remove them from the files.",
            err=True,
        )
        raise click.exceptions.Exit(1)


def _texts(given: tuple[str, ...]) -> list[str]:
    """The key texts given, ``-`` reading more from stdin, one per line
    (which keeps them out of the shell's history)."""
    texts: list[str] = []
    for text in given:
        if text == "-":
            texts += [entry.strip() for entry in sys.stdin.read().splitlines() if entry.strip()]
        else:
            texts.append(text)
    return texts


@keys_cli.command("leaked")
@click.argument("texts", nargs=-1, required=True, metavar="KEY_TEXT...")
@click.option("--url", default="", help="Where the keys were found.")
@click.option("--source", default="report", show_default=True, help="Who reported them.")
@click.option(
    "--action", type=click.Choice(["revoke", "notify"]), default=None,
    help="Revoke the keys, or only signal (default: KEYAUTH_LEAK_ACTION).",
)
@actor_option
def leaked_command(
    texts: tuple[str, ...], url: str, source: str, action: str | None, actor: str
) -> None:
    """Handle a leak report that arrived by other means than GitHub: each
    KEY_TEXT that is a key of this app is recorded as leaked, signalled
    and (by default) revoked. ``-`` reads key texts from stdin."""
    service = _service()
    for number, text in enumerate(_texts(texts), start=1):
        outcome = service.report_leak(text, url=url, source=source, action=action, actor=actor)
        key = outcome.key
        if key is None:
            click.echo(f"false_positive: key text {number} is not a key of this app")
            continue
        done = "revoked now" if outcome.revoked else key.status
        again = "" if outcome.new else ", reported before"
        click.echo(f"true_positive: {key.id} {key.redacted} ({done}{again})")


@keys_cli.command("remind")
@click.option(
    "--days", type=click.IntRange(min=0), default=7, show_default=True,
    help="Remind of keys that expire within this many days.",
)
@actor_option
def remind_command(days: int, actor: str) -> None:
    """Send the reminders that are due (for cron): key_expiring for keys
    expiring within --days, key_rotation_due for keys past
    KEYAUTH_ROTATION_REMINDER_DAYS; each once per key and kind, however
    often and wherever this runs. One line per reminder sent."""
    for reminder in _service().remind(days, actor=actor):
        click.echo(one_line(str(reminder)))
