"""Scheduled runs: ``--window auto`` resolves to the current window of the campaign's cadence.

A cron job, a systemd timer or a Kubernetes CronJob runs the same command
every time (``relmail send weekly --window auto``); the window, which is the
run's idempotency key, is the ISO week (``schedule: weekly``, the default),
the day (``daily``) or the month (``monthly``) that contains "now" in the
project's time zone (``[project] timezone``). A second start inside the same
window resumes or finds nothing left to send; one started while the first is
still going is refused by the run lock (:mod:`relmail.locks`).
"""

from __future__ import annotations

from datetime import datetime

from .errors import ValidationError
from .windows import Window, parse_window

#: Cadence → the relative window name it resolves through.
CADENCES = {"weekly": "this-week", "daily": "today", "monthly": "this-month"}
AUTO = "auto"


def resolve_window(window: str | Window, tz: str, *, cadence: str | None = None, campaign=None,
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
