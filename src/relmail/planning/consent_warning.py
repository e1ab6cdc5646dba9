"""A plan warning when one consent rule suppresses nearly a message's whole audience, with the likely cause.

A shop that imported one "accepts e-mail marketing" flag but whose campaign
asks consent for a topic sees every customer suppressed with ``NO_CONSENT``
and no send: nothing is wrong with any single decision, so no error says
so. :func:`consent_warnings` looks at each message's counts after the plan
and, where ``NO_CONSENT`` or ``UNSUBSCRIBED`` took at least
:data:`ALMOST_ALL` of the audience, says what the store's consent records
suggest (``no customer has consent for topic 'promotions'; 226 opted in
globally: see [consent]``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..errors import did_you_mean
from ..store.models import Preference
from ..store.topics import unknown_topics

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..campaigns import Campaign

#: Share of a message's audience one consent rule must suppress for a warning.
ALMOST_ALL = 0.9
P = Preference.__table__


@dataclass(frozen=True)
class PlanWarning:
    message_id: str
    rule: str
    suppressed: int
    audience: int
    text: str

    def __str__(self) -> str:
        return self.text

    def as_dict(self) -> dict:
        return asdict(self)


def consent_warnings(engine: Engine, campaign: Campaign, summaries, consent, topics: Iterable[str]) -> list[PlanWarning]:
    """One warning per message whose audience NO_CONSENT or UNSUBSCRIBED took (almost) entirely.

    ``topics`` are the consent topics ``[topics]`` in ``relmail.toml`` declares.
    """
    out: list[PlanWarning] = []
    counts: dict[tuple[str, bool], int] | None = None

    def meant(topic: str) -> str | None:  # looked up only for a warning that names an unknown topic
        return unknown_topics(engine, [topic], topics, misspelt_only=True).get(topic)

    for message, summary in zip(campaign.messages, summaries):
        for rule in ("NO_CONSENT", "UNSUBSCRIBED"):
            n = summary.reasons.get(rule, 0)
            if not summary.audience or n < ALMOST_ALL * summary.audience:
                continue
            if counts is None:
                counts = _consent_counts(engine)
            cause = _cause(rule, message.topic, counts, consent, meant)
            text = f"{message.id}: {n:,} of {summary.audience:,} customers suppressed by {rule}: {cause}"
            out.append(PlanWarning(message.id, rule, n, summary.audience, text))
    return out


def _consent_counts(engine) -> dict[tuple[str, bool], int]:
    """(topic, opted in) -> customers, over the whole store (a handful of groups)."""
    with engine.connect() as conn:
        rows = conn.execute(select(P.c.topic, P.c.opted_in, func.count()).group_by(P.c.topic, P.c.opted_in))
        return {(topic, bool(opted_in)): n for topic, opted_in, n in rows}


def _cause(rule: str, topic: str, counts: dict[tuple[str, bool], int], consent, meant) -> str:
    """Why ``rule`` took the audience; ``meant(topic)`` is the known topic an unknown one likely misspells, if any."""
    globally_in, globally_out = counts.get(("*", True), 0), counts.get(("*", False), 0)
    if rule == "UNSUBSCRIBED":
        return (f"{globally_out:,} customers are opted out of all e-mail (topic '*'): check that the consent column "
                "was imported the right way round")
    if not counts:
        return "no consent is on record at all: import preferences, or the customers' consent column (--map shopify)"
    topic_in = counts.get((topic, True), 0)
    if topic_in == 0 and globally_in and not consent.global_counts_for(topic):
        if topic in consent.explicit_topics:
            return (f"no customer has consent for topic '{topic}'; {globally_in:,} opted in globally, but "
                    f"[consent] explicit_topics asks an opt-in of its own for '{topic}'")
        return f"no customer has consent for topic '{topic}'; {globally_in:,} opted in globally: see [consent]"
    named = sorted({t for t, _ in counts if t != "*"})
    if topic not in named and named:
        # No record names the topic, though records name others: a new topic, or a misspelt one
        # ('promotion' for 'promotions') where the campaign's topic check did not run first.
        return f"no consent record names topic '{topic}' (the store's topics: {', '.join(named)}){did_you_mean(meant(topic))}"
    if topic_in == 0 and not globally_in:
        return f"no customer has opted in to topic '{topic}' or globally"
    return f"{topic_in:,} customers opted in to topic '{topic}' and {globally_in:,} globally; few of them are in this audience"
