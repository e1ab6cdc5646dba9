"""One mailbox under several customer ids: one budget per run, one arm of each message's experiment."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from relmail.planning.arbitration import customer_hashes, holdout_draw
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import Decision, Delivery
from test_plan import AS_OF, DAY, WINDOW, _customer, _ev, insert_shop

#: Two messages, one e-mail per customer and run; the promo features the e-bike (``new-customers-only``: whether a
#: customer id is new is its own, so a guest checkout of last month and an account of long ago differ).
CAMPAIGN = """\
title: One a run
policy:
  min_relevance: 0
  max_messages_per_run: {max}
  frequency_cap: {cap}
  holdout_share: {share}
  contact_cost: 0
messages:
  - id: promo
    template: ebike_launch
    topic: promotions
    segments: [everyone]
    products: [EB-200]
    offer: {offer}
    value: 10
  - id: news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: promotion
    value: 1
"""


def _write(project, name: str = "budget", max_: int = 1, cap: str = "{7d: 3, 30d: 10}", share: float = 0.0,
           offer: str = "new-customers-only") -> str:
    (project.campaigns_dir / f"{name}.yml").write_text(CAMPAIGN.format(max=max_, cap=cap, share=share, offer=offer),
                                                       encoding="utf-8")
    return name


def _opted_in(cid: str) -> list[dict]:
    return [{"customer_id": cid, "topic": t, "opted_in": True, "max_per_week": None, "updated_at": AS_OF - 300 * DAY,
             "source": "import"} for t in ("promotions", "newsletter")]


def _shop(engine, events: list[dict] | None = None) -> None:
    """Dora as a new guest (C-GUEST) and with an account of long ago (C-DORA, another case): the promo is for new
    customers, so each id's best message differs: the guest's is the promo, the account's the newsletter."""
    customers = [_customer("C-GUEST", 30, "dora@example.org"), _customer("C-DORA", 400, " Dora@Example.ORG"),
                 _customer("C-SOLO", 30, "solo@example.org")]
    prefs = [p for c in customers for p in _opted_in(c["id"])]
    events = (events or []) + [_ev("C-SOLO", "view", 3, product_id="EB-200")]
    insert_shop(engine, customers, prefs, events)


def _ledger(engine) -> dict[tuple[str, str], dict]:
    with engine.connect() as conn:
        return {(r["customer_id"], r["message_id"]): r for r in conn.execute(select(Decision.__table__)).mappings()}


def test_two_ids_of_one_mailbox_get_at_most_the_runs_budget_together(project, engine):
    _shop(engine)
    result = plan(project, engine, _write(project), WINDOW, as_of=AS_OF)
    memory = {(r["customer_id"], r["message_id"]): r for r in result.decisions.records()}
    ledger = _ledger(engine)
    for by in (memory, ledger):
        # Each id alone would get its best message: the guest the promo, the account (not new) the
        # newsletter. The mailbox's one e-mail is the promo, worth more.
        assert by[("C-GUEST", "promo")]["action"] == "send"
        assert by[("C-DORA", "news")]["action"] == "suppress"
        assert by[("C-SOLO", "promo")]["action"] == "send"  # a lone address is untouched
    assert memory[("C-DORA", "news")]["reasons"] == ["SHARED_BUDGET"] and ledger[("C-DORA", "news")]["reasons"] == "SHARED_BUDGET"
    for logged in (memory[("C-DORA", "news")]["features"], ledger[("C-DORA", "news")]["features"]):
        assert (logged["lost_to"], logged["same_address_as"], logged["budget"]) == ("promo", "C-GUEST", 1)
        assert logged["topic"] == "newsletter"  # the rest of the logged features stay
    news = next(m for m in result.messages if m.message_id == "news")
    assert news.reasons["SHARED_BUDGET"] == 1 and news.send == 0
    text = format_explanations(*explain(engine, "C-DORA", "budget:2026-W48"))
    assert ("SHARED_BUDGET: the address has room for 1 e-mail in this run, counted over every customer id with it: "
            "it went to 'promo' under customer C-GUEST") in text
    assert "dora@" not in text.lower()


def test_what_the_caps_leave_is_the_mailboxs_room(project, engine):
    # Two e-mails a run, but a weekly cap of three with two sent this week: room for one, in the mailbox.
    _shop(engine, [_ev("C-GUEST", "email_sent", 2, message_id="x", topic="service"),
                   _ev("C-DORA", "email_sent", 3, message_id="y", topic="service")])
    by = {(r["customer_id"], r["message_id"]): r
          for r in plan(project, engine, _write(project, max_=2, cap="{7d: 3}"), WINDOW, as_of=AS_OF,
                        dry_run=True).decisions.records()}
    sent = sorted(k for k, r in by.items() if r["action"] == "send" and k[0] != "C-SOLO")
    assert sent == [("C-GUEST", "promo")]
    assert by[("C-DORA", "news")]["reasons"] == ["SHARED_BUDGET"] and by[("C-DORA", "news")]["features"]["budget"] == 1


