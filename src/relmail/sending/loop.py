"""The sending loop: claim → render → mark the point of no return → hand over → record.

:func:`loop` is run by a single-process send and by every parallel sender
(:mod:`relmail.sending.workers`); :class:`SendResult` is what an invocation
did. The ledger (:mod:`relmail.sending.ledger`) is the only state: killing the
process at any moment leaves every delivery in a state the next run resumes.
The mark is confirmed before each hand-over (:mod:`relmail.sending.marker`);
when the database stops answering, the loop retries the database, never an
e-mail, and stops within a bound (:mod:`relmail.sending.reconnect`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select, update

from ..delivery.base import STOPPED, DeliveryAborted, delivery_key, utcnow
from ..errors import DeferredShareExceeded, DeliveryError, RenderErrorsExceeded
from ..features.derived import complained, hard_bounced
from ..features.queries import DELIVERY_TYPES
from ..feedback.apply import apply_events
from ..feedback.events import FeedbackEvent, relmail_ids
from ..rules import RENDER_ERROR
from ..store.mailboxes import mates as mailbox_mates
from ..store.models import Customer, Decision, Event, Preference
from ..windows import Window
from . import ledger
from .batcher import Batcher, outgoing
from .marker import Marker
from .reconnect import DatabaseRetry

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..project import Project

DEC = Decision.__table__
#: What became of the e-mails an invocation attempted: confirmed by the provider; handed over with no reply
#: (settled as delivered, never resent); to be retried; refused for good; given up (deadline, template);
#: not sent on purpose, the customer having opted out, complained or hard-bounced after the plan.
OUTCOMES = ("accepted", ledger.UNCERTAIN_OUTCOME, "deferred", "rejected", "failed", ledger.WITHDRAWN)


@dataclass
class SendResult:
    run_id: str
    planned_now: bool
    dry_run: bool
    test_to: str | None
    #: Deliveries of the run by state after this invocation (the ledger's view).
    states: dict[str, int] = field(default_factory=dict)
    #: What this invocation did: rendered, handed_over (claimed), and the outcomes (:data:`OUTCOMES`).
    done: dict[str, int] = field(default_factory=dict)
    #: (customer, message, reason) for every e-mail whose template failed.
    render_errors: list[tuple[str, str, str]] = field(default_factory=list)
    recovered: dict[str, int] = field(default_factory=dict)
    next_retry_at: datetime | None = None
    seconds: float = 0.0
    #: The window sent (``auto`` resolved).
    window: Window | None = None
    #: Why a stale run lock was taken over (its holder crashed), if it was.
    lock_taken_over: str | None = None
    #: Processes that rendered and delivered (1: this one).
    workers: int = 1
    #: Deliveries of the run settled as delivered without the provider's reply (the ledger's view).
    uncertain: int = 0
    #: The most common reasons of the run's deferred deliveries, with how many each.
    deferred_reasons: dict[str, int] = field(default_factory=dict)
    #: The send was asked to stop (:mod:`relmail.sending.stopping`) and returned after recording its batch.
    stopped: bool = False
    #: ESP listings (SendGrid, Brevo) lifted before sending for customers who opted in again
    #: (:mod:`relmail.feedback.resubscribe`), and the lifts the ESP refused: ``{"customer_id", "listing", "error"}`` each.
    resubscribed: int = 0
    resubscribe_failed: list[dict[str, Any]] = field(default_factory=list)
    #: The ESP those listings are at ("SendGrid", "Brevo"); None when the adapter's ESP keeps none relmail lifts.
    resubscribe_provider: str | None = None

    @property
    def outcomes(self) -> dict[str, int]:
        """This invocation's e-mails by outcome, every one of :data:`OUTCOMES` present."""
        return {k: self.done.get(k, 0) for k in OUTCOMES}

    @property
    def deferred_share(self) -> float:
        """The share of the e-mails this invocation attempted (claimed) that ended deferred."""
        attempted = self.done.get("handed_over", 0)
        return self.done.get("deferred", 0) / attempted if attempted else 0.0

    def check_deferred(self, max_share: float) -> None:
        """Raise :class:`~relmail.errors.DeferredShareExceeded` (exit 14) if more than ``max_share`` was deferred.

        The e-mails stay deferred in the ledger and the next run of the same
        command retries them; the error tells a scheduler that this run
        mostly did not deliver.
        """
        if self.dry_run or self.test_to or self.deferred_share <= max_share:
            return
        deferred, attempted = self.done.get("deferred", 0), self.done.get("handed_over", 0)
        why = next(iter(self.deferred_reasons), None)
        retry = f"; retried by the next run from {self.next_retry_at:%Y-%m-%d %H:%M} UTC" if self.next_retry_at else ""
        raise DeferredShareExceeded(
            f"{deferred:,} of the {attempted:,} e-mails this run attempted were deferred ({self.deferred_share:.0%}, "
            f"more than --max-deferred-share {max_share:g}){f', mostly: {why}' if why else ''}{retry}")

    def check_render_errors(self, max_errors: int) -> None:
        """Raise :class:`~relmail.errors.RenderErrorsExceeded` (exit 19) if more than ``max_errors`` e-mails failed to render."""
        if self.dry_run or self.test_to or len(self.render_errors) <= max_errors:
            return
        customer, message, reason = self.render_errors[0]
        raise RenderErrorsExceeded(
            f"{len(self.render_errors):,} e-mail(s) failed to render and were not sent (more than --max-render-errors "
            f"{max_errors}); first: customer {customer}, message {message}: {reason}")

    def summary(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "window": self.window.key if self.window else None,
            "lock_taken_over": self.lock_taken_over,
            "workers": self.workers,
            "planned_now": self.planned_now,
            "dry_run": self.dry_run,
            "test_to": self.test_to,
            "states": self.states,
            "done": self.done,
            "outcomes": self.outcomes,
            "uncertain": self.uncertain,
            "deferred_share": round(self.deferred_share, 4),
            "deferred_reasons": self.deferred_reasons,
            "render_errors": [{"customer": c, "message": m, "reason": r} for c, m, r in self.render_errors],
            "recovered": self.recovered,
            "stopped": self.stopped,
            "resubscribed": self.resubscribed,
            "resubscribe_failed": self.resubscribe_failed,
            "next_retry_at": self.next_retry_at.isoformat() if self.next_retry_at else None,
            "seconds": round(self.seconds, 3),
            "rate_per_second": round(self.done.get("accepted", 0) / self.seconds, 1) if self.seconds else 0.0,
        }


