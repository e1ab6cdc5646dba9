"""How rules and scorers name feature columns: generic ones, and a message's own (``k.<suffix>``).

A rule or a scorer is written once for every message, so it names a
message's own column ``k.<suffix>`` (``k.owns_product``). In a plan's
:class:`~relmail.features.FeatureFrame` that column is
``<message id>.<suffix>``, and a decision logs it as ``<suffix>``. A
generic column (``sends_7``) has the same name in all three places.
"""

from __future__ import annotations

#: The prefix of a message's own column in a rule's or scorer's column list.
OWN = "k."


def own(suffix: str) -> str:
    """The name a rule or scorer uses for the message's own column ``suffix``."""
    return OWN + suffix


def frame_key(name: str, message_id: str) -> str:
    """The frame column of ``name`` for message ``message_id``."""
    return f"{message_id}.{name[len(OWN):]}" if name.startswith(OWN) else name


def logged_key(name: str) -> str:
    """The key ``name`` is logged under in a decision's features."""
    return name[len(OWN):] if name.startswith(OWN) else name
