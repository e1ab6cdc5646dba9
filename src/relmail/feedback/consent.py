"""Consent changes a customer makes through a signed link.

``/unsubscribe/<token>`` (RFC 8058 one-click, or the confirmation page's
buttons) and ``/preferences/<token>`` land here. The signed token is the
capability: whoever holds it may change the consent of the mailbox the
e-mail it came in went to, which is exactly what that e-mail was for. No
cookie or CSRF token is involved, because RFC 8058 POSTs carry nothing
else, and none is needed: a forged request cannot name a customer without a
valid signature.

A change is the mailbox's, not the one customer id's: a guest checkout and
a registered account with one address (trimmed, in any case:
:mod:`relmail.store.mailboxes`) are one person, who reads one e-mail and
opens one page. An opt-out, opt-in, topic change or weekly limit made here
is written, in one transaction, for every customer id with the token's
customer's address; the consent history of the other ids says it came
through this id's link or page. The page shows the mailbox's consent, as
the plan reads it (:mod:`relmail.planning.shared_mailbox`): per topic, the
latest change under any of its ids, an opt-out on a tie; the smallest
weekly limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from ..project import ConsentSettings
from ..store import consent_log
from ..store.db import dialect_insert
from ..store.mailboxes import mates
from ..store.models import Event, Preference
from ..tokens import TRIAL_RUNS, Claims
from ..windows import current_time
from .apply import ALL_TOPICS, ApplyResult, OptOut, apply_events, opt_out
from .events import LINK_PROVIDER, PREFERENCES_PROVIDER, FeedbackEvent, derived_id

if TYPE_CHECKING:
    from ..project import Project


@dataclass
class PreferenceState:
    """What the preference page shows for one customer: the consent of the mailbox (its address) it belongs to."""

    customer_id: str
    #: topic -> subscribed: the mailbox's latest record, else the topic's default (see :func:`topic_defaults`).
    topics: dict[str, bool] = field(default_factory=dict)
    unsubscribed_all: bool = False
    max_per_week: int | None = None


@dataclass(frozen=True)
class Change:
    """One change the preference form made: a topic on or off, everything off or on, the weekly limit."""

    kind: str  # topic | all | limit
    topic: str | None = None
    on: bool | None = None
    limit: int | None = None

    def __str__(self) -> str:
        if self.kind == "topic":
            return f"{self.topic}: {'on' if self.on else 'off'}"
        if self.kind == "all":
            return f"everything: {'on' if self.on else 'off'}"
        return f"max per week: {self.limit if self.limit is not None else 'no limit'}"


def mailbox_ids(conn: Connection, customer_id: str) -> list[str]:
    """``customer_id`` and every other customer id with its address (trimmed, in any case): whose consent a link changes."""
    return [customer_id, *mates(conn, [customer_id]).get(customer_id, [])]


def _through(customer_id: str, what: str) -> str:
    """The consent history's detail of a change another id's link or page made: ``customer 'C1's unsubscribe link ...``."""
    return f"{what} of customer {customer_id!r}, which has the same address"


def _now() -> datetime:
    # relmail's clock (RELMAIL_NOW in a rehearsal), as every other consent date: a page's opt-out dated by
    # the machine's clock would lie after the rehearsed plans and outrank the rehearsed week's imports.
    return current_time()


def _sent_message(conn, claims: Claims) -> str | None:
    table = Event.__table__
    return conn.execute(
        select(table.c.message_id)
        .where(table.c.type == "email_sent", table.c.customer_id == claims.customer_id,
               table.c.run_id == claims.run_id, table.c.topic == claims.topic)
        .limit(1)
    ).scalar_one_or_none()


def unsubscribe(engine: Engine, claims: Claims, everything: bool = False, now: datetime | None = None,
                one_click: bool = False) -> ApplyResult:
    """Opt the token's customer out of the token's topic (or of everything).

    ``one_click``: the mail program's RFC 8058 List-Unsubscribe POST, not the
    confirmation page's button (the consent history says which).

    Idempotent: the ``email_unsubscribed`` event's id is derived from
    (customer, run, scope), so a replayed POST writes no second event, and
    an opted-out row stays as it was. A link used again after the customer
    re-subscribed unsubscribes again.
    """
    with engine.begin() as conn:
        how = "one-click List-Unsubscribe" if one_click else "confirmation page"
        return unsubscribe_in(conn, claims, everything=everything, now=now or _now(), origin=how, again=True)


def unsubscribe_in(conn: Connection, claims: Claims, *, everything: bool = False, now: datetime, origin: str,
                   again: bool = False) -> ApplyResult:
    """:func:`unsubscribe` inside the caller's transaction; ``origin`` says how the customer asked.

    The event id is the link's, whichever way the e-mail's unsubscribe was used (its
    page, the one-click POST, the ``mailto:``), so asking twice records one event.
    ``again`` re-applies the opt-out of an event already stored (a link clicked again).
    Every other customer id with the customer's address is opted out of the
    same scope as of ``now`` (see the module): the event is the customer's,
    the opt-out the mailbox's.
    """
    topic = ALL_TOPICS if everything or claims.topic in ("", ALL_TOPICS) else claims.topic
    event = FeedbackEvent(
        type="unsubscribed",
        occurred_at=now,
        recipient="",
        provider=LINK_PROVIDER,
        provider_event_id=derived_id(claims.customer_id, claims.run_id, topic),
        customer_id=claims.customer_id,
        run_id=claims.run_id or None,
        message_id=_sent_message(conn, claims),
        topic=None if topic == ALL_TOPICS else topic,
        scope="all" if topic == ALL_TOPICS else "topic",
    )
    result = apply_events(conn, [event], source="unsubscribe-link", opt_out_duplicates=again, origin=origin)
    if event.run_id in TRIAL_RUNS:
        return result  # a proof's link: nobody's consent changes (apply_events skipped it too)
    others = mailbox_ids(conn, claims.customer_id)[1:]
    if others:
        detail = f"{origin}; {_through(claims.customer_id, 'the unsubscribe link')}"
        result.opt_outs += opt_out(conn, [OptOut(cid, topic, now, detail, event.event_id) for cid in others], "unsubscribe-link")
    return result


def campaign_topics(campaigns_dir: Path) -> set[str]:
    """Every ``topic:`` value in ``campaigns/*.yml`` (unreadable files are skipped: the plan reports them)."""
    import yaml

    from ..yaml_keys import compose, data_of

    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "topic" and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    if campaigns_dir.is_dir():
        for path in sorted(campaigns_dir.glob("*.y*ml")):
            try:
                walk(data_of(compose(path.read_text(encoding="utf-8"))))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
    return found


def topic_defaults(project: Project) -> dict[str, bool]:
    """Every topic the project's campaigns use, and whether a customer without a record of their own gets it.

    This is the plan's consent rule (``NO_CONSENT``): a message whose policy
    is ``consent: opt-in`` needs an explicit yes for its topic, one with
    ``opt-out`` is sent to anyone who has not said no. A topic is ticked by
    default only when every message on it is ``opt-out``. A global opt-in
    (topic ``*``) is not consent for a topic of its own. A campaign file
    that does not load counts its topics as opt-in (never ticked by guess).
    """
    from ..campaigns import load_campaign
    from ..errors import RelmailError

    defaults: dict[str, bool] = dict.fromkeys(campaign_topics(project.campaigns_dir), False)
    opt_out: dict[str, bool] = {}
    folder = project.campaigns_dir
    for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            campaign = load_campaign(project, str(path))
        except RelmailError:
            continue
        for m in campaign.messages:
            opt_out[m.topic] = opt_out.get(m.topic, True) and m.policy.consent == "opt-out"
    for topic, default in opt_out.items():
        defaults[topic] = default
    defaults.pop(ALL_TOPICS, None)
    return defaults


def preference_state(engine: Engine | Connection, customer_id: str, topics: Iterable[str],
                     defaults: Mapping[str, bool] | None = None, consent: ConsentSettings | None = None) -> PreferenceState:
    """The consent of the customer's mailbox for each of ``topics``, the global switch and the frequency wish.

    The records of every customer id with the customer's address count
    (see the module): per topic the latest, an opt-out on a tie; the
    smallest weekly limit. A topic without a record is ticked where the
    plan's consent rule would send it: a global opt-in (topic ``*``) counts
    for the topics ``consent`` (the project's ``[consent]``) lets it cover,
    else ``defaults[topic]`` (False when not given).
    """
    if isinstance(engine, Engine):
        with engine.connect() as conn:
            return preference_state(conn, customer_id, topics, defaults, consent)
    conn = engine
    table = Preference.__table__
    rows = conn.execute(
        select(table.c.topic, table.c.opted_in, table.c.max_per_week, table.c.updated_at)
        .where(table.c.customer_id.in_(mailbox_ids(conn, customer_id)))
    ).all()
    state = PreferenceState(customer_id)
    # Per topic the latest record of any id; at the same time the opt-out (its key's ``not opted_in`` is the larger).
    latest: dict[str, tuple] = {}
    for topic, opted_in, _, when in rows:
        key = (when, not opted_in)
        if topic not in latest or key > latest[topic][0]:
            latest[topic] = (key, bool(opted_in))
    caps = [cap for topic, _, cap, _ in rows if topic == ALL_TOPICS and cap is not None]
    defaults = defaults or {}
    global_yes = consent is not None and latest.get(ALL_TOPICS, (None, False))[1]
    for topic in sorted(set(topics) - {ALL_TOPICS}):
        if topic in latest:
            state.topics[topic] = latest[topic][1]
        else:
            state.topics[topic] = (global_yes and consent.global_counts_for(topic)) or bool(defaults.get(topic, False))
    if ALL_TOPICS in latest:
        state.unsubscribed_all = not latest[ALL_TOPICS][1]
        state.max_per_week = min(caps, default=None)
    return state


def update_preferences(
    engine: Engine,
    claims: Claims,
    subscribed: set[str],
    unsubscribe_all: bool,
    max_per_week: int | None,
    topics: Iterable[str],
    defaults: Mapping[str, bool] | None = None,
    now: datetime | None = None,
    consent: ConsentSettings | None = None,
) -> list[Change]:
    """Apply the preference form over ``topics``; returns what changed (``str(change)``: ``"promotions: off"``).

    A topic is compared with what the page showed (its record, else its
    default), and only changed rows are written (source
    ``preference-page``), so posting the same form twice changes nothing
    the second time; leaving a default-ticked topic ticked writes nothing.
    What the page showed is the mailbox's, and a change is written for every
    customer id with the address, in one transaction (see the module).
    Every switch to "off" also records an ``email_unsubscribed`` event of the
    token's customer.
    """
    now = now or _now()
    with engine.begin() as conn:
        return _update_in(conn, claims, subscribed, unsubscribe_all, max_per_week, topics, defaults, now, consent)


def _update_in(conn: Connection, claims: Claims, subscribed: set[str], unsubscribe_all: bool, max_per_week: int | None,
               topics: Iterable[str], defaults: Mapping[str, bool] | None, now: datetime,
               consent: ConsentSettings | None) -> list[Change]:
    """:func:`update_preferences` inside one transaction: what the page showed is read in the one that writes."""
    before = preference_state(conn, claims.customer_id, topics, defaults, consent)
    changes: list[Change] = []
    rows: list[dict] = []
    offs: list[str] = []
    for topic, was_on in before.topics.items():
        want = topic in subscribed
        if want != was_on:
            changes.append(Change("topic", topic, want))
            rows.append({"topic": topic, "opted_in": want})
            if not want:
                offs.append(topic)
    if unsubscribe_all != before.unsubscribed_all or max_per_week != before.max_per_week:
        if unsubscribe_all != before.unsubscribed_all:
            changes.append(Change("all", on=not unsubscribe_all))
            if unsubscribe_all:
                offs.append(ALL_TOPICS)
        if max_per_week != before.max_per_week:
            changes.append(Change("limit", limit=max_per_week))
        rows.append({"topic": ALL_TOPICS, "opted_in": not unsubscribe_all, "max_per_week": max_per_week})
    if not rows:
        return changes
    table = Preference.__table__
    ids = mailbox_ids(conn, claims.customer_id)
    page = _through(claims.customer_id, "the preference page")
    for cid in ids:
        for row in rows:
            values = {**row, "customer_id": cid, "updated_at": now, "source": "preference-page"}
            stmt = dialect_insert(conn, table).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.customer_id, table.c.topic],
                set_={k: v for k, v in values.items() if k not in ("customer_id", "topic")},
            )
            conn.execute(stmt)
    consent_log.record(conn, [{"customer_id": cid, "topic": row["topic"], "opted_in": row["opted_in"], "changed_at": now,
                               "source": "preference-page", "detail": None if cid == claims.customer_id else page}
                              for cid in ids
                              for row in rows if row["topic"] != ALL_TOPICS or unsubscribe_all != before.unsubscribed_all])
    events = [
        FeedbackEvent(
            type="unsubscribed", occurred_at=now, recipient="", provider=PREFERENCES_PROVIDER,
            provider_event_id=derived_id(claims.customer_id, topic, now.isoformat()),
            customer_id=claims.customer_id, run_id=claims.run_id or None,
            topic=None if topic == ALL_TOPICS else topic, scope="all" if topic == ALL_TOPICS else "topic",
        )
        for topic in offs
    ]
    if events:
        # The rows are already opted out above; this records the events.
        apply_events(conn, events, source="preference-page")
    return changes
