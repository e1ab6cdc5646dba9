"""``relmail why``: every decision for one customer, explained from the decision rows alone.

The explanation reads only the decision rows (score, reasons, logged
features and limits), never the current campaign file or today's data, so
it says what the plan saw when it decided. The rows come from the ledger
(:func:`explain`), from a plan of a window that is not written yet, made for
that one customer as a dry run makes it (:func:`explain_window`), or from a
dry run's JSON Lines file (:func:`explain_plan_file`): the same rows, so the
same sentences.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..campaigns import Campaign, load_campaign
from ..errors import NotFound
from ..feedback.events import STORE_TYPES
from ..rules import ARBITRATION_LOST, HOLDOUT, REASON_CODES, RENDER_ERROR, RULES, SHARED_ADDRESS, SHARED_BUDGET
from ..rules.address_suppressed import AddressSuppressed
from ..rules.base import plural, when_and_source
from ..rules.consent import NoConsent
from ..rules.hard_bounce import HardBounce
from ..rules.invalid_address import InvalidAddress
from ..rules.shared_complaint import SharedComplaint
from ..rules.shared_hard_bounce import SharedHardBounce
from ..rules.shared_opt_out import SharedOptOut
from ..rules.unsubscribed import Unsubscribed, decided_by_preference
from ..store.addresses import address_problem
from ..store.customer_rows import latest_run
from ..store.models import Customer, Decision, Delivery, Event, Run
from ..windows import current_time, resolve_window
from .opt_out import CONSENT, opt_outs_behind
from .output import plan_file_rows
from .pending import NOT_SENT
from .run import plan
from .runs import resolve_run

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..project import Project
    from ..windows import Window

DEC, RUNS, DELIVERIES, CUSTOMERS, EVENTS = Decision.__table__, Run.__table__, Delivery.__table__, Customer.__table__, Event.__table__
#: The rules about the same address under another customer id, whose fact ``why`` looks up in the store.
SHARED_CODES = (SharedOptOut.code, SharedHardBounce.code, SharedComplaint.code)
#: What came back of an e-mail, in the run report's words and order (feedback type -> words).
CAME_BACK = {"delivered": "delivered", "bounced_soft": "soft bounce", "bounced_blocked": "blocked (sender refused)",
             "bounced_hard": "hard bounce", "complained": "complained", "unsubscribed": "unsubscribed", "opened": "opened",
             "clicked": "clicked"}


@dataclass
class Explanation:
    """One decision and why."""

    run_id: str
    customer_id: str
    message_id: str
    action: str
    score: float
    expected_value: float
    reasons: list[str]
    #: (reason code, sentence) per reason, in the order recorded.
    because: list[tuple[str, str]]
    #: (component, contribution), largest first; empty when a hard rule decided.
    contributions: list[tuple[str, float]]
    features: dict[str, Any] = field(default_factory=dict)
    #: What the message's trained model said (see :func:`model_facts`); None when it had none.
    model: dict[str, Any] | None = None
    #: The e-mail's delivery as the ledger holds it now (``status``, ``error``, ``attempts``, ``adapter``,
    #: ``tagged`` (sent with a VERP return path; None: not recorded), ``updated_at``, and ``came_back``: what
    #: the provider, the bounce mailbox or a link said of it since, see :func:`_came_back`); None before the
    #: send claimed it, and for a preview or a plan file.
    delivery: dict[str, Any] | None = None
    #: For UNSUBSCRIBED: when (``at``) and from where (``source``, None: not recorded) the opt-out came,
    #: as the store says (:mod:`.opt_out`); None for a plan file read without the store.
    opt_out: dict[str, Any] | None = None
    #: For NO_CONSENT where the message's topic was opted out: the same of that opt-out.
    topic_opt_out: dict[str, Any] | None = None
    #: Per SHARED_ reason code (the same address under another customer id): that id (``customer``), when (``at``)
    #: and for an opt-out from where (``source``), as the store says; None for a plan file read without the store.
    shared: dict[str, dict[str, Any]] | None = None
    #: For a customer whose address another customer id has, the opt-in the decision counted: its ``topic`` (``*``:
    #: all e-mail), when (``at``, None: no date) and from where (``source``); None otherwise.
    consent: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "run": self.run_id, "customer_id": self.customer_id, "message_id": self.message_id,
            "action": self.action, "score": round(self.score, 4), "expected_value": round(self.expected_value, 4),
            "reasons": [{"code": c, "explanation": t} for c, t in self.because],
            "contributions": {k: round(v, 4) for k, v in self.contributions},
            "features": self.features,
        }
        if self.model is not None:
            out["model"] = self.model
        if self.delivery is not None:
            out["delivery"] = {**self.delivery, "updated_at": self.delivery["updated_at"].isoformat(),
                               "came_back": [{**e, "first_at": e["first_at"].isoformat()} for e in self.delivery.get("came_back", [])]}
        for key, found in (("opt_out", self.opt_out), ("topic_opt_out", self.topic_opt_out)):
            if found is not None:
                out[key] = {"at": found["at"].isoformat() if found["at"] else None, "source": found["source"]}
        if self.shared is not None:
            out["shared"] = {code: {**found, "at": found["at"].isoformat() if found["at"] else None}
                             for code, found in self.shared.items()}
        if self.consent is not None:
            out["consent"] = {**self.consent, "at": self.consent["at"].isoformat() if self.consent["at"] else None}
        return out


def reason_sentence(code: str, logged: dict[str, Any]) -> str:
    """The sentence for one reason code from a decision's logged features."""
    if code == ARBITRATION_LOST:
        winner = logged.get("lost_to")
        room = plural(float(logged.get("budget") or 0), "e-mail")
        if winner and winner != "budget":
            return f"'{winner}' was worth more to this customer; room for {room} in this run"
        return f"no room left: {room} allowed in this run after the frequency caps"
    if code == SHARED_ADDRESS:
        winner = logged.get("same_address_as")
        who = f"customer {winner}" if winner else "another customer"
        return f"{who} has the same address and gets this message in this run: one e-mail per address"
    if code == SHARED_BUDGET:
        room = plural(float(logged.get("budget") or 0), "e-mail")
        winner, who = logged.get("lost_to"), logged.get("same_address_as")
        went = f": it went to '{winner}'" + (f" under customer {who}" if who else "") if winner else ""
        return (f"the address has room for {room} in this run, counted over every customer id with it{went}; "
                "one budget per address")
    if code == HOLDOUT:
        share = float(logged.get("holdout_share") or 0)
        return f"held out at random ({share:.0%} of who would get it) to measure the true effect"
    if code == RENDER_ERROR:
        return "the e-mail could not be rendered for this customer, so it was not sent" + (
            f": {logged['render_error']}" if logged.get("render_error") else "")
    rule = RULES.get(code)
    return rule.explain(logged) if rule else code


