"""The shape of a suppression rule.

A rule looks at a whole :class:`~relmail.features.FeatureFrame` at once and
returns a boolean mask (True = this rule suppresses the send) plus the
numbers behind it (``detail``: the limits it compared against). The plan
logs the rule's ``columns`` and ``detail`` with every decision, so
:meth:`Rule.explain` can say why from the ledger alone, long after the
campaign file changed: "3 e-mails within 7 calendar days (the plan's day and the
6 before), cap is 2".

Columns are named as in the frame; ``k.<name>`` means the message's own
column ``<message id>.<name>``, logged as ``<name>`` (see
:mod:`relmail.features.columns`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..features.columns import frame_key

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


@dataclass
class RuleFindings:
    """What a rule found for every row of the frame."""

    #: True where the rule fires (the send is suppressed).
    mask: np.ndarray
    #: Values to log with the decision (limits, thresholds), per row or one for all.
    detail: dict[str, np.ndarray | float] = field(default_factory=dict)


class Rule:
    """One suppression rule. Subclass, set the class attributes, register it in ``rules/__init__.py``."""

    #: Stable reason code written to the ledger (never rename one).
    code: ClassVar[str] = ""
    #: Hard rules protect the law and the sender's reputation; no policy turns them off.
    hard: ClassVar[bool] = False
    #: One line for the docs and the reason-code table.
    summary: ClassVar[str] = ""
    #: What a switchable rule protects (see :data:`relmail.rules.KINDS`): ``irritation`` (the
    #: customer's patience), ``experiment`` (a control group) or ``value`` (the shop's money). A hard
    #: rule is ``compliance`` whatever this says.
    kind: ClassVar[str] = "irritation"
    #: Feature columns the rule reads (logged with each decision).
    columns: ClassVar[tuple[str, ...]] = ()
    #: Columns that exist only in some plans (a trained model's outputs): without
    #: them in the frame the rule does not apply, and nothing of it is logged.
    requires: ClassVar[tuple[str, ...]] = ()
    #: The rule judges the score itself (the model rules): the decisions it
    #: suppresses log every column the scorer read, as a sent decision does.
    logs_score_inputs: ClassVar[bool] = False

    def applies(self, message: Message) -> bool:
        """Whether the rule is about this kind of message at all (default: every message)."""
        return True

    def available(self, frame: FeatureFrame, message: Message) -> bool:
        """Whether the frame holds every column in :attr:`requires` for ``message``."""
        return all(frame_key(c, message.id) in frame for c in self.requires)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        raise NotImplementedError

    def explain(self, logged: dict[str, Any]) -> str:
        """A sentence for ``relmail why`` from the logged features of one decision."""
        return self.summary

    # helpers for subclasses -------------------------------------------------
    @staticmethod
    def col(frame: FeatureFrame, message: Message, name: str) -> np.ndarray:
        return np.asarray(frame[frame_key(name, message.id)], dtype=np.float64)

    @staticmethod
    def is_one(values: np.ndarray) -> np.ndarray:
        return np.nan_to_num(values, nan=0.0) >= 0.5


def num(logged: dict[str, Any], key: str, default: float = 0.0) -> float:
    """A logged number (None/missing → default)."""
    value = logged.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return default
    return float(value)


def n(value: float) -> str:
    """A count or measure as people write it: 3, not 3.0."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0").rstrip(".")


def plural(count: float, word: str) -> str:
    return f"{n(count)} {word}{'' if count == 1 else 's'}"


#: Logged with the caps' and ALREADY_SENT's limits: the windows were calendar days. A decision logged without it
#: was made when they were the days before the as-of time, to the minute, and is explained so.
CALENDAR = {"calendar_days": 1.0}


def calendar_days(days: float, planned: float = 0, logged=None) -> str:
    """Where the sends a cap or ``repeat_after_days`` counts lie: calendar days ending with the plan's
    (in the project's time zone; see :func:`relmail.windows.days_start`). With ``planned`` sends of other
    runs, where those runs lie: planned less than ``days`` days from the plan's day, before or after it.
    ``logged`` without :data:`CALENDAR`'s key: a decision of the time the windows were not calendar days."""
    if logged is not None and not logged.get("calendar_days"):
        return f"in the last {n(days)} days"
    if days <= 1:
        return "on the plan's day" + (" (planned: by runs of that day)" if planned else "")
    ahead = f"; planned: by runs of the {n(days - 1)} days either side" if planned else ""
    return f"within {n(days)} calendar days (the plan's day and the {n(days - 1)} before{ahead})"


def when_and_source(found: dict | None) -> str:
    """`` on 2026-11-04 09:12 UTC; source: unsubscribe link`` for an opt-out ``relmail why`` found in the store
    (``{"at", "source"}``); empty when it did not ask (a plan file read without the store)."""
    if found is None:
        return ""
    text = f" on {found['at']:%Y-%m-%d %H:%M} UTC" if found.get("at") is not None else ""
    return text + (f"; source: {found['source']}" if found.get("source") else "; source not recorded")


def whole_mailbox(logged) -> str:
    """`` (the address's, under this and 1 other customer id)`` when the decision counted what a shared address
    received under every customer id with it (``address_shared``, see :mod:`relmail.planning.shared_mailbox`); else nothing."""
    others = num(logged, "address_shared")
    return f" (the address's, under this and {plural(others, 'other customer id')})" if others else ""