@dataclass(frozen=True)
class SendJob:
    """One run's sending as the loop sees it: the same in a single-process send and in every parallel sender."""

    project: Project
    engine: Engine
    run_id: str
    #: Renders the run's claimed decisions (its templates compiled once).
    batcher: Batcher
    #: Message id → topic, for the ``email_sent`` events and the opt-out check.
    topics: dict[str, str | None]
    clock: Callable[[], datetime]
    #: A deferral whose retry falls after this is recorded ``failed``.
    deadline: datetime
    #: E-mails per claim.
    batch_size: int
    #: Only these customers' e-mails (None: all).
    only_customers: Sequence[str] | None = None


def loop(job: SendJob, adapter, result: SendResult, *, limit: int | None, after_batch: Callable[[], None],
         progress: Callable[[dict[str, int]], None] | None = None, stop: Callable[[], bool] = lambda: False) -> None:
    """Claim, render, mark, hand over and record batches until nothing is due (or ``limit``/``stop``).

    The one sending loop, run by a single-process send and by each worker.
    Every batch is its own short transactions (claim, mark, record), so
    several processes take turns on SQLite's single writer without waiting
    on each other's rendering or network time. ``stop`` is also the
    adapter's :attr:`~relmail.delivery.base.Adapter.stopping`: once it is
    true, the batch in hand makes no further request and waits for no retry,
    and is recorded before the loop returns.
    """
    marker = Marker(job.engine, job.clock, getattr(adapter, "clock", utcnow))
    adapter.on_commit, adapter.on_answer = marker, marker.answer
    adapter.stopping = stop
    retry = DatabaseRetry(job.engine)
    try:
        while (limit is None or result.done.get("handed_over", 0) < limit) and not stop():
            want = job.batch_size if limit is None else min(job.batch_size, limit - result.done.get("handed_over", 0))
            claims = retry.run("claiming a batch", lambda want=want: ledger.claim(
                job.engine, job.run_id, job.clock(), want, customers=job.only_customers,
                message_id=job.batcher.message_id, adapter=adapter.name or None, tagged=adapter.tags_return_path))
            if not claims:
                break
            if deliver(job, adapter, claims, result, retry=retry):
                retry.progress()
            else:
                # A mark failed: its e-mails and the rest of the batch went back to
                # 'planned'. Wait for the database, then try with new mark connections.
                retry.failed("recording the point of no return", marker.failure or "mark failed", marker.cause)
                marker.reset()
            retry.run("refreshing the lock", after_batch)
            if progress is not None:
                progress(dict(result.done))
        result.stopped = result.stopped or stop()
    except BaseException:
        # Interrupted at once (the same signal again): nothing queued may leave while the adapter closes.
        adapter.stopping = lambda: True
        raise
    finally:
        adapter.close()
        marker.close()


