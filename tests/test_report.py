"""relmail report RUN: the figures equal the ledger's, and the HTML shows them, offline, in a real browser."""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from relmail.cli import cli
from relmail.report import build_html, offline_html, run_figures, write_report
from relmail.store.models import Customer, Decision, Event

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
RUN = "weekly:2026-W48"
PAST = "past-test:2025-W02"
PAST_AS_OF = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def planned(project, engine, tmp_path):
    """The demo shop, an earlier imported run with hold-outs and opens, and the weekly run of 2026-W48."""
    from relmail.demo import generate
    from relmail.learn.history import import_history
    from relmail.planning.run import plan

    generate(engine, customers=400, seed=3, as_of=AS_OF)
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(select(Customer.__table__.c.id).order_by(Customer.__table__.c.id).limit(60))]
    path = tmp_path / "past.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run_id", "campaign", "window", "as_of", "customer_id", "message_id", "action"])
        for i, cid in enumerate(ids):
            w.writerow([PAST, "past-test", "2025-W02", PAST_AS_OF.isoformat(), cid, "newsletter", "send" if i % 2 == 0 else "holdout"])
    import_history(engine, path)
    # 18 of 30 sends opened, 3 of 30 hold-outs "opened" (an earlier mail): a clear lift.
    opened = [cid for i, cid in enumerate(ids) if i % 2 == 0][:18] + [cid for i, cid in enumerate(ids) if i % 2 == 1][:3]
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [
            {"customer_id": c, "type": "email_opened", "occurred_at": PAST_AS_OF + timedelta(days=1), "message_id": "newsletter", "run_id": PAST}
            for c in opened
        ])
    plan(project, engine, "weekly", "2026-W48", as_of=AS_OF)
    return project


def ledger_counts(engine, run_id):
    """The run's counts straight from the decision rows, row by row: what the figures must equal."""
    d = Decision.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(d.c.customer_id, d.c.message_id, d.c.action, d.c.reasons, d.c.score).where(d.c.run_id == run_id)).all()
    actions = Counter((r.message_id, r.action) for r in rows)
    reasons = Counter(code for r in rows for code in r.reasons.split())
    stopped = Counter(code for r in rows if r.action == "suppress" for code in r.reasons.split())
    return rows, actions, reasons, stopped


def test_figures_equal_the_ledger_row_by_row(planned, engine):
    figs = run_figures(engine, RUN, project=planned)
    rows, actions, reasons, stopped = ledger_counts(engine, RUN)
    assert figs["totals"]["decisions"] == len(rows) > 0
    assert figs["totals"]["customers"] == 400
    for m in figs["messages"]:
        for a in ("send", "holdout", "suppress"):
            assert m[a] == actions[(m["message"], a)]
        hist = m["score"]["histogram"]
        assert sum(map(sum, hist.values())) == m["decisions"]
        # A send never sits below the threshold it was planned with.
        below = int(m["score"]["threshold"] * m["score"]["bins"])
        assert sum(hist["send"][:below]) == 0
        assert m["score"]["threshold"] == 0.3  # campaigns/weekly.yml min_relevance
    assert [m["message"] for m in figs["messages"]] == ["ebike-launch", "lock-tip", "welcome-offer", "service-reminder", "newsletter"]
    assert {r["code"]: r["decisions"] for r in figs["reasons"]} == dict(reasons)
    irritation = {r["code"]: r for r in figs["irritation"]}
    assert "NO_CONSENT" not in irritation and irritation["FREQUENCY_CAP"]["stopped"] == stopped["FREQUENCY_CAP"] > 0
    assert irritation["LOW_RELEVANCE"]["stopped"] == stopped["LOW_RELEVANCE"] > 0
    assert figs["suppression_total"] == sum(n for (_, a), n in actions.items() if a == "suppress") == len(figs["suppressions"])
    # The earlier imported run's lift: 18/30 opened against 3/30.
    (past,) = [e for e in figs["incrementality"] if e["message"] == "newsletter" and e["run"] == PAST]
    opens = past["outcomes"]["open"]
    assert (past["sends"], past["holdouts"]) == (30, 30)
    assert opens["rate_sent"] == pytest.approx(0.6) and opens["rate_holdout"] == pytest.approx(0.1)
    assert opens["low"] > 0 and opens["significant"]
    json.dumps(figs, allow_nan=False)  # valid JSON for machines: no NaN


def test_suppression_limit_and_unknown_run(planned, engine):
    from relmail.errors import NotFound

    figs = run_figures(engine, RUN, suppression_limit=10)
    assert len(figs["suppressions"]) == 10 < figs["suppression_total"]
    with pytest.raises(NotFound, match="no run 'weekly:1999-W01'.*newest: weekly:2026-W48"):
        run_figures(engine, "weekly:1999-W01")


