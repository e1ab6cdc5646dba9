"""Where the opt-out behind an UNSUBSCRIBED or NO_CONSENT decision came from, and when: for ``relmail why``.

For the SHARED_ rules (:mod:`.shared_mailbox`) the same of the fact recorded
under another customer id with the address: which id, when, and for an
opt-out from where. For a customer whose address another customer id has,
also the opt-in the decision counted (:data:`CONSENT`): an import that names
people by address records it for every id with the address, and ``why``
says so where the account was mailable on it.

The decision logs what decided (``consent_global`` 0: the global
preference; else ``unsubscribed_event``: an unsubscribe event after the last
opt-in). The store says the rest: the consent history
(:mod:`relmail.store.consent_log`) gives the change a plan made at the
decision's time saw, with its source and detail; an unsubscribe event names
its provider in its id. What the store does not record (a change made before
it kept the history) is said to be not recorded, never guessed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..feedback import PROVIDERS
from ..feedback.events import LINK_PROVIDER, PREFERENCES_PROVIDER
from ..rules.address_suppressed import REASONS as SUPPRESSION_REASONS
from ..rules.address_suppressed import AddressSuppressed
from ..rules.base import num
from ..rules.consent import NoConsent, opted_out_of_topic
from ..rules.hard_bounce import HardBounce
from ..rules.shared_complaint import SharedComplaint
from ..rules.shared_hard_bounce import SharedHardBounce
from ..rules.shared_opt_out import SharedOptOut
from ..rules.unsubscribed import Unsubscribed, decided_by_preference
from ..store import consent_log
from ..store.addresses import address_hash, salt
from ..store.models import Customer, Event, Suppression
from .addresses import sharing

E = Event.__table__

#: ``preferences.source`` -> how ``why`` names it.
SOURCES = {
    "unsubscribe-link": "unsubscribe link",
    "preference-page": "preference page",
    "esp-webhook": "ESP webhook",
    "esp-import": "ESP export import",
    "esp-send": "ESP refusal of a send",
    "bounce-mailbox": "bounce mailbox",
    "import": "import",
    "suppression-list": "suppression list (an address erased, marked as spam or suppressed by the shop, imported again)",
}

#: The provider part of an unsubscribe event's id -> how ``why`` names it (events from before the history).
_PROVIDERS = {LINK_PROVIDER: "unsubscribe link", PREFERENCES_PROVIDER: "preference page", "smtp": "bounce mailbox",
              **{name: f"{name} event" for name in PROVIDERS}}

#: The key of :func:`opt_outs_behind`'s answer that is no reason code: the opt-in a decision of a customer whose
#: address another customer id has counted, ``{"topic", "at", "source"}``.
CONSENT = "consent"


def label(change: consent_log.Change) -> str | None:
    """``ESP webhook (ses complaint)``, ``import (customers.csv)`` ...; None when the source is not recorded."""
    if change.source is None:
        return None
    name = SOURCES.get(change.source, f"import, source '{change.source}'")
    return f"{name} ({change.detail})" if change.detail else name


def opt_out_behind(conn: Connection, customer_id: str, logged: dict[str, Any], decided_at: datetime,
                   as_of: datetime) -> dict[str, Any]:
    """``{"at": datetime | None, "source": str | None}`` of the opt-out an UNSUBSCRIBED decision made at ``decided_at`` saw.

    ``source`` None: not recorded. ``at`` None: no date known (an undated import, or nothing on record).
    """
    if decided_by_preference(logged):
        return topic_opt_out_behind(conn, customer_id, "*", decided_at)
    event = _latest(conn, customer_id, "email_unsubscribed", as_of)
    if event is None:
        return {"at": None, "source": None}
    change = consent_log.change_of_event(conn, customer_id, event.event_id) if event.event_id else None
    if change is not None:
        return {"at": event.occurred_at, "source": label(change)}
    provider = (event.event_id or "").partition(":")[0]
    return {"at": event.occurred_at, "source": _PROVIDERS.get(provider)}


def topic_opt_out_behind(conn: Connection, customer_id: str, topic: str, decided_at: datetime) -> dict[str, Any]:
    """``{"at", "source"}`` of the opt-out of ``topic`` (``*``: all e-mail) in force at ``decided_at``, from the consent history."""
    change = consent_log.change_in_force(conn, customer_id, topic, decided_at)
    if change is None or change.opted_in:
        return {"at": None, "source": None}
    return {"at": consent_log.shown(change.changed_at), "source": label(change)}


def opt_outs_behind(conn: Connection, customer_id: str, codes: list[str], logged: dict[str, Any], decided_at: datetime,
                    as_of: datetime) -> dict[str, dict[str, Any]]:
    """Reason code -> when and from where the opt-out behind it came: UNSUBSCRIBED, NO_CONSENT where the
    message's topic was opted out (not where no consent is on record), ADDRESS_SUPPRESSED: why and since when
    the address is on the suppression list, and HARD_BOUNCE: when the bounce came and who reported it."""
    out = {}
    if Unsubscribed.code in codes:
        out[Unsubscribed.code] = opt_out_behind(conn, customer_id, logged, decided_at, as_of)
    if NoConsent.code in codes and opted_out_of_topic(logged):
        out[NoConsent.code] = topic_opt_out_behind(conn, customer_id, logged["topic"], decided_at)
    if AddressSuppressed.code in codes:
        out[AddressSuppressed.code] = suppression_behind(conn, customer_id)
    if HardBounce.code in codes:
        out[HardBounce.code] = bounce_behind(conn, customer_id, as_of)
    topic = logged.get("topic")
    if topic and num(logged, "address_shared") > 0 and num(logged, "consent_topic") >= 0.5:
        found = consent_behind(conn, customer_id, topic, decided_at)
        if found is not None:
            out[CONSENT] = found
    shared = [c for c in (SharedOptOut.code, SharedHardBounce.code, SharedComplaint.code) if c in codes]
    if shared:
        others = sorted(sharing(conn, [customer_id]))
        for code in shared:
            out[code] = shared_behind(conn, others, code, logged, decided_at, as_of)
    return out


def consent_behind(conn: Connection, customer_id: str, topic: str, decided_at: datetime) -> dict[str, Any] | None:
    """``{"topic", "at", "source"}`` of the opt-in in force at ``decided_at`` that gave consent for ``topic``: the
    topic's own record, else the global one (topic ``*``); None when that record is no opt-in or none is known."""
    for asked in (topic, "*"):
        change = consent_log.change_in_force(conn, customer_id, asked, decided_at)
        if change is not None:
            return {"topic": asked, "at": consent_log.shown(change.changed_at), "source": label(change)} if change.opted_in else None
    return None


