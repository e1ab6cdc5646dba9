"""The weekly report a manager reads: week on week, what kind of run it is, which "delivered", what each reason means.

Three weekly runs of the demo shop planned a week apart under ``RELMAIL_NOW``,
their e-mails accepted, opened and followed by purchases; the figures are
checked against the ledger row by row, and the page in headless Chromium on
a phone.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from relmail.cli import cli
from relmail.report import build_html, run_figures
from relmail.store.models import Decision, Delivery, Event

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
WEEKS = ["2026-W48", "2026-W49", "2026-W50"]
#: Three days after the last run was planned: every run is measured over its first three days.
NOW = AS_OF + timedelta(days=14, hours=72)
DAY = timedelta(days=1)


@pytest.fixture
def weekly(project, engine, monkeypatch):
    """The demo shop and three weekly runs a week apart, each sent, a third of it opened, some of it bought."""
    from relmail.demo import generate
    from relmail.planning.run import plan

    generate(engine, customers=300, seed=5, as_of=AS_OF)
    d = Decision.__table__
    for k, window in enumerate(WEEKS):
        as_of = AS_OF + k * 7 * DAY
        monkeypatch.setenv("RELMAIL_NOW", as_of.isoformat())
        plan(project, engine, "weekly", window, as_of=as_of)
        run = f"weekly:{window}"
        with engine.connect() as conn:
            sends = conn.execute(select(d.c.id, d.c.customer_id, d.c.message_id).where(d.c.run_id == run, d.c.action == "send")
                                 .order_by(d.c.customer_id, d.c.message_id)).all()
        with engine.begin() as conn:
            conn.execute(Delivery.__table__.insert(), [{"decision_id": s.id, "run_id": run, "customer_id": s.customer_id,
                                                        "message_id": s.message_id, "status": "accepted", "attempts": 1,
                                                        "updated_at": as_of} for s in sends])
            events = []
            for i, s in enumerate(sends):
                if i % (k + 2) == 0:  # fewer opens each week
                    events.append({"customer_id": s.customer_id, "type": "email_opened", "occurred_at": as_of + DAY,
                                   "message_id": s.message_id, "run_id": run})
                if i % 5 == 0:  # an open five days later: after the three days every run is measured over
                    events.append({"customer_id": s.customer_id, "type": "email_clicked", "occurred_at": as_of + 5 * DAY,
                                   "message_id": s.message_id, "run_id": run})
                if i % 7 == k:
                    events.append({"customer_id": s.customer_id, "type": "purchase", "occurred_at": as_of + 2 * DAY,
                                   "value": 10.0 * (k + 1)})
            events.append({"customer_id": sends[0].customer_id, "type": "email_unsubscribed", "occurred_at": as_of + DAY,
                           "message_id": sends[0].message_id, "run_id": run})
            conn.execute(Event.__table__.insert(), [{"message_id": None, "run_id": None, "value": None, **x} for x in events])
    monkeypatch.setenv("RELMAIL_NOW", NOW.isoformat())
    return project


def expected(engine, run: str, as_of: datetime, days: float) -> dict:
    """A run's trend figures, row by row from the ledger."""
    d, e, dl = Decision.__table__, Event.__table__, Delivery.__table__
    end = as_of + timedelta(days=days)
    with engine.connect() as conn:
        actions = Counter(a for (a,) in conn.execute(select(d.c.action).where(d.c.run_id == run)))
        accepted = [c for (c,) in conn.execute(select(dl.c.customer_id).where(dl.c.run_id == run, dl.c.status == "accepted"))]
        events = conn.execute(select(e.c.customer_id, e.c.type, e.c.value, e.c.run_id, e.c.occurred_at)
                              .where(e.c.occurred_at > as_of, e.c.occurred_at <= end)).all()
    mailed = set(accepted)
    who = lambda kind: {x.customer_id for x in events if x.type == kind and x.run_id == run}  # noqa: E731
    buyers = [x for x in events if x.type == "purchase" and x.customer_id in mailed]
    decisions = sum(actions.values())
    return {"sent": len(accepted), "customers_mailed": len(mailed), "suppression_rate": round(actions["suppress"] / decisions, 4),
            "open_rate": round(len(who("email_opened")) / len(mailed), 4), "click_rate": round(len(who("email_clicked")) / len(mailed), 4),
            "conversion_rate": round(len({x.customer_id for x in buyers}) / len(mailed), 4),
            "unsubscribes_per_1000": round(1000 * len(who("email_unsubscribed")) / len(mailed), 2),
            "revenue": round(sum(x.value for x in buyers), 2)}