def model_facts(logged: dict[str, Any]) -> dict[str, Any] | None:
    """The model's predictions and top contributions as the decision logged them, or None without a model.

    Contributions are ``u.<feature>`` (to the uplift) or ``p.<feature>`` (to
    P(positive) when the model had no uplift), largest effect first, with the
    feature's logged value.
    """
    if "model_version" not in logged:
        return None
    target = "uplift"
    contributions = []
    for key, value in logged.items():
        if key.startswith(("u.", "p.")) and value is not None:
            target = "uplift" if key.startswith("u.") else "p_positive"
            name = key[2:]
            contributions.append({"feature": name, "value": logged.get(name), "contribution": float(value)})
    contributions.sort(key=lambda c: (-abs(c["contribution"]), c["feature"]))

    def number(key: str) -> float | None:
        value = logged.get(key)
        # The ledger leaves zeros out: a missing prediction is 0; null (NaN) stays unknown.
        return 0.0 if key not in logged else (None if value is None else float(value))

    return {
        "version": int(logged["model_version"]),
        "outcome": logged.get("model_outcome"),
        "p_positive": number("model_p_positive"),
        "uplift": number("model_uplift"),
        # Logged when the plan set the model's uplift aside (TrainedModel.uplift_unfounded).
        "uplift_unused": bool(logged.get("model_uplift_unused")),
        "p_irritation": number("model_p_irritation"),
        "irritation_cost": number("irritation_cost"),
        "expected_value": number("expected_value"),
        "target": target,
        "contributions": contributions,
    }


