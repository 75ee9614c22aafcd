"""The HTML pages of the blueprint: list, create, details, edit, disable and
enable, revoke, rotate.

Every page is for the session owner (``@keyauth.owner_loader``). A viewer
(``@keyauth.role_loader`` answering ``"viewer"``) sees the list, the key
pages, usage and events; every page that changes a key is hidden from them
and answers 403 ``FORBIDDEN``, whatever the method. Changes are recorded as
made by the session's person (``@keyauth.actor_loader``). A new key
is rendered once, in the response to the POST that created it, with
``Cache-Control: no-store``; it never goes into a URL, a redirect, a flash
message, the session or a log. Each create or rotate form carries a
one-time form id kept in the session, so a browser that resubmits the POST
(reload, back button) gets a page saying so instead of a second key.

With ``KEYAUTH_REQUIRE_HTTPS`` a page asked for over plain HTTP redirects a
GET (or HEAD) to the same URL with ``https`` and refuses anything else with
403 ``HTTPS_REQUIRED``, before the owner loader or the CSRF check runs;
``request.is_secure`` decides, so hosts behind a proxy apply ``ProxyFix``.

Every page, form error and error page speaks the request's language
(:mod:`flask_keyauth.i18n`); a refusal from the service's checks is said
again through :mod:`.messages`. Dates are UTC days and moments UTC times,
formatted for the locale; the pages say once that they are UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from werkzeug.wrappers import Response

from .. import charts, i18n
from ..decorators import get_state
from ..errors import KeyAuthError, KeyNotFound, StorageUnavailable
from ..i18n import N_, duration, format_date, format_datetime, gettext, ngettext
from ..models import DESCRIPTION_MAX, NAME_MAX, ApiKeyInfo, KeyEvent
from ..service import check_allowed_ips, check_description, check_metadata
from ..store import STORE_RETRY_AFTER, is_unavailable
from . import blueprint
from .api import MANAGE_SCOPE
from .common import (
    SAFE_METHODS,
    check_csrf,
    csrf_token,
    format_labels,
    parse_labels,
    session_actor,
    session_may_change,
    session_owner,
)
from .messages import page_error_text, sentence

#: Days of usage the list's sparklines and the detail page's chart show.
USAGE_DAYS = 30
#: A key that expires within this time is shown as "expiring soon".
EXPIRING_SOON = dt.timedelta(days=7)
#: Expiry choices of the create form: form value -> days (``None``: never).
#: ``"date"`` (a day picked in the form) is offered too.
EXPIRY_CHOICES: dict[str, int | None] = {"never": None, "30": 30, "60": 60, "90": 90}
DEFAULT_EXPIRY = "90"
#: Expiry choices for the new key of a rotation, besides "same" (the old
#: key's lifetime, the service's default: SPEC §11) and "date".
ROTATE_EXPIRY_CHOICES: dict[str, int | None] = {"never": None, "30": 30, "60": 60, "90": 90}
DEFAULT_ROTATE_EXPIRY = "same"
#: Grace choices of the rotate form: form value (seconds) -> label.
GRACE_CHOICES: dict[str, str] = {
    "0": N_("Now: the old key stops working at once"),
    "3600": N_("In 1 hour"),
    "86400": N_("In 24 hours"),
    "604800": N_("In 7 days"),
}
DEFAULT_GRACE = "86400"
#: Session entry holding the ids of create/rotate forms not yet submitted.
FORMS_SESSION_KEY = "_keyauth_forms"
#: How many such forms (open tabs) are remembered at once.
FORMS_REMEMBERED = 8

#: Marked for translation here, translated where shown.
STATUS_LABELS = {
    "active": N_("Active"),
    "expiring": N_("Expiring soon"),
    "disabled": N_("Disabled"),
    "expired": N_("Expired"),
    "revoked": N_("Revoked"),
}
#: What the key page says after a change it redirected to (``?done=``).
DONE_NOTICES = {
    "revoked": (N_("Key revoked."), N_("Requests with it are refused from now on.")),
    "disabled": (
        N_("Key disabled."),
        N_("Requests with it are refused until it is enabled again."),
    ),
    "enabled": (N_("Key enabled."), N_("Requests with it are accepted again.")),
    "updated": (N_("Changes saved."), ""),
}

logger = logging.getLogger("flask_keyauth")


class PageError(Exception):
    """Stops a page and renders the error page with this status (``title``
    and ``message`` in the pages' language)."""

    def __init__(self, status: int, code: str, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.title = title
        self.message = message


def refused_page(error: KeyAuthError) -> PageError:
    """The error page for one of the extension's errors, in the pages'
    language (the JSON API says it in English)."""
    title, message = page_error_text(error)
    return PageError(error.status, error.code_name, title, message)


def not_found() -> PageError:
    # The same answer for an unknown id, a malformed one and another
    # owner's key: the page says nothing about which keys exist.
    return PageError(
        404,
        "NOT_FOUND",
        gettext("Key not found"),
        gettext("There is no such API key in your account."),
    )


# -- formatting --------------------------------------------------------------


def end_of_day(day: dt.date) -> dt.datetime:
    """The last instant of ``day`` in UTC: a key set to expire "on a date"
    works through that whole day (it is valid while ``now < expires_at``)."""
    return dt.datetime.combine(day, dt.time.max, dt.timezone.utc)


class FieldError(ValueError):
    """A form value that cannot be used; the message is shown next to it."""


def read_expiry(
    choice: str, day_text: str, now: dt.datetime, choices: Mapping[str, int | None]
) -> dt.datetime | None:
    """The expiry a form's ``expires`` choice (and date field) asks for.

    ``choices`` maps a form value to days from ``now`` (``None``: never);
    ``"date"`` is the end of the day picked (:func:`end_of_day`). The
    messages name no date format: the browser's date picker shows its own.
    """
    if choice == "date":
        text = day_text.strip()
        if not text:
            raise FieldError(gettext("Choose the day the key expires."))
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise FieldError(gettext("Choose a valid day for the key to expire.")) from None
        if day < now.date():
            raise FieldError(
                gettext("The expiry day is in the past: choose today or a later day.")
            )
        return end_of_day(day)
    if choice in choices:
        days = choices[choice]
        return None if days is None else now + dt.timedelta(days=days)
    raise FieldError(gettext("Choose when the key expires."))


def describe_actor(actor: str | None) -> str:
    """How the pages name who made a change or created a key: the person
    (``@keyauth.actor_loader``) as recorded, else how it was made."""
    if actor is None:
        return gettext("Application")
    kind, _, who = actor.partition(":")
    if kind == "session" and who:
        return gettext("%(person)s (web)", person=who)
    if kind == "key" and who:
        return gettext("API key %(key_id)s", key_id=who)
    if actor == "cli":
        return gettext("Command line")
    if actor == "github":
        return gettext("GitHub secret scanning")
    return actor


# -- what the templates show -----------------------------------------------


def display_status(key: ApiKeyInfo, now: dt.datetime) -> str:
    """``active``, ``expiring`` (within 7 days), ``disabled``, ``expired``
    or ``revoked``."""
    if key.status != "active":
        return key.status
    if key.expires_at is not None and key.expires_at - now <= EXPIRING_SOON:
        return "expiring"
    return "active"


@dataclass(frozen=True)
class KeyView:
    """One key as the pages show it."""

    key: ApiKeyInfo
    status: str
    now: dt.datetime
    reminder_days: int
    usage: list[tuple[dt.date, int]] = field(default_factory=list)
    #: The key a rotation of this one made, and the key this one replaced.
    replaced_by: ApiKeyInfo | None = None
    replaces: ApiKeyInfo | None = None

    @property
    def status_label(self) -> str:
        return gettext(STATUS_LABELS[self.status])

    @property
    def usable(self) -> bool:
        return self.status in ("active", "expiring")

    @property
    def disabled(self) -> bool:
        """Switched off, and neither revoked nor expired: it can be enabled."""
        return self.status == "disabled"

    @property
    def revocable(self) -> bool:
        return self.usable or self.disabled

    @property
    def created_by(self) -> str | None:
        """Who created the key, as the pages name them; ``None``: not recorded."""
        return None if self.key.created_by is None else describe_actor(self.key.created_by)

    @property
    def expires_in_days(self) -> int | None:
        """UTC days until a usable key that expires within 7 days does so
        (0: today, 1: tomorrow); ``None`` for any other key."""
        if self.status != "expiring" or self.key.expires_at is None:
            return None
        return i18n.days_until(self.key.expires_at, self.now)

    @property
    def expires_soon(self) -> str | None:
        """``Expires in 3 days``, ``Expires tomorrow``, ``Expires today``
        while a usable key expires within 7 days, else ``None``."""
        days = self.expires_in_days
        if days is None:
            return None
        if days <= 0:
            return gettext("Expires today")
        if days == 1:
            return gettext("Expires tomorrow")
        return ngettext("Expires in %(num)d day", "Expires in %(num)d days", days)

    @property
    def expiry_notice(self) -> str | None:
        """:attr:`expires_soon` as the key page's sentence: ``This key
        expires in 3 days``."""
        days = self.expires_in_days
        if days is None:
            return None
        if days <= 0:
            return gettext("This key expires today")
        if days == 1:
            return gettext("This key expires tomorrow")
        return ngettext("This key expires in %(num)d day", "This key expires in %(num)d days", days)

    @property
    def metadata_lines(self) -> str | None:
        """The key's metadata as the edit form's ``key=value`` lines; ``None``
        when they would not read back the same (see ``format_labels``)."""
        return format_labels(self.key.metadata)

    @property
    def age_days(self) -> int:
        return (self.now - self.key.created_at).days

    @property
    def rotatable(self) -> bool:
        """Usable and not rotated yet: a key has one successor at most."""
        return self.usable and self.replaced_by is None

    @property
    def rotate_due(self) -> bool:
        """Rotatable and older than ``KEYAUTH_ROTATION_REMINDER_DAYS``."""
        return self.rotatable and self.age_days >= self.reminder_days

    @property
    def total_requests(self) -> int:
        return sum(count for _, count in self.usage)

    def sparkline(self) -> Markup:
        return charts.sparkline(self.usage, words=chart_words())

    def bar_chart(self, narrow: bool = False) -> Markup:
        # SVG text scales with the chart: a phone gets its own, narrower
        # drawing (the stylesheet shows one or the other) so that the axis
        # labels stay readable on both.
        if narrow:
            return charts.bar_chart(
                self.usage, width=360, height=200, label_every=10, words=chart_words()
            )
        return charts.bar_chart(self.usage, words=chart_words())


def requests_text(count: int) -> str:
    return ngettext(
        "%(count)s request", "%(count)s requests", count, count=i18n.format_number(count)
    )


def chart_summary(series: charts.Series) -> str:
    """A chart's title: the total and the busiest day (as ``charts.summary``)."""
    if not series:
        return gettext("No usage data.")
    days = len(series)
    total = sum(count for _, count in series)
    if total == 0:
        if days == 1:
            return gettext("No requests today.")
        return ngettext(
            "No requests in the last %(num)s day.", "No requests in the last %(num)s days.", days
        )
    peak_day, peak = max(series, key=lambda point: (point[1], point[0]))
    values = {"requests": requests_text(total), "day": format_date(peak_day)}
    values["peak"] = requests_text(peak)
    if days == 1:
        return gettext("%(requests)s today; busiest day %(day)s with %(peak)s.", **values)
    return ngettext(
        "%(requests)s in the last %(num)s day; busiest day %(day)s with %(peak)s.",
        "%(requests)s in the last %(num)s days; busiest day %(day)s with %(peak)s.",
        days,
        **values,
    )


def chart_words() -> charts.ChartText:
    """The charts' words and numbers in the pages' language, days written
    as every date on the pages is."""
    return charts.ChartText(
        summary=chart_summary,
        tip=lambda day, count: gettext(
            "%(day)s: %(requests)s", day=format_date(day), requests=requests_text(count)
        ),
        axis_day=i18n.format_short_date,
        day=format_date,
        number=i18n.format_number,
        empty=gettext("No requests yet"),
    )


def key_view(
    key: ApiKeyInfo,
    *,
    usage: list[tuple[dt.date, int]] | None = None,
    replaced_by: ApiKeyInfo | None = None,
    replaces: ApiKeyInfo | None = None,
) -> KeyView:
    state = get_state()
    now = state.service.clock()
    return KeyView(
        key=key,
        status=display_status(key, now),
        now=now,
        reminder_days=state.settings.rotation_reminder_days,
        usage=usage or [],
        replaced_by=replaced_by,
        replaces=replaces,
    )


def rotations(events: list[KeyEvent]) -> dict[str, str]:
    """Old key id -> the id of the key its rotation made, from the
    ``rotated`` events (whose ``detail`` is the new key's id)."""
    return {
        event.key_id: event.detail
        for event in events
        if event.action == "rotated" and event.key_id and event.detail
    }


def render(template: str, status: int = 200, **context: Any) -> Response:
    """Render a page template with what every page needs."""
    settings = get_state().settings
    response = Response(
        render_template(
            template,
            keyauth_base=settings.base_template,
            csrf_token=csrf_token,
            describe_actor=describe_actor,
            **i18n.template_context(),
            now=get_state().service.clock(),
            # Whether to show the actions that change keys (never to a viewer).
            may_change=may_change(),
            **context,
        ),
        status,
        mimetype="text/html",
    )
    # The revoke and rotate buttons must not be clickable through another
    # site's frame (a framed click is same-origin, so CSRF checks pass it).
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    return response


def no_store(response: Response) -> Response:
    """Keep a page that shows a key out of every cache and the history."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


# -- one-time form ids ---------------------------------------------------------


def issue_form_id() -> str:
    """A new one-time id for a create or rotate form, remembered in the session."""
    form_id = secrets.token_urlsafe(16)
    pending = [f for f in session.get(FORMS_SESSION_KEY, []) if isinstance(f, str)]
    session[FORMS_SESSION_KEY] = [*pending[-(FORMS_REMEMBERED - 1) :], form_id]
    return form_id


def consume_form_id(form_id: str | None) -> None:
    """Accept a form id once; a second submission of the same form is refused."""
    pending = session.get(FORMS_SESSION_KEY, [])
    if not form_id or not isinstance(pending, list) or form_id not in pending:
        raise PageError(
            409,
            "FORM_ALREADY_SUBMITTED",
            gettext("This form was already submitted"),
            gettext(
                "A key is shown only once, so submitting the same form again does not "
                "show it again or create another one. Your keys are in the list; create "
                "a new one if you did not save it."
            ),
        )
    session[FORMS_SESSION_KEY] = [f for f in pending if f != form_id]


# -- access ----------------------------------------------------------------------


def anonymous() -> ResponseReturnValue:
    login_view = get_state().settings.login_view
    if login_view:
        if request.method in SAFE_METHODS:
            return redirect(url_for(login_view, next=request.full_path.rstrip("?")))
        return redirect(url_for(login_view))
    return error_page(
        PageError(
            401,
            "UNAUTHORIZED",
            gettext("Sign in required"),
            gettext("Sign in to manage your API keys."),
        )
    )


def error_page(error: PageError) -> Response:
    response = render(
        "keyauth/error.html",
        error.status,
        error_status=error.status,
        error_code=error.code,
        error_title=error.title,
        error_message=error.message,
    )
    if error.status == 401:
        # As every 401 of the JSON API: what a signed-out browser was shown
        # must not be served from a cache once somebody signs in.
        no_store(response)
    return response


def insecure() -> ResponseReturnValue | None:
    """With ``KEYAUTH_REQUIRE_HTTPS``, the answer to a plain-HTTP request:
    a GET or HEAD goes to the same URL over https, anything else is 403."""
    if not get_state().settings.require_https or request.is_secure:
        return None
    if request.method in ("GET", "HEAD"):
        _, _, rest = request.url.partition("://")
        return redirect(f"https://{rest}", 301)
    return error_page(
        PageError(
            403,
            "HTTPS_REQUIRED",
            gettext("HTTPS required"),
            gettext("These pages are served over HTTPS only. Open them with an https:// address."),
        )
    )


PageView = Callable[..., ResponseReturnValue]


def page(view: PageView) -> Callable[..., ResponseReturnValue]:
    """Run ``view(owner, **kwargs)`` for the session owner; check CSRF on POST;
    answer errors with the HTML error page."""

    @functools.wraps(view)
    def wrapper(**kwargs: Any) -> ResponseReturnValue:
        refused = insecure()
        if refused is not None:
            return refused
        owner = session_owner()
        if owner is None:
            return anonymous()
        try:
            if request.method not in SAFE_METHODS:
                check_csrf()
            # Asked once a request, and only of a signed-in session.
            g._keyauth_may_change = session_may_change()  # noqa: SLF001 - our name on g
            return view(owner, **kwargs)
        except PageError as error:
            return error_page(error)
        except KeyNotFound:
            return error_page(not_found())
        except KeyAuthError as error:
            return error_page(refused_page(error))
        except sa.exc.SQLAlchemyError as error:
            if not is_unavailable(error):
                raise
            logger.exception("flask-keyauth could not reach the key store")
            response = error_page(refused_page(StorageUnavailable()))
            response.headers["Retry-After"] = str(STORE_RETRY_AFTER)
            return response

    return wrapper


def may_change() -> bool:
    """Whether this request's session may change keys: ``False`` for a
    viewer, and before the session is known (a sign-in or error page)."""
    return bool(g.get("_keyauth_may_change", False))


def managers_only(view: PageView) -> PageView:
    """Refuse a page that changes keys to a viewer, with 403 ``FORBIDDEN``
    for every method: the form would be of no use to them. (Inside
    :func:`page`: a POST passes the CSRF check first, as on the JSON API.)"""

    @functools.wraps(view)
    def wrapper(owner: str, **kwargs: Any) -> ResponseReturnValue:
        if not may_change():
            raise PageError(
                403,
                "FORBIDDEN",
                gettext("View only"),
                gettext(
                    "You can see this account's API keys, their usage and their history, "
                    "but only a manager can create, change, rotate, disable or revoke them."
                ),
            )
        return view(owner, **kwargs)

    return wrapper


def owned_key(owner: str, key_id: str) -> ApiKeyInfo:
    """The owner's key ``key_id``, else the 404 page."""
    key = get_state().service.get_key(key_id)
    if key.owner_id != owner:
        raise not_found()
    return key


def linked_key(owner: str, key_id: str | None) -> ApiKeyInfo | None:
    """The owner's key ``key_id`` for a "replaces"/"replaced by" link, if any."""
    if key_id is None:
        return None
    try:
        return owned_key(owner, key_id)
    except (KeyNotFound, PageError):
        return None


def audit_context(owner: str) -> dict[str, Any]:
    return {"actor": session_actor(owner), "remote_addr": request.remote_addr}


# -- pages -------------------------------------------------------------------------


@blueprint.get("/")
@page
def index(owner: str) -> ResponseReturnValue:
    """The owner's keys, newest first."""
    service = get_state().service
    keys = service.list_keys(owner)
    # One query for every sparkline on the page, not one per key.
    usage = service.daily_usage_many([key.id for key in keys], USAGE_DAYS)
    # Rows of the same name after a rotation point to each other.
    by_id = {key.id: key for key in keys}
    successor = rotations(service.events(owner))
    predecessor = {new: old for old, new in successor.items()}
    rows = [
        key_view(
            key,
            usage=usage[key.id],
            replaced_by=by_id.get(successor.get(key.id, "")),
            replaces=by_id.get(predecessor.get(key.id, "")),
        )
        for key in keys
    ]
    return render(
        "keyauth/index.html",
        owner=owner,
        rows=rows,
        active_count=sum(1 for row in rows if row.usable),
        usage_days=USAGE_DAYS,
        reminder_days=get_state().settings.rotation_reminder_days,
    )


# -- fields the create and edit forms share ---------------------------------------

#: The optional details a key takes, as the forms name them.
DETAIL_FIELDS = ("description", "metadata", "allowed_ips", "limits")
#: What the edit form changes; a field it does not send is left as it is.
EDIT_FIELDS = ("name", *DETAIL_FIELDS)


def name_error(name: str) -> str | None:
    """What is wrong with a (trimmed) key name typed in a form, if anything."""
    if not name:
        return gettext("Give the key a name, such as where it is used.")
    if len(name) > NAME_MAX:
        return gettext(
            "The name can be at most %(max)s characters long; this one has %(count)s.",
            max=NAME_MAX,
            count=len(name),
        )
    return None


def text_field(form: Mapping[str, Any], name: str) -> str:
    # Browsers send the line breaks of a text box as CRLF.
    return str(form.get(name, "")).replace("\r\n", "\n").replace("\r", "\n")


@dataclass
class DetailFields:
    """A key's optional details as typed: its description, its metadata as
    ``key=value`` lines, the addresses it may be used from (one per line) and,
    on the edit form, its own limits. Each is checked by the service's own
    rule (``check_description``, ``check_metadata``, ``check_allowed_ips``,
    ``check_limits``); the forms only read the notation."""

    description: str = ""
    metadata: str = ""
    allowed_ips: str = ""
    limits: str = ""

    @classmethod
    def read(cls, form: Mapping[str, Any]) -> DetailFields:
        return cls(**{name: text_field(form, name) for name in DETAIL_FIELDS})

    @classmethod
    def of(cls, key: ApiKeyInfo) -> DetailFields:
        return cls(
            description=key.description or "",
            metadata=format_labels(key.metadata) or "",
            allowed_ips="\n".join(key.allowed_ips),
            limits=key.limits or "",
        )

    def checked(self, errors: dict[str, str], names: Iterable[str]) -> dict[str, Any]:
        """The service's arguments for the fields ``names`` (``None`` clears
        one); a value the service's rule refuses goes into ``errors``."""
        readers: dict[str, Callable[[], Any]] = {
            "description": self._description,
            "metadata": self._metadata,
            "allowed_ips": self._allowed_ips,
            "limits": self._limits,
        }
        values: dict[str, Any] = {}
        for name in names:
            try:
                values[name] = readers[name]()
            except ValueError as error:
                errors[name] = sentence(error)
        return values

    def _description(self) -> str | None:
        return check_description(self.description.strip())

    def _metadata(self) -> dict[str, str] | None:
        labels = parse_labels(self.metadata.split("\n"))
        check_metadata(labels)
        return labels or None

    def _allowed_ips(self) -> list[str] | None:
        entries = self.allowed_ips.replace(",", " ").split()
        check_allowed_ips(entries)
        return entries or None

    def _limits(self) -> str | None:
        text = self.limits.strip()
        return get_state().service.check_limits(text) if text else None


# -- expiry choices within KEYAUTH_MAX_LIFETIME_DAYS ---------------------------------


def expiry_options(choices: Mapping[str, int | None]) -> dict[str, int | None]:
    """The expiry choices a form offers: all of ``choices``, or with
    ``KEYAUTH_MAX_LIFETIME_DAYS`` only those within it (no "never"), and
    the longest allowed itself."""
    most = get_state().settings.max_lifetime_days
    if most is None:
        return dict(choices)
    within: dict[str, int | None] = {
        value: days for value, days in choices.items() if days is not None and days <= most
    }
    within.setdefault(str(most), most)
    return within


def default_expiry(options: Mapping[str, int | None], preferred: str) -> str:
    return preferred if preferred in options else list(options)[-1]


def expiry_label(choice: str) -> str:
    if choice == "never":
        return gettext("Never")
    days = int(choice)
    return ngettext("%(count)s day", "%(count)s days", days, count=i18n.format_number(days))


def last_day(now: dt.datetime) -> dt.date | None:
    """The last day "On a date" may pick with ``KEYAUTH_MAX_LIFETIME_DAYS``:
    a key works through the end of the day picked, and that end must fall
    within the longest lifetime. ``None``: any day."""
    most = get_state().settings.max_lifetime_days
    if most is None:
        return None
    latest = now + dt.timedelta(days=most)
    day = latest.date()
    return day if end_of_day(day) <= latest else day - dt.timedelta(days=1)


def chosen_expiry(
    choice: str, day_text: str, now: dt.datetime, choices: Mapping[str, int | None]
) -> dt.datetime | None:
    """:func:`read_expiry` among the choices offered, and within the longest
    lifetime by the service's own check (``FieldError`` otherwise)."""
    expires_at = read_expiry(choice, day_text, now, expiry_options(choices))
    if expires_at is not None:
        try:
            get_state().service.check_expiry(expires_at)
        except ValueError as error:
            latest = last_day(now)
            if latest is None:
                raise FieldError(sentence(error)) from None
            most = get_state().settings.max_lifetime_days
            raise FieldError(
                gettext(
                    "Keys expire within %(days)s days here: choose %(day)s or an earlier day.",
                    days=most,
                    day=format_date(latest),
                )
            ) from None
    return expires_at


def expiry_context(now: dt.datetime, choices: list[tuple[str, str]]) -> dict[str, Any]:
    """What the expiry choices macro needs besides the form."""
    latest = last_day(now)
    return {
        "expiry_choices": choices,
        "min_date": now.date().isoformat(),
        "max_date": latest.isoformat() if latest else "9999-12-31",
        "max_lifetime_days": get_state().settings.max_lifetime_days,
    }


# -- creating --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScopeRow:
    """One line of the create form's permission table."""

    name: str
    description: str
    #: Every other scope it grants (expanded).
    implies: list[str]
    #: Whether it grants ``admin``: a live key with it asks for a confirmation.
    grants_admin: bool


def scope_rows() -> list[ScopeRow]:
    settings = get_state().settings
    return [
        ScopeRow(
            name=scope,
            # str(): a host's lazy_gettext description, in this page's language.
            description=str(settings.scope_descriptions.get(scope, "")),
            implies=sorted(granted - {scope}),
            grants_admin=MANAGE_SCOPE in granted,
        )
        for scope, granted in settings.scopes.items()
    ]


@dataclass
class CreateForm:
    """The create form's values, as typed, and its errors by field."""

    name: str = ""
    scopes: list[str] = field(default_factory=list)
    environment: str = "live"
    expires: str = DEFAULT_EXPIRY
    expires_on: str = ""
    form_id: str = ""
    details: DetailFields = field(default_factory=DetailFields)
    #: The box ticked to create a live key with ``admin``.
    confirm_admin: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, form: Mapping[str, Any], scopes: list[str]) -> CreateForm:
        return cls(
            name=str(form.get("name", "")),
            scopes=scopes,
            environment=str(form.get("environment", "")),
            expires=str(form.get("expires", "")),
            expires_on=str(form.get("expires_on", "")),
            form_id=str(form.get("form_id", "")),
            details=DetailFields.read(form),
            confirm_admin=form.get("confirm_admin") == "yes",
        )

    @property
    def needs_admin_confirmation(self) -> bool:
        """A live key that would hold ``admin``: it can create, change and
        revoke every key of its owner, so the form asks before making it."""
        settings = get_state().settings
        return self.environment == "live" and MANAGE_SCOPE in settings.expand(tuple(self.scopes))

    def validate(self, now: dt.datetime) -> dict[str, Any]:
        """Fill ``errors``; return the service's arguments besides the name,
        scopes and environment: the expiry and the details."""
        error = name_error(self.name.strip())
        if error:
            self.errors["name"] = error
        self._check_scopes()
        if self.environment not in environments():
            self.errors["environment"] = gettext("Choose live or test.")
        arguments = self.details.checked(self.errors, ("description", "metadata", "allowed_ips"))
        try:
            arguments["expires_at"] = chosen_expiry(
                self.expires, self.expires_on, now, EXPIRY_CHOICES
            )
        except FieldError as problem:
            self.errors["expires"] = str(problem)
        if self.needs_admin_confirmation and not self.confirm_admin:
            self.errors["confirm_admin"] = gettext(
                "A live key with admin can create, change and revoke every key of this "
                "account: tick the box to confirm, or choose fewer permissions or a test key."
            )
        return arguments

    def _check_scopes(self) -> None:
        if not self.scopes:
            self.errors["scopes"] = gettext("Choose at least one permission.")
        elif any(scope not in get_state().settings.scopes for scope in self.scopes):
            self.errors["scopes"] = gettext("Choose permissions from the list.")


def environments() -> list[str]:
    """The environments keys can be created for: those this app accepts."""
    accepted = get_state().settings.environments_accepted
    return [env for env in ("live", "test") if env in accepted]


def render_create(form: CreateForm, status: int = 200) -> Response:
    rows = scope_rows()
    now = get_state().service.clock()
    return render(
        "keyauth/new.html",
        status,
        form=form,
        scopes=[(row.name, row.implies) for row in rows],
        scope_rows=rows,
        # The confirmation box is there when the form could make such a key.
        asks_admin_confirmation="live" in environments() and any(r.grants_admin for r in rows),
        environments=environments(),
        name_max=NAME_MAX,
        description_max=DESCRIPTION_MAX,
        **expiry_context(now, [(key, expiry_label(key)) for key in expiry_options(EXPIRY_CHOICES)]),
    )


@blueprint.route("/new", methods=["GET", "POST"])
@page
@managers_only
def new_key(owner: str) -> ResponseReturnValue:
    """The create form; its POST shows the new key, once."""
    service = get_state().service
    if request.method != "POST":
        default_scope = "read" if "read" in get_state().settings.scopes else ""
        envs = environments()
        return render_create(
            CreateForm(
                scopes=[default_scope] if default_scope else [],
                environment="live" if "live" in envs else envs[0],
                expires=default_expiry(expiry_options(EXPIRY_CHOICES), DEFAULT_EXPIRY),
                form_id=issue_form_id(),
            )
        )
    form = CreateForm.read(request.form, request.form.getlist("scopes"))
    arguments = form.validate(service.clock())
    if form.errors:
        return render_create(form, 400)
    consume_form_id(form.form_id)
    try:
        key, secret = service.create_key(
            owner,
            form.name.strip(),
            form.scopes,
            form.environment,
            **arguments,
            **audit_context(owner),
        )
    except ValueError as error:
        # A check the form could not make (the clock moved past the expiry,
        # the owner holds the most keys allowed).
        form.errors["form"] = sentence(error)
        form.form_id = issue_form_id()
        return render_create(form, 400)
    return no_store(render("keyauth/created.html", 201, key=key_view(key), secret=secret))


# -- one key -----------------------------------------------------------------------


@blueprint.get("/<key_id>")
@page
def key_page(owner: str, key_id: str) -> ResponseReturnValue:
    """One key: its details, its usage chart and its history."""
    service = get_state().service
    key = owned_key(owner, key_id)
    events = service.events(owner, key_id=key_id)
    successor = rotations(events).get(key.id)
    # The new key's own "created" event names the key it replaces.
    predecessor = next(
        (e.detail for e in reversed(events) if e.action == "created" and e.detail), None
    )
    view = key_view(
        key,
        usage=service.daily_usage(key.id, USAGE_DAYS),
        replaced_by=linked_key(owner, successor),
        replaces=linked_key(owner, predecessor),
    )
    # Only a known word is echoed back, never the raw query value.
    done = request.args.get("done", "")
    return render(
        "keyauth/detail.html",
        row=view,
        events=[event_view(event) for event in events],
        usage_days=USAGE_DAYS,
        done=tuple(gettext(text) if text else "" for text in DONE_NOTICES[done])
        if done in DONE_NOTICES
        else None,
        just_revoked=done == "revoked",
    )


@dataclass(frozen=True)
class EventView:
    event: KeyEvent
    label: str
    actor: str
    #: A key the event points to (the replacement or the replaced key).
    other_key: str | None
    other_label: str
    note: str


ACTION_LABELS = {
    "created": N_("Created"),
    "renamed": N_("Renamed"),
    "expiry_changed": N_("Expiry changed"),
    "details_changed": N_("Details changed"),
    "allowed_ips_changed": N_("Allowed addresses changed"),
    "limits_changed": N_("Limits changed"),
    "disabled": N_("Disabled"),
    "enabled": N_("Enabled"),
    "revoked": N_("Revoked"),
    "rotated": N_("Rotated"),
    "plan_changed": N_("Plan changed"),
    "leaked": N_("Reported leaked"),
    "reminded": N_("Reminder sent"),
}


def reminder_note(detail: str) -> str:
    """A ``reminded`` event: ``key_rotation_due``, or ``key_expiring`` and
    the expiry it was for."""
    kind, _, when = detail.partition(" ")
    if kind == "key_expiring":
        return gettext("Expires %(when)s", when=moment_text(when))
    return gettext("Rotation due")


#: What an event's ``detail`` says, by action (``"none"``: the field was cleared).
EVENT_NOTES: dict[str, Callable[[str], str]] = {
    "renamed": lambda detail: detail,  # "old → new"
    "expiry_changed": lambda detail: (
        gettext("Never expires")
        if detail == "never"
        else gettext("Now expires %(when)s", when=moment_text(detail))
    ),
    "limits_changed": lambda detail: (
        gettext("Only the plan's limits now")
        if detail == "none"
        else gettext("Now %(limits)s", limits=detail)
    ),
    "allowed_ips_changed": lambda detail: (
        gettext("From any address now")
        if detail == "none"
        else gettext("Now only from %(addresses)s", addresses=", ".join(detail.split()))
    ),
    "leaked": lambda detail: gettext("Found at %(where)s", where=detail),
    "reminded": reminder_note,
}


def moment_text(detail: str) -> str:
    """A moment an event recorded (ISO 8601), as the pages show moments."""
    try:
        return format_datetime(dt.datetime.fromisoformat(detail.replace("Z", "+00:00")))
    except ValueError:
        return detail


def event_view(event: KeyEvent) -> EventView:
    other_key: str | None = None
    other_label = note = ""
    if event.action == "rotated" and event.detail:
        other_key, other_label = event.detail, gettext("Replaced by")
    elif event.action == "created" and event.detail:
        other_key, other_label = event.detail, gettext("Replaces")
    elif event.action in EVENT_NOTES and event.detail:
        note = EVENT_NOTES[event.action](event.detail)
    return EventView(
        event=event,
        label=gettext(ACTION_LABELS[event.action])
        if event.action in ACTION_LABELS
        else event.action.replace("_", " ").capitalize(),
        actor=describe_actor(event.actor),
        other_key=other_key,
        other_label=other_label,
        note=note,
    )


# -- changing a key ------------------------------------------------------------------


def not_changeable(view: KeyView) -> PageError:
    status = view.status_label.lower()
    if view.disabled:
        message = gettext("The key is %(status)s: enable it first.", status=status)
    else:
        message = gettext("The key is %(status)s: create a new key instead.", status=status)
    return PageError(409, "KEY_NOT_ACTIVE", gettext("This key cannot be changed"), message)


@dataclass
class EditForm:
    """The edit form's values, as sent, and its errors by field."""

    name: str = ""
    details: DetailFields = field(default_factory=DetailFields)
    #: The fields the form sent (a field it leaves out is not changed: a host's
    #: own template without it, metadata that only the JSON API can change).
    sent: frozenset[str] = frozenset(EDIT_FIELDS)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, key: ApiKeyInfo) -> EditForm:
        return cls(name=key.name, details=DetailFields.of(key))

    @classmethod
    def read(cls, form: Mapping[str, Any]) -> EditForm:
        return cls(
            name=str(form.get("name", "")),
            details=DetailFields.read(form),
            sent=frozenset(name for name in EDIT_FIELDS if name in form),
        )

    def validate(self) -> dict[str, Any]:
        """Fill ``errors``; return the changes for ``service.update_key``."""
        changes: dict[str, Any] = {}
        if "name" in self.sent:
            name = self.name.strip()
            error = name_error(name)
            if error:
                self.errors["name"] = error
            else:
                changes["name"] = name
        sent = [name for name in DETAIL_FIELDS if name in self.sent]
        changes.update(self.details.checked(self.errors, sent))
        return changes


