"""What a plan would decide for one customer now, for ``relmail preview``'s warnings.

A preview renders the e-mail for any customer. When the plan would never
send it to them (they are not in the message's audience, or a rule
suppresses it, or they would be held out), the marketer looking at it must
hear so. :func:`would_decide` runs the plan's own decision (audience,
features, score, rules, arbitration, hold-out draw) for that one customer in
the campaign's current window (``--window auto``), and writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import select, union

from ..campaigns import Campaign
from ..features import FeatureSettings
from ..segments import load_segments
from ..windows import resolve_window
from .partition import decide_partition
from .run import campaign_scorer, check_segments, message_contexts, run_id_for


@dataclass(frozen=True)
class Verdict:
    """The plan's decision for one (customer, message) now; ``action`` None when not in the audience."""

    message_id: str
    window: str
    segments: tuple[str, ...]
    action: str | None
    reasons: tuple[str, ...] = ()

    @property
    def in_audience(self) -> bool:
        return self.action is not None

    def warning(self, customer_id: str) -> str | None:
        """One line for the preview's stderr, or None when the customer would get the e-mail."""
        if not self.in_audience:
            return (f"{customer_id} is not in the audience of {self.message_id} in window {self.window} "
                    f"(segments: {', '.join(self.segments)}): the plan would not consider them")
        if self.action == "holdout":
            return f"{customer_id} would be held out of {self.message_id} in window {self.window} (HOLDOUT): not sent, measured"
        if self.action == "suppress":
            return f"{customer_id} would be suppressed from {self.message_id} in window {self.window}: {' '.join(self.reasons)}"
        return None


def would_decide(project, engine, campaign: Campaign, customer_id: str, *, now: datetime | None = None) -> dict[str, Verdict]:
    """Per message of ``campaign``, what a plan of its current window would decide for ``customer_id``."""
    win = resolve_window("auto", project.settings.timezone, campaign=campaign, now=now)
    as_of = win.default_as_of(now).astimezone(UTC)
    segments = load_segments(project)
    check_segments(campaign, segments)
    ids = np.array([customer_id])
    members: dict[tuple, np.ndarray] = {}
    with engine.connect() as conn:
        for key in dict.fromkeys(tuple(sorted(m.segments)) for m in campaign.messages):
            everyone = union(*(segments[s].select(as_of) for s in key)).subquery()
            found = conn.execute(select(everyone.c.id).where(everyone.c.id == customer_id).limit(1)).first()
            members[key] = ids if found is not None else ids[:0]
        contexts = message_contexts(conn, campaign)
    verdicts = {m.id: Verdict(m.id, win.key, tuple(m.segments), None) for m in campaign.messages}
    if not any(len(v) for v in members.values()):
        return verdicts
    result = decide_partition(engine, campaign, win, run_id_for(campaign.name, win.key), campaign.run_seed(win.key), as_of,
                              ids, members, {}, contexts, FeatureSettings.from_project(project), campaign_scorer(project, campaign))
    for m, part in zip(campaign.messages, result.parts):
        for row in part.records(features=False):
            if row["customer_id"] == customer_id:
                verdicts[m.id] = Verdict(m.id, win.key, tuple(m.segments), row["action"], tuple(row["reasons"]))
    return verdicts
