"""The key pages' language: their own Flask-Babel domain, the locale, and
dates and numbers formatted for it.

The pages translate through the ``flask_keyauth`` domain, looked up in this
package's ``translations/`` and then in the host's own translation folders
(Flask-Babel's ``BABEL_TRANSLATION_DIRECTORIES`` when the host uses
Flask-Babel, else the app's ``translations/``), so a host adds a language, or
changes a sentence, with a ``flask_keyauth.mo`` of its own. The locale is
the host's Flask-Babel locale when it has a Flask-Babel locale selector,
else the best match of ``Accept-Language`` (then Flask-Babel's default
locale, then English); a language no catalogue covers gets English. The
pages work whether or not the host set Flask-Babel up: the catalogue is
loaded under :func:`flask_babel.force_locale`, which needs no ``Babel()``.

Every date is a UTC day and every moment a UTC time (the pages say so),
formatted for the locale with Babel. The JSON API stays English.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flask_babel
from babel import Locale, UnknownLocaleError, dates, numbers, units
from babel.support import NullTranslations
from flask import current_app, g, has_request_context, request
from markupsafe import Markup

#: The extension's own message domain: ``flask_keyauth.po`` / ``.mo``.
DOMAIN = "flask_keyauth"
#: The catalogues this package ships.
TRANSLATIONS = Path(__file__).parent / "translations"
#: The language of the messages in the code, and of a locale no catalogue covers.
SOURCE_LANGUAGE = "en"
ENGLISH = Locale.parse(SOURCE_LANGUAGE)

#: Extraction keywords besides Babel's defaults (``gettext``, ``ngettext``,
#: ``N_``...): the templates' own names, which leave a host's ``_`` and
#: ``gettext`` alone in its base template.
TEMPLATE_KEYWORDS: dict[str, tuple[int, ...] | None] = {"ka_": None, "ka_ngettext": (1, 2)}

Variables = Any


def N_(message: str) -> str:  # noqa: N802 - the gettext convention
    """Mark a message for extraction; it is translated where it is shown."""
    return message


# -- where the catalogues are -----------------------------------------------------


def host_uses_babel() -> bool:
    """Whether the app has Flask-Babel set up (``Babel(app)``)."""
    return "babel" in current_app.extensions


def translation_directories() -> tuple[str, ...]:
    """This package's catalogues, then the host's (which win on a conflict)."""
    if host_uses_babel():
        host = list(flask_babel.get_babel().translation_directories)
    else:
        host = [os.path.join(current_app.root_path, "translations")]
    return (str(TRANSLATIONS), *(d for d in host if os.path.abspath(d) != str(TRANSLATIONS)))


@functools.lru_cache(maxsize=16)
def domain(directories: tuple[str, ...]) -> flask_babel.Domain:
    """One Flask-Babel domain per set of folders: it caches each locale's
    catalogue once loaded."""
    return flask_babel.Domain(translation_directories=list(directories), domain=DOMAIN)


@functools.lru_cache(maxsize=16)
def catalogued_languages(directories: tuple[str, ...]) -> frozenset[str]:
    """The languages with a compiled ``flask_keyauth.mo`` in these folders,
    English included (it needs none)."""
    found = {SOURCE_LANGUAGE}
    for directory in directories:
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if os.path.isfile(os.path.join(directory, name, "LC_MESSAGES", f"{DOMAIN}.mo")):
                found.add(name)
    return frozenset(found)


def languages() -> frozenset[str]:
    """The locales (``es``, ``pt_BR``) the pages can be shown in here."""
    return catalogued_languages(translation_directories())


# -- the locale of this request -------------------------------------------------------


def covered(locale: Locale, available: frozenset[str]) -> bool:
    """Whether a catalogue covers ``locale``: its own (``es_MX``) or its
    language's (``es``)."""
    return str(locale) in available or locale.language in available


def browser_locale(available: frozenset[str]) -> Locale | None:
    """The first language of ``Accept-Language`` (by quality) that a
    catalogue covers, region kept (``es-MX``)."""
    for tag, quality in request.accept_languages:
        if quality <= 0 or tag == "*":
            continue
        try:
            locale = Locale.parse(tag, sep="-")
        except (ValueError, TypeError, UnknownLocaleError):
            continue
        if covered(locale, available):
            return locale
    return None


def select_locale() -> Locale:
    """The host's Flask-Babel locale when it has a locale selector; else the
    browser's (:func:`browser_locale`), else the host's Flask-Babel default
    locale, else English. A locale no catalogue covers gets English."""
    available = languages()
    fallback = ENGLISH
    if host_uses_babel():
        babel = flask_babel.get_babel()
        if babel.locale_selector is not None:
            chosen = flask_babel.get_locale()
            return chosen if chosen is not None and covered(chosen, available) else ENGLISH
        default = babel.instance.default_locale
        if isinstance(default, Locale) and covered(default, available):
            fallback = default
    return browser_locale(available) or fallback


def get_locale() -> Locale:
    """The pages' locale for this request (English outside a request)."""
    if not has_request_context():
        return ENGLISH
    locale = g.get("_keyauth_locale")
    if not isinstance(locale, Locale):
        locale = select_locale()
        g._keyauth_locale = locale  # noqa: SLF001 - our name on g
    return locale


def html_lang() -> str:
    """The locale as ``<html lang>`` wants it: ``es``, ``es-MX``."""
    return str(get_locale()).replace("_", "-")


