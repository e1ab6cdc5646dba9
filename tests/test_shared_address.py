"""One e-mail per address and message: customers who share an address get each message once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import Customer, Decision, Delivery, Event, Preference, Product, Run
from test_plan import AS_OF, DAY, WINDOW, _customer, _ev, insert_shop

CAMPAIGN = """\
title: Shared addresses
policy:
  min_relevance: 0
  max_messages_per_run: 2
  holdout_share: 0
  contact_cost: 0
messages:
  - id: promo
    template: ebike_launch
    topic: promotions
    segments: [everyone]
    products: [EB-200]
    offer: promotion
    value: 10
  - id: news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: promotion
    value: 1
"""


def _opted_in(cid: str, opted_in: bool = True) -> list[dict]:
    return [{"customer_id": cid, "topic": topic, "opted_in": opted_in, "max_per_week": None, "updated_at": AS_OF - 300 * DAY,
             "source": "import"} for topic in ("promotions", "newsletter")]


@pytest.fixture
def shared_project(project, engine):
    (project.campaigns_dir / "shared.yml").write_text(CAMPAIGN, encoding="utf-8")
    customers = [
        # A couple's mailbox: the same address twice, in another case and with a blank.
        _customer("C-ANNA", 400, "family@example.org"), _customer("C-BERT", 400, " Family@Example.org"),
        # The same person as a guest and as a registered customer; the guest opted out.
        _customer("C-GUEST", 400, "dora@example.org"), _customer("C-DORA", 400, "dora@example.org"),
        _customer("C-SOLO", 400, "solo@example.org"),
    ]
    prefs = [p for c in customers if c["id"] != "C-GUEST" for p in _opted_in(c["id"])]
    # Bert looked at the e-bike: his promo scores higher than Anna's.
    events = [_ev("C-BERT", "view", 2, product_id="EB-200"), _ev("C-BERT", "view", 3, product_id="EB-200")]
    insert_shop(engine, customers, prefs, events)
    return project


def _by_key(rows) -> dict[tuple[str, str], dict]:
    return {(r["customer_id"], r["message_id"]): r for r in rows}


def test_the_better_send_keeps_the_address_and_the_other_is_suppressed_with_its_reason(shared_project, engine):
    result = plan(shared_project, engine, "shared", WINDOW, as_of=AS_OF)
    memory = _by_key(result.decisions.records())
    with engine.connect() as conn:
        ledger = _by_key(conn.execute(select(Decision.__table__)).mappings().all())
    for by in (memory, ledger):
        # Bert's promo scores higher (he viewed the e-bike): he keeps the address for it.
        assert by[("C-BERT", "promo")]["action"] == "send"
        assert by[("C-ANNA", "promo")]["action"] == "suppress"
        # A tie (the newsletter scores alike for both): the most recently active id keeps it (Bert's views).
        assert by[("C-BERT", "news")]["action"] == "send" and by[("C-ANNA", "news")]["action"] == "suppress"
        # The guest opted out, so the registered twin gets both messages; a lone address is untouched.
        assert by[("C-DORA", "promo")]["action"] == by[("C-DORA", "news")]["action"] == "send"
        assert by[("C-SOLO", "promo")]["action"] == "send"
    assert memory[("C-ANNA", "promo")]["reasons"] == ["SHARED_ADDRESS"] and ledger[("C-ANNA", "promo")]["reasons"] == "SHARED_ADDRESS"
    assert memory[("C-ANNA", "promo")]["features"]["same_address_as"] == "C-BERT"
    assert ledger[("C-ANNA", "promo")]["features"]["same_address_as"] == "C-BERT"
    # The rest of the logged features stay.
    assert ledger[("C-ANNA", "promo")]["features"]["topic"] == "promotions"
    promo = next(m for m in result.messages if m.message_id == "promo")
    assert promo.reasons["SHARED_ADDRESS"] == 1 and promo.send == 3 and promo.suppress == 2
    _, answers = explain(engine, "C-ANNA", "shared:2026-W48")
    text = " ".join(t for d in answers for _, t in d.because)
    assert "customer C-BERT has the same address" in text


def test_a_dry_run_says_the_same_and_writes_nothing(shared_project, engine):
    result = plan(shared_project, engine, "shared", WINDOW, as_of=AS_OF, dry_run=True)
    by = _by_key(result.decisions.records())
    assert by[("C-ANNA", "promo")]["reasons"] == ["SHARED_ADDRESS"] and by[("C-ANNA", "news")]["reasons"] == ["SHARED_ADDRESS"]
    with engine.connect() as conn:
        assert conn.execute(select(Decision.__table__.c.id)).first() is None


def test_a_replan_keeps_the_address_for_the_send_already_delivered(shared_project, engine):
    plan(shared_project, engine, "shared", WINDOW, as_of=AS_OF)
    D = Decision.__table__
    with engine.begin() as conn:
        # Anna's newsletter went out; then Anna's row changes so that Bert would now win the tie.
        (did,) = conn.execute(select(D.c.id).where(D.c.customer_id == "C-ANNA", D.c.message_id == "news")).one()
        conn.execute(Delivery.__table__.insert().values(decision_id=did, run_id="shared:2026-W48", customer_id="C-ANNA",
                                                        message_id="news", status="accepted", attempts=1, updated_at=AS_OF))
        conn.execute(Event.__table__.insert(), [_ev("C-BERT", "view", 1, product_id="EB-100")])
    result = plan(shared_project, engine, "shared", WINDOW, as_of=AS_OF, replan=True)
    by = _by_key(result.decisions.records())
    assert ("C-ANNA", "news") not in by  # kept as delivered, not decided again
    assert by[("C-BERT", "news")]["action"] == "suppress" and by[("C-BERT", "news")]["reasons"] == ["SHARED_ADDRESS"]
    assert by[("C-BERT", "news")]["features"]["same_address_as"] == "C-ANNA"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["a@x.org", "A@x.org", "b@x.org", " b@X.org ", "c@x.org"]), st.booleans(),
                          st.integers(0, 3)), min_size=1, max_size=9))
def test_property_each_address_gets_each_message_at_most_once_and_only_duplicates_are_suppressed(project, engine, rows):
    (project.campaigns_dir / "shared.yml").write_text(CAMPAIGN, encoding="utf-8")
    with engine.begin() as conn:
        for table in (Decision, Delivery, Run, Event, Preference, Customer, Product):
            conn.execute(delete(table.__table__))
    customers = [_customer(f"C{i:02d}", 400, email) for i, (email, _, _) in enumerate(rows)]
    prefs = [p for i, (_, consent, _) in enumerate(rows) for p in _opted_in(f"C{i:02d}", consent)]
    # Every customer bought once a year ago (insert_shop writes a list of events, never none).
    events = [_ev(f"C{i:02d}", "view", 1 + k, product_id="EB-200") for i, (_, _, views) in enumerate(rows) for k in range(views)]
    events += [_ev(f"C{i:02d}", "purchase", 300, product_id="EB-100", value=1799.0) for i in range(len(rows))]
    insert_shop(engine, customers, prefs, events)
    result = plan(project, engine, "shared", WINDOW, as_of=AS_OF)
    address = {f"C{i:02d}": email.strip().lower() for i, (email, _, _) in enumerate(rows)}
    with engine.connect() as conn:
        ledger = conn.execute(select(Decision.__table__)).mappings().all()
    sent = [(address[r["customer_id"]], r["message_id"]) for r in ledger if r["action"] == "send"]
    assert len(sent) == len(set(sent))  # never two e-mails of a message to one mailbox
    # Every address that would get a message without the step (its sends and the sends it turned down) still gets it once.
    wanted = {(address[r["customer_id"]], r["message_id"]) for r in ledger if r["action"] == "send" or r["reasons"] == "SHARED_ADDRESS"}
    assert set(sent) == wanted
    for r in ledger:
        if r["reasons"] == "SHARED_ADDRESS":
            winner = r["features"]["same_address_as"]
            assert address[winner] == address[r["customer_id"]] and (address[winner], r["message_id"]) in set(sent)
    assert _by_key(result.decisions.records(False)).keys() == _by_key(ledger).keys()
    memory = {k: r["action"] for k, r in _by_key(result.decisions.records(False)).items()}
    assert memory == {k: r["action"] for k, r in _by_key(ledger).items()}


def test_relmail_why_names_the_customer_who_gets_the_message(shared_project, engine):
    plan(shared_project, engine, "shared", WINDOW, as_of=AS_OF)
    text = format_explanations(*explain(engine, "C-ANNA", "shared:2026-W48"))
    assert "  SHARED_ADDRESS: customer C-BERT has the same address and gets this message in this run" in text


def test_customers_in_different_ranges_of_a_partitioned_plan_share_an_address_as_in_one_range(project, engine, monkeypatch):
    import relmail.planning.run as plan_module
    from relmail.demo import generate

    generate(engine, customers=1200, seed=7, as_of=AS_OF)
    first = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True, workers=1)
    sends = sorted((c, m) for c, m, a in zip(first.decisions.customer_id, first.decisions.message_id, first.decisions.action)
                   if a == "send")
    # Three pairs: a customer of the first range and one of the last, both sent the same message.
    pairs = []
    for message in dict.fromkeys(m for _, m in sends):
        ids = [c for c, m in sends if m == message]
        if len(ids) > 10 and len(pairs) < 3:
            pairs.append((ids[0], ids[-1]))
    # And three pairs sent two different messages, one in the first range and one in the last: one budget per mailbox.
    messages = list(dict.fromkeys(m for _, m in sends))
    for k, (x, y) in enumerate(zip(messages, messages[1:])):
        xs, ys = [c for c, m in sends if m == x], [c for c, m in sends if m == y]
        if len(xs) > 10 and len(ys) > 10 and len(pairs) < 6:
            pairs.append((xs[1 + k], ys[-2 - k]))
    C = Customer.__table__
    with engine.begin() as conn:
        for i, (a, b) in enumerate(pairs):
            for cid in (a, b):
                conn.execute(C.update().where(C.c.id == cid).values(email=f"shared{i}@example.org"))
    whole = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, workers=1)
    with engine.connect() as conn:
        expected = conn.execute(select(Decision.customer_id, Decision.message_id, Decision.action, Decision.reasons)
                                .order_by(Decision.id)).all()
    monkeypatch.setattr(plan_module, "MIN_PARTITION", 100)
    monkeypatch.setattr(plan_module, "MAX_PARTITION", 300)
    split = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, workers=2, replan=True, keep_features=False)
    assert split.partitions == 4 and len(pairs) >= 4
    with engine.connect() as conn:
        written = conn.execute(select(Decision.customer_id, Decision.message_id, Decision.action, Decision.reasons)
                               .order_by(Decision.id)).all()
    assert written == expected
    shared = [r for r in written if r.reasons == "SHARED_ADDRESS"]
    # A pair is one mailbox now: its caps count both ids' e-mails, so some pairs are capped outright rather than shared.
    assert len(shared) >= 1 and {r.customer_id for r in shared} <= {c for pair in pairs for c in pair}
    assert sum(m.reasons.get("SHARED_ADDRESS", 0) for m in split.messages) == len(shared)
    budget = [r for r in written if r.reasons == "SHARED_BUDGET"]
    assert len(budget) >= 1 and {r.customer_id for r in budget} <= {c for pair in pairs for c in pair}
    for a, b in pairs:
        assert len({r.message_id for r in written if r.customer_id in (a, b) and r.action in ("send", "holdout")}) <= 1
    assert [m.__dict__ for m in split.messages] == [m.__dict__ for m in whole.messages]


def test_addresses_read_from_the_store_give_the_same_losers_as_addresses_from_the_features(shared_project, engine):
    from relmail.planning import addresses

    result = plan(shared_project, engine, "shared", WINDOW, as_of=AS_OF, dry_run=True)
    d = result.decisions
    # Undo the step: every SHARED_ADDRESS row back to a send, one part per message.
    parts = []
    for m in ("promo", "news"):
        part = d.take(np.flatnonzero(d.message_id == m))
        part.action[part.reasons == "SHARED_ADDRESS"] = "send"
        parts.append([part])
    with engine.connect() as conn:
        stored = addresses.addresses(conn, d.customer_id.tolist())
        given = [[addresses.normalized(np.array([stored[c] for c in p[0].customer_id[p[0].action == "send"].tolist()],
                                                dtype=object))] for p in parts]
        from_store = addresses.find_shared(conn, ["promo", "news"], parts, {})
        from_features = addresses.find_shared(conn, ["promo", "news"], parts, {}, given)
    as_pairs = lambda found: [(f.message_id, [r.tolist() for r in f.rows], [w.tolist() for w in f.winners]) for f in found]  # noqa: E731
    assert as_pairs(from_store) == as_pairs(from_features) and len(from_store) == 2


def test_a_preview_of_one_customer_decides_the_customers_sharing_her_address_with_her(shared_project, engine):
    from relmail.planning.why import explain_window

    facts, answers = explain_window(shared_project, engine, "C-ANNA", "shared", WINDOW, as_of=AS_OF)
    assert facts["source"] == "preview" and {e.customer_id for e in answers} == {"C-ANNA"}
    by = {e.message_id: e for e in answers}
    assert by["promo"].action == "suppress" and [c for c, _ in by["promo"].because] == ["SHARED_ADDRESS"]
    assert by["news"].action == "suppress"  # a tie, to Bert: the most recently active id
    # The written plan then says the same.
    plan(shared_project, engine, "shared", WINDOW, as_of=AS_OF)
    _, written = explain_window(shared_project, engine, "C-ANNA", "shared", WINDOW, as_of=AS_OF)
    assert {e.message_id: (e.action, [c for c, _ in e.because]) for e in written} == \
        {e.message_id: (e.action, [c for c, _ in e.because]) for e in answers}


def test_the_customers_sharing_an_address_are_found_for_more_ids_than_a_statement_can_bind(shared_project, engine):
    # A preview of a large list of customers: PostgreSQL binds at most 65,535 parameters a statement.
    from relmail.planning import addresses

    many = ["C-ANNA", "C-GUEST", *(f"C-NONE-{i:05d}" for i in range(70_000))]
    with engine.connect() as conn:
        assert addresses.sharing(conn, many) == {"C-BERT", "C-DORA"}


@pytest.mark.parametrize("marks, recent, expected", [
    # Nothing tells the ids apart: the lowest id.
    ({}, None, "C-A"),
    # The most recently active id (its latest event of any kind) before the lowest.
    ({}, "C-B", "C-B"),
    # A registered account before a guest checkout, whichever was active last (each shop's own mark).
    ({"C-A": {"shopware_guest": True}}, "C-A", "C-B"),
    ({"C-A": {"magento_subscriber_type": "guest"}}, None, "C-B"),
    ({"C-A": {"prestashop_group": "Guest"}, "C-B": {"prestashop_group": "Customer"}}, "C-A", "C-B"),
    # The mark any mapping sets (WooCommerce's); a registered account says false.
    ({"C-A": {"guest": True}, "C-B": {"guest": False}}, "C-A", "C-B"),
    ({"C-A": {"guest": False}}, "C-A", "C-A"),
])
def test_on_a_tie_the_mailbox_gets_the_email_through_the_account_then_the_most_recently_active_id(
        project, engine, marks, recent, expected):
    (project.campaigns_dir / "shared.yml").write_text(CAMPAIGN, encoding="utf-8")
    customers = [{**_customer(cid, 400, "kim@example.org"), "attributes": marks.get(cid, {})} for cid in ("C-A", "C-B")]
    prefs = _opted_in("C-A") + _opted_in("C-B")
    # A purchase a year ago for both (the same score); an e-mail delivered last week under ``recent`` alone.
    events = [_ev(cid, "purchase", 300, product_id="EB-100", value=1799.0) for cid in ("C-A", "C-B")]
    if recent:
        events.append(_ev(recent, "email_delivered", 7))
    insert_shop(engine, customers, prefs, events)
    decided = _by_key(plan(project, engine, "shared", WINDOW, as_of=AS_OF, dry_run=True).decisions.records())
    assert decided[("C-A", "news")]["score"] == decided[("C-B", "news")]["score"]  # a tie, or the test says nothing
    other = "C-A" if expected == "C-B" else "C-B"
    for message in ("promo", "news"):
        assert decided[(expected, message)]["action"] == "send"
        assert decided[(other, message)]["reasons"] == ["SHARED_ADDRESS"]
        assert decided[(other, message)]["features"]["same_address_as"] == expected


WOO_REPORT = "Name,Username,Role,Last active,Date registered,Email,Orders,Total spend,AOV,Country / Region,City,Region,Postal code\n"


@pytest.mark.parametrize("registered", ["", "2024-09-12T20:03:11"])
def test_a_woocommerce_guest_gets_the_mailboxs_email_after_the_account_the_report_says_it_is_not(project, engine, registered):
    # Two ids of one mailbox; the shop's customers report names the one spelt as it spells the address: a guest
    # checkout (an empty "Date registered"), or a registered account. That id was active last.
    from shop_imports import import_json

    (project.campaigns_dir / "shared.yml").write_text(CAMPAIGN, encoding="utf-8")
    customers = [_customer("C-A", 400, "kim@example.org"), _customer("C-B", 400, "Kim@Example.org")]
    events = [_ev(cid, "purchase", 300, product_id="EB-100", value=1799.0) for cid in ("C-A", "C-B")]
    insert_shop(engine, customers, _opted_in("C-A") + _opted_in("C-B"), [*events, _ev("C-A", "email_delivered", 7)])
    report = project.root / "customers_report.csv"
    report.write_text(WOO_REPORT + f"Kim,,,2026-11-30T09:12:44,{registered},kim@example.org,1,10,10,NL,,,\n", encoding="utf-8")
    assert import_json(project, "customers", str(report), "--map", "woocommerce")["rows_imported"] == 1
    with engine.connect() as conn:
        marks = dict(conn.execute(select(Customer.__table__.c.id, Customer.__table__.c.attributes)).all())
    assert marks["C-A"]["guest"] is (not registered) and "guest" not in marks["C-B"]
    decided = _by_key(plan(project, engine, "shared", WINDOW, as_of=AS_OF, dry_run=True).decisions.records())
    expected = "C-B" if not registered else "C-A"  # the account before the guest; else the id active last
    other = "C-A" if expected == "C-B" else "C-B"
    for message in ("promo", "news"):
        assert decided[(expected, message)]["action"] == "send"
        assert decided[(other, message)]["reasons"] == ["SHARED_ADDRESS"]
