"""Outcomes, history import, incrementality and the CLI, on real databases."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relmail.cli import cli
from relmail.errors import Conflict, NotFound, ValidationError
from relmail.learn.dataset import FeatureSpec
from relmail.learn.history import import_history
from relmail.learn.incrementality import incrementality
from relmail.learn.outcomes import load_outcomes
from relmail.store.models import Customer, Event

AS_OF = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
NOW = AS_OF + timedelta(days=60)


def add_customers(engine, n):
    with engine.begin() as conn:
        conn.execute(
            Customer.__table__.insert(),
            [{"id": f"C{i:07d}", "email": f"c{i}@example.com", "locale": "en_GB", "timezone": "UTC",
              "created_at": AS_OF - timedelta(days=400), "attributes": {}} for i in range(n)],
        )


def add_events(engine, rows):
    keys = ("event_id", "customer_id", "type", "occurred_at", "product_id", "feature", "value", "message_id", "run_id", "topic")
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [{k: r.get(k) for k in keys} for r in rows])


def write_history(path, n, run_id="hist-1", window="2025-W10", seed=0):
    """Half sends, half hold-outs; features x (number) and tier (text)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "campaign", "window", "as_of", "customer_id", "message_id", "action", "x", "tier"])
        for i in range(n):
            w.writerow([run_id, "spring", window, AS_OF.isoformat(), f"C{i:07d}", "promo", "send" if i % 2 == 0 else "holdout",
                        round(float(rng.normal()), 3), rng.choice(["new", "loyal"])])
    return path


def test_history_import_writes_the_run_and_decisions_with_typed_features(engine, tmp_path):
    add_customers(engine, 10)
    res = import_history(engine, write_history(tmp_path / "h.csv", 10))
    assert (res.runs, res.decisions, res.sends, res.holdouts) == (["hist-1"], 10, 5, 5)
    table = load_outcomes(engine, now=NOW)
    assert len(table) == 10 and table.treated.sum() == 5
    assert isinstance(table.features[0]["x"], float) and table.features[0]["tier"] in ("new", "loyal")
    with pytest.raises(Conflict, match="hist-1"):
        import_history(engine, tmp_path / "h.csv")


def test_history_import_names_file_line_and_field_and_writes_nothing(engine, tmp_path):
    add_customers(engine, 3)
    path = tmp_path / "bad.csv"
    path.write_text(
        "run_id,campaign,window,as_of,customer_id,message_id,action\n"
        "r,c,w,2025-03-03T09:00:00Z,C0000000,m,send\n"
        "r,c,w,2025-03-03T09:00:00,C0000001,m,send\n"
        "r,c,w,2025-03-03T09:00:00Z,C0000002,m,mail\n"
        "r,c,w,2025-03-03T09:00:00Z,C9999999,m,holdout\n"
    )
    with pytest.raises(ValidationError) as info:
        import_history(engine, path)
    where = {(p.line, p.field) for p in info.value.problems}
    assert where == {(3, "as_of"), (4, "action")}
    path.write_text("run_id,campaign,window,as_of,customer_id,message_id,action\nr,c,w,2025-03-03T09:00:00Z,C9999999,m,holdout\n")
    with pytest.raises(ValidationError, match=r"bad.csv:2: field 'customer_id': unknown customer 'C9999999'"):
        import_history(engine, path)
    assert len(load_outcomes(engine, now=NOW)) == 0


