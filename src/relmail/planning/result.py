"""What a plan is asked (:class:`PlanOptions`) and what it decided (:class:`PlanResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..rules import REASON_CODES
from ..windows import Window
from . import decisions as dec
from .consent_warning import PlanWarning
from .partition import MessageSummary

if TYPE_CHECKING:
    from ..score.transparent import Scorer
    from ..store import locks


@dataclass
class PlanResult:
    """What a plan decided; :attr:`decisions` holds every row (written or, in a dry run, not)."""

    run_id: str
    campaign: str
    window: Window
    as_of: datetime
    seed: int
    dry_run: bool
    replan: bool
    decisions: dec.Decisions
    messages: list[MessageSummary]
    #: Decisions of an earlier plan of this window kept unchanged (delivered or in flight).
    kept: int = 0
    #: Message id → the customers of those kept decisions (they are not in :attr:`decisions`).
    kept_pairs: dict[str, set[str]] = field(default_factory=dict)
    #: Replaced decisions of an earlier plan (replan / dry run over an existing run).
    replaced: int = 0
    #: E-mails that failed to render in the render gate (:func:`relmail.planning.gate.render_sample`).
    render_errors: int = 0
    #: The gate's :class:`~relmail.planning.gate.RenderProblem` list.
    render_problems: list = field(default_factory=list)
    #: The gate's :class:`~relmail.planning.gate.VariantCheck` per template variant: recipients, renders, failures.
    render_checks: list = field(default_factory=list)
    #: Message id → trained model used (version, outcome, features the plan could not provide).
    models: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: Customer ranges the audience was decided in (1: all at once, in the planning process).
    partitions: int = 1
    #: Messages whose audience one consent rule took (almost) entirely, with the likely cause.
    warnings: list[PlanWarning] = field(default_factory=list)
    #: When the plan was made, on relmail's clock (the written decisions' ``created_at``): what consent
    #: history it can have seen (:func:`relmail.store.consent_log.change_in_force`).
    decided_at: datetime | None = None

    @property
    def totals(self) -> dict[str, int]:
        out = {"audience": 0, "send": 0, "holdout": 0, "suppress": 0, "kept": self.kept}
        for m in self.messages:
            for k in ("audience", "send", "holdout", "suppress"):
                out[k] += getattr(m, k)
        return out

    @property
    def decided(self) -> int:
        """The run's decisions: those made now and those a replan kept (sends delivered or in flight)."""
        t = self.totals
        return t["send"] + t["holdout"] + t["suppress"] + t["kept"]

    @property
    def sends(self) -> int:
        """The run's sends, a replan's kept ones included: what ``--min-sends`` counts."""
        return self.totals["send"] + self.kept

    @property
    def suppression_rate(self) -> float:
        """Suppressed of the whole run's decisions, a replan's kept ones included: what the gate and every output use."""
        decided = self.decided
        return self.totals["suppress"] / decided if decided else 0.0

    def reason_counts(self) -> dict[str, int]:
        """Decisions per reason code over all messages, in the registry's order."""
        out = {code: sum(m.reasons.get(code, 0) for m in self.messages) for code in REASON_CODES}
        return {code: n for code, n in out.items() if n}

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what ``relmail plan --json`` prints)."""
        out = {
            "run": self.run_id,
            "campaign": self.campaign,
            "window": self.window.key,
            "as_of": self.as_of.isoformat(),
            "dry_run": self.dry_run,
            "replan": self.replan,
            "totals": self.totals,
            "suppression_rate": round(self.suppression_rate, 4),
            "reasons": self.reason_counts(),
            "render_errors": self.render_errors,
            "render_problems": [p.as_dict() for p in self.render_problems],
            "render_checks": [c.as_dict() for c in self.render_checks],
            "messages": [m.__dict__ for m in self.messages],
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "partitions": self.partitions,
            "warnings": [w.as_dict() for w in self.warnings],
        }
        if self.models:
            out["models"] = self.models
        return out


def run_id_for(campaign: str, window: str) -> str:
    return f"{campaign}:{window}"


@dataclass(frozen=True)
class PlanOptions:
    """How to plan: the options of :func:`plan` (and of ``relmail plan``), each with its default."""

    #: The plan's "now"; default: now, kept within the window (:meth:`relmail.windows.Window.default_as_of`).
    as_of: datetime | None = None
    #: Compute everything, write nothing (and take no lock).
    dry_run: bool = False
    #: Replace the decisions of an existing run that were not delivered yet.
    replan: bool = False
    #: With window ``auto``: ``weekly``, ``daily`` or ``monthly`` (default: the campaign's ``schedule``).
    cadence: str | None = None
    #: The current time for window names and the default as-of (default: :func:`relmail.windows.current_time`).
    now: datetime | None = None
    #: Replaces the campaign's scorer; without it, a message with a trained model is scored by it.
    scorer: Scorer | None = None
    #: Decide only these customers of the audience (dry runs only): what ``relmail why`` previews. Customers
    #: sharing an address with them are decided too (one e-mail per address); the decisions are theirs
    #: only, the message counts include the others.
    customers: tuple[str, ...] | None = None
    #: Worker processes (None: one per core); see :func:`plan`.
    workers: int | None = None
    #: ``local``, ``dask`` or an :class:`relmail.executors.Executor`.
    executor: Any = "local"
    #: The Dask scheduler of ``executor="dask"``.
    scheduler: str | None = None
    #: False: drop the logged features from the result as each range is written (they are in the ledger).
    keep_features: bool = True
    #: ``progress(decided, audience)``: once the audience is known, then after each range.
    progress: Callable[[int, int], None] | None = None
    #: The run's lock, when the caller holds it already (``send()`` plans under its own lock).
    lock: locks.HeldLock | None = None
    #: How long a silent holder keeps the run's lock (default: ``[schedule] lock_timeout_minutes``).
    lock_timeout: timedelta | None = None