def render_edit(view: KeyView, form: EditForm, status: int = 200) -> Response:
    return render(
        "keyauth/edit.html",
        status,
        row=view,
        form=form,
        name_max=NAME_MAX,
        description_max=DESCRIPTION_MAX,
    )


@blueprint.route("/<key_id>/edit", methods=["GET", "POST"])
@page
@managers_only
def edit_page(owner: str, key_id: str) -> ResponseReturnValue:
    """GET shows the key's name and details in a form; POST changes them
    through ``service.update_key`` (which records who changed what)."""
    service = get_state().service
    view = key_view(owned_key(owner, key_id))
    if not view.usable:
        raise not_changeable(view)
    if request.method != "POST":
        return render_edit(view, EditForm.of(view.key))
    form = EditForm.read(request.form)
    changes = form.validate()
    if form.errors:
        return render_edit(view, form, 400)
    try:
        service.update_key(view.key.id, **audit_context(owner), **changes)
    except ValueError as error:
        # Disabled, revoked or expired since the check above.
        view = key_view(service.get_key(view.key.id))
        if not view.usable:
            raise not_changeable(view) from None
        form.errors["form"] = sentence(error)
        return render_edit(view, form, 400)
    return redirect(url_for(".key_page", key_id=view.key.id, done="updated"), 303)