def test_outcomes_count_events_in_the_window_only_and_features_never_change(engine, tmp_path):
    """The no-leakage proof: later events change no training row of the run."""
    add_customers(engine, 4)
    import_history(engine, write_history(tmp_path / "h.csv", 4))
    before = load_outcomes(engine, now=NOW)
    X_before = FeatureSpec.infer(before.features).encode(before.features)

    # After the 14-day window: a purchase, a visit, an unsubscribe — and the
    # customers' attributes change in the store.
    late = AS_OF + timedelta(days=20)
    add_events(engine, [
        {"customer_id": "C0000000", "type": "purchase", "occurred_at": late, "value": 99.0},
        {"customer_id": "C0000001", "type": "view", "occurred_at": late},
        {"customer_id": "C0000000", "type": "email_unsubscribed", "occurred_at": late},
    ])
    with engine.begin() as conn:
        conn.execute(Customer.__table__.update().values(attributes={"x": 1000, "tier": "vip"}))
    after = load_outcomes(engine, now=NOW)
    assert after.features == before.features
    assert (FeatureSpec.infer(after.features).encode(after.features) == X_before).all()
    for name in before.outcomes:
        assert (after.outcomes[name] == before.outcomes[name]).all(), name
    assert (after.revenue == before.revenue).all()

    # Before as_of (already known at decision time): not an outcome either.
    add_events(engine, [{"customer_id": "C0000002", "type": "purchase", "occurred_at": AS_OF - timedelta(hours=1), "value": 5.0}])
    assert load_outcomes(engine, now=NOW).outcomes["conversion"].sum() == 0

    # Inside the window: outcomes change, features still do not.
    inside = AS_OF + timedelta(days=3)
    add_events(engine, [
        {"customer_id": "C0000000", "type": "purchase", "occurred_at": inside, "value": 40.0},
        {"customer_id": "C0000001", "type": "view", "occurred_at": inside},
        {"customer_id": "C0000000", "type": "email_complained", "occurred_at": inside, "message_id": "promo", "run_id": "hist-1"},
        # An unsubscribe from another message's mail is not this message's irritation.
        {"customer_id": "C0000002", "type": "email_unsubscribed", "occurred_at": inside, "message_id": "other"},
    ])
    now = load_outcomes(engine, now=NOW)
    assert now.features == before.features
    by_customer = dict(zip(now.customer_id, range(len(now))))
    assert now.outcomes["conversion"][by_customer["C0000000"]] == 1 and now.revenue[by_customer["C0000000"]] == 40.0
    assert now.outcomes["visit"][by_customer["C0000001"]] == 1
    assert now.outcomes["irritation"].tolist() == [1 if c == "C0000000" else 0 for c in now.customer_id]
    # A shorter window, or a window that has not closed yet, changes what counts.
    assert load_outcomes(engine, window=timedelta(days=2), now=NOW).outcomes["conversion"].sum() == 0
    assert len(load_outcomes(engine, now=AS_OF + timedelta(days=5))) == 0


def test_planned_sends_count_only_once_delivered(engine):
    add_customers(engine, 2)
    from relmail.store.models import Decision, Delivery, Run

    with engine.begin() as conn:
        conn.execute(Run.__table__.insert().values(id="run-a", campaign="weekly", window="2025-W10", as_of=AS_OF, seed=1,
                                                   status="sent", config_hash="x", created_at=AS_OF, updated_at=AS_OF))
        ids = []
        for cid in ("C0000000", "C0000001"):
            ids.append(conn.execute(Decision.__table__.insert().values(
                run_id="run-a", customer_id=cid, message_id="promo", action="send", score=1, expected_value=0,
                reasons="", features={"x": 1}, created_at=AS_OF)).inserted_primary_key[0])
        conn.execute(Delivery.__table__.insert(), [
            {"decision_id": ids[0], "run_id": "run-a", "customer_id": "C0000000", "message_id": "promo", "status": "accepted", "attempts": 1, "updated_at": AS_OF},
            {"decision_id": ids[1], "run_id": "run-a", "customer_id": "C0000001", "message_id": "promo", "status": "failed", "attempts": 3, "updated_at": AS_OF},
        ])
    assert load_outcomes(engine, now=NOW).customer_id.tolist() == ["C0000000"]


def planted_history(engine, tmp_path, n=1600, visits=False):
    """Sends help customers with x > 0: they buy in the window far more often (and, with ``visits``, visit more)."""
    add_customers(engine, n)
    import_history(engine, write_history(tmp_path / "h.csv", n))
    table = load_outcomes(engine, now=NOW)
    rng = np.random.default_rng(4)
    events = []
    for i in range(n):
        x = table.features[i]["x"]
        p = 0.08 + (0.35 if table.treated[i] and x > 0 else 0.0)
        if rng.random() < p:
            events.append({"customer_id": table.customer_id[i], "type": "purchase", "occurred_at": AS_OF + timedelta(days=2), "value": 30.0})
    draws = np.random.default_rng(5).random(n)
    for i in range(n if visits else 0):
        if draws[i] < 0.15 + (0.3 if table.treated[i] and table.features[i]["x"] > 0 else 0.0):
            events.append({"customer_id": table.customer_id[i], "type": "view", "occurred_at": AS_OF + timedelta(days=1)})
    add_events(engine, events)


def test_incrementality_reports_the_lift_with_an_interval(engine, tmp_path):
    planted_history(engine, tmp_path)
    [entry] = incrementality(engine, "hist-1", now=NOW)
    conv = entry["outcomes"]["conversion"]
    assert entry["sends"] == entry["holdouts"] == 800
    assert conv["low"] < conv["lift"] < conv["high"]
    assert conv["significant"] and 0.1 < conv["lift"] < 0.25
    assert entry["revenue_per_customer"]["lift"] == pytest.approx(conv["lift"] * 30.0)
    with pytest.raises(NotFound, match=r"no run 'nope' in the ledger \(newest: hist-1\)"):
        incrementality(engine, "nope", now=NOW)
    # Named as every command names a run: CAMPAIGN:last is the campaign's newest.
    assert incrementality(engine, "spring:last", now=NOW) == [entry]
    with pytest.raises(NotFound, match="window has closed"):
        incrementality(engine, "hist-1", now=AS_OF + timedelta(days=1))


