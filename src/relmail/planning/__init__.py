"""The plan stage: audience → features → score → rules → arbitration → hold-outs → decisions.

:func:`plan` (in :mod:`.run`) is the library API behind ``relmail plan``;
:mod:`.partition` decides one range of customers, :mod:`.arbitration` picks
among messages, :mod:`.decisions` writes the ledger's decision rows,
:mod:`.gate` renders samples before anything is sent, :mod:`.output` writes
the files CI reads, and :mod:`.why` explains a decision.
"""

from .run import PlanOptions, PlanResult, plan, run_id_for

__all__ = ["PlanOptions", "PlanResult", "plan", "run_id_for"]