def switch(owner: str, key_id: str, off: bool) -> ResponseReturnValue:
    """GET asks for confirmation; POST disables (``off``) or enables the key.
    Switching a key to the state it is in already changes nothing."""
    view = key_view(owned_key(owner, key_id))
    if request.method != "POST":
        return render("keyauth/switch.html", row=view, off=off)
    refused = PageError(
        409,
        "KEY_NOT_ACTIVE",
        gettext("This key cannot be switched on or off"),
        gettext(
            "The key is %(status)s: create a new key instead.", status=view.status_label.lower()
        ),
    )
    if not view.revocable:
        raise refused
    service = get_state().service
    change = service.disable_key if off else service.enable_key
    try:
        change(view.key.id, **audit_context(owner))
    except ValueError:
        raise refused from None  # revoked since the check above
    done = "disabled" if off else "enabled"
    return redirect(url_for(".key_page", key_id=view.key.id, done=done), 303)


@blueprint.route("/<key_id>/disable", methods=["GET", "POST"])
@page
@managers_only
def disable_page(owner: str, key_id: str) -> ResponseReturnValue:
    """GET asks for confirmation; POST disables the key until it is enabled."""
    return switch(owner, key_id, off=True)


@blueprint.route("/<key_id>/enable", methods=["GET", "POST"])
@page
@managers_only
def enable_page(owner: str, key_id: str) -> ResponseReturnValue:
    """GET asks for confirmation; POST enables a disabled key again."""
    return switch(owner, key_id, off=False)


