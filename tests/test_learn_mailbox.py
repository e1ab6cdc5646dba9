"""A mailbox several customer ids share counts once in what relmail learns and reports, on real databases.

The plan sends a mailbox one e-mail per message and draws its hold-out once
(every id in the same arm): the outcome table has one row per run, message
and mailbox, and that row's outcomes are the events of every id of the
mailbox, in both arms.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relmail.cli import cli
from relmail.learn.dataset import split_mask
from relmail.learn.incrementality import incrementality
from relmail.learn.outcomes import load_outcomes
from relmail.learn.train import siblings_of
from relmail.report import run_figures
from relmail.store.models import Customer, Decision, Delivery, Event, Run

AS_OF = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
NOW = AS_OF + timedelta(days=60)
RUN = "spring:2025-W10"
IN_WINDOW = AS_OF + timedelta(days=3)
LATE = AS_OF + timedelta(days=20)

#: Customer id -> address. Dora, Eve and Fay each have a guest checkout (G-) and an account (R-) with one
#: mailbox (another case, blanks around it); S- customers have their own address.
ADDRESSES = {
    "G-1": "dora@example.org", "R-1": " Dora@Example.ORG ",
    "G-2": "eve@example.org", "R-2": "EVE@example.org",
    "G-3": "fay@example.org", "R-3": "fay@example.org ",
    "S-1": "s1@example.org", "S-2": "s2@example.org", "S-3": "s3@example.org", "S-4": "s4@example.org",
}
#: (customer, message) -> (action, score, reasons, delivered): what a plan with hold-outs and one e-mail per
#: address writes. Dora's mailbox is held out of the promo under both ids; Eve's got it under G-2 (the other
#: id suppressed); Fay's is held out, her account (R-3) scoring higher than the guest.
DECISIONS = {
    ("G-1", "promo"): ("holdout", 0.6, "HOLDOUT", False),
    ("R-1", "promo"): ("holdout", 0.4, "HOLDOUT", False),
    ("G-2", "promo"): ("send", 0.7, "", True),
    ("R-2", "promo"): ("suppress", 0.5, "SHARED_ADDRESS", False),
    ("G-3", "promo"): ("holdout", 0.3, "HOLDOUT", False),
    ("R-3", "promo"): ("holdout", 0.8, "HOLDOUT", False),
    ("S-1", "promo"): ("holdout", 0.5, "HOLDOUT", False),
    ("S-2", "promo"): ("send", 0.5, "", True),
    ("S-3", "promo"): ("send", 0.5, "", True),
    ("S-4", "promo"): ("holdout", 0.5, "HOLDOUT", False),
    # The news: Dora's mailbox and Fay's got it under the account.
    ("G-1", "news"): ("suppress", 0.5, "SHARED_BUDGET", False),
    ("R-1", "news"): ("send", 0.5, "", True),
    ("R-3", "news"): ("send", 0.5, "", True),
    ("S-1", "news"): ("holdout", 0.5, "HOLDOUT", False),
}
#: Purchases (customer, when, value): under the id the e-mail did not go to, and one after the window.
PURCHASES = [("R-1", IN_WINDOW, 40.0), ("R-2", IN_WINDOW, 30.0), ("G-3", IN_WINDOW, 20.0), ("R-3", IN_WINDOW, 5.0),
             ("S-2", IN_WINDOW, 10.0), ("S-4", LATE, 99.0)]


def _customers(addresses: dict[str, str]) -> list[dict]:
    return [{"id": c, "email": e, "locale": "en_GB", "timezone": "UTC", "created_at": AS_OF - timedelta(days=400),
             "attributes": {}} for c, e in addresses.items()]


def _write(engine, addresses: dict[str, str] | None, decisions: dict, purchases: list, run: str = RUN,
           as_of: datetime = AS_OF) -> None:
    """The customers (unless None), one sent run with ``decisions`` (accepted deliveries where delivered) and the purchases."""
    with engine.begin() as conn:
        if addresses:
            conn.execute(Customer.__table__.insert(), _customers(addresses))
        conn.execute(Run.__table__.insert().values(id=run, campaign=run.split(":")[0], window=run.split(":")[1], as_of=as_of, seed=1,
                                                   status="sent", config_hash="x", created_at=as_of, updated_at=as_of))
        for (cid, message), (action, score, reasons, delivered) in decisions.items():
            decision = conn.execute(Decision.__table__.insert().values(
                run_id=run, customer_id=cid, message_id=message, action=action, score=score, expected_value=score,
                reasons=reasons, features={"score": score, "tier": cid[0]}, created_at=as_of)).inserted_primary_key[0]
            if delivered:
                conn.execute(Delivery.__table__.insert().values(decision_id=decision, run_id=run, customer_id=cid, message_id=message,
                                                                status="accepted", attempts=1, updated_at=as_of))
        if purchases:
            conn.execute(Event.__table__.insert(), [{"customer_id": c, "type": "purchase", "occurred_at": at, "value": v}
                                                    for c, at, v in purchases])


@pytest.fixture
def shop(engine):
    _write(engine, ADDRESSES, DECISIONS, PURCHASES)
    return engine


def _rows(table, message: str) -> dict[str, tuple]:
    """Customer -> (treated, conversion, revenue, mailbox) of ``message``'s rows."""
    mine = table.message_id == message
    return {c: (int(t), int(y), float(r), m) for c, t, y, r, m in zip(
        table.customer_id[mine], table.treated[mine], table.outcomes["conversion"][mine], table.revenue[mine], table.mailbox[mine])}


