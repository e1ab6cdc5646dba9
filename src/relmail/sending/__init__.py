"""The send stage: claim → render → mark the point of no return → hand over → record, exactly once.

:func:`send` (in :mod:`.run`) is the library API behind ``relmail send``;
:mod:`.ledger` holds every delivery's state and :mod:`.workers` runs senders
in parallel on an executor; a :class:`StopRequest` stops a send after it
recorded the e-mails in hand.
"""

from .run import SendOptions, SendResult, send
from .stopping import StopRequest

__all__ = ["SendOptions", "SendResult", "StopRequest", "send"]