def test_a_replan_counts_the_e_mail_the_run_delivered_to_the_mailbox_under_another_id(project, engine):
    _shop(engine)
    name = _write(project)
    plan(project, engine, name, WINDOW, as_of=AS_OF)
    D = Decision.__table__
    with engine.begin() as conn:
        (did,) = conn.execute(select(D.c.id).where(D.c.customer_id == "C-GUEST", D.c.message_id == "promo")).one()
        conn.execute(Delivery.__table__.insert().values(decision_id=did, run_id="budget:2026-W48", customer_id="C-GUEST",
                                                        message_id="promo", status="accepted", attempts=1, updated_at=AS_OF))
    by = {(r["customer_id"], r["message_id"]): r
          for r in plan(project, engine, name, WINDOW, as_of=AS_OF, replan=True).decisions.records()}
    assert ("C-GUEST", "promo") not in by  # kept as delivered
    assert by[("C-DORA", "news")]["reasons"] == ["SHARED_BUDGET"] and by[("C-DORA", "news")]["features"]["budget"] == 0
    assert _ledger(engine)[("C-DORA", "news")]["action"] == "suppress"


@pytest.mark.parametrize("window", ["2026-W45", "2026-W46", "2026-W47", "2026-W48", "2026-W49", "2026-W50"])
def test_a_mailbox_is_in_one_arm_of_each_messages_experiment_and_lone_customers_keep_their_draw(project, engine, window):
    pairs = 12
    customers = [c for i in range(pairs) for c in (_customer(f"G-{i:02d}", 400, f"box{i}@example.org"),
                                                   _customer(f"R-{i:02d}", 400, f" BOX{i}@Example.org"))]
    customers += [_customer(f"S-{i:02d}", 400) for i in range(pairs)]
    insert_shop(engine, customers, [p for c in customers for p in _opted_in(c["id"])],
                [_ev(c["id"], "view", 3, product_id="EB-100") for c in customers])
    # Two e-mails a run: each id would get both messages, and be drawn for each.
    result = plan(project, engine, _write(project, max_=2, share=0.5, offer="promotion"), window, as_of=AS_OF, dry_run=True)
    rows = list(result.decisions.records(False))
    arms: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        if r["action"] in ("send", "holdout"):
            arms.setdefault((r["customer_id"][0] == "S" and r["customer_id"] or r["customer_id"][2:], r["message_id"]),
                            set()).add(r["action"])
    assert all(len(a) == 1 for k, a in arms.items() if not k[0].startswith("S")), arms
    assert any("holdout" in a for a in arms.values()) and any("send" in a for a in arms.values())
    # A customer who shares no address is held out exactly as the draw of her own id says.
    for m in ("promo", "news"):
        solo = sorted(r["customer_id"] for r in rows if r["customer_id"].startswith("S-") and r["message_id"] == m)
        draw = holdout_draw(result.seed, customer_hashes(solo), m) < 0.5
        held = [next(r["action"] for r in rows if r["customer_id"] == c and r["message_id"] == m) == "holdout" for c in solo]
        assert held == draw.tolist()
    # A held-out mailbox gets the message under none of its ids; it counts once against its budget.
    for i in range(pairs):
        box = [r for r in rows if r["customer_id"][2:] == f"{i:02d}" and not r["customer_id"].startswith("S")]
        assert len({r["message_id"] for r in box if r["action"] in ("send", "holdout")}) <= 2
        for m in ("promo", "news"):
            actions = {r["action"] for r in box if r["message_id"] == m}
            assert not ({"send", "holdout"} <= actions)


def test_why_says_what_became_of_the_message_a_decision_lost_to(project, engine):
    """The guest is no new customer and opens e-mail: her newsletter is worth more than the new account's promo, and
    is the mailbox's one e-mail. The account's promo (its own best) loses the budget, and the account's newsletter,
    which lost to that promo, must not read as if the account got the promo."""
    customers = [_customer("C-GUEST", 400, "dora@example.org"), _customer("C-DORA", 30, " Dora@Example.ORG")]
    prefs = [p for c in customers for p in _opted_in(c["id"])]
    insert_shop(engine, customers, prefs, [
        _ev("C-GUEST", "email_opened", 5, message_id="x"), _ev("C-GUEST", "email_clicked", 5, message_id="x")])
    (project.campaigns_dir / "b.yml").write_text(
        CAMPAIGN.format(max=1, cap="{7d: 3}", share=0, offer="new-customers-only").replace("value: 10", "value: 3").replace("value: 1\n", "value: 1.8\n"),
        encoding="utf-8")
    plan(project, engine, "b", WINDOW, as_of=AS_OF)
    by = _ledger(engine)
    assert by[("C-GUEST", "news")]["action"] == "send"
    assert (by[("C-DORA", "promo")]["reasons"], by[("C-DORA", "news")]["reasons"]) == ("SHARED_BUDGET", "ARBITRATION_LOST")
    assert by[("C-DORA", "news")]["features"]["lost_to"] == "promo"
    text = format_explanations(*explain(engine, "C-DORA", "b:2026-W48"))
    assert ("ARBITRATION_LOST: 'promo' was worth more to this customer; room for 1 e-mail in this run; 'promo' did not "
            "fit the address's budget, which went to 'news' under customer C-GUEST (SHARED_BUDGET)") in text
    # The guest, who gets the mailbox's e-mail, reads nothing about its budget.
    guest = format_explanations(*explain(engine, "C-GUEST", "b:2026-W48"))
    assert "SHARED_BUDGET" not in guest and "under customer" not in guest
