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
from datetime import datetime
from typing import TYPE_CHECKING

from ..campaigns import Campaign
from .run import plan

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..project import Project


@dataclass(frozen=True)
class Verdict:
    """The plan's decision for one (customer, message) now; ``action`` None when not in the audience,
    ``sent`` when the window's written run already delivered (or is delivering) it."""

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


def would_decide(project: Project, engine: Engine, campaign: Campaign, customer_id: str, *, now: datetime | None = None) -> dict[str, Verdict]:
    """Per message of ``campaign``, what a plan of its current window would decide for ``customer_id``.

    The plan's own dry run for that one customer (``customers=``), as
    ``relmail why`` previews a window: the same audience, features, rules,
    arbitration and hold-out draw.
    """
    result = plan(project, engine, campaign, "auto", dry_run=True, customers=(customer_id,), workers=1, now=now)
    window = result.window.key
    verdicts = {m.id: Verdict(m.id, window, tuple(m.segments), None) for m in campaign.messages}
    for row in result.decisions.records(features=False):
        m = campaign.message(row["message_id"])
        verdicts[m.id] = Verdict(m.id, window, tuple(m.segments), row["action"], tuple(row["reasons"]))
    for m in campaign.messages:
        # The window's written run already delivered it: the dry run keeps that decision instead of deciding again.
        if customer_id in result.kept_pairs.get(m.id, ()):
            verdicts[m.id] = Verdict(m.id, window, tuple(m.segments), "sent")
    return verdicts