def test_a_shared_mailbox_is_one_row_per_message_with_the_purchases_of_every_id(shop):
    table = load_outcomes(shop, now=NOW)
    assert _rows(table, "promo") == {
        # Dora's mailbox, held out: the guest (the higher score) stands for it; the account's purchase is its response.
        "G-1": (0, 1, 40.0, "G-1"),
        # Eve's got the e-mail under G-2, and bought under R-2: a response to the e-mail all the same.
        "G-2": (1, 1, 30.0, "G-2"),
        # Fay's, held out: the account would have got the e-mail (higher score); both ids' purchases count, once each.
        "R-3": (0, 1, 25.0, "G-3"),
        "S-1": (0, 0, 0.0, "S-1"), "S-2": (1, 1, 10.0, "S-2"), "S-3": (1, 0, 0.0, "S-3"), "S-4": (0, 0, 0.0, "S-4"),
    }
    # The news went to Dora and Fay under the account: the guest's purchases count too.
    assert _rows(table, "news") == {"R-1": (1, 1, 40.0, "G-1"), "R-3": (1, 1, 25.0, "G-3"), "S-1": (0, 0, 0.0, "S-1")}
    assert len(set(zip(table.message_id, table.mailbox))) == len(table)


def test_an_imported_run_that_mailed_one_id_and_held_out_the_other_counts_the_mailbox_as_sent(engine, tmp_path):
    """A send made elsewhere, drawn per id: the e-mail reached the mailbox, so its other id is no control."""
    from relmail.learn.history import import_history

    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), _customers(ADDRESSES))
        conn.execute(Event.__table__.insert(), [{"customer_id": "R-1", "type": "purchase", "occurred_at": IN_WINDOW, "value": 40.0}])
    path = tmp_path / "history.csv"
    path.write_text("run_id,campaign,window,as_of,customer_id,message_id,action,x\n"
                    + "".join(f"hist-1,spring,2025-W10,{AS_OF.isoformat()},{c},promo,{a},{x}\n"
                              for c, a, x in [("G-1", "holdout", 1), ("R-1", "send", 2), ("S-1", "holdout", 3), ("S-2", "send", 4)]))
    import_history(engine, path)
    table = load_outcomes(engine, now=NOW)
    assert _rows(table, "promo") == {"R-1": (1, 1, 40.0, "G-1"), "S-1": (0, 0, 0.0, "S-1"), "S-2": (1, 0, 0.0, "S-2")}


def test_the_lift_counts_each_mailbox_once_in_each_arm(shop):
    (entry,) = [e for e in incrementality(shop, RUN, now=NOW) if e["message"] == "promo"]
    # Four held-out mailboxes (Dora, Fay, S-1, S-4) against three sent ones (Eve, S-2, S-3).
    assert (entry["sends"], entry["holdouts"]) == (3, 4)
    conversion = entry["outcomes"]["conversion"]
    assert (conversion["rate_sent"], conversion["rate_holdout"]) == (2 / 3, 2 / 4)
    assert entry["revenue_per_customer"]["holdout"] == pytest.approx((40.0 + 25.0) / 4)
    assert entry["revenue_per_customer"]["sent"] == pytest.approx((30.0 + 10.0) / 3)