@blueprint.route("/<key_id>/revoke", methods=["GET", "POST"])
@page
@managers_only
def revoke_page(owner: str, key_id: str) -> ResponseReturnValue:
    """GET asks for confirmation; POST revokes the key at once."""
    key = owned_key(owner, key_id)
    if request.method != "POST":
        return render("keyauth/revoke.html", row=key_view(key))
    get_state().service.revoke_key(key.id, **audit_context(owner))
    return redirect(url_for(".key_page", key_id=key.id, done="revoked"), 303)


@dataclass
class RotateForm:
    """The rotate form's values, as sent, and its errors by field."""

    grace: str = DEFAULT_GRACE
    expires: str = DEFAULT_ROTATE_EXPIRY
    expires_on: str = ""
    form_id: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, form: Mapping[str, Any]) -> RotateForm:
        return cls(
            grace=str(form.get("grace", "")),
            # A form without the field (a host's own rotate template from
            # before it existed) asks for the default.
            expires=str(form.get("expires", DEFAULT_ROTATE_EXPIRY)),
            expires_on=str(form.get("expires_on", "")),
            form_id=str(form.get("form_id", "")),
        )

    def validate(self, now: dt.datetime) -> dict[str, Any]:
        """Fill ``errors``; return the service's ``grace`` and, unless the
        new key keeps the old one's lifetime, ``expires_at``."""
        arguments: dict[str, Any] = {}
        if self.grace in GRACE_CHOICES:
            arguments["grace"] = dt.timedelta(seconds=int(self.grace))
        else:
            self.errors["grace"] = gettext("Choose when the old key stops working.")
        if self.expires != "same":
            try:
                arguments["expires_at"] = chosen_expiry(
                    self.expires, self.expires_on, now, ROTATE_EXPIRY_CHOICES
                )
            except FieldError as error:
                self.errors["expires"] = str(error)
        return arguments


