"""Which consent topics the shop knows, and the known one an unknown topic most likely misspells.

Consent is kept per topic: an opt-out of ``promotions`` says nothing about
``promotion``, and a segment condition on ``promotion`` tests nobody's
consent. A topic is known when ``[topics]`` in ``relmail.toml`` declares it,
a consent record names it, or an e-mail event names it (a message of that
topic was mailed); the e-mail events are read in a bounded look at the
newest (:mod:`relmail.store.mailed`), not searched. The campaign check that refuses a misspelt topic, the
plan's consent warning and ``relmail segments show`` all ask
:func:`unknown_topics`, so a topic one of them calls a likely misspelling is
the one the others do. A topic close to a declared or recorded one is a
likely misspelling even when e-mails name it: the refusal asks only that
(an earlier send or an events import with the typo must not make it pass).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..errors import likely
from .mailed import MailedNames
from .models import Event, Preference

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: How alike (difflib's ratio) an unknown topic must be to a known one to count as its misspelling. Stricter
#: than difflib's 0.6, because the plan refuses a campaign on it: 0.8 catches a letter dropped, doubled or
#: swapped ('promotion', 'newsleter': 0.95) but leaves alone a new topic that 0.6 would refuse as a
#: misspelling ('promo' is 0.67 like 'promotions', 'offers' 0.6 like 'partner-offers'). The warnings use
#: the same cutoff, so they call a topic misspelt exactly when the plan would refuse it.
CLOSE = 0.8
P, E = Preference.__table__, Event.__table__


def unknown_topics(engine: Engine, named: Iterable[str], declared: Iterable[str],
                   misspelt_only: bool = False, mailed: MailedNames | None = None) -> dict[str, str | None]:
    """Those of ``named`` that are not known, each with the known topic it most likely misspells (None: a new topic).

    ``declared`` are the topics of ``[topics]`` in ``relmail.toml``; ``*``
    (every topic) is always known. Suggestions come from the declared and
    recorded topics: listing every e-mail event's topic would read the whole
    events table. ``misspelt_only``: the topics close to a declared or
    recorded one, what a plan refuses, whether or not an e-mail names them:
    an events import or an earlier send with the misspelt topic must not
    make the misspelling pass (declaring it under ``[topics]`` does); the
    e-mail events are then not read at all. ``mailed``: the look at the
    newest e-mails to ask (one shared with the caller's other names).
    """
    declared = set(declared)
    asked = set(named) - declared - {"*"}
    if not asked:
        # Every topic is declared: nothing to look up (the consent records' topics are a scan of
        # every customer's preferences, a fraction of a second per million, before every plan).
        return {}
    with engine.connect() as conn:
        recorded = set(conn.execute(select(P.c.topic).distinct()).scalars()) - {"*"}
        known = declared | recorded
        meant = {topic: likely(topic, known, CLOSE) for topic in sorted(asked - recorded)}
        if misspelt_only:
            return {topic: close for topic, close in meant.items() if close is not None}
    if meant:
        # The events table has no index on topic: an EXISTS over all of them reads every event for a topic no e-mail has.
        for seen in (mailed or MailedNames(engine)).which({topic: E.c.topic == topic for topic in meant}):
            del meant[seen]
    return meant


def not_known(topic: str, mailed: MailedNames | None = None) -> str:
    """How every message says that ``topic`` is not known (``mailed``: the e-mails asked, which would have made it known)."""
    emails = f" or e-mail{mailed.among()}" if mailed is not None else ""
    return f"topic '{topic}' is not declared under [topics] in relmail.toml and no consent record{emails} names it"