def deliver(job: SendJob, adapter, claims, result: SendResult, *, retry: DatabaseRetry | None = None) -> bool:
    """Render, hand over and record one claimed batch; False if e-mails were withheld (a mark failed)."""
    engine, run_id, batcher, clock = job.engine, job.run_id, job.batcher, job.clock
    retry = retry or DatabaseRetry(engine)
    by_pair = {(c.customer_id, c.message_id): c for c in claims}
    outcomes: list[ledger.Settlement] = []
    # The plan may be days old: whoever opted out, complained or bounced
    # since is not mailed, whatever the plan said.
    blocked = retry.run("checking opt-outs", lambda: _blocked_now(engine, list(by_pair), job.topics))
    for pair, reason in blocked.items():
        outcomes.append(ledger.Settlement(by_pair.pop(pair).delivery_id, ledger.WITHDRAWN, reason=reason))
    emails, errors = retry.run("rendering", lambda: batcher.render(list(by_pair)))
    if errors:
        retry.run("recording render errors", lambda: _mark_render_errors(engine, run_id, errors))
        for pair, reason in errors.items():
            result.render_errors.append((pair[0], pair[1], reason))
            outcomes.append(ledger.Settlement(by_pair[pair].delivery_id, "failed", reason=f"{RENDER_ERROR}: {reason}"))
    messages = [outgoing(email, ctx, job.project.settings, delivery_key(by_pair[pair].delivery_id), run_id,
                         batcher.topic(pair[1]))
                for pair, (email, ctx) in emails.items()]
    result.done["rendered"] = result.done.get("rendered", 0) + len(messages)
    aborted = None
    try:
        answers = adapter.send(messages) if messages else []
    except DeliveryAborted as exc:
        answers, aborted = exc.results, exc
    withheld: dict[str, list[int]] = {}
    now, adapter_now = clock(), getattr(adapter, "clock", utcnow)()
    for answer in answers:
        settled = ledger.settlement(answer, now, adapter_now)
        if settled is None:
            withheld.setdefault(answer.reason, []).append(int(answer.key[1:]))
        else:
            outcomes.append(settled)
    counts = retry.run("recording the answers", lambda: ledger.record(engine, outcomes, clock(), job.topics, deadline=job.deadline))
    told = provider_feedback(adapter.name, messages, answers, now)
    if told:
        retry.run("recording the provider's opt-outs", lambda: apply_events(engine, told, source="esp-send"))
    for status, n in counts.items():
        result.done[status] = result.done.get(status, 0) + n
    for reason, ids in withheld.items():
        # Certainly not handed over (a failed mark, or a stop): due again as if never tried.
        retry.run("returning withheld e-mails", lambda ids=ids, reason=reason: ledger.release(engine, ids, clock(), reason))
        kind = "stopped" if reason == STOPPED else "withheld"
        result.done[kind] = result.done.get(kind, 0) + len(ids)
    result.done["handed_over"] = result.done.get("handed_over", 0) + len(claims) - sum(map(len, withheld.values()))
    if aborted is not None:
        raise DeliveryError(f"sending stopped, the ledger is consistent and 'relmail send' resumes: {aborted}")
    return not set(withheld) - {STOPPED}


