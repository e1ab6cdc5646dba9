"""Crash safety: `relmail send` killed with SIGKILL at random moments, then re-run,
delivers every planned e-mail to a real SMTP server (STARTTLS + AUTH) exactly once."""

from __future__ import annotations

import asyncio
import email
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select
from tests.sendkit import WINDOW, build, use_smtp
from tests.smtp_server import PASSWORD, Handler, SmtpServer

from relmail.sending import ledger
from relmail.store.models import Decision, Delivery


class SlowHandler(Handler):
    """Takes a few milliseconds to answer, so kills land mid-batch.

    Like a real MTA it queues the message as soon as the final dot arrives
    and only then answers; a client that vanishes meanwhile does not undo it.
    """

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        await asyncio.sleep(0.015)
        return reply




def _command(project) -> list[str]:
    return [sys.executable, "-c", "from relmail.cli import main; main()", "-p", str(project.root),
            "send", "sendtest", "--window", WINDOW, "--batch-size", "7"]


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_delivers_each_email_exactly_once(project, tmp_path):
    engine = build(project, customers=400)
    server = SmtpServer(tmp_path, mode="starttls", auth=True)
    server.handler.__class__ = SlowHandler
    env = {**os.environ, "RELMAIL_SMTP_PASSWORD": PASSWORD}
    rng = random.Random(20261123)
    kills = mid_batch_kills = 0
    with server:
        use_smtp(project, server)
        for _attempt in range(12):
            before = len(server.handler.messages)
            proc = subprocess.Popen(_command(project), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.2, 2.0))  # sometimes during start-up or planning
            else:
                # otherwise mid-send: once this attempt has handed something over
                deadline = time.monotonic() + 60
                while proc.poll() is None and len(server.handler.messages) == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                mid_batch_kills += len(server.handler.messages) > before
            else:
                out, err = proc.communicate()
                assert proc.returncode == 0, err.decode()
                break
        final = subprocess.run(_command(project), env=env, capture_output=True, timeout=300)
        assert final.returncode == 0, final.stderr.decode()
        received = [email.message_from_bytes(m.data)["Message-ID"] for m in server.handler.messages]

    D, DEC = Delivery.__table__, Decision.__table__
    with engine.connect() as conn:
        planned = conn.execute(select(DEC.c.customer_id).where(DEC.c.action == "send")).scalars().all()
        accepted = dict(conn.execute(select(D.c.rfc_message_id, D.c.last_error).where(D.c.status == "accepted")).all())
    assert kills >= 3 and mid_batch_kills >= 1, f"the test must really interrupt sending ({kills} kills, {mid_batch_kills} mid-send)"
    assert len(received) == len(set(received)), "an e-mail was received twice"
    assert set(received) <= set(accepted), "an e-mail arrived that the ledger does not know as accepted"
    assert len(accepted) == len(planned) > 150
    assert ledger.status_counts(engine, "sendtest:2026-W48") == {"accepted": len(planned)}
    # Exactly once, but for the one case no sender can know: killed between
    # the confirmed point-of-no-return mark and the final dot (the mark's
    # database round trip, while the connection's thread waits for it). Such
    # an e-mail is assumed delivered and says so in the ledger, never sent
    # twice. A kill can strand at most the transactions in flight at that
    # moment (senders x pool); on average fewer than one.
    missing = set(accepted) - set(received)
    assert all(ledger.UNCERTAIN in (accepted[m] or "") for m in missing)
    assert len(missing) <= kills, f"{len(missing)} e-mails not received in {kills} kills"


@pytest.mark.slow
def test_a_kill_mid_batch_keeps_every_answer_the_server_gave(project, tmp_path):
    """Killed half-way through one large batch: what the server answered before the kill stands, not assumed.

    The batch's answers are recorded together once it is done; each was also
    written as it arrived, so recovery settles the accepted with the server's
    queue id, the refused as hard bounces and the deferred as due again. Only
    the transactions in flight at the kill (one per pooled connection) are
    left uncertain.
    """
    from relmail.store.models import Customer, Event

    engine = build(project, customers=400)
    plan = subprocess.run([sys.executable, "-c", "from relmail.cli import main; main()", "-p", str(project.root),
                           "plan", "sendtest", "--window", WINDOW], capture_output=True, timeout=300)
    assert plan.returncode == 0, plan.stderr.decode()
    D, DEC, C, E = Delivery.__table__, Decision.__table__, Customer.__table__, Event.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(DEC.c.customer_id, C.c.email).join(C, C.c.id == DEC.c.customer_id)
                             .where(DEC.c.action == "send").order_by(DEC.c.id)).all()
    assert len(sends) > 150
    bounced, greylisted = sends[10:60:5], sends[12:60:5]
    server = SmtpServer(tmp_path, mode="starttls", auth=True)
    server.handler.__class__ = SlowHandler
    for _, address in bounced:
        server.handler.script("data", address, "550 5.1.1 no such user")
    for _, address in greylisted:
        server.handler.script("data", address, "451 4.7.1 greylisted, try again later")
    env = {**os.environ, "RELMAIL_SMTP_PASSWORD": PASSWORD}
    command = [*_command(project)[:-1], "500"]  # the whole run is one batch
    with server:
        use_smtp(project, server)
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(server.handler.messages) < 80 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the send ended before it could be killed mid-batch"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered = len(server.handler.messages)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).where(D.c.status == "accepted")).scalar_one() == 0, \
                "the kill must land before the batch's answers are recorded"
        final = subprocess.run(command, env=env, capture_output=True, timeout=300)
        assert final.returncode == 0, final.stderr.decode()
        received = [email.message_from_bytes(m.data)["Message-ID"] for m in server.handler.messages]

    out = final.stdout.decode()
    assert "by the provider's answer it had written" in out
    with engine.connect() as conn:
        rows = {r.customer_id: r for r in conn.execute(select(D))}
        hard = set(conn.execute(select(E.c.customer_id).where(E.c.type == "email_bounced_hard",
                                                                 E.c.run_id == "sendtest:2026-W48")).scalars())
    assert len(received) == len(set(received)), "an e-mail was received twice"
    assert {c for c, _ in bounced} == hard
    assert all(rows[c].status == "rejected" for c, _ in bounced)
    # deferred by the server before the kill: due again, not assumed delivered
    assert all(rows[c].status == "deferred" and "greylisted" in rows[c].last_error for c, _ in greylisted)
    uncertain = [r for r in rows.values() if ledger.UNCERTAIN in (r.last_error or "")]
    assert len(uncertain) <= 2, f"{len(uncertain)} uncertain after one kill with 2 connections"
    # every e-mail the server took before the kill is on record with its queue id
    ids = {r.rfc_message_id: r.provider_id for r in rows.values() if r.status == "accepted"}
    assert sum(1 for m in received[:answered] if (ids.get(m) or "").startswith("Q")) >= answered - 2
