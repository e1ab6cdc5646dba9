"""Refuse a campaign topic that looks like a misspelling of a topic the shop knows.

Consent is kept per topic, and an opt-out of ``promotions`` says nothing
about ``promotion``: a message whose topic is misspelt is mailed to everyone
who opted out of the topic the marketer meant, whenever a global opt-in
counts for topics without a record of their own (the default). Every single
decision looks right, so nothing else would say so. Which topics are known
and which known one an unknown topic looks like is
:func:`relmail.store.topics.unknown_topics`; an unknown topic close to a
known one is refused before anything is planned. An unknown topic close to
none is a new topic, and left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..campaigns.parse import line_in_file
from ..errors import Problem, ValidationError, did_you_mean
from ..store.topics import not_known, unknown_topics

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..campaigns import Campaign


def check_topics(engine: Engine, camp: Campaign, declared: set[str]) -> None:
    """Raise :class:`ValidationError` naming file, line and field for each message whose topic looks misspelt."""
    unknown = unknown_topics(engine, {m.topic for m in camp.messages}, declared, misspelt_only=True)
    problems = []
    for i, m in enumerate(camp.messages):
        meant = unknown.get(m.topic)
        if meant is None:
            continue
        problems.append(Problem(
            str(camp.path or camp.name), line_in_file(camp.path, ("messages", i, "topic")), f"messages.{i}.topic",
            f"{not_known(m.topic)}{did_you_mean(meant)} The opt-outs of '{meant}' would not apply to this message: "
            f"write '{meant}', or declare '{m.topic}' under [topics] in relmail.toml"))
    if problems:
        raise ValidationError(f"campaign '{camp.name}' names topics that look misspelt", problems)