def test_the_trend_shows_each_run_over_the_same_days_and_the_change_from_the_one_before(weekly, engine):
    figs = run_figures(engine, "weekly:2026-W50", project=weekly)
    trend = figs["trend"]
    assert [t["run"] for t in trend] == [f"weekly:{w}" for w in WEEKS]
    assert {t["measured_days"] for t in trend} == {3.0}
    for k, t in enumerate(trend):
        want = expected(engine, t["run"], AS_OF + k * 7 * DAY, 3)
        assert {m: t[m] for m in want} == want
        assert t["click_rate"] == 0  # the clicks came five days after: later than this run has had
    assert trend[0]["change"]["open_rate"] is None
    for before, after in zip(trend, trend[1:]):
        assert after["change"]["open_rate"] == pytest.approx(after["open_rate"] - before["open_rate"], abs=1e-4)
        assert after["change"]["revenue"] == pytest.approx(after["revenue"] - before["revenue"])
        assert after["change"]["sent"] == after["sent"] - before["sent"]
    assert trend[-1]["open_rate"] < trend[0]["open_rate"] and trend[-1]["change"]["open_rate"] < 0
    # The report of an earlier run shows the runs up to it, and --trend N the last N.
    assert [t["run"] for t in run_figures(engine, "weekly:2026-W49", project=weekly)["trend"]] == ["weekly:2026-W48", "weekly:2026-W49"]
    assert [t["run"] for t in run_figures(engine, "weekly:2026-W50", trend_runs=2)["trend"]] == ["weekly:2026-W49", "weekly:2026-W50"]
    assert run_figures(engine, "weekly:2026-W50", trend_runs=0)["trend"] == []


def test_cli_prints_the_trend_in_text_and_json(weekly, engine, tmp_path, monkeypatch):
    monkeypatch.chdir(weekly.root)
    runner = CliRunner()
    out = runner.invoke(cli, ["report", "weekly:2026-W50", "--out", str(tmp_path / "r.html"), "--previews", "0"])
    assert out.exit_code == 0, out.output
    figs = run_figures(engine, "weekly:2026-W50", project=weekly)
    lines = out.output.splitlines()
    start = lines.index("week on week: the last 3 runs of weekly, each over its first 3 days (change: this run against the one before)")
    head, rows = lines[start + 1].split(), {line[:22].strip(): line[22:].split() for line in lines[start + 2:]}
    assert head == ["figure", *WEEKS, "change"]
    t = figs["trend"]
    assert rows["open rate"] == [f"{100 * x['open_rate']:.1f}%" for x in t] + [f"{100 * t[-1]['change']['open_rate']:+.1f}", "pts"]
    assert rows["revenue"] == [f"{x['revenue']:,.2f}" for x in t] + [f"{t[-1]['change']['revenue']:+,.2f}"]
    assert rows["e-mails sent"][-1] == f"{t[-1]['change']['sent']:+,}"
    assert "deliveries: " in out.output and " accepted by the mail server or ESP" in out.output
    assert " reported delivered by the provider" in out.output
    out = runner.invoke(cli, ["report", "weekly:2026-W50", "--format", "json", "--trend", "2"])
    assert [t["run"] for t in json.loads(out.output)["trend"]] == ["weekly:2026-W49", "weekly:2026-W50"]


def test_the_trend_fits_a_phone_in_headless_chromium(weekly, engine, browser, tmp_path):
    """375 px: the summary of figures, this run, the change and a line of every run, without sideways scrolling."""
    figs = run_figures(engine, "weekly:2026-W50", project=weekly)
    out = tmp_path / "report.html"
    out.write_text(build_html(figs))
    browser.show(out, 375)
    page = browser.evaluate("""(() => {
        const box = document.getElementById('trend-summary').getBoundingClientRect();
        const rows = Array.from(document.querySelectorAll('#trend-summary tbody tr')).map(tr => ({
            metric: tr.dataset.metric, cells: Array.from(tr.cells).filter(c => c.getBoundingClientRect().width > 0).map(c => c.textContent.trim()),
            verdict: tr.cells[3].dataset.verdict, color: getComputedStyle(tr.cells[3]).color,
            spark: tr.querySelector('svg.spark') ? tr.querySelector('svg.spark').getBoundingClientRect().width : 0}));
        return {scroll: document.documentElement.scrollWidth, right: box.right, rows,
                smallest: Math.min(...Array.from(document.querySelectorAll('#trend-summary td')).filter(c => c.getBoundingClientRect().width > 0)
                    .map(c => parseFloat(getComputedStyle(c).fontSize)))}; })()""")
    assert page["scroll"] <= 375 and page["right"] <= 375
    assert page["smallest"] >= 12
    t = figs["trend"]
    rows = {r["metric"]: r for r in page["rows"]}
    # On a phone: figure, this run, change and the line; the run before is in the table below and on a desktop.
    assert rows["open_rate"]["cells"][:3] == ["open rate", f"{100 * t[-1]['open_rate']:.1f}%", f"{100 * t[-1]['change']['open_rate']:+.1f} pts"]
    assert rows["open_rate"]["verdict"] == "worse" and rows["open_rate"]["color"] == "rgb(220, 38, 38)"
    assert rows["sent"]["verdict"] == ""  # more or fewer e-mails is neither better nor worse
    assert all(r["spark"] > 40 for r in rows.values())
    browser.show(out, 1280)
    cells = browser.evaluate("""Array.from(document.querySelectorAll('#trend-summary tr[data-metric=open_rate] td')).map(c => c.textContent.trim())""")
    assert cells[2] == f"{100 * t[-2]['open_rate']:.1f}%"
    runs = browser.evaluate("""Array.from(document.querySelectorAll('#trend-runs tbody tr')).map(tr => tr.dataset.run)""")
    assert runs == [x["run"] for x in t]


