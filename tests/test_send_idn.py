"""An address with an internationalized domain (``info@müller-kaffee.example``) is sent in its IDNA form."""

from __future__ import annotations

from sqlalchemy import select, update
from tests.sendkit import AS_OF, WINDOW, build, use_smtp
from tests.smtp_server import PASSWORD, SmtpServer

from relmail.project import Project
from relmail.sending.run import send
from relmail.store.models import Customer, Delivery


def test_an_umlaut_domain_goes_over_smtp_without_smtputf8_in_its_idna_form(project, tmp_path, monkeypatch):
    # German shops have customers at müller.de: the import keeps such an address (it has an ASCII
    # form), so the send must use that form, not refuse it for want of SMTPUTF8.
    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)
    engine = build(project)
    C, D = Customer.__table__, Delivery.__table__
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(select(C.c.id).order_by(C.c.id))]
        for cid in ids:
            conn.execute(update(C).where(C.c.id == cid).values(email=f"kunde.{cid.lower()}@müller-kaffee.example"))
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        sent = send(Project.load(project.root), engine, "sendtest", WINDOW, now=lambda: AS_OF)
        received = list(server.handler.messages)
    assert sent.done["accepted"] == len(received) > 10 and not sent.done.get("rejected")
    assert all(r.rcpt_tos[0].endswith("@xn--mller-kaffee-dlb.example") for r in received)
    with engine.connect() as conn:
        assert {s for (s,) in conn.execute(select(D.c.status))} == {"accepted"}
