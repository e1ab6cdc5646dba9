"""An e-mail whose customer opted out, complained or hard-bounced after the plan is ``withdrawn``, never ``failed``.

The send honours the customer's word and records that apart from a fault: its
own final ledger state, its own row in the summary and the report, exit 0.
"""

from __future__ import annotations

import email
import json
from datetime import timedelta
from email import policy

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select
from tests.sendkit import AS_OF, RUN, WINDOW, build

from relmail.cli import cli
from relmail.planning.run import plan
from relmail.sending import ledger
from relmail.sending.run import send
from relmail.store.models import Customer, Decision, Delivery, Event, Preference, Run

D, DEC, E, P, C = Delivery.__table__, Decision.__table__, Event.__table__, Preference.__table__, Customer.__table__
LATER = AS_OF + timedelta(hours=1)

#: What may happen to a customer between the plan and the send, and whether it stops the sendtest campaign's
#: e-mail (topic newsletter) to the customer's mailbox.
FACTS = {
    "nothing": False,
    "opted out of everything": True,
    "opted out of the newsletter": True,
    "opted out of another topic": False,
    "opted in again": False,
    "complained": True,
    "hard-bounced": True,
}


def _happen(conn, customer: str, fact: str, n: int) -> None:
    topic = {"opted out of everything": "*", "opted out of the newsletter": "newsletter",
             "opted out of another topic": "promotions", "opted in again": "*"}.get(fact)
    if topic is not None:
        conn.execute(delete(P).where(P.c.customer_id == customer, P.c.topic == topic))
        conn.execute(insert(P).values(customer_id=customer, topic=topic, opted_in=fact == "opted in again",
                                      updated_at=LATER, source="unsubscribe-link"))
    elif fact != "nothing":
        kind = "email_complained" if fact == "complained" else "email_bounced_hard"
        conn.execute(insert(E).values(event_id=f"between:{n}", customer_id=customer, type=kind, occurred_at=LATER))


def _outbox_customers(project) -> list[str]:
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default)["X-Relmail-Customer"]
            for p in sorted((project.root / "outbox").glob("*.eml"))]


#: The shop each test's project holds, and its preferences as planned: built by the first example.
_SHOPS: dict = {}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_what_happens_between_plan_and_send_withdraws_exactly_the_mailboxes_it_stops(project, data):
    """Random opt-outs, opt-ins, complaints and bounces land on random customers (sent to or not) after the
    plan: no stopped mailbox is mailed, each of its e-mails is ``withdrawn`` with its reason, none is
    ``failed``, every other e-mail is accepted, and the run is done."""
    if project.root not in _SHOPS:
        # One shop and one plan for every example: each example starts again from the plan.
        engine = build(project, customers=60)
        plan(project, engine, "sendtest", WINDOW, as_of=AS_OF)
        with engine.connect() as conn:
            _SHOPS[project.root] = (engine, [dict(r) for r in conn.execute(select(P)).mappings()])
    engine, prefs = _SHOPS[project.root]
    with engine.begin() as conn:
        conn.execute(delete(D).where(D.c.run_id == RUN))
        conn.execute(delete(E).where(E.c.run_id == RUN))
        conn.execute(delete(E).where(E.c.event_id.like("between:%")))
        conn.execute(delete(P))
        conn.execute(insert(P), prefs)
        conn.execute(delete(C).where(C.c.id.like("TWIN%")))
        conn.execute(Run.__table__.update().where(Run.__table__.c.id == RUN).values(status="planned"))
        addresses = dict(conn.execute(select(C.c.id, C.c.email)).all())
        sends = sorted(conn.execute(select(DEC.c.customer_id).where(DEC.c.run_id == RUN, DEC.c.action == "send")).scalars())
        # Customer ids added since the plan with the address of one the plan sends to, spelt another way.
        twins = {f"TWIN{k}": data.draw(st.sampled_from(sends)) for k in range(data.draw(st.integers(0, 3), label="twins"))}
        for twin, of in twins.items():
            conn.execute(insert(C).values(id=twin, email=f" {addresses[of].upper()}", locale="en_GB", timezone="UTC", attributes={}))
            addresses[twin] = addresses[of]
    mailbox = {cid: address.strip().lower() for cid, address in addresses.items()}
    for path in (project.root / "outbox").glob("*.eml"):
        path.unlink()
    customers = sorted(mailbox)
    # The customers the plan sends to, the ids that share their mailbox, anyone.
    chosen = data.draw(st.lists(st.sampled_from(sends) | st.sampled_from(sorted(twins) or sends) | st.sampled_from(customers),
                                max_size=8, unique=True))
    facts = {cid: data.draw(st.sampled_from(sorted(FACTS)), label=cid) for cid in chosen}
    with engine.begin() as conn:
        for n, (cid, fact) in enumerate(facts.items()):
            _happen(conn, cid, fact, n)
    stopped = {mailbox[cid] for cid, fact in facts.items() if FACTS[fact]}
    expected = {cid for cid in sends if mailbox[cid] in stopped}

    result = send(project, engine, "sendtest", WINDOW, now=lambda: LATER + timedelta(minutes=5))

    assert not expected & set(_outbox_customers(project)), facts
    assert sorted(_outbox_customers(project)) == sorted(set(sends) - expected)
    with engine.connect() as conn:
        rows = {cid: (status, error) for cid, status, error in conn.execute(
            select(D.c.customer_id, D.c.status, D.c.last_error).where(D.c.run_id == RUN))}
        status = conn.execute(select(Run.__table__.c.status).where(Run.__table__.c.id == RUN)).scalar_one()
    assert {cid for cid, (s, _) in rows.items() if s == ledger.WITHDRAWN} == expected, facts
    assert all(rows[cid][1].startswith((f"{ledger.OPTED_OUT}: ", f"{ledger.SUPPRESSED}: ")) for cid in expected)
    assert ledger.status_counts(engine, RUN) == {k: v for k, v in {"accepted": len(sends) - len(expected),
                                                                   "withdrawn": len(expected)}.items() if v}
    assert result.outcomes["withdrawn"] == len(expected) and result.outcomes["failed"] == 0
    assert status == "done"  # final: nothing left to send or retry
    again = send(project, engine, "sendtest", WINDOW, now=lambda: LATER + timedelta(hours=2))
    assert again.done == {} and len(_outbox_customers(project)) == len(sends) - len(expected)