def format_model(model: dict[str, Any], top: int = 5) -> list[str]:
    """The ``why`` lines for one decision's model facts."""
    outcome = model["outcome"] or "positive outcome"
    if model.get("uplift_unused"):
        uplift = "not used (the training customers' lift cannot be told from zero)"
    elif model["uplift"] is None:
        uplift = "unknown (no hold-outs to learn it)"
    else:
        uplift = f"{model['uplift']:+.4f}"
    lines = [
        f"  model v{model['version']}: P({outcome} | sent) {model['p_positive'] or 0:.4f}, uplift {uplift}, "
        f"P(unsubscribe or complaint) {model['p_irritation'] or 0:.4f} × cost {model['irritation_cost'] or 0:.2f}"
    ]
    parts = []
    for c in model["contributions"][:top]:
        value = c["value"]
        shown = "missing" if value is None else (f"{value:g}" if isinstance(value, (int, float)) else str(value))
        parts.append(f"{c['feature']}={shown} {c['contribution']:+.4f}")
    if parts:
        lines.append(f"  {'uplift' if model['target'] == 'uplift' else f'P({outcome})'} from: {', '.join(parts)}")
    return lines


#: What ``why`` says of a send that no rule held back.
ALL_PASSED = "every rule passed, and it was the best message for this customer in this run"


def because(codes: list[str], logged: dict[str, Any], score: float) -> list[tuple[str, str]]:
    """(code, sentence) per reason code of one decision, from its logged features and its score.

    A decision a hard rule suppressed logs no ``score`` feature (the score
    did not count), but its score was computed and stored with it: a
    sentence about the score (LOW_RELEVANCE) reads that one.
    """
    if "score" not in logged:
        logged = {**logged, "score": score}
    if NoConsent.code in codes and Unsubscribed.code in codes and decided_by_preference(logged):
        # Its own features cannot tell "never opted in" from "opted out of everything": the global rule's can.
        logged = {**logged, "global_opt_out": True}
    return [(c, reason_sentence(c, logged)) for c in codes]


def explanation(run_id: str, customer_id: str, row: dict[str, Any], delivery: dict[str, Any] | None = None,
                erased: bool = False, opt_outs: dict[str, dict[str, Any]] | None = None,
                address_problem: str | None = None) -> Explanation:
    """The :class:`Explanation` of one decision row (ledger or plan file: the same fields), with its delivery if any.

    ``erased``: the customer was erased, which empties the logged features;
    each reason is then the code's general meaning, not a sentence about made-up zeros.
    ``opt_outs``: reason code -> when and from where the opt-out behind it came (:func:`.opt_out.opt_outs_behind`).
    ``address_problem``: why the stored address is invalid (:func:`address_problem_of`), for INVALID_ADDRESS.
    """
    logged = dict(row.get("features") or {})
    if address_problem is not None:
        logged["address_problem"] = address_problem
    opt_outs = opt_outs or {}
    opt_out, topic_opt_out = opt_outs.get(Unsubscribed.code), opt_outs.get(NoConsent.code)
    if opt_out is not None:
        logged["opt_out"] = opt_out
    if topic_opt_out is not None:
        logged["topic_opt_out"] = topic_opt_out
    shared = {c: opt_outs[c] for c in SHARED_CODES if c in opt_outs} or None
    if shared is not None:
        logged["shared"] = shared
    if AddressSuppressed.code in opt_outs:
        logged["suppression"] = opt_outs[AddressSuppressed.code]
    if HardBounce.code in opt_outs:
        logged["bounce"] = opt_outs[HardBounce.code]
    codes = row["reasons"].split() if isinstance(row["reasons"], str) else list(row["reasons"])
    error = (delivery or {}).get("error") or ""
    if RENDER_ERROR in codes and error.startswith(f"{RENDER_ERROR}: "):
        # What failed is the delivery's, recorded when the send rendered it (the plan logged nothing of it).
        logged = {**logged, "render_error": error.removeprefix(f"{RENDER_ERROR}: ")}
    contributions = sorted(
        ((k[2:], float(v)) for k, v in logged.items() if k.startswith("c.") and v is not None),
        key=lambda kv: (-kv[1], kv[0]),
    )
    score = float(row["score"])
    return Explanation(
        run_id=run_id, customer_id=customer_id, message_id=row["message_id"], action=row["action"],
        score=score, expected_value=float(row["expected_value"]), reasons=codes,
        because=[(c, REASON_CODES.get(c, c)) for c in codes] if erased and not row.get("features") else because(codes, logged, score),
        contributions=contributions, features=dict(row.get("features") or {}), model=model_facts(logged), delivery=delivery,
        opt_out=opt_out, topic_opt_out=topic_opt_out, shared=shared, consent=opt_outs.get(CONSENT),
    )