@blueprint.route("/<key_id>/rotate", methods=["GET", "POST"])
@page
@managers_only
def rotate_page(owner: str, key_id: str) -> ResponseReturnValue:
    """GET offers the grace periods and the new key's expiry; POST shows
    the new key, once."""
    service = get_state().service
    view = rotate_view(owner, owned_key(owner, key_id))
    if request.method != "POST":
        return render_rotate(view, RotateForm(form_id=issue_form_id() if view.rotatable else ""))
    if not view.rotatable:
        raise not_rotatable(view)
    form = RotateForm.read(request.form)
    arguments = form.validate(service.clock())
    if form.errors:
        return render_rotate(view, form, 400)
    consume_form_id(form.form_id)
    try:
        new, secret = service.rotate_key(view.key.id, **arguments, **audit_context(owner))
    except ValueError as error:
        # Revoked, expired or rotated since the check above, or an expiry
        # the service refuses (the clock moved past it, a maximum lifetime).
        view = rotate_view(owner, service.get_key(view.key.id))
        if not view.rotatable:
            raise not_rotatable(view) from None
        form.errors["form"] = sentence(error)
        form.form_id = issue_form_id()
        return render_rotate(view, form, 400)
    old = key_view(service.get_key(view.key.id))
    return no_store(
        render("keyauth/created.html", 201, key=key_view(new), secret=secret, previous=old)
    )