def _plan_then_opt_out(project, monkeypatch):
    """A plan, one customer's unsubscribe link clicked after it; the CLI's arguments to send the run."""
    engine = build(project)
    monkeypatch.setenv("RELMAIL_NOW", LATER.isoformat())
    plan(project, engine, "sendtest", WINDOW, as_of=AS_OF)
    with engine.connect() as conn:
        victim = conn.execute(select(DEC.c.customer_id).where(DEC.c.action == "send").order_by(DEC.c.id)).scalars().first()
    with engine.begin() as conn:
        _happen(conn, victim, "opted out of the newsletter", 0)
    return engine, victim, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "1"]


def test_a_send_after_an_opt_out_since_the_plan_reports_it_withdrawn_not_failed_and_exits_0(project, monkeypatch):
    # A pipeline alerted on "failed 1" after a clean send: the one customer had unsubscribed in between.
    engine, victim, args = _plan_then_opt_out(project, monkeypatch)
    out = CliRunner().invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["outcomes"]["withdrawn"] == 1 and summary["outcomes"]["failed"] == 0
    assert summary["states"] == {"accepted": summary["outcomes"]["accepted"], "withdrawn": 1}
    assert summary["outcomes"]["accepted"] == len(_outbox_customers(project)) > 50
    assert victim not in _outbox_customers(project)
    root = ["-p", str(project.root)]
    runs = CliRunner().invoke(cli, [*root, "runs", "list", "--campaign", "sendtest", "--json"])
    assert runs.exit_code == 0, runs.output
    (listed,) = json.loads(runs.stdout)
    assert listed["deliveries"] == {"accepted": summary["outcomes"]["accepted"], "withdrawn": 1}
    shown = CliRunner().invoke(cli, [*root, "runs", "show", RUN])
    assert shown.exit_code == 0, shown.output
    assert f"accepted {summary['outcomes']['accepted']:,}, withdrawn 1" in shown.output
    report = CliRunner().invoke(cli, [*root, "report", RUN, "--out", str(project.root / "r.html")])
    assert report.exit_code == 0, report.output
    assert ", 0 failed, 1 withdrawn (opted out, complained or hard-bounced after the plan)" in report.output
    assert 'data-figure="withdrawn"><div class="n">1<' in (project.root / "r.html").read_text()
    why = CliRunner().invoke(cli, [*root, "why", victim, "--run", RUN])
    assert why.exit_code == 0, why.output
    assert "  delivery: withdrawn (OPTED_OUT: the customer opted out after the plan), " in why.output
    assert " via " not in why.output.split("delivery: withdrawn")[1].splitlines()[0]  # relmail's verdict, no provider's


def test_the_text_summary_counts_withdrawn_apart_and_says_what_it_means(project, monkeypatch):
    _, _, args = _plan_then_opt_out(project, monkeypatch)
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "failed                 0" in lines and "withdrawn              1" in lines
    assert ("1 e-mail(s) withdrawn, not sent on purpose: the customer opted out, complained, hard-bounced or was removed "
            f"from the shop after the plan (relmail why CUSTOMER --run {RUN} says when).") in lines
