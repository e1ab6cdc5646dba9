"""An address with an internationalized domain (``info@müller-kaffee.example``) is sent in its IDNA form."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from tests.sendkit import AS_OF, WINDOW, build, use_smtp
from tests.smtp_server import PASSWORD, SmtpServer

from relmail.project import Project
from relmail.sending.run import send
from relmail.store.models import Customer, Delivery


@pytest.mark.parametrize("domain, ascii_domain", [
    ("müller-kaffee.example", "xn--mller-kaffee-dlb.example"),
    # A ß is a letter of its own in IDNA 2008 (DENIC registers gärtnerei-süß.de and gärtnerei-süss.de to two owners):
    # never the ASCII form of the ss-domain, where IDNA 2003 (Python's codec) would send it.
    ("gärtnerei-süß.example", "xn--grtnerei-s-f4a4c1v.example"),
])
def test_an_umlaut_domain_goes_over_smtp_without_smtputf8_in_its_idna_form(project, tmp_path, monkeypatch, domain,
                                                                           ascii_domain):
    # German shops have customers at müller.de: the import keeps such an address (it has an ASCII
    # form), so the send must use that form, not refuse it for want of SMTPUTF8.
    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)
    engine = build(project)
    C, D = Customer.__table__, Delivery.__table__
    with engine.begin() as conn:
        ids = [r[0] for r in conn.execute(select(C.c.id).order_by(C.c.id))]
        for cid in ids:
            conn.execute(update(C).where(C.c.id == cid).values(email=f"kunde.{cid.lower()}@{domain}"))
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        sent = send(Project.load(project.root), engine, "sendtest", WINDOW, now=lambda: AS_OF)
        received = list(server.handler.messages)
    assert sent.done["accepted"] == len(received) > 10 and not sent.done.get("rejected")
    assert all(r.rcpt_tos[0].endswith(f"@{ascii_domain}") for r in received)
    assert all(f"@{ascii_domain}>" in r.data.decode() for r in received)  # the To header too
    with engine.connect() as conn:
        assert {s for (s,) in conn.execute(select(D.c.status))} == {"accepted"}