def winners_noted(explanations: list[Explanation]) -> list[Explanation]:
    """One customer's explanations, each ARBITRATION_LOST saying what became of the message it lost to.

    The customer's arbitration picks a message before the address is
    decided as one mailbox: the winner may then go to the address under
    another customer id (SHARED_ADDRESS) or not fit its budget
    (SHARED_BUDGET). Without saying so, "'promo' was worth more" reads as if
    the customer got 'promo', while ``why`` shows it suppressed too.
    """
    by_message = {e.message_id: e for e in explanations}
    out = []
    for e in explanations:
        winner = by_message.get(str(e.features.get("lost_to") or ""))
        if ARBITRATION_LOST in e.reasons and winner is not None and e.features.get("lost_to") != "budget":
            fate = _winners_fate(winner)
            if fate:
                e = replace(e, because=[(c, f"{t}; {fate}" if c == ARBITRATION_LOST else t) for c, t in e.because])
        out.append(e)
    return out


def _winners_fate(winner: Explanation) -> str:
    """What became of the message a decision lost to, when the address's decisions took it from this customer."""
    logged = winner.features
    who = logged.get("same_address_as")
    under = f" under customer {who}" if who else " under another customer id"
    if SHARED_ADDRESS in winner.reasons:
        return f"the address gets '{winner.message_id}'{under} (SHARED_ADDRESS)"
    if SHARED_BUDGET in winner.reasons:
        went = logged.get("lost_to")
        return (f"'{winner.message_id}' did not fit the address's budget, which went to '{went}'{under} (SHARED_BUDGET)"
                if went else f"'{winner.message_id}' did not fit the address's budget (SHARED_BUDGET)")
    return ""


def explain(engine: Engine, customer_id: str, run_id: str | None = None) -> tuple[dict[str, Any], list[Explanation]]:
    """(run facts, explanations) for ``customer_id`` in ``run_id`` or their latest run.

    ``run_id`` may also be ``<campaign>:last`` (see :func:`relmail.planning.runs.resolve_run`).
    """
    with engine.connect() as conn:
        if run_id is None:
            run_id = latest_run(conn, DEC, customer_id)
            if run_id is None:
                raise NotFound(f"no decisions for customer '{customer_id}' in any run: {_absent(conn, customer_id, None)}")
        else:
            run_id = resolve_run(conn, run_id)
        run = conn.execute(select(RUNS).where(RUNS.c.id == run_id)).mappings().first()
        rows = conn.execute(
            select(DEC).where(DEC.c.run_id == run_id, DEC.c.customer_id == customer_id).order_by(DEC.c.id)
        ).mappings().all()
        if not rows:
            raise NotFound(f"customer '{customer_id}' has no decisions in run '{run_id}': {_absent(conn, customer_id, run['as_of'])}")
        deliveries = {r.decision_id: {"status": r.status, "error": r.last_error, "attempts": r.attempts, "adapter": r.adapter,
                                      "tagged": r.return_path_tagged, "updated_at": r.updated_at}
                      for r in conn.execute(select(DELIVERIES.c.decision_id, DELIVERIES.c.status, DELIVERIES.c.last_error,
                                                   DELIVERIES.c.attempts, DELIVERIES.c.adapter,
                                                   DELIVERIES.c.return_path_tagged, DELIVERIES.c.updated_at)
                                            .where(DELIVERIES.c.decision_id.in_([r["id"] for r in rows])))}
        came_back = _came_back(conn, run_id, customer_id)
        for r in rows:
            if r["id"] in deliveries:
                deliveries[r["id"]]["came_back"] = came_back.get(r["message_id"], [])
        # Erasure (relmail customers forget) keeps the decisions but empties their logged features.
        erased = conn.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.id == customer_id)).first() is None
        opt_outs = {} if erased else {
            r["id"]: opt_outs_behind(conn, customer_id, r["reasons"].split(), dict(r["features"] or {}), r["created_at"], run["as_of"])
            for r in rows}
        problem = None if erased else address_problem_of(conn, customer_id, [r["reasons"].split() for r in rows])
    facts = {"run": run_id, "campaign": run["campaign"], "window": run["window"], "as_of": run["as_of"], "source": "ledger",
             "erased": erased}
    return facts, winners_noted([explanation(run_id, customer_id, dict(r), deliveries.get(r["id"]), erased,
                                             opt_outs.get(r["id"]), problem) for r in rows])


