"""The send summary, --json and the run report count every outcome; a mostly deferred send exits 14.

A real SMTP server (tests/smtp_server.py) answers some recipients with a
refusal, a temporary failure, or drops the connection after storing the
message (the reply is lost: "uncertain", never resent).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from tests.sendkit import RUN, WINDOW, build, use_smtp
from tests.smtp_server import PASSWORD, SmtpServer

from relmail.cli import cli
from relmail.store.models import Customer, Decision


def recipients(engine) -> list[str]:
    """The e-mail addresses of the run's send decisions, in customer order."""
    C, DEC = Customer.__table__, Decision.__table__
    with engine.connect() as conn:
        return list(conn.execute(
            select(C.c.email).join(DEC, DEC.c.customer_id == C.c.id)
            .where(DEC.c.run_id == RUN, DEC.c.action == "send").order_by(C.c.id)
        ).scalars())


def invoke(project, *args):
    return CliRunner().invoke(cli, ["-p", str(project.root), *args])


def send_scripted(project, tmp_path, scripts, *options):
    """``relmail send`` of the planned run through the test SMTP server, each ``(stage, recipient, reply)`` scripted."""
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        for stage, rcpt, reply in scripts:
            server.handler.script(stage, rcpt, reply)
        return invoke(project, "send", "sendtest", "--window", WINDOW, "--workers", "1", *options)


@pytest.fixture
def planned(project, monkeypatch):
    """The send-test store, planned, with the test SMTP server's password at hand."""
    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)
    engine = build(project)
    assert invoke(project, "plan", "sendtest", "--window", WINDOW).exit_code == 0
    return engine


def test_json_text_and_report_count_uncertain_deferred_and_rejected_apart(project, planned, tmp_path):
    to = recipients(planned)
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        for rcpt in to[:3]:
            server.handler.script("data", rcpt, "drop-after-store")  # stored, then no reply: uncertain
        for rcpt in to[3:5]:
            server.handler.script("rcpt", rcpt, "550 5.1.1 No such user")
        for rcpt in to[5:7]:
            server.handler.script("rcpt", rcpt, "451 4.3.0 Try again later")
        result = invoke(project, "send", "sendtest", "--window", WINDOW, "--workers", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["outcomes"] == {"accepted": len(to) - 7, "uncertain": 3, "deferred": 2, "rejected": 2, "failed": 0,
                                  "withdrawn": 0}
    assert summary["uncertain"] == 3 and summary["done"]["uncertain"] == 3
    assert summary["deferred_reasons"] and "451" in next(iter(summary["deferred_reasons"]))
    assert "2 of" in result.stderr and "deferred" in result.stderr, "a deferral is never silent"

    report = invoke(project, "report", "run", RUN, "--format", "json")
    deliveries = json.loads(report.stdout)["totals"]["deliveries"]
    assert deliveries == {"accepted": len(to) - 7, "uncertain": 3, "deferred": 2, "rejected": 2, "failed": 0,
                          "withdrawn": 0}


def test_the_text_summary_names_every_outcome(project, planned, tmp_path):
    to = recipients(planned)
    result = send_scripted(project, tmp_path, [("data", to[0], "drop-after-store")])
    assert result.exit_code == 0, result.output
    first_table = result.stdout.split("\n\n")[0].splitlines()
    table = {line.split()[0]: line.split()[-1] for line in first_table if line.strip()}
    assert table["uncertain"] == "1" and table["accepted"] == f"{len(to) - 1:,}"
    assert table["deferred"] == table["rejected"] == table["failed"] == table["withdrawn"] == "0"
    assert "never sent again" in result.stdout


def test_a_send_that_deferred_most_of_its_emails_exits_14_after_its_summary(project, planned, tmp_path):
    to = recipients(planned)
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        for rcpt in to[: len(to) * 2 // 3]:
            server.handler.script("rcpt", rcpt, "452 4.2.2 Mailbox full, try later")
        result = invoke(project, "send", "sendtest", "--window", WINDOW, "--workers", "1", "--json")
    assert result.exit_code == 14, result.output
    assert json.loads(result.stdout)["outcomes"]["deferred"] == len(to) * 2 // 3
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("Error: ") and "deferred" in error[0] and "452" in error[0]


def test_max_deferred_share_1_lets_a_mostly_deferred_send_exit_0_with_a_warning(project, planned, tmp_path):
    to = recipients(planned)
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        for rcpt in to:
            server.handler.script("rcpt", rcpt, "451 4.3.0 Try again later")
        result = invoke(project, "send", "sendtest", "--window", WINDOW, "--workers", "1", "--max-deferred-share", "1")
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"Warning: {len(to):,} of {len(to):,} e-mails deferred")


def test_a_deferral_quoting_the_recipient_is_logged_without_the_address(project, planned, tmp_path):
    """CI and cron keep stderr and --json: customers appear there by id only, never by address."""
    to = recipients(planned)
    result = send_scripted(project, tmp_path, [("rcpt", rcpt, f"451 4.3.0 <{rcpt}>: Recipient address rejected: try again later")
                                               for rcpt in to[:2]], "--json")
    assert result.exit_code == 0, result.output
    assert not [rcpt for rcpt in to if rcpt in result.stdout or rcpt in result.stderr]
    reasons = json.loads(result.stdout)["deferred_reasons"]
    assert reasons == {"RCPT TO: 451 4.3.0 <address>: Recipient address rejected: try again later": 2}, reasons
    assert "2 x RCPT TO: 451 4.3.0 <address>" in result.stderr


def test_the_text_summary_says_when_deferred_emails_are_due_in_utc_like_every_other_time(project, planned, tmp_path):
    import re

    to = recipients(planned)
    result = send_scripted(project, tmp_path, [("rcpt", to[0], "451 4.3.0 Try again later")])
    assert result.exit_code == 0, result.output
    assert re.search(r"^Deferred e-mails are due again from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; run the same command then\.$",
                     result.stdout, re.M), result.stdout


def test_send_workers_1_under_a_connection_limit_does_not_exit_0_silently(project, planned, tmp_path, monkeypatch,
                                                                          limited_role):
    """A role allowed fewer connections than the send needs (the SMTP pool's threads each mark on their own)."""
    url = project.database_url
    if not url.startswith("postgresql"):
        pytest.skip("a PostgreSQL role's connection limit")
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)  # a pool of 2 SMTP connections
        monkeypatch.setenv("RELMAIL_DATABASE_URL", limited_role(url, 2))
        result = invoke(project, "send", "sendtest", "--window", WINDOW, "--workers", "1", "--batch-size", "20")
    assert result.exit_code != 0 or "deferred" in result.stderr, (result.exit_code, result.output)
    assert result.stderr.strip(), "the outcome is on stderr, where a scheduler's log keeps it"
    assert "Traceback" not in result.output
