"""The known name a misspelt one most likely means, and the one way every message suggests it.

Campaign and segment keys, segment conditions, adapter settings and consent
topics all end an error or warning about an unknown name the same way
(``; did you mean 'frequency_cap'?``), so a reader learns one phrase and a
script can look for one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

#: How alike (difflib's ratio) a name must be to a known one to be suggested: difflib's own default. A key or
#: condition name that is unknown is refused whatever the suggestion, so a loose match only costs a wrong guess.
#: Consent topics use a stricter cutoff of their own (relmail.store.topics.CLOSE): there the match decides.
CUTOFF = 0.6


def likely(name: Any, known: Iterable[str], cutoff: float = CUTOFF) -> str | None:
    """The one of ``known`` that ``name`` most likely misspells, or None when none is close enough."""
    close = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(meant: str | None) -> str:
    """``; did you mean 'meant'?`` to end a message with, or nothing when nothing is meant."""
    return f"; did you mean '{meant}'?" if meant is not None else ""
