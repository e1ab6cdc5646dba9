"""Reasons fit for a log: a provider's answer without the recipient's address.

SMTP servers and ESPs often quote the recipient in their answer (``451 4.3.0
<kim@example.com>: try later``). Summaries, warnings and errors that a
scheduler or CI keeps in its log name customers by id only, so the address is
replaced; the answer as given stays in the ledger (``deliveries.last_error``).
The same answer to many recipients then also counts as one reason.
"""

from __future__ import annotations

import re

_ADDRESS = re.compile(r"<?[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*>?")


def without_addresses(reason: str) -> str:
    """``reason`` with every e-mail address in it replaced by ``<address>``."""
    return _ADDRESS.sub("<address>", reason)