def provider_feedback(provider: str, messages: Sequence, answers: Sequence, now: datetime) -> list[FeedbackEvent]:
    """The opt-outs the provider's refusals tell of (:attr:`~relmail.delivery.base.Result.feedback`), as its events.

    Mandrill refuses an address on its denylist because the recipient
    complained or unsubscribed earlier: recorded as that complaint or
    unsubscribe, once per delivery, as the provider's webhook would. It
    names the customer but no run or message: it was about an earlier
    e-mail, not this run's, which never reached the recipient (the run's
    report would otherwise count it as an unsubscribe from this e-mail).
    """
    by_key = {m.key: m for m in messages}
    return [
        FeedbackEvent(type=a.feedback, occurred_at=now, recipient=by_key[a.key].to, provider=provider,
                      provider_event_id=f"send-refusal:{a.key}", customer_id=relmail_ids(by_key[a.key].metadata)["customer_id"],
                      reason=a.reason)
        for a in answers if a.status == "rejected" and a.feedback and a.key in by_key
    ]


def _blocked_now(engine, pairs: list[tuple[str, str]], topics: dict[str, str | None]) -> dict[tuple[str, str], str]:
    """Pairs that must not be mailed any more, with the reason: checked just before sending.

    The customer's own opt-outs, complaints and hard bounces, and those of the
    other customer ids with the same address, read as the plan reads them
    (:mod:`relmail.planning.shared_mailbox`): the mailbox's latest dated consent
    per topic, any complaint, a hard bounce with nothing delivered to the
    mailbox since; and a customer a complete export removed from the shop.
    """
    P, E, C = Preference.__table__, Event.__table__, Customer.__table__
    customers = sorted({c for c, _ in pairs})
    with engine.connect() as conn:
        # Through the partial index of the few removed customers.
        removed = set(conn.execute(select(C.c.id).where(C.c.removed_at.isnot(None), C.c.id.in_(customers))).scalars())
        mates = mailbox_mates(conn, customers)
        everyone = sorted(set(customers).union(*mates.values()))
        # (updated_at, opted out, customer) per (customer, topic): the latest of a mailbox is its max, an opt-out
        # winning a tie.
        said: dict[tuple[str, str], tuple] = {}
        for cid, topic, opted_in, at in conn.execute(
            select(P.c.customer_id, P.c.topic, P.c.opted_in, P.c.updated_at).where(P.c.customer_id.in_(everyone))
        ):
            said[(cid, topic)] = (at, not opted_in, cid)
        # Not only events dated after the plan's as-of: a bounce mailbox read or an ESP export imported
        # after the plan brings events dated before it that the plan never saw. The plan's own rules
        # decide again, with their own definitions (COMPLAINED, HARD_BOUNCE: features.derived).
        last: dict[str, dict[str, Any]] = {}
        for cid, kind, at in conn.execute(
            select(E.c.customer_id, E.c.type, func.max(E.c.occurred_at)).where(
                E.c.customer_id.in_(everyone), E.c.type.in_(("email_bounced_hard", "email_complained")),
            ).group_by(E.c.customer_id, E.c.type)
        ):
            last.setdefault(cid, {})[kind] = at
        # Deliveries to the mailbox count against a bounce under another of its ids.
        bounced = everyone if any("email_bounced_hard" in kinds for kinds in last.values()) else []
        delivered = dict(conn.execute(
            select(E.c.customer_id, func.max(E.c.occurred_at)).where(
                E.c.customer_id.in_(bounced), E.c.type.in_(DELIVERY_TYPES)).group_by(E.c.customer_id)
        ).all()) if bounced else {}
    since = _suppressed_since(last, delivered)
    # Another id's hard bounce reads against what reached the mailbox under any of its ids.
    reached: dict[str, Any] = {}
    for customer in customers:
        box = [customer, *mates.get(customer, ())]
        latest = max((delivered[c] for c in box if c in delivered), default=None)
        if latest is not None:
            reached.update(dict.fromkeys(box, latest))
    since_box = _suppressed_since(last, reached)
    opted_out: dict[str, set[str]] = {}
    for (cid, topic), (_, out, _) in said.items():
        if out:
            opted_out.setdefault(cid, set()).add(topic)
    blocked = {}
    for customer, message in pairs:
        if customer in removed:
            blocked[(customer, message)] = f"{ledger.SUPPRESSED}: removed from the shop after the plan (REMOVED_FROM_SHOP)"
            continue
        box = [customer, *mates.get(customer, ())]
        own = opted_out.get(customer, set())
        if "*" in own or topics.get(message) in own:
            blocked[(customer, message)] = f"{ledger.OPTED_OUT}: the customer opted out after the plan"
            continue
        latest = [max((said[(c, t)] for c in box if (c, t) in said), default=None) for t in {"*", topics.get(message)}]
        other = next((word[2] for word in latest if word is not None and word[1]), None)
        if other is not None:
            blocked[(customer, message)] = f"{ledger.OPTED_OUT}: the same address opted out under customer {other} after the plan"
            continue
        if customer in since:
            blocked[(customer, message)] = f"{ledger.SUPPRESSED}: {since[customer]} after the plan"
            continue
        # Another id's complaint first, then its hard bounce.
        other = sorted((since_box[c] != "email_complained", c) for c in box[1:] if c in since_box)
        if other:
            who = other[0][1]
            blocked[(customer, message)] = f"{ledger.SUPPRESSED}: {since_box[who]} under customer {who} (the same address) after the plan"
    return blocked


