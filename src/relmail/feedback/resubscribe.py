"""A customer's opt-in on relmail's preference page, carried to the ESP's own unsubscribe list.

SendGrid, Brevo and Mandrill keep their own lists of addresses they refuse to
mail, whatever relmail decided: SendGrid its global unsubscribe list and one
per unsubscribe group, Brevo its transactional blocked contacts, Mandrill its
rejection denylist. A customer who
unsubscribed at the ESP (its link, its preference page, a drop relmail learnt
of) and then opts in again on relmail's preference page is opted in at
relmail, and still on the ESP's list: :func:`resubscribe` lifts that listing
with the ESP's documented call (:data:`PROVIDERS`).

Which opt-ins are carried is the same for every ESP: the customer's own
opt-in on relmail's page, made after an *unsubscribe* that came from the ESP
(an ``events`` row of type ``email_unsubscribed``; a spam complaint is never
lifted, relmail suppresses complainers for good), and still in force. An
import's "accepts marketing" flag never lifts an unsubscribe made at the ESP.
Brevo's and Mandrill's calls remove the address from their list whatever put
it there, so an address the ESP reported a hard bounce or a complaint for is
never lifted there (:attr:`Lifter.whole_address`).

What is lifted is what the customer's opt-in covers. At SendGrid a topic
opted in again lifts the group that topic's e-mails go with; the global
switch ("everything") lifts the global list and the ``"*"`` group. Brevo and
Mandrill have one list, and their unsubscribe covers every topic: switching
"everything" back on lifts it.

The opt-ins are read from the consent history in order; the store remembers
(``meta`` key ``<provider>.resubscribed_through``) the last one carried, so a
repeated run calls the ESP only for new ones. A failed call stops the
watermark before it: the next run tries it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
from sqlalchemy import and_, select
from sqlalchemy.engine import Engine

from ..delivery.base import Abort
from ..delivery.esp import error_text
from ..delivery.http import HttpAdapter, json_body
from ..errors import ConfigError
from ..store.db import dialect_insert
from ..store.models import ConsentChange, Customer, Event, Meta, Preference
from .apply import ALL_TOPICS
from .events import STORE_TYPES

#: The consent history's source of the customer's own choices on relmail's preference page.
PAGE = "preference-page"


@dataclass(frozen=True)
class Lifter:
    """What one ESP contributes to :func:`resubscribe`: its lists and the call that lifts one."""

    #: The adapter's name (``[delivery] adapter``).
    name: str
    #: The ESP's name in messages.
    label: str
    #: The listings an opt-in of a topic lifts (``adapter``, ``topic``) -> listing names.
    listings: Callable[[HttpAdapter, str], list[str]]
    #: The API path of the call that lifts one listing (``listing``, URL-encoded address).
    path: Callable[[str, str], str]
    #: How the address is URL-encoded in the path (characters left as they are).
    safe: str
    #: A listing as the CLI names it.
    describe: Callable[[str], str]
    #: The call lifts the address whatever listed it (a hard bounce, a complaint): never made for an
    #: address the ESP reported a hard bounce or a complaint for.
    whole_address: bool = False
    #: The call's method: SendGrid and Brevo ``DELETE`` the address's path; Mandrill ``POST``s it in the body.
    method: str = "DELETE"
    #: The call's JSON body (``adapter``, the address), for an ESP that takes the address there.
    body: Callable[[HttpAdapter, str], dict] | None = None
    #: Whether a 2xx answer says the listing was lifted (Mandrill's says so in its body).
    lifted: Callable[[requests.Response], bool] = lambda response: True
    #: Whether an answer says the address was not on the list: nothing to lift, counted as lifted.
    not_listed: Callable[[requests.Response], bool] = lambda response: response.status_code == 404

    @property
    def watermark(self) -> str:
        """``meta`` key: the id of the last consent change whose opt-in was carried to this ESP."""
        return f"{self.name}.resubscribed_through"


def _sendgrid_listings(adapter, topic: str) -> list[str]:
    """The SendGrid lists an opt-in of ``topic`` lifts: the global one and the ``"*"`` group for everything."""
    groups = adapter.groups
    if topic == ALL_TOPICS:
        return ["global", *(str(g.id) for g in groups.by_id.values() if g.everything)]
    group = groups.for_topic(topic)
    return [str(group.id)] if group is not None else []


#: The ESPs whose own unsubscribe list relmail lifts, by adapter name.
PROVIDERS: dict[str, Lifter] = {
    # SendGrid's v3 suppressions API (global and group unsubscribes): 204 lifted, 404 not listed.
    "sendgrid": Lifter(
        name="sendgrid",
        label="SendGrid",
        listings=_sendgrid_listings,
        path=lambda listing, address: (f"/v3/asm/suppressions/global/{address}" if listing == "global"
                                       else f"/v3/asm/groups/{listing}/suppressions/{address}"),
        safe="@",
        describe=lambda listing: "global unsubscribes" if listing == "global" else f"group {listing}",
    ),
    # https://developers.brevo.com/reference/unblock-or-resubscribe-a-transactional-contact:
    # the address URL-encoded; 204 "Contact unblocked", 404 not on the list.
    "brevo": Lifter(
        name="brevo",
        label="Brevo",
        listings=lambda adapter, topic: ["blocked"],
        path=lambda listing, address: f"/v3/smtp/blockedContacts/{address}",
        safe="",
        describe=lambda listing: "transactional blocked contacts",
        whole_address=True,
    ),
    # Mandrill's rejects/delete: the key, the address and the subaccount relmail sends through (whose own denylist
    # holds what its e-mails' unsubscribes put there) in the JSON body; {"deleted": true} lifted, the error
    # Invalid_Reject (HTTP 500) when the address is not on the denylist.
    "mandrill": Lifter(
        name="mandrill",
        label="Mandrill",
        listings=lambda adapter, topic: ["rejects"],
        path=lambda listing, address: "/rejects/delete",
        safe="",
        describe=lambda listing: "rejection denylist",
        whole_address=True,
        method="POST",
        body=lambda adapter, email: {"key": adapter.api_key, "email": email,
                                     **({"subaccount": adapter.subaccount} if adapter.subaccount else {})},
        lifted=lambda response: _json_field(response, "deleted") is True,
        not_listed=lambda response: _mandrill_error(response) == "Invalid_Reject",
    ),
}


def _json_field(response: requests.Response, name: str):
    """Field ``name`` of the JSON object ``response`` holds, or None."""
    data = json_body(response)
    return data.get(name) if isinstance(data, dict) else None


def _mandrill_error(response: requests.Response) -> str | None:
    """The ``name`` of Mandrill's error object (sent with HTTP 500), or None."""
    return _json_field(response, "name") if _json_field(response, "status") == "error" else None