def test_report_counts_what_came_back_per_message_and_customer(planned, engine):
    """Week 1's bounces, complaints, unsubscribes, opens and clicks: customers per message, as stored."""
    d = Decision.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(d.c.customer_id, d.c.message_id).where(d.c.run_id == RUN, d.c.action == "send")
                             .order_by(d.c.message_id, d.c.customer_id)).all()
    (a, m), (b, _), (c, _) = [r for r in sends if r.message_id == sends[0].message_id][:3]
    later = AS_OF + timedelta(days=1)

    def event(customer, kind, message=m, run=RUN, minutes=0):
        return {"customer_id": customer, "type": f"email_{kind}", "occurred_at": later + timedelta(minutes=minutes),
                "message_id": message, "run_id": run}

    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [
            event(a, "delivered"), event(a, "opened"), event(a, "opened", minutes=5), event(a, "clicked"),
            event(b, "bounced_soft"), event(b, "bounced_soft", minutes=60), event(b, "bounced_hard", minutes=120),
            event(b, "bounced_blocked", minutes=30),
            event(c, "complained"),
            event(c, "unsubscribed", message=None),   # the preference page: the run, no message
            event(a, "opened", run=PAST),             # another run's e-mail
            event(c, "opened", minutes=-8 * 24 * 60),  # dated a week before the run was planned: not its e-mail's
        ])
    figs = run_figures(engine, RUN, project=planned)
    got = {x["message"]: x["feedback"] for x in figs["messages"]}
    assert got[m] == {"delivered": 1, "bounced_soft": 1, "bounced_blocked": 1, "bounced_hard": 1, "complained": 1, "unsubscribed": 0,
                      "opened": 1, "clicked": 1}
    assert all(not any(f.values()) for name, f in got.items() if name != m)
    assert figs["totals"]["feedback"] == {**got[m], "unsubscribed": 1}
    html = build_html(figs)
    row = html.split('<section id="feedback">')[1].split(f'<tr data-message="{m}">')[1].split("</tr>")[0]
    assert '<td class="num" data-kind="bounced_blocked" data-value="1">' in row
    assert '<td class="num" data-kind="bounced_hard" data-value="1">' in row and '<td class="num" data-kind="opened" data-value="1">' in row


def test_a_customer_who_opened_two_of_the_runs_emails_counts_once_in_its_total(planned, engine):
    d = Decision.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(d.c.customer_id, d.c.message_id).where(d.c.run_id == RUN, d.c.action == "send")).all()
    first, second = sorted({r.message_id for r in sends})[:2]
    a, b = sorted({r.customer_id for r in sends})[:2]
    later = AS_OF + timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [
            {"customer_id": who, "type": "email_opened", "occurred_at": later, "message_id": message, "run_id": RUN}
            for who, message in ((a, first), (a, second), (b, second))])
    figs = run_figures(engine, RUN, project=planned)
    opened = {x["message"]: x["feedback"]["opened"] for x in figs["messages"]}
    assert (opened[first], opened[second], figs["totals"]["feedback"]["opened"]) == (1, 2, 2)


