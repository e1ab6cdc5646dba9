"""Run windows: the idempotency key of a scheduled send, as a span of time.

A window is named the way people and cron jobs name periods:

``2026-W48``
    an ISO week, Monday 00:00 to the next Monday 00:00;
``2026-11-23``
    one day;
``2026-11``
    one calendar month;
``this-week`` / ``today`` / ``this-month``
    resolved against the current time to the week, day or month that
    contains it, so a weekly cron job can run ``relmail plan weekly --window
    this-week``;
``next-week`` / ``tomorrow`` / ``next-month``
    the one after that: a Friday preview of Monday's send plans
    ``next-week``.

Boundaries are midnights in the project's time zone (``[project] timezone``),
returned as UTC-aware datetimes like every other time in relmail.

Scheduled runs use ``auto``: :func:`resolve_window` turns it into the
current window of the campaign's cadence (``schedule: weekly``, the default,
``daily`` or ``monthly``) in the project's time zone: ``this-week``,
``today`` or ``this-month``. A cron job, a systemd timer or a Kubernetes
CronJob runs the same command every time; a second start inside the same
window resumes or finds nothing left to send, and one started while the
first is still going is refused by the run lock (:mod:`relmail.store.locks`).

The frequency caps and a recurring message's ``repeat_after_days`` count
calendar days in the same time zone: :func:`days_start`.

"Now" is :func:`now`: the system clock, or ``$RELMAIL_NOW`` when it is set
(a fixed clock for tests and CI rehearsals).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from .campaigns import Campaign

#: Environment variable that fixes relmail's clock: an ISO 8601 time with a zone (tests, CI rehearsals).
ENV_NOW = "RELMAIL_NOW"
#: Relative window names → (kind, how many windows after the current one).
RELATIVE = {"this-week": ("week", 0), "next-week": ("week", 1), "today": ("day", 0), "tomorrow": ("day", 1),
            "this-month": ("month", 0), "next-month": ("month", 1)}

_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Window:
    """A named span of time ``[start, end)``; ``key`` is its canonical name."""

    key: str
    kind: str  # week | day | month
    start: datetime
    end: datetime
    timezone: str

    def default_as_of(self, now: datetime | None = None) -> datetime:
        """The plan's "now": the current time, kept within the window.

        A plan made during its window sees everything known so far (an
        unsubscribe from this morning counts). A plan made before it (Friday's
        preview of next week, a plan written ahead) is decided as of the
        window's start, when its e-mails can go out at the earliest: it still
        sees everything known, and the caps and ``repeat_after_days`` count
        the days before that start, so this Monday's issue does not hold back
        next Monday's. A plan for a window that has ended (a replay, a
        backfill, a test) sees the data as it was at the window's end, so it
        is the same plan every time.
        """
        now = now or current_time()
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return min(max(now.astimezone(UTC), self.start), self.end)

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r} (relmail.toml [project] timezone)") from None


def _bad(text: str, why: str) -> ValidationError:
    return ValidationError(
        f"window {text!r}: {why}; use an ISO week (2026-W48), a day (2026-11-23), a month (2026-11), "
        "or this-week / next-week / today / tomorrow / this-month / next-month"
    )


def parse_window(text: str, tz: str = "UTC", now: datetime | None = None) -> Window:
    """Parse a window name into a :class:`Window` in time zone ``tz``."""
    zone = _zone(tz)
    raw = text.strip()
    if raw in RELATIVE:
        raw = _relative(raw, (now or current_time()).astimezone(zone).date())
    if m := _WEEK.match(raw):
        year, week = int(m.group(1)), int(m.group(2))
        try:
            first = date.fromisocalendar(year, week, 1)
        except ValueError:
            raise _bad(text, f"{year} has no ISO week {week}") from None
        return _make(raw, "week", first, first + timedelta(days=7), zone, tz)
    if m := _DAY.match(raw):
        try:
            day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError as exc:
            raise _bad(text, str(exc)) from None
        return _make(raw, "day", day, day + timedelta(days=1), zone, tz)
    if m := _MONTH.match(raw):
        year, month = int(m.group(1)), int(m.group(2))
        if not 1 <= month <= 12:
            raise _bad(text, f"month {month} does not exist")
        first = date(year, month, 1)
        nxt = date(year + (month == 12), month % 12 + 1, 1)
        return _make(raw, "month", first, nxt, zone, tz)
    raise _bad(text, "not a window name")


def _relative(name: str, today: date) -> str:
    """The key of relative window ``name`` seen from the local date ``today``."""
    kind, ahead = RELATIVE[name]
    if kind == "week":
        year, week, _ = (today + timedelta(weeks=ahead)).isocalendar()
        return f"{year:04d}-W{week:02d}"
    if kind == "day":
        return (today + timedelta(days=ahead)).isoformat()
    month = today.year * 12 + today.month - 1 + ahead
    return f"{month // 12:04d}-{month % 12 + 1:02d}"


def _make(key: str, kind: str, first: date, after: date, zone: ZoneInfo, tz: str) -> Window:
    return Window(key=key, kind=kind, start=_midnight(first, zone), end=_midnight(after, zone), timezone=tz)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first moment of the local calendar ``day``, in UTC (where midnight is skipped by a
    clock change, the first moment after the gap)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def local_midnight(day: date, tz: str) -> datetime:
    """The first moment of the calendar ``day`` in time zone ``tz``, in UTC."""
    return _midnight(day, _zone(tz))


def local_day(moment: datetime, tz: str) -> date:
    """The calendar day ``moment`` falls on in time zone ``tz``."""
    return moment.astimezone(_zone(tz)).date()


def days_start(as_of: datetime, days: int, tz: str) -> datetime:
    """The start (UTC) of the ``days`` calendar days that end with ``as_of``'s day in time zone ``tz``.

    Local midnight of the as-of day and the ``days - 1`` before it: the
    frequency caps' ``7d`` window at a plan made on day D is D-6..D, whatever
    the hour of the plan, so last week's e-mail sent on the same weekday
    no longer counts. A day is a local calendar day, 23 or 25 hours long
    across a clock change.
    """
    if days < 1:
        raise ValueError("a span of calendar days has at least one day")
    return local_midnight(local_day(as_of, tz) - timedelta(days=days - 1), tz)


def parse_time(value: str, option: str = "--as-of") -> datetime:
    """An ISO 8601 time with an explicit zone (``Z`` or an offset), as UTC."""
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise ValidationError(f"{option}: {value!r} is not an ISO 8601 time (e.g. 2026-11-23T09:00:00Z)") from None
    if parsed.tzinfo is None:
        raise ValidationError(f"{option}: {value!r} has no time zone; add Z or an offset like +01:00")
    return parsed.astimezone(UTC)


def current_time() -> datetime:
    """Now, in UTC: ``$RELMAIL_NOW`` when set (an ISO 8601 time with a zone), else the system clock.

    Everything that asks "which window is it" or "as of when" reads this:
    ``auto`` and the relative window names, a plan's default as-of, a send's
    timestamps, the latest plausible time of an import or a provider event
    (:func:`relmail.timestamps.implausible`), the demo shop's history. Run
    locks and timings keep the system clock.
    """
    fixed = os.environ.get(ENV_NOW, "").strip()
    if not fixed:
        return datetime.now(UTC)
    try:
        return parse_time(fixed, f"${ENV_NOW}")
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None


#: Cadence → the relative window name it resolves through.
CADENCES = {"weekly": "this-week", "daily": "today", "monthly": "this-month"}
AUTO = "auto"


def resolve_window(window: str | Window, tz: str, *, cadence: str | None = None, campaign: Campaign | None = None,
                   now: datetime | None = None) -> Window:
    """The :class:`Window` for ``window``; ``auto`` uses ``cadence``, else the campaign's ``schedule``.

    ``cadence`` is only meaningful with ``auto``: naming it with an explicit
    window is refused, since the window already says which span it is.
    """
    if isinstance(window, Window):
        return window
    if window.strip() != AUTO:
        if cadence is not None:
            raise ValidationError(f"--cadence applies to --window auto only, not to window {window!r}")
        return parse_window(window, tz, now=now)
    chosen = cadence or (campaign.schedule if campaign is not None else "weekly")
    if chosen not in CADENCES:
        raise ValidationError(f"cadence {chosen!r}: use one of {', '.join(CADENCES)}")
    return parse_window(CADENCES[chosen], tz, now=now)
