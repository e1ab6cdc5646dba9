"""A customer's opt-in on relmail's preference page, carried to SendGrid's suppression lists.

SendGrid keeps its own unsubscribe lists (the global one and one per
unsubscribe group) and drops every e-mail to an address on them, whatever
relmail decided. A customer who unsubscribed at SendGrid (its link, its
preference page, a drop relmail learnt of) and then opts in again on
relmail's preference page is opted in at relmail, and still on SendGrid's
list: :func:`resubscribe` lifts that listing with SendGrid's documented calls,
``DELETE /v3/asm/suppressions/global/{email}`` and
``DELETE /v3/asm/groups/{group_id}/suppressions/{email}``.

What is lifted is exactly what the customer's opt-in covers: a topic opted in
again lifts the group that topic's e-mails go with; the global switch
("everything") lifts the global list and the ``"*"`` group. Only an opt-in
the customer made on relmail's page after an opt-out that came from SendGrid
is carried (an import's "accepts marketing" flag never lifts an unsubscribe
made at SendGrid), and only while it is still in force.

The opt-ins are read from the consent history in order; the store remembers
(``meta`` key :data:`WATERMARK`) the last one carried, so a repeated run
calls SendGrid only for new ones. A failed call stops the watermark before
it: the next run tries it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

from sqlalchemy import and_, select
from sqlalchemy.engine import Engine

from ..delivery.base import Abort
from ..delivery.esp import error_text
from ..delivery.sendgrid import SendGridAdapter
from ..store.db import dialect_insert
from ..store.models import ConsentChange, Customer, Meta, Preference
from .apply import ALL_TOPICS

#: ``meta`` key: the id of the last consent change whose opt-in was carried to SendGrid.
WATERMARK = "sendgrid.resubscribed_through"
#: The consent history's source of the customer's own choices on relmail's preference page.
PAGE = "preference-page"


@dataclass(frozen=True)
class Lift:
    """One SendGrid listing lifted (or to lift) for one customer: ``"global"`` or a group id."""

    customer_id: str
    listing: str
    #: None: lifted; otherwise why SendGrid did not lift it.
    error: str | None = None

    def as_dict(self) -> dict:
        return {"customer_id": self.customer_id, "listing": self.listing, "error": self.error}


@dataclass
class ResubscribeResult:
    """What :func:`resubscribe` did: the listings lifted and the calls that failed."""

    lifted: list[Lift] = field(default_factory=list)
    failed: list[Lift] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "lifted": [x.as_dict() for x in self.lifted],
                "failed": [x.as_dict() for x in self.failed]}


def _listings(adapter: SendGridAdapter, topic: str) -> list[str]:
    """The SendGrid lists an opt-in of ``topic`` lifts: the global one and the ``"*"`` group for everything."""
    groups = adapter.groups
    if topic == ALL_TOPICS:
        return ["global", *(str(g.id) for g in groups.by_id.values() if g.everything)]
    group = groups.for_topic(topic)
    return [str(group.id)] if group is not None else []


def pending(engine: Engine) -> list[tuple[int, str, str, str]]:
    """(change id, customer, topic, address) of every page opt-in after a SendGrid opt-out, not yet carried, in order.

    An opt-in the customer has since withdrawn again (the preference row is
    opted out now) is passed over.
    """
    c, p, cust, m = ConsentChange.__table__, Preference.__table__, Customer.__table__, Meta.__table__
    out = ConsentChange.__table__.alias("out")
    with engine.connect() as conn:
        since = int(conn.execute(select(m.c.value).where(m.c.key == WATERMARK)).scalar_one_or_none() or 0)
        from_sendgrid = select(out.c.id).where(
            out.c.customer_id == c.c.customer_id, out.c.topic == c.c.topic, out.c.opted_in.is_(False),
            out.c.id < c.c.id, out.c.event_id.like("sendgrid:%")).exists()
        rows = conn.execute(
            select(c.c.id, c.c.customer_id, c.c.topic, cust.c.email)
            .join(cust, cust.c.id == c.c.customer_id)
            .join(p, and_(p.c.customer_id == c.c.customer_id, p.c.topic == c.c.topic))
            .where(c.c.id > since, c.c.opted_in.is_(True), c.c.source == PAGE, p.c.opted_in.is_(True), from_sendgrid)
            .order_by(c.c.id)
        ).all()
    return [(row.id, row.customer_id, row.topic, row.email) for row in rows]


def resubscribe(engine: Engine, adapter: SendGridAdapter, dry_run: bool = False) -> ResubscribeResult:
    """Lift the SendGrid listings of every page opt-in :func:`pending` finds; see the module docstring.

    ``dry_run`` lists what would be lifted and calls nothing. A refused API key
    fails every call (listed in :attr:`ResubscribeResult.failed`), as does an
    answer other than 2xx or 404 (not listed: nothing to lift).
    """
    result = ResubscribeResult(dry_run=dry_run)
    done_through: int | None = None
    first_failure: int | None = None
    seen: set[tuple[str, str]] = set()
    for change_id, customer_id, topic, email in pending(engine):
        for listing in _listings(adapter, topic):
            if (customer_id, listing) in seen:
                continue  # two topics of one group: one call
            seen.add((customer_id, listing))
            if dry_run:
                result.lifted.append(Lift(customer_id, listing))
                continue
            error = _delete(adapter, email, listing)
            (result.failed if error else result.lifted).append(Lift(customer_id, listing, error))
            if error and first_failure is None:
                first_failure = change_id
        if first_failure is None:
            done_through = change_id
    if done_through is not None and not dry_run:
        m = Meta.__table__
        with engine.begin() as conn:
            stmt = dialect_insert(conn, m).values(key=WATERMARK, value=str(done_through))
            conn.execute(stmt.on_conflict_do_update(index_elements=[m.c.key], set_={"value": str(done_through)}))
    return result


def _delete(adapter: SendGridAdapter, email: str, listing: str) -> str | None:
    """Lift one listing; None when SendGrid lifted it (or the address was not on it), else why not."""
    address = quote(email, safe="@")
    path = (f"/v3/asm/suppressions/global/{address}" if listing == "global"
            else f"/v3/asm/groups/{listing}/suppressions/{address}")
    try:
        outcome = adapter.request("DELETE", path)
    except Abort as exc:
        return _without(str(exc), email, address)
    response = outcome.response
    if response is None:
        return _without(outcome.reason or "no answer from SendGrid", email, address)
    if 200 <= response.status_code < 300 or response.status_code == 404:
        return None
    return _without(f"HTTP {response.status_code}: {error_text(response)}", email, address)


def _without(text: str, *addresses: str) -> str:
    """``text`` without the customer's address (a reason is printed and may be logged; the id names the customer)."""
    for address in addresses:
        text = text.replace(address, "<address>")
    return text
