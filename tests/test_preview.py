"""relmail preview: one customer's e-mail exactly as `relmail send` would build it."""

import email
import os
from email import policy

from click.testing import CliRunner
from tests.sendkit import build

from relmail.cli import cli


def test_preview_writes_the_customers_html_text_and_eml(project, tmp_path):
    from sqlalchemy import select

    from relmail.store.models import Customer

    engine = build(project, customers=60)
    with engine.connect() as conn:
        first = conn.execute(select(Customer.__table__.c.first_name).where(Customer.__table__.c.id == "C0000007")).scalar_one()
    runner = CliRunner()
    base = ["-p", str(project.root), "preview", "ebike-launch", "--customer", "C0000007"]
    html = runner.invoke(cli, base)
    assert html.exit_code == 0, html.output
    assert html.stdout.lstrip().lower().startswith("<!doctype html") and f" {first}," in html.stdout
    text = runner.invoke(cli, base + ["--text"])
    assert text.exit_code == 0 and f" {first}," in text.stdout and "<td" not in text.stdout
    out = tmp_path / "p.eml"
    assert runner.invoke(cli, base + ["--eml", "-o", str(out)]).exit_code == 0
    msg = email.message_from_bytes(out.read_bytes(), policy=policy.default)
    assert msg["X-Relmail-Customer"] == "C0000007"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_preview_of_an_unknown_customer_is_exit_8(project):
    build(project, customers=20)
    result = CliRunner().invoke(cli, ["-p", str(project.root), "preview", "ebike-launch", "--customer", "NOPE"])
    assert result.exit_code == 8 and "no customer 'NOPE'" in result.output


def test_preview_replaces_remote_images_offline_unless_asked_and_the_eml_stays_as_sent(project, tmp_path):
    build(project, customers=30)
    runner = CliRunner()
    base = ["-p", str(project.root), "preview", "ebike-launch", "--customer", "C0000007"]
    logo = "https://fietsenwinkel.example/logo.png"
    offline = runner.invoke(cli, base)
    assert offline.exit_code == 0, offline.output
    assert logo not in offline.stdout and 'src="data:image/svg+xml,' in offline.stdout
    remote = runner.invoke(cli, base + ["--images", "remote"])
    assert f'src="{logo}"' in remote.stdout
    out = tmp_path / "p.eml"
    assert runner.invoke(cli, base + ["--eml", "-o", str(out)]).exit_code == 0
    html = email.message_from_bytes(out.read_bytes(), policy=policy.default).get_body(("html",)).get_content()
    assert f'src="{logo}"' in html


def test_would_decide_says_what_a_plan_of_the_window_decides(project):
    from datetime import timedelta

    from sqlalchemy import select
    from tests.sendkit import AS_OF

    from relmail.campaigns import load_campaign
    from relmail.planning.preview import would_decide
    from relmail.planning.run import plan
    from relmail.store.models import Customer
    from relmail.windows import resolve_window

    engine = build(project, customers=80)
    camp = load_campaign(project, "weekly")
    now = AS_OF + timedelta(days=1)
    window = resolve_window("auto", project.settings.timezone, campaign=camp, now=now)
    result = plan(project, engine, camp, window, now=now, dry_run=True)
    planned = {(r["customer_id"], r["message_id"]): (r["action"], tuple(r["reasons"])) for r in result.decisions.records(features=False)}
    with engine.connect() as conn:
        ids = conn.execute(select(Customer.__table__.c.id).order_by(Customer.__table__.c.id).limit(25)).scalars().all()
    seen = set()
    for cid in ids:
        for message_id, verdict in would_decide(project, engine, camp, cid, now=now).items():
            assert verdict.window == window.key == "2026-W47"
            expected = planned.get((cid, message_id))
            assert (verdict.action, verdict.reasons) == (expected or (None, ())), (cid, message_id)
            seen.add(verdict.action)
    assert {None, "send", "suppress"} <= seen  # the sample covers every kind of answer


def test_preview_warns_on_stderr_when_the_customer_would_not_get_the_message(project):
    from relmail.campaigns import load_campaign
    from relmail.planning.preview import would_decide

    engine = build(project, customers=60)
    camp = load_campaign(project, "weekly")
    runner = CliRunner()
    kinds = set()
    for n in range(1, 11):
        cid = f"C{n:07d}"
        for message in ("ebike-launch", "newsletter"):
            verdict = would_decide(project, engine, camp, cid)[message]
            out = runner.invoke(cli, ["-p", str(project.root), "preview", message, "--customer", cid, "-o", os.devnull])
            assert out.exit_code == 0, out.output
            if verdict.action is None:
                assert f"warning: {cid} is not in the audience of {message}" in out.stderr
            elif verdict.action == "suppress":
                assert f"warning: {cid} would be suppressed from {message} in window {verdict.window}: {' '.join(verdict.reasons)}" in out.stderr
                assert verdict.reasons
            elif verdict.action == "holdout":
                assert f"warning: {cid} would be held out of {message}" in out.stderr
            else:
                assert "warning" not in out.stderr
            kinds.add(verdict.action)
    assert {None, "send", "suppress"} <= kinds


def test_preview_after_the_send_does_not_say_the_recipient_is_outside_the_audience(project):
    # Once the window's run has delivered the e-mail, a dry replan keeps that decision instead of
    # deciding it again; the preview took the missing decision for "not in the audience".
    from datetime import timedelta

    from tests.sendkit import AS_OF, WINDOW

    from relmail.campaigns import load_campaign
    from relmail.planning.preview import would_decide
    from relmail.sending.run import send

    engine = build(project, customers=40)
    send(project, engine, "sendtest", WINDOW, now=lambda: AS_OF)
    first = email.message_from_bytes(sorted((project.root / "outbox").glob("*.eml"))[0].read_bytes(), policy=policy.default)
    cid = first["X-Relmail-Customer"]
    during = AS_OF + timedelta(days=4)  # in the window the run was for
    verdict = would_decide(project, engine, load_campaign(project, "sendtest"), cid, now=during)["sendtest-news"]
    assert verdict.window == WINDOW and verdict.action == "sent" and verdict.warning(cid) is None