def rotate_view(owner: str, key: ApiKeyInfo) -> KeyView:
    """``key`` as the rotate page shows it: with its successor, if any."""
    successor = rotations(get_state().service.events(owner, key_id=key.id)).get(key.id)
    return key_view(key, replaced_by=linked_key(owner, successor))


def not_rotatable(view: KeyView) -> PageError:
    if view.usable:
        return PageError(
            409,
            "KEY_ALREADY_ROTATED",
            gettext("This key was already rotated"),
            gettext("A key is rotated once: rotate its replacement instead."),
        )
    status = view.status_label.lower()
    message = gettext("The key is %(status)s: create a new key instead.", status=status)
    if view.disabled:
        message = gettext(
            "The key is %(status)s: enable it first, or create a new key.", status=status
        )
    return PageError(409, "KEY_NOT_ACTIVE", gettext("This key cannot be rotated"), message)


def grace_ends(view: KeyView) -> list[tuple[str, str, dt.datetime | None]]:
    """Each grace choice with the moment the old key stops working: now +
    grace, or the old key's own expiry when that comes first (SPEC §11)."""
    choices: list[tuple[str, str, dt.datetime | None]] = []
    for value, label in GRACE_CHOICES.items():
        label = gettext(label)
        end: dt.datetime | None = None
        if value != "0":
            end = view.now + dt.timedelta(seconds=int(value))
            if view.key.expires_at is not None:
                end = min(end, view.key.expires_at)
        choices.append((value, label, end))
    return choices


