"""Bounces that refuse the sender or the message, not the mailbox: the ``bounced_blocked`` kind.

REPEATED_SOFT_BOUNCE rests an address whose mailbox keeps failing. A
receiving server that refuses relmail's e-mail for who sent it (reputation,
a block list, DMARC, a rate limit), for its content or for its size says
nothing about the mailbox: counting such a refusal would rest every customer
at a provider that blocks the shop for a week. These bounces are stored as
``email_bounced_blocked``: visible in ``relmail report``, read by no rule.

Each ESP names them in its own words (see its provider module); where only
the receiving server's reply is at hand, its RFC 3463 enhanced status
decides: :data:`SENDER_SIDE`.
"""

from __future__ import annotations

import re

BLOCKED = "bounced_blocked"
SOFT = "bounced_soft"

#: RFC 3463 (subject, detail) of statuses about the message or its sender, not the mailbox:
#: X.2.3 message length exceeds an administrative limit, X.3.4 message too big for the
#: system, X.6.x message content or media, X.7.x security or policy. (X.2.2, a full
#: mailbox, is the mailbox's.)
SENDER_SIDE = ((2, 3), (3, 4), (6, None), (7, None))

# Not inside a longer dotted number: "192.0.2.30" holds no status.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")


def status_in(text: str | None, failures_only: bool = False) -> str | None:
    """The first RFC 3463 status in ``text`` (``failures_only``: the first 4.x.x or 5.x.x)."""
    for found in _STATUS.finditer(text or ""):
        if not failures_only or found.group(1) != "2":
            return f"{found.group(1)}.{int(found.group(2))}.{int(found.group(3))}"
    return None


def sender_side(status: str | None) -> bool:
    """Whether an RFC 3463 status (``5.7.1``) is about the message or the sender (:data:`SENDER_SIDE`)."""
    if not status:
        return False
    _, subject, detail = (int(n) for n in status.split("."))
    return any(subject == s and (d is None or detail == d) for s, d in SENDER_SIDE)


def soft_or_blocked(*texts: str | None) -> str:
    """``bounced_blocked`` when the first failure status in ``texts`` is sender-side, else ``bounced_soft``."""
    for text in texts:
        status = status_in(text, failures_only=True)
        if status:
            return BLOCKED if sender_side(status) else SOFT
    return SOFT