def address_problem_of(conn, customer_id: str, codes: list[list[str]]) -> str | None:
    """Why the customer's stored address is invalid, when a decision says INVALID_ADDRESS; "" if it is valid now.

    Worked out from the address at this moment (the decision logged only the
    flag), and never the address itself: ``relmail why`` prints customer ids only.
    """
    if not any(InvalidAddress.code in c for c in codes):
        return None
    address = conn.execute(select(CUSTOMERS.c.email).where(CUSTOMERS.c.id == customer_id)).scalar()
    return None if address is None else (address_problem(address) or "")


def _absent(conn, customer_id: str, as_of: datetime | None) -> str:
    """Why a customer has no decision: the store does not know them, or no message's segments held them (as of ``as_of``)."""
    if conn.execute(select(CUSTOMERS.c.id).where(CUSTOMERS.c.id == customer_id)).first() is None:
        return f"no customer '{customer_id}' in the store (never imported, or erased)"
    how = "a message considers the members of its segments; relmail segments show NAME"
    if as_of is None:
        return f"they were in the audience of no message of any planned run ({how} lists them)"
    when = as_of.astimezone(UTC) if as_of.tzinfo else as_of
    return (f"they were in the audience of none of its messages as of {when:%Y-%m-%d %H:%M} UTC "
            f"({how} --as-of {when:%Y-%m-%dT%H:%M:%SZ} lists them)")


def explain_window(project: Project, engine: Engine, customer_id: str, campaign: str | Campaign, window: str | Window,
                   **options: Any) -> tuple[dict[str, Any], list[Explanation]]:
    """(facts, explanations) for ``customer_id`` in the run of ``campaign`` for ``window``, written or not.

    A written run is explained from the ledger (:func:`explain`). A window
    not planned yet is planned for that one customer as a dry run would
    plan it (:func:`relmail.planning.run.plan` with ``customers``): the same
    features, rules, arbitration and hold-out seed, so the explanations are
    those the written run will give. ``options`` are
    :class:`~relmail.planning.run.PlanOptions` fields (``as_of``, ``now``,
    ``cadence``).
    """
    camp = campaign if isinstance(campaign, Campaign) else load_campaign(project, campaign)
    win = resolve_window(window, project.settings.timezone, cadence=options.pop("cadence", None), campaign=camp,
                         now=options.get("now"))
    with engine.connect() as conn:
        written = conn.execute(select(RUNS.c.id).where(RUNS.c.campaign == camp.name, RUNS.c.window == win.key)).scalar()
    if written is not None:
        return explain(engine, customer_id, written)
    result = plan(project, engine, camp, win, dry_run=True, customers=(customer_id,), workers=1, **options)
    rows = list(result.decisions.records())
    if not rows:
        with engine.connect() as conn:
            absent = _absent(conn, customer_id, result.as_of)
        raise NotFound(f"customer '{customer_id}' is in no audience of campaign '{result.campaign}' for window "
                       f"{result.window.key}: {absent}")
    facts = {"run": result.run_id, "campaign": result.campaign, "window": result.window.key, "as_of": result.as_of,
             "source": "preview"}
    decided_at = current_time()  # the consent history's clock (relmail.store.consent_log.record)
    with engine.connect() as conn:
        opt_outs = [opt_outs_behind(conn, customer_id, _codes(r), dict(r.get("features") or {}), decided_at, result.as_of)
                    for r in rows]
        problem = address_problem_of(conn, customer_id, [_codes(r) for r in rows])
    return facts, winners_noted([explanation(result.run_id, customer_id, r, opt_outs=o, address_problem=problem)
                                 for r, o in zip(rows, opt_outs, strict=True)])


