"""relmail why names the opt-out behind UNSUBSCRIBED: when, and from where, for every way one arrives."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert
from werkzeug.test import Client

from relmail import tokens
from relmail.cli import cli
from relmail.feedback import import_file as import_feedback
from relmail.feedback import ingest, provider
from relmail.feedback.consent import unsubscribe, update_preferences
from relmail.feedback.records import Record
from relmail.importers import import_file
from relmail.planning.output import write_plan
from relmail.planning.run import plan
from relmail.planning.why import explain, explain_plan_file, format_explanations
from relmail.store.models import Event
from relmail.web.app import make_app
from test_plan import AS_OF, CAMPAIGN, WINDOW, _ev, build_shop

KEY = "test-signing-key-not-secret"  # what the project fixture exports
RUN = "weekly-2026-W47"
#: When the customer opted out in the stories below: before the plan's as_of.
AT = AS_OF - timedelta(days=3)
STAMP = f"on {AT:%Y-%m-%d %H:%M} UTC"
GLOBAL = "  UNSUBSCRIBED: opted out of all e-mail (global preference)"


def claims(topic: str = "*"):
    return tokens.verify(KEY, tokens.sign(KEY, "C-OK", topic, RUN, "Fietsenwinkel"), "Fietsenwinkel")


def sendgrid_event(kind: str) -> dict:
    return {"email": "c-ok@example.org", "timestamp": int(AT.timestamp()), "event": kind, "sg_event_id": f"sg-{kind}"}


def by_link(project, engine, tmp_path):
    unsubscribe(engine, claims(), everything=True, now=AT)


def by_one_click(project, engine, tmp_path):
    # The mail program's RFC 8058 button, through the app as it arrives.
    client = Client(make_app(project, engine))
    response = client.post(f"/unsubscribe/{tokens.sign(KEY, 'C-OK', '*', RUN, 'Fietsenwinkel')}", data="List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200, response.text


def by_preference_page(project, engine, tmp_path):
    update_preferences(engine, claims(), subscribed=set(), unsubscribe_all=True, max_per_week=None,
                       topics=["promotions", "service"], now=AT)


def by_import(project, engine, tmp_path):
    path = tmp_path / "crm-consent.csv"
    path.write_text(f"customer_id,topic,opted_in,updated_at\nC-OK,*,false,{AT.isoformat()}\n", encoding="utf-8")
    import_file(engine, "preferences", path.name)  # the name as given on the command line


def by_webhook(kind: str):
    def apply(project, engine, tmp_path):
        batch = provider("sendgrid", now=lambda: AS_OF).parse_records([Record(0, sendgrid_event(kind))], "webhook")
        assert ingest(engine, batch).opt_outs == 1
    return apply


def by_esp_export(project, engine, tmp_path):
    path = tmp_path / "sendgrid-export.json"
    path.write_text(json.dumps([sendgrid_event("unsubscribe")]), encoding="utf-8")
    assert import_feedback(engine, path.name, "sendgrid").opt_outs == 1


@pytest.mark.parametrize("opt_out, said", [
    (by_link, f"{GLOBAL} {STAMP}; source: unsubscribe link (confirmation page)"),
    (by_one_click, "; source: unsubscribe link (one-click List-Unsubscribe)"),
    (by_preference_page, f"{GLOBAL} {STAMP}; source: preference page"),
    (by_import, f"{GLOBAL} {STAMP}; source: import (crm-consent.csv)"),
    (by_webhook("unsubscribe"), f"{GLOBAL} {STAMP}; source: ESP webhook (sendgrid unsubscribe)"),
    (by_webhook("spamreport"), f"{GLOBAL} {STAMP}; source: ESP webhook (sendgrid complaint)"),
    (by_esp_export, f"{GLOBAL} {STAMP}; source: ESP export import (sendgrid unsubscribe; sendgrid-export.json)"),
], ids=["link", "one-click", "preference-page", "import", "webhook-unsubscribe", "webhook-complaint", "esp-export"])
def test_why_says_when_and_from_where_the_opt_out_came(project, engine, tmp_path, monkeypatch, opt_out, said):
    monkeypatch.chdir(tmp_path)  # the import's file name as given
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    opt_out(project, engine, tmp_path)
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    facts, exps = explain(engine, "C-OK")
    lines = [line for line in format_explanations(facts, exps).splitlines() if "UNSUBSCRIBED" in line]
    assert lines and all(line.endswith(said) for line in lines), lines
    assert exps[0].as_dict()["opt_out"]["source"] == said.split("; source: ")[1]


def test_why_names_the_opt_out_the_plan_saw_not_a_later_change(project, engine, tmp_path):
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    unsubscribe(engine, claims(), everything=True, now=AT)
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    # Back in through the preference page after the plan: the decision was still the link's.
    update_preferences(engine, claims(), subscribed={"promotions"}, unsubscribe_all=False, max_per_week=None,
                       topics=["promotions", "service"], now=AS_OF + timedelta(days=1))
    text = format_explanations(*explain(engine, "C-OK"))
    assert f"{GLOBAL} {STAMP}; source: unsubscribe link (confirmation page)" in text.splitlines()


def test_why_on_a_plan_file_names_the_opt_out_from_the_store_the_plan_was_made_on(project, engine, tmp_path):
    # A dry run's file holds the decisions; the consent history, as of when the plan was made, says the rest.
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    unsubscribe(engine, claims(), everything=True, now=AT)
    path = tmp_path / "plan.jsonl"
    write_plan(plan(project, engine, "test", WINDOW, as_of=AS_OF, dry_run=True), path)
    # Back in after the plan: the file's decisions were still the link's.
    update_preferences(engine, claims(), subscribed={"promotions"}, unsubscribe_all=False, max_per_week=None,
                       topics=["promotions", "service"], now=AS_OF + timedelta(days=1))
    said = f"{GLOBAL} {STAMP}; source: unsubscribe link (confirmation page)"
    facts, exps = explain_plan_file(path, "C-OK", engine)
    assert said in format_explanations(facts, exps).splitlines()
    assert exps[0].as_dict()["opt_out"] == {"at": AT.isoformat(), "source": "unsubscribe link (confirmation page)"}
    shown = CliRunner().invoke(cli, ["--project", str(project.root), "why", "C-OK", "--plan", str(path)])
    assert shown.exit_code == 0, shown.output
    assert said in shown.stdout.splitlines()
    # A file without the plan's time (an older relmail's) is asked as of its as_of: the link's opt-out, recorded
    # on relmail's clock after that, is not named, and no later change is named instead.
    older = tmp_path / "older.jsonl"
    older.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "decided_at"}) + "\n"
                             for line in path.read_text().splitlines()))
    assert f"{GLOBAL}; source not recorded" in format_explanations(*explain_plan_file(older, "C-OK", engine)).splitlines()
    # Without the store the file alone explains, as it always could.
    facts, exps = explain_plan_file(path, "C-OK")
    assert GLOBAL in format_explanations(facts, exps).splitlines() and exps[0].opt_out is None
    elsewhere = CliRunner().invoke(cli, ["--project", str(tmp_path / "no-project"), "why", "C-OK", "--plan", str(path)])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert GLOBAL in elsewhere.stdout.splitlines()


def test_an_opt_out_from_before_the_history_says_its_source_is_not_recorded(project, engine):
    # build_shop writes C-UNSUB's opt-out straight into preferences, as a store upgraded from an older relmail holds it.
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    facts, exps = explain(engine, "C-UNSUB")
    text = format_explanations(facts, exps)
    assert f"{GLOBAL} on {AS_OF - timedelta(days=10):%Y-%m-%d %H:%M} UTC; source not recorded" in text.splitlines()
    assert exps[0].as_dict()["opt_out"] == {"at": (AS_OF - timedelta(days=10)).isoformat(), "source": None}


@pytest.mark.parametrize("event_id, said", [
    ("link:h:0123", "; source: unsubscribe link"),  # relmail's own link, before the history was kept
    ("postmark:Bounce:77", "; source: postmark event"),
    ("crm-4711", "; source not recorded"),  # an event imported from another system
    (None, "; source not recorded"),
])
def test_an_unsubscribe_event_names_its_provider_when_the_history_has_nothing(project, engine, event_id, said):
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__), [_ev("C-OK", "email_unsubscribed", 2, event_id=event_id)])
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    stamp = f"on {AS_OF - timedelta(days=2):%Y-%m-%d %H:%M} UTC"
    line = f"  UNSUBSCRIBED: unsubscribed (link or provider event) after the last opt-in {stamp}{said}"
    assert line in format_explanations(*explain(engine, "C-OK")).splitlines()


def test_a_rehearsal_on_relmails_clock_names_the_opt_out_it_saw(project, engine, tmp_path, monkeypatch):
    # RELMAIL_NOW: the opt-out through the app and the plan are both on relmail's clock, not the machine's.
    from relmail.windows import ENV_NOW

    monkeypatch.setenv(ENV_NOW, (AS_OF - timedelta(hours=1)).isoformat())
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    by_one_click(project, engine, tmp_path)
    monkeypatch.setenv(ENV_NOW, (AS_OF + timedelta(hours=1)).isoformat())
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    lines = [line for line in format_explanations(*explain(engine, "C-OK")).splitlines() if "UNSUBSCRIBED" in line]
    assert lines and all(line.endswith("; source: unsubscribe link (one-click List-Unsubscribe)") for line in lines), lines


def test_demo_replace_leaves_no_consent_history_of_the_store_it_replaced(project, engine):
    from sqlalchemy import func, select

    from relmail.demo.store import clear
    from relmail.store.models import ConsentChange

    build_shop(engine)
    unsubscribe(engine, claims(), everything=True, now=AT)
    with engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(ConsentChange.__table__)).scalar_one() == 1
        clear(conn)
        assert conn.execute(select(func.count()).select_from(ConsentChange.__table__)).scalar_one() == 0


def test_a_preview_on_a_clock_ahead_names_the_opt_out_recorded_on_that_clock(project, engine, tmp_path, monkeypatch):
    # why --campaign --window (a preview) reads the history as of relmail's clock, the one the opt-out was recorded on.
    from datetime import UTC, datetime

    from relmail.planning.why import explain_window
    from relmail.windows import ENV_NOW

    monkeypatch.setenv(ENV_NOW, (datetime.now(UTC) + timedelta(days=30)).isoformat())
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    by_one_click(project, engine, tmp_path)
    facts, exps = explain_window(project, engine, "C-OK", "test", WINDOW, as_of=AS_OF)
    lines = [line for line in format_explanations(facts, exps).splitlines() if "UNSUBSCRIBED" in line]
    assert lines and all(line.endswith("; source: unsubscribe link (one-click List-Unsubscribe)") for line in lines), lines


def test_why_says_when_and_from_where_a_topic_opt_out_came(project, engine, tmp_path):
    """NO_CONSENT from an opted-out topic names that opt-out as UNSUBSCRIBED names a global one; no consent on record
    names nothing (there was no opt-out)."""
    (project.campaigns_dir / "test.yml").write_text(CAMPAIGN, encoding="utf-8")
    build_shop(engine)
    unsubscribe(engine, claims("promotions"), everything=False, now=AT)  # the link's "this list only"
    plan(project, engine, "test", WINDOW, as_of=AS_OF)
    facts, exps = explain(engine, "C-OK")
    text = format_explanations(facts, exps)
    said = f"  NO_CONSENT: opted out of topic 'promotions' {STAMP}; source: unsubscribe link (confirmation page)"
    assert said in text.splitlines(), text
    held = [e for e in exps if "NO_CONSENT" in e.reasons]
    assert held and all(e.as_dict()["topic_opt_out"]["source"] == "unsubscribe link (confirmation page)" for e in held)
    assert all("UNSUBSCRIBED" not in e.reasons and e.opt_out is None for e in exps)