def bounce_behind(conn: Connection, customer_id: str, as_of: datetime) -> dict[str, Any]:
    """``{"at", "source"}`` of the customer's latest hard bounce a plan as of ``as_of`` saw: when, and who reported
    it (the bounce mailbox, an ESP's events; None: an imported event, not recorded); both None when none is found."""
    event = _latest(conn, customer_id, "email_bounced_hard", as_of)
    if event is None:
        return {"at": None, "source": None}
    return {"at": event.occurred_at, "source": _PROVIDERS.get((event.event_id or "").partition(":")[0])}


def _latest(conn: Connection, customer_id: str, event_type: str, as_of: datetime):
    """The customer's latest event of ``event_type`` up to ``as_of`` (``event_id``, ``occurred_at``), or None."""
    return conn.execute(
        select(E.c.event_id, E.c.occurred_at).where(E.c.customer_id == customer_id, E.c.type == event_type,
                                                     E.c.occurred_at <= as_of)
        .order_by(E.c.occurred_at.desc(), E.c.id.desc()).limit(1)
    ).first()


def suppression_behind(conn: Connection, customer_id: str) -> dict[str, Any]:
    """``{"at", "source"}`` of the customer's address on the suppression list: since when, and why (its stored
    reason in words); both None when the address is not on it now (taken off since, or the customer has none)."""
    email = conn.execute(select(Customer.__table__.c.email).where(Customer.__table__.c.id == customer_id)).scalar()
    table = Suppression.__table__
    row = None if not email else conn.execute(
        select(table.c.reason, table.c.created_at).where(table.c.email_hash == address_hash(email, salt(conn)))).first()
    if row is None:
        return {"at": None, "source": None}
    return {"at": row.created_at, "source": SUPPRESSION_REASONS.get(row.reason, f"reason '{row.reason}'")}


#: The event behind each SHARED_ rule other than the opt-out.
_SHARED_EVENTS = {SharedHardBounce.code: "email_bounced_hard", SharedComplaint.code: "email_complained"}


def shared_behind(conn: Connection, others: list[str], code: str, logged: dict[str, Any], decided_at: datetime,
                  as_of: datetime) -> dict[str, Any]:
    """``{"customer", "at", "source"}`` of the latest fact behind a SHARED_ decision among ``others`` (the other
    customer ids with the address, as the store has them now); None values: not found (an id merged or erased since)."""
    found: list[dict[str, Any]] = []
    if code in _SHARED_EVENTS:
        event_types = [_SHARED_EVENTS[code]]
    else:
        event_types = ["email_unsubscribed"] if logged.get("shared_unsubscribed") else []
        topics = ["*"] + ([logged["topic"]] if logged.get("topic") and logged.get("shared_topic_opt_out") else [])
        for other in others:
            for topic in topics:
                change = consent_log.change_in_force(conn, other, topic, decided_at)
                if change is not None and not change.opted_in:
                    at = consent_log.shown(change.changed_at)
                    found.append({"customer": other, "at": at, "source": label(change)})
    if event_types and others:
        event = conn.execute(
            select(E.c.customer_id, E.c.event_id, E.c.occurred_at)
            .where(E.c.customer_id.in_(others), E.c.type.in_(event_types), E.c.occurred_at <= as_of)
            .order_by(E.c.occurred_at.desc(), E.c.id.desc()).limit(1)).first()
        if event is not None:
            change = consent_log.change_of_event(conn, event.customer_id, event.event_id) if event.event_id else None
            source = label(change) if change is not None else _PROVIDERS.get((event.event_id or "").partition(":")[0])
            found.append({"customer": event.customer_id, "at": event.occurred_at, "source": source})
    if not found:
        return {"customer": None, "at": None, "source": None}
    return max(found, key=lambda f: (f["at"] is not None, f["at"] or datetime.min))