def _codes(row: dict[str, Any]) -> list[str]:
    return row["reasons"].split() if isinstance(row["reasons"], str) else list(row["reasons"])


def explain_plan_file(path, customer_id: str, engine: Engine | None = None) -> tuple[dict[str, Any], list[Explanation]]:
    """(facts, explanations) for ``customer_id`` from a JSON Lines plan file (``relmail plan --out plan.jsonl``).

    With ``engine`` (the store the plan was made on), an UNSUBSCRIBED decision
    also names its opt-out as :func:`explain` does, from the consent history
    as of the file's ``decided_at`` (when the plan was made; a file without
    it, from an older relmail, is asked as of its ``as_of``).
    """
    rows, facts = [], None
    for row in plan_file_rows(path, features=True):
        if row["customer_id"] == customer_id:
            rows.append(row)
            facts = facts or {"run": row["run"], "campaign": row["run"].split(":", 1)[0], "window": row["run"].split(":", 1)[-1],
                              "as_of": datetime.fromisoformat(row["as_of"]), "source": str(path)}
    if not rows:
        raise NotFound(f"customer '{customer_id}' has no decisions in {path}")
    opt_outs: list[dict[str, dict[str, Any]]] = [{} for _ in rows]
    problem = None
    if engine is not None:
        with engine.connect() as conn:
            opt_outs = [opt_outs_behind(conn, customer_id, _codes(r), dict(r.get("features") or {}),
                                        datetime.fromisoformat(r.get("decided_at") or r["as_of"]), facts["as_of"])
                        for r in rows]
            problem = address_problem_of(conn, customer_id, [_codes(r) for r in rows])
    return facts, winners_noted([explanation(facts["run"], customer_id, r, opt_outs=o, address_problem=problem)
                                 for r, o in zip(rows, opt_outs, strict=True)])


def format_explanations(facts: dict[str, Any], explanations: list[Explanation], top: int = 3) -> str:
    """Plain text for a terminal or a CI log."""
    as_of: datetime = facts["as_of"]
    source = facts.get("source", "ledger")
    note = "" if source == "ledger" else ("; a preview, not written" if source == "preview" else f"; from {source}")
    lines = [f"{explanations[0].customer_id} in run {facts['run']} (as of {as_of:%Y-%m-%d %H:%M} UTC{note})"]
    if facts.get("erased"):
        lines.append("The customer was erased: what the plan logged about them (features, limits) is gone; "
                     "the decisions and their reason codes remain.")
    for e in explanations:
        lines.append("")
        if facts.get("erased") and not e.features:
            lines.append(f"{e.message_id}: {e.action.upper()}  score {e.score:.2f}")
        elif "score" in e.features:  # logged where the score counted, whatever its value
            lines.append(f"{e.message_id}: {e.action.upper()}  score {e.score:.2f}, expected value {e.expected_value:.2f}")
            parts = ", ".join(f"{k} +{v:.2f}" for k, v in e.contributions[:top] if v > 0)
            if parts:
                lines.append(f"  score from: {parts}")
            if e.model is not None:
                lines.extend(format_model(e.model))
        else:
            lines.append(f"{e.message_id}: {e.action.upper()}  score {e.score:.2f} (not considered: a hard rule applies)")
        for code, sentence in e.because:
            lines.append(f"  {code}: {sentence}")
        if e.action == "send" and not e.because:
            lines.append(f"  {ALL_PASSED}")
        if e.consent is not None:
            lines.append(f"  consent: {consent_sentence(e.consent)}")
        if e.delivery is not None and not (RENDER_ERROR in e.reasons and e.delivery["status"] == "failed"):
            lines.append(f"  delivery: {delivery_sentence(e.delivery)}")
            if e.delivery.get("came_back"):
                # A refused e-mail was never mailed: nothing came back of it, the ledger recorded its refusal.
                never_mailed = e.delivery["status"] in NOT_SENT
                lines.append(("  recorded at send: " if never_mailed else "  came back: ")
                             + "; ".join(_came_back_words(c) for c in e.delivery["came_back"]))
    return "\n".join(lines)