@pytest.mark.slow
def test_cli_train_evaluate_list_and_report(project, tmp_path):
    from relmail.store.db import make_engine

    engine = make_engine(project.database_url)
    planted_history(engine, tmp_path)
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + '\n[model]\nestimators = ["t_learner", "transformed_outcome"]\nbases = ["logistic"]\noutcomes = ["conversion"]\n')
    run = CliRunner().invoke
    args = ["--project", str(project.root)]
    res = run(cli, args + ["model", "train", "--split-seed", "3"])
    assert res.exit_code == 0, res.output
    assert "promo: version 1 from" in res.output and "highest cross-validated qini" in res.output
    res = run(cli, args + ["model", "evaluate", "--json"])
    assert res.exit_code == 0, res.output
    [ev] = json.loads(res.output)
    up = ev["outcomes"]["conversion"]["uplift"]
    assert up["model"]["keep_at_50"] > up["random"]["keep_at_50"]
    assert ev["outcomes"]["conversion"]["propensity"]["auc"] > 0.6
    res = run(cli, args + ["model", "list"])
    assert res.exit_code == 0 and "promo" in res.output and "2025-03-03..2025-03-03" in res.output
    res = run(cli, args + ["report", "incrementality", "hist-1"])
    assert res.exit_code == 0 and "conversion" in res.output and "yes" in res.output
    (project.root / "models" / "promo" / "v0001.skops").write_bytes(b"PK\x03\x04 not a model")
    res = run(cli, args + ["model", "evaluate"])
    assert res.exit_code == 12 and "checksum does not match" in res.output
    engine.dispose()


feature_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(lambda s: s.strip() == s)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.one_of(st.integers(-10**9, 10**9), st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: round(f, 3)), feature_text), min_size=1, max_size=4))
def test_history_features_round_trip_through_csv(engine, tmp_path_factory, values):
    """Whatever a feature cell holds comes back as the same number or the same text."""
    folder = tmp_path_factory.mktemp("hist")
    with engine.begin() as conn:
        have = conn.execute(Customer.__table__.select().where(Customer.__table__.c.id == "C0000000")).first()
    if have is None:
        add_customers(engine, 1)
    run_id = folder.name
    path = folder / "h.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "campaign", "window", "as_of", "customer_id", "message_id", "action"] + [f"f{i}" for i in range(len(values))])
        w.writerow([run_id, "c", run_id, AS_OF.isoformat(), "C0000000", "m", "send"] + values)
    import_history(engine, path)
    from relmail.store.models import Decision

    with engine.connect() as conn:
        feats = conn.execute(Decision.__table__.select().where(Decision.__table__.c.run_id == run_id)).first().features
    for i, v in enumerate(values):
        got = feats[f"f{i}"]
        if isinstance(v, str):
            if re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?", v):
                assert float(got) == float(v)  # a plain decimal becomes a number
            else:
                assert got == v  # anything else ("1e5", "007", "nan") stays text
        else:
            assert got == v and isinstance(got, (int, float))


def test_an_imported_run_with_its_outcomes_is_discarded_and_imported_again_corrected(engine, tmp_path):
    from relmail.planning.runs import discard_run

    add_customers(engine, 4)
    path = write_history(tmp_path / "h.csv", 4)
    import_history(engine, path)
    # Its outcomes, unsubscribes naming the run among them, are imported next.
    inside = AS_OF + timedelta(days=3)
    add_events(engine, [
        {"customer_id": "C0000000", "type": "view", "occurred_at": inside},
        {"customer_id": "C0000000", "type": "email_unsubscribed", "occurred_at": inside, "message_id": "promo", "run_id": "hist-1"},
    ])
    before = load_outcomes(engine, now=NOW)
    # A column turns out wrong: importing the corrected file again is refused with the way out.
    with pytest.raises(Conflict, match=r"relmail runs discard hist-1 --yes \(its outcome events stay\)"):
        import_history(engine, path)
    assert discard_run(engine, "hist-1")["decisions"] == 4
    import_history(engine, path)
    after = load_outcomes(engine, now=NOW)
    for name in before.outcomes:
        assert (after.outcomes[name] == before.outcomes[name]).all(), name
    assert after.outcomes["unsubscribe"].sum() == 1