def lifetime(key: ApiKeyInfo) -> str | None:
    """How long ``key`` was made to live (``30 days``); ``None``: for ever."""
    if key.expires_at is None:
        return None
    return duration((key.expires_at - key.created_at).total_seconds())


def same_lifetime(key: ApiKeyInfo) -> str:
    """What "Same lifetime as the old key" gives the new key, as the form
    says it: the old key's lifetime, within ``KEYAUTH_MAX_LIFETIME_DAYS``
    when that is set (as ``rotate_key`` applies it)."""
    most = get_state().settings.max_lifetime_days
    old = key.expires_at - key.created_at if key.expires_at is not None else None
    if most is not None and (old is None or old > dt.timedelta(days=most)):
        return gettext(
            "%(duration)s from now: the longest allowed here", duration=duration(most * 86400)
        )
    if old is None:
        return gettext("Never expires: the old key never does")
    return gettext("%(duration)s from now", duration=duration(old.total_seconds()))


def render_rotate(view: KeyView, form: RotateForm, status: int = 200) -> Response:
    return render(
        "keyauth/rotate.html",
        status,
        row=view,
        form=form,
        grace_choices=grace_ends(view),
        old_lifetime=lifetime(view.key),
        same_lifetime=same_lifetime(view.key),
        **expiry_context(
            view.now,
            # "Never" is the same lifetime already when the old key never expires.
            [
                (choice, expiry_label(choice))
                for choice in expiry_options(ROTATE_EXPIRY_CHOICES)
                if choice != "never" or view.key.expires_at is not None
            ],
        ),
    )