def test_the_run_report_and_the_cli_show_the_same_mailbox_counts(shop, project, monkeypatch):
    monkeypatch.setenv("RELMAIL_NOW", NOW.isoformat())
    monkeypatch.chdir(project.root)
    figures = run_figures(shop, RUN)
    (entry,) = [e for e in figures["incrementality"] if e["message"] == "promo" and e["this_run"]]
    assert (entry["sends"], entry["holdouts"]) == (3, 4)
    out = CliRunner().invoke(cli, ["report", RUN, "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["incrementality"] == figures["incrementality"]
    out = CliRunner().invoke(cli, ["report", "incrementality", RUN, "--json"])
    assert out.exit_code == 0, out.output
    (promo,) = [e for e in json.loads(out.output) if e["message"] == "promo"]
    assert (promo["sends"], promo["holdouts"]) == (3, 4)
    assert promo["outcomes"]["conversion"]["rate_holdout"] == 0.5


def test_the_week_on_week_conversion_rate_and_revenue_count_the_mailboxs_purchases(shop, monkeypatch):
    monkeypatch.setenv("RELMAIL_NOW", NOW.isoformat())
    (week,) = run_figures(shop, RUN)["trend"]
    # Mailed: G-2, S-2, S-3 (promo), R-1, R-3 (news). Eve bought under R-2, Fay under G-3 and R-3, Dora under R-1.
    assert week["customers_mailed"] == 5
    assert week["conversion_rate"] == 0.8
    assert week["revenue"] == 40.0 + 30.0 + 20.0 + 5.0 + 10.0


def test_a_mailbox_is_on_one_side_of_every_split_and_no_sibling_of_a_message_it_had(shop):
    table = load_outcomes(shop, now=NOW)
    for seed in range(20):
        test = split_mask(table.mailbox, seed, 0.5)
        for box in set(table.mailbox):
            assert len(set(test[table.mailbox == box])) == 1
    # Dora's mailbox was held out of the promo under the guest id: the news it got under the account is no sibling
    # of the promo (it is the same person's); nor is Fay's, nor S-1's hold-out.
    assert len(siblings_of(table, "promo")) == 0
    # Eve's, S-2's and S-3's mailboxes had no news: their promo sends are the news's siblings.
    assert sorted(siblings_of(table, "news").customer_id) == ["G-2", "S-2", "S-3"]


def test_an_unshared_store_keeps_one_row_per_decision_with_its_own_outcomes(engine):
    addresses = {c: f"{c.lower()}@example.org" for c in ADDRESSES}
    _write(engine, addresses, DECISIONS, PURCHASES)
    table = load_outcomes(engine, now=NOW)
    eligible = sorted((c, m) for (c, m), (a, *_r, delivered) in DECISIONS.items() if a == "holdout" or delivered)
    assert sorted(zip(table.customer_id, table.message_id)) == eligible
    assert (table.mailbox == table.customer_id).all()
    bought = {c: v for c, at, v in PURCHASES if at <= AS_OF + timedelta(days=14)}
    assert table.revenue.tolist() == [bought.get(c, 0.0) for c in table.customer_id]
    assert table.outcomes["conversion"].tolist() == [int(c in bought) for c in table.customer_id]


@pytest.mark.slow
def test_model_train_reads_one_row_per_mailbox_and_splits_by_mailbox(engine, project, monkeypatch, tmp_path):
    """What 'relmail model train' learned from (its sidecar) and what 'model predict' says of each row's side."""
    monkeypatch.setenv("RELMAIL_NOW", NOW.isoformat())
    monkeypatch.chdir(project.root)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + '\n[model]\nestimators = ["t_learner"]\nbases = ["logistic"]\ncv_repeats = 1\n')
    rng = np.random.default_rng(7)
    pairs, solo = 60, 60
    addresses = {f"G-{i:03d}": f"box{i}@example.org" for i in range(pairs)}
    addresses |= {f"R-{i:03d}": f" BOX{i}@example.org" for i in range(pairs)}
    addresses |= {f"S-{i:03d}": f"s{i}@example.org" for i in range(solo)}
    # Two weekly runs; the guest scores higher in the first, the account in the second, so each shared mailbox's
    # row is under the guest id one week and under the account the next.
    for week, (run, as_of) in enumerate([(RUN, AS_OF), ("spring:2025-W11", AS_OF + timedelta(days=7))]):
        decisions, purchases = {}, []
        for i in range(pairs):
            held = i % 2 == 0
            first, second = (f"G-{i:03d}", f"R-{i:03d}")[::1 if week == 0 else -1]
            decisions[(first, "promo")] = ("holdout" if held else "send", 0.6, "", not held)
            decisions[(second, "promo")] = ("holdout" if held else "suppress", 0.4, "", False)
            if rng.random() < 0.5:
                purchases.append((second, as_of + timedelta(days=2), 10.0))
        for i in range(solo):
            held = i % 2 == 0
            decisions[(f"S-{i:03d}", "promo")] = ("holdout" if held else "send", float(rng.random()), "", not held)
            if rng.random() < 0.5:
                purchases.append((f"S-{i:03d}", as_of + timedelta(days=2), 10.0))
        _write(engine, addresses if week == 0 else None, decisions, purchases, run, as_of)
    models = str(tmp_path / "models")
    out = CliRunner().invoke(cli, ["model", "train", "--message", "promo", "--outcome", "conversion", "--test-share", "0.3",
                                   "--dir", models, "--json"])
    assert out.exit_code == 0, out.output
    (meta_path,) = (tmp_path / "models").rglob("*.json")
    training = json.loads(meta_path.read_text())["training"]
    (trained,) = json.loads(out.output)
    # Per run: 30 sent and 30 held-out shared mailboxes, 30 and 30 lone customers, one row each.
    assert training["rows"] + trained["test_rows"] == 2 * (pairs + solo)
    assert training["rows"] == training["sends"] + training["holdouts"]
    out = CliRunner().invoke(cli, ["model", "predict", "--message", "promo", "--split", "all", "--dir", models, "--out", "-"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert len(rows) == 2 * (pairs + solo)
    side: dict[str, set[str]] = {}
    for row in rows:
        side.setdefault(row["customer_id"][2:] if row["customer_id"][0] in "GR" else row["customer_id"], set()).add(row["split"])
    # Each person is on one side, whichever of her ids a week's row is under.
    assert all(len(s) == 1 for s in side.values()) and {"test", "train"} == set().union(*side.values())


BOX = st.fixed_dictionaries({
    "ids": st.integers(1, 3),
    # Per message: not in the experiment, sent (under one of its ids) or held out.
    "arms": st.lists(st.sampled_from(["none", "send", "holdout"]), min_size=2, max_size=2),
    "scores": st.lists(st.floats(0, 1, allow_nan=False), min_size=3, max_size=3),
    "purchases": st.lists(st.tuples(st.integers(0, 2), st.sampled_from([-1.0, 2.0, 13.0, 20.0])), max_size=3),
    "sent_to": st.integers(0, 2),
    "suppressed": st.lists(st.booleans(), min_size=3, max_size=3),
})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(boxes=st.lists(BOX, min_size=1, max_size=8))
def test_property_one_control_row_per_held_out_mailbox_with_every_ids_purchases(engine, boxes):
    with engine.begin() as conn:
        for t in (Event, Delivery, Decision, Run, Customer):
            conn.execute(t.__table__.delete())
    addresses, decisions, purchases, members = {}, {}, [], {}
    for b, box in enumerate(boxes):
        ids = [f"B{b:02d}-{k}" for k in range(box["ids"])]
        members[b] = ids
        for k, cid in enumerate(ids):
            addresses[cid] = [f"box{b}@example.org", f" BOX{b}@Example.org", f"Box{b}@EXAMPLE.ORG "][k]
        for j, message in enumerate(("promo", "news")):
            arm = box["arms"][j]
            for k, cid in enumerate(ids):
                score = box["scores"][k]
                if arm == "send":
                    sent = k == box["sent_to"] % len(ids)
                    decisions[(cid, message)] = ("send", score, "", True) if sent else ("suppress", score, "SHARED_ADDRESS", False)
                elif arm == "holdout" and (k == box["sent_to"] % len(ids) or not box["suppressed"][k]):
                    decisions[(cid, message)] = ("holdout", score, "HOLDOUT", False)
                else:
                    decisions[(cid, message)] = ("suppress", score, "LOW_RELEVANCE", False)
        purchases += [(ids[k % len(ids)], AS_OF + timedelta(days=days), 1.0 + k) for k, days in box["purchases"]]
    _write(engine, addresses, decisions, purchases)
    table = load_outcomes(engine, now=NOW)
    box_of = {cid: b for b, ids in members.items() for cid in ids}
    for j, message in enumerate(("promo", "news")):
        mine = table.message_id == message
        held = sorted(b for b, box in enumerate(boxes) if box["arms"][j] == "holdout")
        sent = sorted(b for b, box in enumerate(boxes) if box["arms"][j] == "send")
        assert sorted(box_of[c] for c in table.customer_id[mine & (table.treated == 0)]) == held
        assert sorted(box_of[c] for c in table.customer_id[mine & (table.treated == 1)]) == sent
    for i, cid in enumerate(table.customer_id):
        b = box_of[cid]
        ids = members[b]
        assert table.mailbox[i] == min(ids)
        if not table.treated[i]:
            # The id the e-mail would have gone to: the highest score among the held-out ids, then the lowest id.
            held = [c for c in ids if decisions[(c, table.message_id[i])][0] == "holdout"]
            assert cid == min(held, key=lambda c: (-decisions[(c, table.message_id[i])][1], c))
        bought = [v for c, at, v in purchases if c in ids and AS_OF < at <= AS_OF + timedelta(days=14)]
        assert table.outcomes["conversion"][i] == int(bool(bought))
        assert table.revenue[i] == pytest.approx(sum(bought))
