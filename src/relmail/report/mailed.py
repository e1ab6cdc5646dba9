"""Where a run's e-mails went: who was mailed, by what the ledger holds of the run.

A run relmail planned and sent has deliveries: a customer was mailed when
an e-mail of the run was accepted (the ``uncertain`` ones included: handed
over, never resent). A run imported with ``relmail runs import`` holds the
decisions of a send made elsewhere: its ``send`` decisions are the mailed
customers. A run that holds no decisions at all (a mailing history written
as events only, like the demo's ``weekly-history`` weeks) has only the
``email_sent`` events that name it; a history that logged one e-mail twice
(a resend, an export overlapping the last) still mailed it once. Every rate
of a report reads against these customers, each once.

An e-mail the mail server or ESP refused at send (an SMTP 550 to RCPT, an
ESP's synchronous rejection), or that relmail gave up on, was never mailed:
what the ledger or a provider recorded of it (the ledger's hard bounce of a
dead address, a provider's echo of its refusal) is not something that came
back of a mailed e-mail (:func:`never_mailed`).
"""

from __future__ import annotations

from sqlalchemy import and_, exists, func, select

from ..store.models import Decision, Delivery, Event

DEC, DLV, EVENTS = Decision.__table__, Delivery.__table__, Event.__table__

#: What a run is, by what the ledger holds of it.
SOURCES = {
    "relmail": "planned by relmail: decisions, and deliveries once sent",
    "imported": "imported with relmail runs import: decisions of a send made elsewhere, no deliveries",
    "events": "no decisions: only e-mail events name the run (a mailing history imported as events, as the demo's past weeks)",
}


#: The states of a delivery that never left: refused at send, given up, or withdrawn after the plan
#: (:mod:`relmail.sending.ledger`).
NOT_MAILED = ("rejected", "failed", "withdrawn")


def run_source(conn, run_id: str, status: str) -> str:
    """``relmail``, ``imported`` or ``events`` (a key of :data:`SOURCES`)."""
    if status == "imported":
        return "imported"
    if conn.execute(select(exists().where(DEC.c.run_id == run_id))).scalar():
        return "relmail"
    return "events"


def mailed_customers(run_id: str, source: str):
    """A SELECT of (customer_id, message_id), one row per e-mail the run sent: count the customers distinct."""
    if source == "imported":
        return select(DEC.c.customer_id, DEC.c.message_id).where(DEC.c.run_id == run_id, DEC.c.action == "send")
    if source == "events":
        # Distinct: its feedback counts customers per message, so its e-mails must too.
        return (select(EVENTS.c.customer_id, EVENTS.c.message_id).where(EVENTS.c.run_id == run_id, EVENTS.c.type == "email_sent")
                .distinct())
    return select(DLV.c.customer_id, DLV.c.message_id).where(DLV.c.run_id == run_id, DLV.c.status == "accepted")


def never_mailed():
    """SQL, correlated to ``events``: the event is about an e-mail of its run that was never handed over.

    Found through the deliveries' unique (run, customer, message) index, one probe per event.
    """
    return exists().where(and_(DLV.c.run_id == EVENTS.c.run_id, DLV.c.customer_id == EVENTS.c.customer_id,
                               DLV.c.message_id == EVENTS.c.message_id, DLV.c.status.in_(NOT_MAILED)))


def refused_hard(run_id: str):
    """A SELECT of (message_id, e-mails): per message, the e-mails refused at send whose recipient is dead.

    The ledger records such a refusal as a hard bounce (so later plans leave the address out); a
    provider's own event of the same refusal does not count it twice.
    """
    bounce = and_(EVENTS.c.customer_id == DLV.c.customer_id, EVENTS.c.run_id == DLV.c.run_id,
                  EVENTS.c.message_id == DLV.c.message_id, EVENTS.c.type == "email_bounced_hard")
    return (select(DLV.c.message_id, func.count(func.distinct(DLV.c.id)))
            .select_from(DLV.join(EVENTS, bounce))
            .where(DLV.c.run_id == run_id, DLV.c.status == "rejected")
            .group_by(DLV.c.message_id))