@dataclass(frozen=True)
class Lift:
    """One ESP listing lifted (or to lift) for one customer: SendGrid ``"global"`` or a group id, Brevo ``"blocked"``."""

    customer_id: str
    listing: str
    #: None: lifted; otherwise why the ESP did not lift it.
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


def lifter(adapter) -> Lifter | None:
    """The :class:`Lifter` of ``adapter``'s ESP; None for an adapter whose provider keeps no list relmail lifts."""
    return PROVIDERS.get(getattr(adapter, "name", ""))


def pending(engine: Engine, esp: Lifter) -> list[tuple[int, str, str, str]]:
    """(change id, customer, topic, address) of every page opt-in after an unsubscribe from ``esp``, not yet carried, in order.

    An opt-in the customer has since withdrawn again (the preference row is
    opted out now) is passed over.
    """
    c, p, cust, m, e = (ConsentChange.__table__, Preference.__table__, Customer.__table__, Meta.__table__,
                        Event.__table__)
    out, why = ConsentChange.__table__.alias("out"), e.alias("why")
    with engine.connect() as conn:
        since = int(conn.execute(select(m.c.value).where(m.c.key == esp.watermark)).scalar_one_or_none() or 0)
        # The opt-out is the ESP's unsubscribe event (not its complaint, which withdraws consent too).
        unsubscribed = select(why.c.id).where(
            why.c.event_id == out.c.event_id, why.c.type == STORE_TYPES["unsubscribed"]).exists()
        from_esp = select(out.c.id).where(
            out.c.customer_id == c.c.customer_id, out.c.topic == c.c.topic, out.c.opted_in.is_(False),
            out.c.id < c.c.id, out.c.event_id.like(f"{esp.name}:%"), unsubscribed).exists()
        query = (
            select(c.c.id, c.c.customer_id, c.c.topic, cust.c.email)
            .join(cust, cust.c.id == c.c.customer_id)
            .join(p, and_(p.c.customer_id == c.c.customer_id, p.c.topic == c.c.topic))
            .where(c.c.id > since, c.c.opted_in.is_(True), c.c.source == PAGE, p.c.opted_in.is_(True), from_esp)
            .order_by(c.c.id)
        )
        if esp.whole_address:
            blocked_for_good = select(e.c.id).where(
                e.c.customer_id == c.c.customer_id, e.c.event_id.like(f"{esp.name}:%"),
                e.c.type.in_([STORE_TYPES["bounced_hard"], STORE_TYPES["complained"]])).exists()
            query = query.where(~blocked_for_good)
        rows = conn.execute(query).all()
    return [(row.id, row.customer_id, row.topic, row.email) for row in rows]


