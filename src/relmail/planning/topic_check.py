"""Refuse a campaign topic that looks like a misspelling of a topic the shop knows.

Consent is kept per topic, and an opt-out of ``promotions`` says nothing
about ``promotion``: a message whose topic is misspelt is mailed to everyone
who opted out of the topic the marketer meant, whenever a global opt-in
counts for topics without a record of their own (the default). Every single
decision looks right, so nothing else would say so. A topic is known when a
consent record names it or ``[topics]`` in ``relmail.toml`` declares it; an
unknown topic close to a known one is refused before anything is planned.
An unknown topic close to none is a new topic, and left alone.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..campaigns.parse import line_in_file
from ..errors import Problem, ValidationError
from ..store.models import Preference

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..campaigns import Campaign

#: How alike two topic names must be (difflib's ratio) for one to count as a misspelling of the other:
#: catches a letter dropped, doubled or swapped ('promotion', 'newsleter'), not 'sale' for 'service'.
CLOSE = 0.8
P = Preference.__table__


def check_topics(engine: Engine, camp: Campaign, declared: set[str]) -> None:
    """Raise :class:`ValidationError` naming file, line and field for each message whose topic looks misspelt."""
    if not {m.topic for m in camp.messages} - declared - {"*"}:
        # Every topic is declared: nothing to look up (the consent records' topics are a scan of
        # every customer's preferences, a fraction of a second per million, before every plan).
        return
    with engine.connect() as conn:
        recorded = set(conn.execute(select(P.c.topic).distinct()).scalars())
    known = (recorded | declared) - {"*"}
    problems = []
    for i, m in enumerate(camp.messages):
        if m.topic in known:
            continue
        close = difflib.get_close_matches(m.topic, sorted(known), n=1, cutoff=CLOSE)
        if not close:
            continue
        problems.append(Problem(
            str(camp.path or camp.name), line_in_file(camp.path, ("messages", i, "topic")), f"messages.{i}.topic",
            f"topic '{m.topic}' is named by no consent record and not declared under [topics] in relmail.toml, "
            f"but '{close[0]}' is: the opt-outs of '{close[0]}' would not apply to this message. "
            f"Write '{close[0]}', or declare a new topic under [topics] in relmail.toml"))
    if problems:
        raise ValidationError(f"campaign '{camp.name}' names topics that look misspelt", problems)