def translations() -> NullTranslations:
    """This request's catalogue of the ``flask_keyauth`` domain."""
    if not has_request_context():
        return NullTranslations()
    loaded = g.get("_keyauth_translations")
    if not isinstance(loaded, NullTranslations):
        # The domain asks Flask-Babel for the locale; forcing ours answers
        # it without a Babel() on the app, and changes nothing after.
        with flask_babel.force_locale(get_locale()):
            loaded = domain(translation_directories()).get_translations()
        assert isinstance(loaded, NullTranslations)
        g._keyauth_translations = loaded  # noqa: SLF001 - our name on g
    return loaded


# -- messages ----------------------------------------------------------------------------


def gettext(message: str, **variables: Variables) -> str:
    """``message`` in the pages' language, ``%(name)s`` filled from ``variables``."""
    text = translations().ugettext(message)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, num: int, **variables: Variables) -> str:
    """The plural form for ``num`` (``%(num)d`` or ``%(num)s`` in the text)."""
    variables.setdefault("num", num)
    return translations().ungettext(singular, plural, num) % variables


def markup_gettext(message: str, **variables: Variables) -> Markup:
    """:func:`gettext` for templates (``ka_``): the catalogue's text is
    trusted markup (a message may hold ``<strong>`` or ``<code>``); the
    values are escaped."""
    text = Markup(translations().ugettext(message))  # noqa: S704 - our own catalogues
    return text % variables if variables else text


def markup_ngettext(singular: str, plural: str, num: int, **variables: Variables) -> Markup:
    """:func:`ngettext` for templates (``ka_ngettext``), as :func:`markup_gettext`."""
    variables.setdefault("num", num)
    return Markup(translations().ungettext(singular, plural, num)) % variables  # noqa: S704


# -- dates, times and numbers -------------------------------------------------------------


def as_utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def utc_day(value: dt.datetime | dt.date) -> dt.date:
    """The UTC day of a moment (a date is a UTC day already)."""
    return as_utc(value).date() if isinstance(value, dt.datetime) else value


def format_date(value: dt.datetime | dt.date | None) -> str:
    """The UTC day, in the locale's medium form: ``Nov 23, 2026``,
    ``23 nov 2026``; an em dash for ``None``."""
    if value is None:
        return "—"
    return dates.format_date(utc_day(value), "medium", locale=get_locale())


def format_datetime(value: dt.datetime | None) -> str:
    """The UTC moment: the day as :func:`format_date` and the time to the
    minute, ``Nov 23, 2026, 10:04 AM UTC``; an em dash for ``None``."""
    if value is None:
        return "—"
    locale = get_locale()
    moment = as_utc(value)
    time = dates.format_time(moment, "short", tzinfo=dt.timezone.utc, locale=locale)
    day = dates.format_date(moment.date(), "medium", locale=locale)
    pattern = str(dates.get_datetime_format("medium", locale=locale))
    return gettext("%(datetime)s UTC", datetime=pattern.format(time, day))


def format_short_date(day: dt.date) -> str:
    """A day without its year, for a chart's axis: ``Nov 23``, ``23 nov``."""
    return dates.format_skeleton("MMMd", day, locale=get_locale())


def format_number(number: int) -> str:
    """``1,234`` or ``1.234``, as the locale groups digits."""
    return numbers.format_decimal(number, locale=get_locale())


def iso(value: dt.datetime | dt.date | None) -> str:
    """The value for a ``<time datetime>`` attribute: UTC with ``Z``, or the day."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


#: Units :func:`duration` counts in, by the seconds one holds.
DURATION_UNITS = (("duration-minute", 60), ("duration-hour", 3600), ("duration-day", 86400))


def duration(seconds: float) -> str:
    """``30 days``, ``1 hour``, ``5 minutes`` (``30 días``): to the nearest
    whole unit, days at most.

    Rounded, not truncated: a key made a moment ago to live 30 days has
    29 days, 23 hours and some seconds left, and that is "30 days".
    """
    minutes = int(seconds / 60 + 0.5)
    hours = int(seconds / 3600 + 0.5)
    if minutes < 60:
        count, unit = max(minutes, 1), "duration-minute"
    elif hours < 24:
        count, unit = hours, "duration-hour"
    else:
        count, unit = int(seconds / 86400 + 0.5), "duration-day"
    return str(units.format_unit(count, unit, length="long", locale=get_locale()))


def relative(value: dt.datetime, now: dt.datetime) -> str:
    """``3 hours ago``, ``in 5 days``, ``just now`` (see :func:`duration`)."""
    seconds = (value - now).total_seconds()
    if abs(seconds) < 60:
        return gettext("just now")
    text = duration(abs(seconds))
    if seconds > 0:
        return gettext("in %(duration)s", duration=text)
    return gettext("%(duration)s ago", duration=text)


def days_until(value: dt.datetime, now: dt.datetime) -> int:
    """UTC days from ``now``'s to ``value``'s: 0 today, 1 tomorrow."""
    return (utc_day(value) - utc_day(now)).days


def template_context() -> dict[str, Callable[..., Any] | str]:
    """What every key page template gets for its language."""
    return {
        "ka_": markup_gettext,
        "ka_ngettext": markup_ngettext,
        "ka_lang": html_lang(),
        "format_date": format_date,
        "format_datetime": format_datetime,
        "format_number": format_number,
        "iso": iso,
        "relative": relative,
    }