def test_a_run_with_deliveries_but_no_decisions_says_what_it_is(project, engine, tmp_path, monkeypatch):
    """The demo's past weeks hold e-mail events only: the report says so, instead of 0 decisions next to 4,000 delivered."""
    from relmail.demo import generate

    generate(engine, customers=300, seed=5, as_of=AS_OF)
    run = "weekly-history:2026-W47"
    e = Event.__table__
    with engine.connect() as conn:
        sent = set(conn.execute(select(e.c.customer_id, e.c.message_id).where(e.c.run_id == run, e.c.type == "email_sent")))
        # The history logged one e-mail twice (a resend, overlapping exports): still one e-mail to one customer.
        twice = conn.execute(select(e).where(e.c.run_id == run, e.c.type == "email_sent").limit(1)).mappings().one()
    with engine.begin() as conn:
        again = {**{k: v for k, v in twice.items() if k != "id"}, "event_id": twice["event_id"] and twice["event_id"] + ":again"}
        conn.execute(e.insert(), [again])
        delivered = {c for (c,) in conn.execute(select(e.c.customer_id).where(e.c.run_id == run, e.c.type == "email_delivered"))}
    figs = run_figures(engine, run, project=project)
    assert figs["run"]["source"] == "events" and figs["totals"]["decisions"] == 0
    assert (figs["totals"]["sent"], figs["totals"]["customers_mailed"]) == (len(sent), len({c for (c, _) in sent})) != (0, 0)
    assert figs["totals"]["feedback"]["delivered"] == len(delivered) > 0
    # Per message, as the events name them: its e-mails and what came back of them.
    per_message = Counter(m for (_, m) in sent)
    assert {m["message"]: m["sent"] for m in figs["messages"]} == dict(per_message) and len(per_message) > 1
    assert [t["run"] for t in figs["trend"]][-1] == run and len(figs["trend"]) == 6
    monkeypatch.chdir(project.root)
    out = CliRunner().invoke(cli, ["report", run, "--out", str(tmp_path / "h.html")])
    assert out.exit_code == 0, out.output
    first = out.output.splitlines()[0]
    assert "0 decisions" not in first and "holds no decisions: a mailing history that only e-mail events name" in first
    assert f"{len(sent):,} e-mails to {len({c for (c, _) in sent}):,} customers by those events" in first
    assert out.output.splitlines()[1].startswith(f"came back (of {figs['totals']['customers_mailed']:,} customers mailed): "
                                                 f"{len(delivered):,} reported delivered")
    html = (tmp_path / "h.html").read_text()
    assert 'id="run-source" data-source="events"' in html and 'data-figure="decisions"' not in html
    feedback = html.split('<section id="feedback">')[1].split("</section>")[0]
    assert "<th class=\"num\">sent</th>" in feedback
    for message, n in per_message.items():
        assert f'<tr data-message="{message}"><td>{message}</td><td class="num">{n:,}</td>' in feedback
    # A run relmail planned is not one of these.
    from relmail.planning.run import plan

    plan(project, engine, "weekly", "2026-W48", as_of=AS_OF)
    assert run_figures(engine, "weekly:2026-W48", project=project)["run"]["source"] == "relmail"


def test_a_run_hours_old_measures_every_run_over_those_hours_and_one_not_out_yet_over_the_window(weekly, engine, monkeypatch, tmp_path):
    from relmail.planning.run import plan

    last = AS_OF + 14 * DAY
    monkeypatch.setenv("RELMAIL_NOW", (last + timedelta(hours=5)).isoformat())
    trend = run_figures(engine, "weekly:2026-W50", project=weekly)["trend"]
    assert {t["measured_days"] for t in trend} == {round(5 / 24, 2)}
    assert all(t["open_rate"] == 0 for t in trend)  # the opens came a day after each send
    monkeypatch.chdir(weekly.root)
    out = CliRunner().invoke(cli, ["report", "weekly:2026-W50", "--out", str(tmp_path / "r.html"), "--previews", "0"])
    assert "week on week: the last 3 runs of weekly, each over its first 5 hours (change" in out.output
    assert "(as long as this run has had, at most 14 days)" in (tmp_path / "r.html").read_text()
    # Next week's plan, previewed before it goes out: the runs before it are measured over the whole window.
    monkeypatch.setenv("RELMAIL_NOW", NOW.isoformat())
    plan(weekly, engine, "weekly", "2026-W51", as_of=AS_OF + 21 * DAY)
    trend = run_figures(engine, "weekly:2026-W51", project=weekly)["trend"]
    assert [t["run"] for t in trend][-2:] == ["weekly:2026-W50", "weekly:2026-W51"] and {t["measured_days"] for t in trend} == {14}
    assert trend[-2]["click_rate"] > 0  # the clicks five days after the send count within the window
    assert trend[-1]["sent"] == 0 and trend[-1]["open_rate"] is None and trend[-1]["change"]["open_rate"] is None
