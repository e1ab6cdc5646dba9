"""relmail send --workers: several processes deliver every send decision exactly once."""

from __future__ import annotations

import email
from email import policy

from click.testing import CliRunner
from sqlalchemy import select

from relmail import ledger
from relmail.cli import cli
from relmail.models import Decision, Delivery, Event
from relmail.send import send
from tests.sendkit import AS_OF, WINDOW, build

RUN = "sendtest:2026-W48"
NOW = lambda: AS_OF  # noqa: E731


def _outbox_pairs(project) -> list[tuple[str, str]]:
    pairs = []
    for path in sorted((project.root / "outbox").glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        pairs.append((msg["X-Relmail-Customer"], msg["X-Relmail-Message"]))
    return pairs


def _ledger(engine):
    D, DEC, E = Delivery.__table__, Decision.__table__, Event.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(DEC.c.customer_id, DEC.c.message_id).where(DEC.c.run_id == RUN, DEC.c.action == "send")).all()
        accepted = conn.execute(select(D.c.customer_id, D.c.message_id).where(D.c.run_id == RUN, D.c.status == "accepted")).all()
        sent = conn.execute(select(E.c.customer_id, E.c.message_id).where(E.c.type == "email_sent", E.c.run_id == RUN)).all()
    return sorted(map(tuple, sends)), sorted(map(tuple, accepted)), sorted(map(tuple, sent))


def test_two_workers_deliver_each_decision_once_and_match_a_single_process_run(project, tmp_path):
    engine = build(project)
    result = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10)
    sends, accepted, sent = _ledger(engine)
    assert len(sends) > 50 and result.workers == 2
    assert sorted(_outbox_pairs(project)) == sends, "one .eml per send decision, none twice"
    assert accepted == sends and sent == sends
    assert ledger.status_counts(engine, RUN) == {"accepted": len(sends)}
    assert result.done["accepted"] == result.done["rendered"] == len(sends)
    assert result.states == {"accepted": len(sends)}
    assert send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10).done == {}

    # The same planned run sent again by one process from a fresh ledger: the same e-mails are accepted.
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM events WHERE type = 'email_sent'")
        conn.exec_driver_sql("DELETE FROM deliveries")
        conn.exec_driver_sql("UPDATE runs SET status = 'planned'")
    for path in (project.root / "outbox").glob("*.eml"):
        path.unlink()
    single = send(project, engine, "sendtest", WINDOW, now=NOW, workers=1, batch_size=10)
    assert not single.planned_now and single.workers == 1
    assert _ledger(engine)[1] == accepted
    assert sorted(_outbox_pairs(project)) == accepted
    assert single.done == {k: v for k, v in result.done.items()}


def test_limit_is_shared_by_the_workers_and_the_rest_follows_exactly_once(project):
    engine = build(project)
    part = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=4, limit=13)
    assert part.done["accepted"] == 13 == len(_outbox_pairs(project))
    rest = send(project, engine, "sendtest", WINDOW, now=NOW, workers=2, batch_size=10)
    sends, accepted, sent = _ledger(engine)
    assert part.done["accepted"] + rest.done["accepted"] == len(sends)
    assert sorted(_outbox_pairs(project)) == accepted == sent == sends


def test_cli_workers_option_sends_everything_once(project):
    engine = build(project)
    out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW,
                                   "--workers", "2", "--batch-size", "15", "--json"])
    assert out.exit_code == 0, out.output
    import json

    summary = json.loads(out.output)
    sends, accepted, _ = _ledger(engine)
    assert summary["done"]["accepted"] == len(sends) == len(_outbox_pairs(project))
    assert summary["states"] == {"accepted": len(sends)} and summary["workers"] == 2
    bad = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW, "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output