def _suppressed_since(last: dict[str, dict[str, datetime]], delivered: dict[str, datetime]) -> dict[str, str]:
    """Customer -> the event type that blocks them now, by the plan rules' definitions of COMPLAINED and HARD_BOUNCE.

    ``last``: each customer's latest ``email_bounced_hard`` / ``email_complained``; ``delivered``: the latest
    delivery, open or click. Times become ages (seconds before the latest of them), as the features hold them.
    """
    ids = sorted(last)
    if not ids:
        return {}
    latest = max([t for kinds in last.values() for t in kinds.values()] + list(delivered.values()))

    def ages(times) -> np.ndarray:
        return np.array([np.nan if t is None else (latest - t).total_seconds() for t in times], dtype=float)

    spam = complained([1 if "email_complained" in last[c] else 0 for c in ids])
    dead = hard_bounced(ages(last[c].get("email_bounced_hard") for c in ids), ages(delivered.get(c) for c in ids))
    return {c: "email_complained" if s else "email_bounced_hard" for c, s, d in zip(ids, spam, dead, strict=True) if s or d}


def _mark_render_errors(engine, run_id: str, errors: dict[tuple[str, str], str]) -> None:
    """The decision records the failure: suppressed with RENDER_ERROR, so reports and why show it."""
    from sqlalchemy import bindparam

    with engine.begin() as conn:
        conn.execute(
            update(DEC)
            .where(DEC.c.run_id == run_id, DEC.c.customer_id == bindparam("b_c"), DEC.c.message_id == bindparam("b_m"))
            .values(action="suppress", reasons=DEC.c.reasons + " " + RENDER_ERROR),
            [{"b_c": c, "b_m": m} for (c, m) in errors],
        )
