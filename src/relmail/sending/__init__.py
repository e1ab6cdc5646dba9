"""The send stage: claim → render → mark the point of no return → hand over → record, exactly once.

:func:`send` (in :mod:`.run`) is the library API behind ``relmail send``;
:mod:`.ledger` holds every delivery's state and :mod:`.workers` runs senders
in parallel on an executor.
"""

from .run import SendOptions, SendResult, send

__all__ = ["SendOptions", "SendResult", "send"]
