"""Reading times from files and providers, and refusing implausible ones.

Providers write event times three ways: Unix seconds (SendGrid, Mailgun,
with or without a fraction), Unix milliseconds (SendGrid's Marketing
Campaigns events) and ISO 8601 text (Postmark, Amazon SES). :func:`parse`
reads all three. A number above :data:`MILLISECONDS_ABOVE` is taken as
milliseconds: as seconds it would lie after the year 5000.

A time is implausible when it lies more than :data:`FUTURE_TOLERANCE` after
now (``9999-12-31``, an event "in 3026", a millisecond value read as
seconds) or before :data:`EARLIEST` (``0001-01-01``, the zero time some
systems export for "unknown"). Such a value would make a customer look new
for centuries or an event count in every window; :func:`implausible` says
why, and the importers and feedback providers refuse the value with that
message, naming the file, line and field.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from .windows import ENV_NOW, current_time

#: How far after now a time may lie: clocks differ, and a provider's time
#: zone mistake shifts by at most 14 hours.
FUTURE_TOLERANCE = timedelta(days=1)

#: The earliest plausible time.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)

#: Unix numbers above this are milliseconds (10^11 seconds is the year 5138).
MILLISECONDS_ABOVE = 100_000_000_000


def from_unix(value: Any) -> datetime:
    """An aware UTC datetime from Unix seconds or milliseconds (int, float or numeric text)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    number = float(value)
    if abs(number) > MILLISECONDS_ABOVE:
        number /= 1000.0
    return datetime.fromtimestamp(number, tz=UTC)


def from_iso(value: Any) -> datetime:
    """An aware UTC datetime from ISO 8601 text that carries an offset or ``Z``.

    A time without an offset is refused: guessing a zone would shift every
    event by hours on one side of the world.
    """
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 time, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return parsed.astimezone(UTC)


def parse(value: Any) -> datetime:
    """Seconds, milliseconds or ISO 8601 with an offset, as an aware UTC datetime."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return from_unix(text)
        except ValueError:
            return from_iso(text)
    return from_unix(value)


def implausible(when: datetime, now: datetime | None = None) -> str | None:
    """Why ``when`` cannot be a real time of a customer or an event, or None.

    Without ``now`` the latest plausible time is relmail's clock's
    (:func:`relmail.windows.current_time`: ``$RELMAIL_NOW`` when set, so a
    rehearsal of a later week imports that week's exports), refreshed once a
    minute, and the variable read at most once a second unless a time lies
    past the bound: imports check millions of values, a minute changes
    nothing next to a day of tolerance, and reading the environment costs
    as much as the rest of the check.
    """
    if now is None:
        if wholly_past(when):
            return None
        latest = _latest(when)
    else:
        latest = now + FUTURE_TOLERANCE
    if when > latest:
        return f"{when.isoformat()} lies in the future (more than {_span(FUTURE_TOLERANCE)} after now)"
    if when < EARLIEST:
        return f"{when.isoformat()} lies before {EARLIEST.year} (a placeholder for 'unknown'?)"
    return None


#: The year when this module was loaded; earlier years lie wholly in the past.
_YEAR_AT_START = datetime.now(UTC).year


def wholly_past(when: datetime) -> bool:
    """True when ``when``'s year lies after :data:`EARLIEST` and wholly in the past: plausible without the clock.

    Most imported times are such; checking the year first keeps the clock
    out of the per-value path of large imports.
    """
    return EARLIEST.year < when.year < _YEAR_AT_START
#: (when the bound was computed, when $RELMAIL_NOW was last read, its value then, the bound).
_cached: list[Any] = [float("-inf"), float("-inf"), None, EARLIEST]


def _latest(when: datetime) -> datetime:
    tick = time.monotonic()
    if when <= _cached[3] and tick - _cached[1] < 1:
        return _cached[3]
    fixed = os.environ.get(ENV_NOW)
    _cached[1] = tick
    if tick - _cached[0] > 60 or fixed != _cached[2]:
        _cached[0], _cached[2], _cached[3] = tick, fixed, current_time() + FUTURE_TOLERANCE
    return _cached[3]


def _span(delta: timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} day{'s' if hours // 24 != 1 else ''}" if hours % 24 == 0 else f"{hours} hours"