def resubscribe(engine: Engine, adapter: HttpAdapter, dry_run: bool = False) -> ResubscribeResult:
    """Lift the ESP listings of every page opt-in :func:`pending` finds; see the module docstring.

    ``adapter`` is the SendGrid, Brevo or Mandrill adapter (:data:`PROVIDERS`).
    ``dry_run`` lists what would be lifted and calls nothing. A refused API key
    fails every call (listed in :attr:`ResubscribeResult.failed`), as does an
    answer other than 2xx or 404 (not listed: nothing to lift).
    """
    esp = lifter(adapter)
    if esp is None:
        raise ConfigError(f"relmail.toml [delivery]: adapter is {adapter.name!r}; relmail lifts the unsubscribe lists "
                          f"of {', '.join(x.label for x in PROVIDERS.values())} only")
    result = ResubscribeResult(dry_run=dry_run)
    done_through: int | None = None
    first_failure: int | None = None
    seen: set[tuple[str, str]] = set()
    for change_id, customer_id, topic, email in pending(engine, esp):
        for listing in esp.listings(adapter, topic):
            if (customer_id, listing) in seen:
                continue  # two topics of one listing: one call
            seen.add((customer_id, listing))
            if dry_run:
                result.lifted.append(Lift(customer_id, listing))
                continue
            error = _delete(adapter, esp, email, listing)
            (result.failed if error else result.lifted).append(Lift(customer_id, listing, error))
            if error and first_failure is None:
                first_failure = change_id
        if first_failure is None:
            done_through = change_id
    if done_through is not None and not dry_run:
        m = Meta.__table__
        with engine.begin() as conn:
            stmt = dialect_insert(conn, m).values(key=esp.watermark, value=str(done_through))
            conn.execute(stmt.on_conflict_do_update(index_elements=[m.c.key], set_={"value": str(done_through)}))
    return result


def _delete(adapter: HttpAdapter, esp: Lifter, email: str, listing: str) -> str | None:
    """Lift one listing; None when the ESP lifted it (or the address was not on it), else why not."""
    address = quote(email, safe=esp.safe)
    extra = {"json": esp.body(adapter, email)} if esp.body is not None else {}
    try:
        outcome = adapter.request(esp.method, esp.path(listing, address), **extra)
    except Abort as exc:
        return _without(str(exc), email, address)
    response = outcome.response
    if response is None:
        return _without(outcome.reason or f"no answer from {esp.label}", email, address)
    if (200 <= response.status_code < 300 and esp.lifted(response)) or esp.not_listed(response):
        return None
    return _without(f"HTTP {response.status_code}: {error_text(response)}", email, address)


def _without(text: str, *addresses: str) -> str:
    """``text`` without the customer's address (a reason is printed and may be logged; the id names the customer)."""
    for address in addresses:
        text = text.replace(address, "<address>")
    return text