def consent_sentence(found: dict[str, Any]) -> str:
    """``opted in to all e-mail on 2026-11-20 08:00 UTC; source: import, source 'klaviyo' (klaviyo.csv: ...)``."""
    what = "all e-mail" if found["topic"] == "*" else f"topic '{found['topic']}'"
    return f"opted in to {what}" + ("" if found.get("at") else " without a date") + when_and_source(found)


def _came_back_words(found: dict[str, Any]) -> str:
    """``hard bounce 2026-12-07 08:30 UTC``, ``opened 3 times, first 2026-12-07 09:10 UTC``."""
    times = f" {found['n']} times, first" if found["n"] > 1 else ""
    return f"{CAME_BACK[found['type']]}{times} {found['first_at']:%Y-%m-%d %H:%M} UTC"


def _came_back(conn, run_id: str, customer_id: str) -> dict[str, list[dict[str, Any]]]:
    """message -> what came back of the customer's e-mail of the run: ``type``, ``n`` events, ``first_at``, in CAME_BACK's order.

    The ledger's delivery says only that the provider took the e-mail; a hard bounce or a complaint about it
    is an event, and without it ``why`` showed a bounced customer's e-mail as plainly accepted.
    """
    types = {STORE_TYPES[t]: t for t in CAME_BACK}
    out: dict[str, list[dict[str, Any]]] = {}
    for message_id, kind, n, first in conn.execute(
        select(EVENTS.c.message_id, EVENTS.c.type, func.count(), func.min(EVENTS.c.occurred_at))
        .where(EVENTS.c.customer_id == customer_id, EVENTS.c.run_id == run_id, EVENTS.c.type.in_(types),
               EVENTS.c.message_id.is_not(None))
        .group_by(EVENTS.c.message_id, EVENTS.c.type)
    ):
        first = first.replace(tzinfo=UTC) if first.tzinfo is None else first.astimezone(UTC)
        out.setdefault(message_id, []).append({"type": types[kind], "n": int(n), "first_at": first})
    order = list(CAME_BACK)
    return {m: sorted(found, key=lambda c: order.index(c["type"])) for m, found in out.items()}


def delivery_sentence(delivery: dict[str, Any]) -> str:
    """The delivery's state in a few words: ``failed (SUPPRESSED: ...)``, ``accepted via ses``, ``deferred (...) via smtp, 2 attempts``."""
    out = delivery["status"]
    if delivery.get("error") and delivery["status"] != "accepted":
        out += f" ({delivery['error']})"
    if delivery.get("adapter") and delivery["status"] not in ("failed", "withdrawn"):
        # Relmail's own verdict (a render error, an opt-out since the plan), not the provider's.
        out += f" via {delivery['adapter']}"
        if delivery.get("tagged"):
            # Its bounces must carry the tag ([delivery.smtp] verp_required); an untagged e-mail's cannot.
            out += " with a signed return path (VERP)"
    if delivery.get("attempts", 0) > 1:
        out += f", {delivery['attempts']} attempts"
    return f"{out}, {delivery['updated_at']:%Y-%m-%d %H:%M} UTC"
