"""Whether the receiving mail server vouches for a message's From domain (RFC 8601 Authentication-Results).

A hand-written unsubscribe request carries no token: the only proof that it
comes from the address in its ``From`` is what the shop's own receiving
server checked and wrote into ``Authentication-Results``. A sender can write
such headers too, so only those whose authserv-id is the one the project
names (``[unsubscribe] authserv_id``) count; RFC 8601 section 5 has the
receiving server remove incoming headers that claim its id.

The From domain is vouched for when DMARC passed for it (``dmarc=pass
header.from=DOMAIN``) or a DKIM signature of that very domain verified
(``dkim=pass header.d=DOMAIN``, aligned as DMARC's strict mode asks). SPF
alone checks the envelope sender, not ``From``, and does not count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_RESULT = re.compile(r"\b(dkim|dmarc)\s*=\s*([a-z]+)\b", re.I)
_PROPERTY = re.compile(r"\bheader\.(from|d|i)\s*=\s*\"?([^\s;\"]+)", re.I)
_COMMENT = re.compile(r"\([^()]*\)")


def vouched(headers: Iterable[str], authserv_id: str, sender: str) -> str | None:
    """What vouches for ``sender``'s domain (``"DMARC pass"``, ``"DKIM pass"``), or None.

    ``headers``: the message's ``Authentication-Results`` values; only those of
    ``authserv_id`` are read.
    """
    domain = sender.rpartition("@")[2].lower().rstrip(".")
    if not domain or not authserv_id:
        return None
    found: list[str] = []
    for header in headers:
        serv, _, rest = _COMMENT.sub(" ", header).partition(";")
        words = serv.split()  # the authserv-id, and an optional version
        if not words or words[0].lower() != authserv_id.lower():
            continue
        for resinfo in rest.split(";"):
            method = _RESULT.search(resinfo)
            if method is None or method.group(2).lower() != "pass":
                continue
            props = {k.lower(): v.lower().rstrip(".") for k, v in _PROPERTY.findall(resinfo)}
            name = method.group(1).lower()
            if name == "dmarc" and props.get("from") == domain:
                found.append("DMARC pass")
            elif name == "dkim" and (props.get("d") == domain or props.get("i", "").rpartition("@")[2] == domain):
                found.append("DKIM pass")
    # DMARC is the policy's own verdict on From; name it when the server gave one.
    return "DMARC pass" if "DMARC pass" in found else (found[0] if found else None)