def test_cli_report_run_html_and_json_beside_report_incrementality(planned, engine, tmp_path, monkeypatch):
    monkeypatch.chdir(planned.root)
    runner = CliRunner()
    out = runner.invoke(cli, ["report", RUN, "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["totals"] == run_figures(engine, RUN, project=planned)["totals"]
    html = tmp_path / "r.html"
    out = runner.invoke(cli, ["report", "run", RUN, "--out", str(html), "--previews", "2"])
    assert out.exit_code == 0, out.output
    assert html.read_text().count("<iframe sandbox srcdoc=") == 2
    assert out.output.rstrip().splitlines()[0].endswith(", 2 previews")
    out = runner.invoke(cli, ["report", "run", RUN, "--out", str(html), "--previews", "1"])
    assert out.exit_code == 0 and out.output.splitlines()[0].endswith(", 1 preview"), out.output
    out = runner.invoke(cli, ["report", "incrementality", PAST, "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["run"] == PAST
    out = runner.invoke(cli, ["report", "nope:2026-W01"])
    assert out.exit_code == 8 and "no run 'nope:2026-W01'" in out.output


def test_previews_are_escaped_and_fetch_nothing():
    html = '<p>"hi" & bye</p><img src="https://t.example/p.gif"><div style="background:url(http://x.example/a.png)"></div><script>alert(1)</script>'
    safe = offline_html(html)
    assert "example" not in safe and "<script" not in safe and "data:image/svg+xml" in safe
    figs = {"run": {"id": "r", "campaign": "c", "window": "w", "as_of": "2026-12-07T16:13:00+00:00", "status": "planned", "created_at": "", "config_hash": ""},
            "totals": {"decisions": 0, "customers": 0, "send": 0, "holdout": 0, "suppress": 0, "deliveries": {}},
            "messages": [], "reasons": [], "irritation": [], "incrementality": [], "incrementality_window_days": 14,
            "confidence": 0.95, "suppression_total": 0, "suppressions": []}
    page = build_html(figs, [{"message": "m", "customer_id": "C1", "score": 0.5, "locale": "en", "subject": "<b>s</b>", "html": safe}])
    # The e-mail's markup sits escaped inside one attribute: it cannot close the iframe or run in the page.
    assert '<iframe sandbox srcdoc="&lt;p&gt;&#34;hi&#34; &amp; bye' in page
    assert "&lt;b&gt;s&lt;/b&gt;" in page and "default-src 'none'" in page


# --- headless Chromium -------------------------------------------------------------------------

READ_PAGE = """(() => {
  const num = s => Number(String(s).replace(/[^0-9.-]/g, ''));
  const cards = {};
  document.querySelectorAll('#summary .card').forEach(c => { cards[c.dataset.figure] = num(c.querySelector('.n').textContent); });
  const actions = {};
  document.querySelectorAll('svg[data-chart=actions] .bar-row').forEach(g => {
    const segs = {};
    g.querySelectorAll('rect.seg').forEach(r => { segs[r.dataset.key] = num(r.dataset.value); });
    actions[g.dataset.label] = {total: num(g.dataset.total), shown: num(g.querySelector('text.total').textContent), ...segs};
  });
  const reasons = {};
  document.querySelectorAll('svg[data-chart=reasons] .bar-row').forEach(g => { reasons[g.dataset.key] = num(g.dataset.value); });
  const irritation = {};
  document.querySelectorAll('svg[data-chart=irritation] .bar-row').forEach(g => { irritation[g.dataset.key] = num(g.dataset.value); });
  const scores = {};
  document.querySelectorAll('svg[data-chart=scores]').forEach(s => {
    let n = 0; s.querySelectorAll('rect.bin').forEach(r => { n += num(r.dataset.value); });
    scores[s.dataset.message] = {threshold: Number(s.dataset.threshold), total: n, line: !!s.querySelector('line.threshold')};
  });
  const rows = Array.from(document.querySelectorAll('#suppressions tbody tr')).map(tr => [
    tr.cells[0].textContent.trim(), tr.cells[1].textContent.trim(),
    Array.from(tr.cells[3].querySelectorAll('.badge')).map(b => b.textContent).join(' ')]);
  const lift = Array.from(document.querySelectorAll('#lift tbody tr')).map(tr => ({
    run: tr.dataset.run, message: tr.dataset.message, outcome: tr.dataset.outcome,
    low: Number(tr.querySelector('svg.ci').dataset.low), high: Number(tr.querySelector('svg.ci').dataset.high)}));
  const frames = Array.from(document.querySelectorAll('#previews iframe')).map(f => ({
    sandbox: f.getAttribute('sandbox'), visible: f.getBoundingClientRect().height > 100}));
  return {cards, actions, reasons, irritation, scores, rows, lift, frames,
          shown: num(document.getElementById('shown').textContent)};
})()"""


def test_report_in_headless_chromium_shows_the_runs_numbers_offline(planned, engine, browser, tmp_path):
    out = tmp_path / "report.html"
    figs = write_report(planned, engine, RUN, out, previews=3)
    rows, actions, reasons, stopped = ledger_counts(engine, RUN)

    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.call(f"{domain}.enable")
    browser.call("Page.navigate", url=out.as_uri())
    browser.wait_for("Page.loadEventFired")
    page = browser.evaluate(READ_PAGE)

    assert page["cards"] == {"decisions": len(rows), "send": figs["totals"]["send"], "holdout": figs["totals"]["holdout"],
                             "suppress": figs["totals"]["suppress"], "accepted": 0}
    assert page["cards"]["send"] == sum(n for (_, a), n in actions.items() if a == "send") > 0
    for m in figs["messages"]:
        bar = page["actions"][m["message"]]
        assert (bar["send"], bar["holdout"], bar["suppress"]) == tuple(actions[(m["message"], a)] for a in ("send", "holdout", "suppress"))
        assert bar["shown"] == bar["total"] == m["decisions"]
        assert page["scores"][m["message"]] == {"threshold": 0.3, "total": m["decisions"], "line": True}
    assert page["reasons"] == dict(reasons)
    assert {k: v for k, v in page["irritation"].items() if v} == {k: v for k, v in stopped.items() if k in page["irritation"]}
    suppressed = sorted([r.customer_id, r.message_id, r.reasons] for r in rows if r.action == "suppress")
    assert page["shown"] == len(suppressed) and sorted(page["rows"]) == suppressed
    assert any(e["run"] == PAST and e["outcome"] == "open" and e["low"] > 0 for e in page["lift"])
    assert len(page["frames"]) == 3 and all(f["sandbox"] == "" and f["visible"] for f in page["frames"])

    # The search box filters the list: one customer's suppressed messages.
    customer = page["rows"][0][0]
    shown = browser.evaluate(f"""(() => {{ const box = document.getElementById('search'); box.value = '{customer}';
        box.dispatchEvent(new Event('input')); return [Number(document.getElementById('shown').textContent),
        document.querySelectorAll('#suppressions tbody tr:not([hidden])').length]; }})()""")
    assert shown == [sum(1 for r in rows if r.action == "suppress" and r.customer_id == customer)] * 2

    metrics = browser.call("Page.getLayoutMetrics")["cssContentSize"]
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                        clip={"x": 0, "y": 0, "width": 1280, "height": min(metrics["height"], 6000), "scale": 1})
    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    if os.environ.get("RELMAIL_REPORT_SCREENSHOT"):
        shutil.copy(png, os.environ["RELMAIL_REPORT_SCREENSHOT"])
    assert png.stat().st_size > 20_000

    browser.call("Runtime.evaluate", expression="1")  # drain events that arrived with the screenshot
    errors = [e for e in browser.events if e.get("method") == "Runtime.exceptionThrown"
              or (e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
              or (e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]
    assert errors == []
    fetched = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    assert fetched and all(u.split(":", 1)[0] in ("file", "data", "about") for u in fetched), fetched


def test_report_and_incrementality_take_campaign_last_like_runs_show(planned, engine, tmp_path, monkeypatch):
    """An operator's Friday job writes `relmail report weekly:last`, as `relmail runs show weekly:last` reads."""
    monkeypatch.chdir(planned.root)
    runner = CliRunner()
    out = runner.invoke(cli, ["report", "weekly:last", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["run"]["id"] == RUN
    out = runner.invoke(cli, ["report", "incrementality", "past-test:last", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["run"] == PAST
    out = runner.invoke(cli, ["report", "nope:last"])
    assert out.exit_code == 8 and "campaign 'nope' has no run" in out.output


def _entry(run, outcomes):
    """One incrementality entry as run_figures gives it: outcome -> (rate sent, rate held out, low, high)."""
    return {"run": run, "message": "newsletter", "sends": 4000, "holdouts": 400, "as_of": AS_OF.isoformat(), "this_run": True,
            "outcomes": {name: {"rate_sent": s, "rate_holdout": h, "lift": s - h, "low": lo, "high": hi, "significant": lo > 0 or hi < 0}
                         for name, (s, h, lo, hi) in outcomes.items()}}


def test_lift_reads_as_good_or_bad_for_the_shop_in_headless_chromium(planned, engine, browser, tmp_path):
    """More unsubscribes is red, fewer green; opens and clicks (hold-outs get no e-mail) are reach, never a success."""
    figs = run_figures(engine, RUN, project=planned)
    figs["incrementality"] = [_entry(RUN, {
        "open": (0.33, 0.0, 0.31, 0.35), "click": (0.08, 0.0, 0.06, 0.09), "conversion": (0.05, 0.02, 0.01, 0.05),
        "visit": (0.10, 0.15, -0.09, -0.01), "unsubscribe": (0.013, 0.0, 0.006, 0.018), "complaint": (0.001, 0.01, -0.02, -0.002)})]
    out = tmp_path / "lift.html"
    out.write_text(build_html(figs))
    browser.show(out, 1280)
    shown = browser.evaluate("""Object.fromEntries(Array.from(document.querySelectorAll('#lift tbody tr')).map(tr => [tr.dataset.outcome,
        [getComputedStyle(tr.cells[7]).color, tr.querySelector('svg.ci circle').getAttribute('fill'), tr.cells[4].textContent.trim()]]))""")
    green, red, grey = "rgb(22, 163, 74)", "rgb(220, 38, 38)", "#64748b"
    assert shown["unsubscribe"][:2] == [red, "#dc2626"] and shown["complaint"][:2] == [green, "#16a34a"]
    assert shown["conversion"][:2] == [green, "#16a34a"] and shown["visit"][:2] == [red, "#dc2626"]
    for reach in ("open", "click"):
        assert shown[reach][0] not in (green, red) and shown[reach][1] == grey and shown[reach][2] == f"{reach} (reach)"


@pytest.mark.parametrize("width", [390, 1280])
def test_report_fits_a_phone_and_a_desktop_in_headless_chromium(planned, engine, browser, tmp_path, width):
    """No sideways scrolling of the page (a wide table scrolls in its own box) and chart labels of at least 9 px."""
    figs = run_figures(engine, RUN, project=planned)
    figs["incrementality"] = [_entry(RUN, {"open": (0.33, 0.0, 0.31, 0.35), "unsubscribe": (0.013, 0.0, -0.01, 0.018)})]
    out = tmp_path / "report.html"
    out.write_text(build_html(figs))
    browser.show(out, width)
    page = browser.evaluate("""(() => {
        const shown = s => Array.from(document.querySelectorAll(s)).filter(e => e.getBoundingClientRect().width > 0);
        const labels = shown('svg.chart[data-chart=actions] text, svg.chart[data-chart=reasons] text, svg.chart[data-chart=irritation] text');
        return {inner: innerWidth, scroll: document.documentElement.scrollWidth, charts: shown('svg.chart[data-chart=reasons]').length,
                smallest: Math.min(...labels.map(t => t.getBoundingClientRect().height)),
                tables: shown('#per-message table, #feedback table, #lift').map(t => t.parentElement.scrollWidth > t.parentElement.clientWidth
                    ? getComputedStyle(t.parentElement).overflowX : 'fits')}; })()""")
    assert page["inner"] == width and page["scroll"] <= width  # a desktop's scroll bar takes its 15 px
    assert page["charts"] == 1 and page["smallest"] >= 9
    assert set(page["tables"]) <= {"auto", "fits"} and len(page["tables"]) == 3


def test_cli_incrementality_lists_complaints(planned, engine, monkeypatch):
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [{"customer_id": "C0000001", "type": "email_complained", "run_id": PAST,
                                                 "message_id": "newsletter", "occurred_at": PAST_AS_OF + timedelta(days=1)}])
    monkeypatch.chdir(planned.root)
    out = CliRunner().invoke(cli, ["report", "incrementality", PAST])
    assert out.exit_code == 0, out.output
    assert any(line.split()[4:5] == ["complaint"] for line in out.output.splitlines()), out.output


def test_incrementality_closes_windows_on_relmail_now(planned, engine, monkeypatch):
    """A rehearsal on a fixed clock: a run whose outcome window is still open then is not measured yet."""
    from relmail.learn.incrementality import incrementality

    monkeypatch.setenv("RELMAIL_NOW", (PAST_AS_OF + timedelta(days=13)).isoformat())
    assert incrementality(engine, None, timedelta(days=14)) == []
    monkeypatch.setenv("RELMAIL_NOW", (PAST_AS_OF + timedelta(days=14)).isoformat())
    assert [e["run"] for e in incrementality(engine, None, timedelta(days=14))] == [PAST]


def test_what_came_back_shows_each_count_as_a_share_of_the_customers_mailed_in_headless_chromium(planned, engine, browser, tmp_path):
    """The open rate a manager asks for: per message of its e-mails handed over, for the run of its customers mailed."""
    from relmail.store.models import Delivery

    d = Decision.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(d.c.id, d.c.customer_id, d.c.message_id).where(d.c.run_id == RUN, d.c.action == "send")
                             .order_by(d.c.message_id, d.c.customer_id)).all()
    later = AS_OF + timedelta(days=1)
    opened = sends[::3]
    with engine.begin() as conn:
        conn.execute(Delivery.__table__.insert(), [{"decision_id": s.id, "run_id": RUN, "customer_id": s.customer_id, "message_id": s.message_id,
                                                    "status": "accepted", "attempts": 1, "updated_at": AS_OF} for s in sends])
        conn.execute(Event.__table__.insert(), [{"customer_id": s.customer_id, "type": "email_opened", "occurred_at": later,
                                                 "message_id": s.message_id, "run_id": RUN} for s in opened])
    figs = run_figures(engine, RUN, project=planned)
    assert figs["totals"]["customers_mailed"] == len({s.customer_id for s in sends})
    out = tmp_path / "report.html"
    out.write_text(build_html(figs))
    browser.show(out, 390)
    shown = browser.evaluate("""Object.fromEntries(Array.from(document.querySelectorAll('#feedback tbody tr')).map(tr =>
        [tr.dataset.message, tr.querySelector('[data-kind=opened] .rate').textContent]))""")
    for m in figs["messages"]:
        n = sum(1 for s in sends if s.message_id == m["message"])
        assert shown[m["message"]] == (f"{100 * sum(1 for s in opened if s.message_id == m['message']) / n:.1f}%" if n else "–")
    assert shown[""] == f"{100 * len({s.customer_id for s in opened}) / figs['totals']['customers_mailed']:.1f}%"


def test_revenue_per_customer_shows_where_the_lift_figures_are_in_text_and_headless_chromium(planned, engine, browser, tmp_path, monkeypatch):
    """Purchases of the earlier run's customers: the mean per customer sent and held out, and the lift with its interval."""
    from relmail.learn.incrementality import incrementality

    with engine.connect() as conn:
        d = Decision.__table__
        rows = conn.execute(select(d.c.customer_id, d.c.action).where(d.c.run_id == PAST).order_by(d.c.customer_id)).all()
    buys = [(r.customer_id, 120.0 if r.action == "send" else 40.0) for i, r in enumerate(rows) if i % 3 == 0]
    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [{"customer_id": c, "type": "purchase", "value": v, "occurred_at": PAST_AS_OF + timedelta(days=2)}
                                                for c, v in buys])
    (entry,) = [e for e in incrementality(engine, PAST, timedelta(days=14))]
    r = entry["revenue_per_customer"]
    sent = [v for (c, v) in buys if v == 120.0]
    held = [v for (c, v) in buys if v == 40.0]
    assert r["sent"] == pytest.approx(sum(sent) / 30) and r["holdout"] == pytest.approx(sum(held) / 30)
    assert r["lift"] == pytest.approx(r["sent"] - r["holdout"])

    monkeypatch.chdir(planned.root)
    out = CliRunner().invoke(cli, ["report", "incrementality", PAST])
    assert out.exit_code == 0, out.output
    (line,) = [x for x in out.output.splitlines() if "revenue per customer" in x and x.startswith(PAST)]
    assert line.split()[7:10] == [f"{r['sent']:.2f}", f"{r['holdout']:.2f}", f"{r['lift']:+.2f}"]
    assert f"[{r['low']:+.2f}, {r['high']:+.2f}]" in line

    figs = run_figures(engine, RUN, project=planned)
    out = tmp_path / "lift.html"
    out.write_text(build_html(figs))
    browser.show(out, 390)
    shown = browser.evaluate("""Array.from(document.querySelectorAll('#revenue-lift tbody tr')).map(tr => ({run: tr.dataset.run,
        cells: Array.from(tr.cells).slice(2, 5).map(c => c.textContent.trim()), visible: tr.getBoundingClientRect().height > 0,
        ci: Number(tr.querySelector('svg.ci').dataset.high)}))""")
    assert shown == [{"run": PAST, "cells": [f"{r['sent']:.2f}", f"{r['holdout']:.2f}", f"{r['lift']:+.2f}"], "visible": True,
                      "ci": pytest.approx(r["high"], abs=1e-6)}]


def test_hold_outs_are_the_experiment_not_irritation_prevented(planned, engine):
    """HELD_OUT keeps a control group and NOT_WORTH_IT the shop's money: neither is counted as irritation prevented."""
    from relmail.report import irritation_codes
    from relmail.rules import HARD, REASON_KINDS

    codes = irritation_codes()
    assert "HELD_OUT" not in codes and "NOT_WORTH_IT" not in codes and not set(codes) & HARD
    assert {"FREQUENCY_CAP", "TOPIC_FREQUENCY_CAP", "FATIGUE", "LOW_RELEVANCE", "NEGATIVE_UPLIFT", "OWNS_PRODUCT"} <= set(codes)
    assert (REASON_KINDS["HELD_OUT"], REASON_KINDS["HOLDOUT"], REASON_KINDS["NO_CONSENT"], REASON_KINDS["HARD_BOUNCE"],
            REASON_KINDS["NOT_WORTH_IT"], REASON_KINDS["ARBITRATION_LOST"]) == ("experiment", "experiment", "compliance", "compliance",
                                                                               "value", "arbitration")
    figs = run_figures(engine, RUN, project=planned)
    assert "HELD_OUT" not in {r["code"] for r in figs["irritation"]}
    rows, *_ = ledger_counts(engine, RUN)
    kinds = {k["kind"]: k["decisions"] for k in figs["reason_kinds"]}
    for kind, n in kinds.items():
        assert n == sum(1 for r in rows if any(REASON_KINDS[c] == kind for c in r.reasons.split()))
    assert kinds["experiment"] == sum(1 for r in rows if r.action == "holdout" or "HELD_OUT" in r.reasons.split()) > 0
    assert {r["code"]: r["kind"] for r in figs["reasons"]}["HOLDOUT"] == "experiment"


def test_histograms_name_their_axes_and_the_two_delivered_figures_differ_in_headless_chromium(planned, engine, browser, tmp_path):
    figs = run_figures(engine, RUN, project=planned)
    out = tmp_path / "report.html"
    out.write_text(build_html(figs))
    browser.show(out, 375)
    page = browser.evaluate("""(() => {
        const svg = document.querySelector('svg[data-chart=scores]'), box = svg.getBoundingClientRect();
        const titles = Array.from(svg.querySelectorAll('text.axis-title')).map(t => { const r = t.getBoundingClientRect();
            return {axis: t.dataset.axis, text: t.textContent, inside: r.left >= box.left && r.right <= box.right && r.top >= box.top
                    && r.bottom <= box.bottom, px: r[t.dataset.axis === 'x' ? 'height' : 'width']}; });
        const heads = sel => Array.from(document.querySelectorAll(sel)).map(th => th.textContent.trim());
        return {titles, perMessage: heads('#per-message thead th'), feedback: heads('#feedback thead th'),
                card: document.querySelector('[data-figure=accepted] .l').textContent}; })()""")
    assert [(t["axis"], t["text"], t["inside"]) for t in page["titles"]] == [("x", "relevance score", True), ("y", "decisions", True)]
    assert min(t["px"] for t in page["titles"]) >= 9
    assert page["perMessage"][-2:] == ["accepted", "refused at send"] and "delivered" not in page["perMessage"]
    assert page["feedback"][1:3] == ["handed over", "reported delivered"]
    assert page["card"] == "accepted by the mail server or ESP"


def test_an_imported_run_says_it_was_sent_elsewhere_and_reads_its_rates_against_its_sends(planned, engine, tmp_path, monkeypatch):
    figs = run_figures(engine, PAST, project=planned)
    assert figs["run"]["source"] == "imported" and figs["totals"]["deliveries"] == {}
    assert (figs["totals"]["customers_mailed"], figs["totals"]["sent"]) == (30, 30)
    monkeypatch.chdir(planned.root)
    out = CliRunner().invoke(cli, ["report", PAST, "--out", str(tmp_path / "p.html"), "--previews", "0"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "0 suppressed (imported with relmail runs import: sent elsewhere, no deliveries)" in lines[0]
    assert lines[1].startswith("came back (of 30 customers mailed): ")
    assert 'data-source="imported"' in (tmp_path / "p.html").read_text()


def test_the_page_shows_the_runs_time_as_the_command_line_does_and_counts_one_run_in_the_singular(planned, engine):
    # The header showed "as of 2026-12-07T16:13:51.977835+00:00", and a campaign's first run "1 runs".
    figures = run_figures(engine, RUN, project=planned)
    as_of = datetime.fromisoformat(figures["run"]["as_of"]).astimezone(UTC)
    page = build_html(figures)
    assert f"as of {as_of:%Y-%m-%d %H:%M} UTC ·" in page and figures["run"]["as_of"] not in page
    runs = len(figures["trend"])
    assert f"<th>{runs} run{'s' if runs != 1 else ''}</th>" in page
    first = build_html({**figures, "trend": figures["trend"][-1:]})
    assert "<th>1 run</th>" in first and "1 runs" not in first


def _settle(engine, run, verdict):
    """Hand the run's e-mails to the ledger as a sender does, and settle each as ``verdict(customer, message)`` says."""
    from relmail.sending import ledger

    now = AS_OF + timedelta(hours=1)
    ledger.prepare(engine, run, now)
    claims = ledger.claim(engine, run, now, limit=100_000)
    ledger.record(engine, [ledger.Settlement(c.delivery_id, **verdict(c.customer_id, c.message_id)) for c in claims], now, {})


ACCEPTED = {"status": "accepted", "provider_id": "250 ok"}
NO_SUCH_USER = {"status": "rejected", "reason": "550 5.1.1 No such user", "hard_bounce": True}


def test_an_email_refused_at_send_is_no_bounce_of_the_emails_mailed(planned, engine, tmp_path, monkeypatch):
    """An SMTP 550 to RCPT (an ESP's synchronous rejection) was never mailed: refused at send, apart from the bounces.

    The ledger keeps its hard bounce (later plans leave the dead address out), but a bounce rate of the e-mails
    mailed must count only what bounced after the mail server or ESP accepted the e-mail.
    """
    d, e = Decision.__table__, Event.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(d.c.customer_id, d.c.message_id).where(d.c.run_id == RUN, d.c.action == "send")
                             .order_by(d.c.message_id, d.c.customer_id)).all()
    ((m, n),) = Counter(s.message_id for s in sends).most_common(1)
    mine = [s.customer_id for s in sends if s.message_id == m]
    dead, blocked, bounced = mine[:2], mine[2], mine[3]
    policy = {"status": "rejected", "reason": "550 5.7.1 Blocked by policy"}
    _settle(engine, RUN, lambda c, _: NO_SUCH_USER if c in dead else policy if c == blocked else ACCEPTED)
    later = AS_OF + timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(e.insert(), [
            # The bounce mailbox: a bounce of an e-mail the server accepted.
            {"customer_id": bounced, "type": "email_bounced_hard", "occurred_at": later, "message_id": m, "run_id": RUN},
            # The ESP's own event of the refusal it answered at send.
            {"customer_id": blocked, "type": "email_bounced_blocked", "occurred_at": later, "message_id": m, "run_id": RUN},
        ])
    with engine.connect() as conn:  # the dead addresses stay recorded: every later plan leaves them out
        assert set(conn.execute(select(e.c.customer_id).where(e.c.type == "email_bounced_hard", e.c.run_id == RUN)).scalars()) == {*dead, bounced}

    figs = run_figures(engine, RUN, project=planned)
    (msg,) = [x for x in figs["messages"] if x["message"] == m]
    assert (msg["feedback"]["bounced_hard"], msg["feedback"]["bounced_blocked"]) == (1, 0)
    assert (msg["deliveries"]["rejected"], msg["refused_hard"], msg["sent"]) == (3, 2, n - 3)
    t = figs["totals"]
    assert (t["feedback"]["bounced_hard"], t["feedback"]["bounced_blocked"]) == (1, 0)
    assert (t["deliveries"]["rejected"], t["refused_hard"], t["feedback_emails"]["bounced_hard"]) == (3, 2, 1)
    assert t["customers_mailed"] == t["sent"] == len(sends) - 3

    html = build_html(figs)
    row = html.split('<section id="feedback">')[1].split(f'<tr data-message="{m}">')[1].split("</tr>")[0]
    assert f'data-kind="bounced_hard" data-value="1">1<span class="rate">{100 / (n - 3):.1f}%</span>' in row
    assert '<div class="n">3</div><div class="l">refused at send: not mailed (2 hard bounce)</div>' in html
    row = html.split('<section id="per-message">')[1].split(f'<tr data-message="{m}">')[1].split("</tr>")[0]
    assert '<td class="num" data-figure="rejected">3<span class="rate">2 hard bounce</span></td>' in row

    monkeypatch.chdir(planned.root)
    out = CliRunner().invoke(cli, ["report", RUN, "--out", str(tmp_path / "r.html"), "--previews", "0"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert ", 0 deferred, 3 refused at send (not mailed; 2 hard bounce), 0 failed" in lines[1]
    assert lines[2].startswith(f"came back (of {len(sends) - 3:,} customers mailed): ") and ", 1 hard bounce, " in lines[2]


def test_what_came_back_reads_each_rate_against_the_emails_handed_over_and_shows_them(planned, engine):
    """An uncertain e-mail (handed over whole, its reply lost) was mailed: it is in the column the rates read against."""
    from relmail.sending import ledger

    d = Decision.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(d.c.customer_id, d.c.message_id).where(d.c.run_id == RUN, d.c.action == "send")).all()
    ((m, n),) = Counter(s.message_id for s in sends).most_common(1)
    lost = next(s.customer_id for s in sends if s.message_id == m)
    uncertain = {"status": "accepted", "reason": ledger.UNCERTAIN}
    _settle(engine, RUN, lambda c, msg: uncertain if (c, msg) == (lost, m) else ACCEPTED)
    figs = run_figures(engine, RUN, project=planned)
    (msg,) = [x for x in figs["messages"] if x["message"] == m]
    assert (msg["deliveries"]["accepted"], msg["deliveries"]["uncertain"]) == (n - 1, 1)
    section = build_html(figs).split('<section id="feedback">')[1]
    assert '<th class="num">handed over</th>' in section
    assert f'<tr data-message="{m}"><td>{m}</td><td class="num">{n:,}</td>' in section


TWICE = """\
title: Two e-mails a week
policy:
  min_relevance: 0
  holdout_share: 0
  max_messages_per_run: 2
messages:
  - id: news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: loyalty
    value: 10
  - id: tips
    template: newsletter
    topic: product-tips
    segments: [everyone]
    offer: loyalty
    value: 10
"""
TWICE_RUN = "twice:2026-W48"


@pytest.fixture
def twice(project, engine, monkeypatch):
    """A run that mails some customers two messages: every e-mail accepted but one customer's first, refused at send."""
    from relmail.demo import generate
    from relmail.planning.run import plan

    (project.root / "campaigns" / "twice.yml").write_text(TWICE)
    generate(engine, customers=300, seed=5, as_of=AS_OF)
    plan(project, engine, "twice", "2026-W48", as_of=AS_OF)
    d = Decision.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(d.c.customer_id, d.c.message_id).where(d.c.run_id == TWICE_RUN, d.c.action == "send")).all()
    got = {}
    for s in sends:
        got.setdefault(s.customer_id, set()).add(s.message_id)
    both = sorted(c for c, messages in got.items() if len(messages) == 2)
    assert len(both) >= 3 and any(len(messages) == 1 for messages in got.values())
    refused = both[2]
    _settle(engine, TWICE_RUN, lambda c, message: NO_SUCH_USER if (c, message) == (refused, "news") else ACCEPTED)
    monkeypatch.setenv("RELMAIL_NOW", (AS_OF + timedelta(days=3)).isoformat())
    return got, both, refused


def test_a_run_that_mails_two_messages_counts_opens_per_email_and_per_customer_apart(twice, project, engine, tmp_path, monkeypatch):
    """Per message and per e-mail, an opener of both her e-mails is two opens of two e-mails; per customer she is one.

    Every whole-run rate reads customers against customers mailed, every e-mail count e-mails against e-mails sent.
    """
    got, both, refused = twice
    x, y = both[:2]
    emails = [(c, m) for c, messages in got.items() for m in messages if (c, m) != (refused, "news")]
    customers = len(got)  # the refused customer is still mailed: her second e-mail was accepted
    later = AS_OF + timedelta(days=1)

    def event(customer, kind, message):
        return {"customer_id": customer, "type": f"email_{kind}", "occurred_at": later, "message_id": message, "run_id": TWICE_RUN}

    with engine.begin() as conn:
        conn.execute(Event.__table__.insert(), [event(c, "delivered", m) for c, m in emails] + [
            event(x, "opened", "news"), event(x, "opened", "tips"), event(x, "clicked", "tips"),
            event(y, "opened", "news"), event(refused, "opened", "tips"), event(y, "unsubscribed", "tips")])
    figs = run_figures(engine, TWICE_RUN, project=project)
    per = {m["message"]: m for m in figs["messages"]}
    sent = {name: sum(1 for _, m in emails if m == name) for name in ("news", "tips")}
    assert {name: per[name]["sent"] for name in per} == sent
    assert {name: per[name]["feedback"]["opened"] for name in per} == {"news": 2, "tips": 2}
    assert {name: per[name]["feedback"]["delivered"] for name in per} == sent
    t = figs["totals"]
    assert t["feedback"]["bounced_hard"] == 0  # the refused customer's dead address was refused, not bounced
    assert (t["sent"], t["customers_mailed"]) == (len(emails), customers)
    assert (t["feedback_emails"]["opened"], t["feedback"]["opened"]) == (4, 3)  # x twice, y and the refused customer once
    assert (t["feedback_emails"]["delivered"], t["feedback"]["delivered"]) == (len(emails), customers)
    assert (t["feedback_emails"]["clicked"], t["feedback"]["clicked"], t["feedback"]["unsubscribed"]) == (1, 1, 1)
    assert t["refused_hard"] == 1

    (week,) = figs["trend"]
    assert (week["sent"], week["delivered_emails"], week["customers_mailed"]) == (len(emails), len(emails), customers)
    assert (week["open_rate"], week["click_rate"]) == (round(3 / customers, 4), round(1 / customers, 4))
    assert week["unsubscribes_per_1000"] == round(1000 / customers, 2)

    html = build_html(figs)
    feedback = html.split('<section id="feedback">')[1].split("</section>")[0]
    for name in ("news", "tips"):
        row = feedback.split(f'<tr data-message="{name}">')[1].split("</tr>")[0]
        assert f'data-kind="opened" data-value="2">2<span class="rate">{200 / sent[name]:.1f}%</span>' in row
    row = feedback.split('<tr data-message="">')[1].split("</tr>")[0]
    assert f'<td class="num" data-value="{customers}">{customers:,}<span class="rate">customers</span></td>' in row
    assert f'data-kind="opened" data-value="3">3<span class="rate">{300 / customers:.1f}%</span>' in row

    monkeypatch.chdir(project.root)
    out = CliRunner().invoke(cli, ["report", TWICE_RUN, "--out", str(tmp_path / "r.html"), "--previews", "0"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[2].startswith(f"came back (of {customers:,} customers mailed): {customers:,} reported delivered by the provider, ")
    assert f", 3 opened ({300 / customers:.1f}%), " in lines[2]
    rows = {line[:22].strip(): line[22:].split() for line in lines[lines.index("") + 2:]}
    assert (rows["e-mails sent"][0], rows["reported delivered"][0], rows["customers mailed"][0]) == (f"{len(emails):,}",) * 2 + (f"{customers:,}",)
