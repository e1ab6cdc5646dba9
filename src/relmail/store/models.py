"""The store and the ledger: every table relmail keeps.

Times are stored in UTC (``UTCDateTime``) and come back timezone-aware, on
SQLite as on PostgreSQL. The schema is created and upgraded only by
``relmail db upgrade`` (Alembic migrations in ``relmail/store/migrations``); these
classes describe it, they never create it on the fly.
"""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Index, Integer, String, Text, TypeDecorator, UniqueConstraint, func, text, true
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator):
    """A timezone-aware datetime stored as UTC.

    SQLite has no time zones: a naive or offset time stored as-is would
    compare wrongly with others, so every value is converted to UTC on the
    way in and marked UTC on the way out. Naive values are refused.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: relmail stores timezone-aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


#: Every event type relmail knows. E-mail events are normalized to these
#: names whatever the provider calls them.
EVENT_TYPES = (
    "purchase",
    "view",
    "usage",
    "ticket_opened",
    "ticket_closed",
    "email_sent",
    "email_delivered",
    "email_opened",
    "email_clicked",
    "email_bounced_hard",
    "email_bounced_soft",
    "email_bounced_blocked",
    "email_complained",
    "email_unsubscribed",
)

#: Decision actions.
ACTIONS = ("send", "holdout", "suppress")

class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    email: str = Field(sa_column=Column(String(320), nullable=False, index=True))
    first_name: str | None = Field(default=None, sa_column=Column(String(200)))
    last_name: str | None = Field(default=None, sa_column=Column(String(200)))
    locale: str = Field(default="en_GB", sa_column=Column(String(16), nullable=False, default="en_GB"))
    timezone: str = Field(default="UTC", sa_column=Column(String(64), nullable=False, default="UTC"))
    #: When the customer signed up or was first seen; None when the source does not say (a Shopify
    #: customers export): the features then date the customer from the first order.
    created_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict))
    #: False for an address an import found invalid: kept, flagged, never mailed (INVALID_ADDRESS).
    email_valid: bool = Field(default=True, sa_column=Column(Boolean, nullable=False, default=True, server_default=true()))
    #: When a complete export of the shop's customers (``import customers --complete``) first no longer listed
    #: the customer (an account deleted or merged in the shop): kept, never mailed from then on (REMOVED_FROM_SHOP).
    #: None while the shop lists the customer; an import that names the customer again clears it.
    removed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    #: When a complete customers export first listed the customer; None for someone only a mailing list or a
    #: newsletter form brought in, whom a complete export of the shop's customers never removes (after its first).
    listed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))


#: The few customers a complete export no longer listed: what an import that names customers again looks up.
Index("ix_customers_removed", Customer.__table__.c.id, sqlite_where=Customer.__table__.c.removed_at.isnot(None),
      postgresql_where=Customer.__table__.c.removed_at.isnot(None))


#: A customer's address lower-cased, as the index ``ix_customers_email_lower`` holds it: what finds customers
#: by address in any case (:mod:`relmail.importers.addresses`). A statement must say ``lower(email)`` to use it.
EMAIL_LOWER = func.lower(Customer.__table__.c.email, type_=Customer.__table__.c.email.type)
Index("ix_customers_email_lower", EMAIL_LOWER)


def mailbox_key(customers) -> Any:
    """The mailbox of the rows of ``customers`` (the table or an alias of it): the address trimmed and lower-cased,
    as the index ``ix_customers_mailbox`` holds it (a join of the table with itself says it once per side)."""
    return func.lower(func.trim(customers.c.email), type_=customers.c.email.type)


#: A customer's mailbox (:func:`mailbox_key`): what finds every customer id with one address
#: (:mod:`relmail.store.mailboxes`). Statements must say it so.
MAILBOX = mailbox_key(Customer.__table__)
Index("ix_customers_mailbox", MAILBOX)


class ShopAccount(SQLModel, table=True):
    """A shop's account number and the customer its orders named by address (:mod:`relmail.importers.orders`).

    An order keeps the billing address it was placed with; the shop's
    customers export lists the account's latest. An order of a later file
    whose old address no customer has is the customer its account's earlier
    orders named. ``source`` is the mapping that read the number
    (``woocommerce``): numbers of two shops never meet. An account seen with
    two customers keeps both rows, and a line that needs it is an error.
    """

    __tablename__ = "shop_accounts"
    #: What erasing a customer deletes by.
    __table_args__ = (Index("ix_shop_accounts_customer", "customer_id"),)

    source: str = Field(sa_column=Column(String(100), primary_key=True))
    account: str = Field(sa_column=Column(String(100), primary_key=True))
    customer_id: str = Field(sa_column=Column(String(64), primary_key=True))


class Product(SQLModel, table=True):
    __tablename__ = "products"

    id: str = Field(sa_column=Column(String(64), primary_key=True))
    name: str = Field(sa_column=Column(String(300), nullable=False))
    category: str = Field(sa_column=Column(String(100), nullable=False, index=True))
    #: The regular price: what the customer pays outside a sale.
    price: float = Field(default=0.0, nullable=False)
    #: What the customer pays from ``sale_starts_at`` (none: already) until ``sale_ends_at`` (none: no end).
    sale_price: float | None = Field(default=None, nullable=True)
    sale_starts_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    sale_ends_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))
    url: str | None = Field(default=None, sa_column=Column(String(2000)))
    #: Features a customer can use (``usage`` events name one of these).
    features: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, default=list))
    image_url: str | None = Field(default=None, sa_column=Column(String(2000)))
    #: Anything else the catalogue says (vendor, tags, status ...), for segments and templates.
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False, default=dict, server_default="{}"))


class Preference(SQLModel, table=True):
    """Consent per topic. Topic ``*`` is the global switch: opted out = unsubscribed from all."""

    __tablename__ = "preferences"

    customer_id: str = Field(sa_column=Column(String(64), primary_key=True))
    topic: str = Field(sa_column=Column(String(100), primary_key=True))
    opted_in: bool = Field(nullable=False)
    #: The customer's frequency wish: at most this many e-mails a week.
    max_per_week: int | None = Field(default=None)
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    #: Where the consent came from: import, signup-form, unsubscribe-link, esp-webhook ...
    source: str = Field(default="import", sa_column=Column(String(100), nullable=False, default="import"))


class ConsentChange(SQLModel, table=True):
    """One change of a ``preferences`` row, and where it came from: the consent history.

    ``preferences`` holds the state the plan reads; this table says how it
    got there, so ``relmail why`` can name the opt-out behind UNSUBSCRIBED
    (:mod:`relmail.store.consent_log`). Stores upgraded from before it have no
    rows for older changes.
    """

    __tablename__ = "consent_changes"
    __table_args__ = (Index("ix_consent_changes_customer_topic", "customer_id", "topic", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    customer_id: str = Field(sa_column=Column(String(64), nullable=False))
    topic: str = Field(sa_column=Column(String(100), nullable=False))
    opted_in: bool = Field(nullable=False)
    #: When the customer made the choice, as far as the source says (the row's ``updated_at``).
    changed_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    #: When relmail wrote it: what a plan made at a given time can have seen.
    recorded_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    #: ``preferences.source`` as written: unsubscribe-link, preference-page, esp-webhook, import ...
    source: str = Field(sa_column=Column(String(100), nullable=False))
    #: What exactly: the imported file, the provider and its event, one-click or the confirmation page.
    detail: str | None = Field(default=None, sa_column=Column(String(300)))
    #: The ``events.event_id`` of the feedback event that made the change, if one did.
    event_id: str | None = Field(default=None, sa_column=Column(String(128)))


class Event(SQLModel, table=True):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_customer_time", "customer_id", "occurred_at"),
        Index("ix_events_type_time_customer", "type", "occurred_at", "customer_id", "product_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    #: The source system's id, for upserts and for de-duplicating ESP webhooks.
    event_id: str | None = Field(default=None, sa_column=Column(String(128), unique=True))
    customer_id: str = Field(sa_column=Column(String(64), nullable=False))
    type: str = Field(sa_column=Column(String(32), nullable=False))
    occurred_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    product_id: str | None = Field(default=None, sa_column=Column(String(64)))
    #: The product feature used (``usage``) or the ticket id (``ticket_*``).
    feature: str | None = Field(default=None, sa_column=Column(String(100)))
    #: Money for a purchase, count for usage.
    value: float | None = Field(default=None)
    #: For e-mail events: the message, its run and its consent topic, so
    #: frequency caps per topic and "already sent" read the events alone.
    message_id: str | None = Field(default=None, sa_column=Column(String(100)))
    run_id: str | None = Field(default=None, sa_column=Column(String(100)))
    topic: str | None = Field(default=None, sa_column=Column(String(100)))


class Suppression(SQLModel, table=True):
    """Addresses never to mail again without fresh consent, kept as salted hashes."""

    __tablename__ = "suppressions"

    email_hash: str = Field(sa_column=Column(String(64), primary_key=True))
    reason: str = Field(sa_column=Column(String(32), nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Meta(SQLModel, table=True):
    """Small key/value facts about this store (the address-hash salt, ...)."""

    __tablename__ = "meta"

    key: str = Field(sa_column=Column(String(64), primary_key=True))
    value: str = Field(sa_column=Column(Text, nullable=False))


class Run(SQLModel, table=True):
    """One execution of a campaign for a window; (campaign, window) is its idempotency key."""

    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("campaign", "window", name="uq_runs_campaign_window"),)

    id: str = Field(sa_column=Column(String(100), primary_key=True))
    campaign: str = Field(sa_column=Column(String(100), nullable=False))
    window: str = Field(sa_column=Column(String(32), nullable=False))
    #: The run's "now": features and rules never look past it.
    as_of: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    seed: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    status: str = Field(default="planned", sa_column=Column(String(16), nullable=False))
    #: Hash of the campaign, segments and templates the plan was made from.
    config_hash: str = Field(default="", sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


#: The predicate of the decisions' partial index of sends and hold-outs (a statement must say it literally to use it).
NOT_SUPPRESSED = "action IN ('send', 'holdout')"


class Decision(SQLModel, table=True):
    """Send, hold out or suppress, for one (run, customer, message), and why."""

    __tablename__ = "decisions"
    # Every index leads with the run: a plan's rows land together at the end of each, whatever
    # the weeks the ledger holds (an index on the customer alone would take each row to another
    # page of an index as large as the whole ledger). A customer's decisions are found run by run.
    __table_args__ = (
        UniqueConstraint("run_id", "customer_id", "message_id", name="uq_decisions_run_customer_message"),
        # Sends and hold-outs, a tenth of the rows: what a plan reads of other runs (pending sends, by
        # customer range) and what `relmail runs list` counts per action (suppressed: the rest).
        Index("ix_decisions_not_suppressed", "run_id", "action", "customer_id",
              sqlite_where=text(NOT_SUPPRESSED), postgresql_where=text(NOT_SUPPRESSED)),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    run_id: str = Field(sa_column=Column(String(100), nullable=False))
    customer_id: str = Field(sa_column=Column(String(64), nullable=False))
    message_id: str = Field(sa_column=Column(String(100), nullable=False))
    action: str = Field(sa_column=Column(String(16), nullable=False))
    score: float = Field(default=0.0, nullable=False)
    expected_value: float = Field(default=0.0, nullable=False)
    #: Reason codes, space-separated (every rule that fired, not only the first).
    reasons: str = Field(default="", sa_column=Column(Text, nullable=False))
    #: The features the decision used, as logged at decision time.
    features: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class Delivery(SQLModel, table=True):
    """The delivery of one ``send`` decision; a (run, customer, message) is delivered at most once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "customer_id", "message_id", name="uq_deliveries_run_customer_message"),
        Index("ix_deliveries_run_status_id", "run_id", "status", "id"),
        # A bounce names the Message-ID of the e-mail it answers (relmail feedback bounces).
        Index("ix_deliveries_rfc_message_id", "rfc_message_id"),
        # An SES identity notification names only the provider's id of the e-mail (mail.messageId).
        Index("ix_deliveries_provider_id", "provider_id"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    decision_id: int = Field(sa_column=Column(BigInteger, nullable=False, unique=True))
    run_id: str = Field(sa_column=Column(String(100), nullable=False))
    customer_id: str = Field(sa_column=Column(String(64), nullable=False))
    message_id: str = Field(sa_column=Column(String(100), nullable=False))
    status: str = Field(default="planned", sa_column=Column(String(16), nullable=False))
    #: The registry name of the adapter the delivery was last claimed for (``smtp``, ``ses`` ...): the provider that
    #: carried it, whose id ``provider_id`` is. None for a delivery never claimed, or claimed before relmail wrote it.
    adapter: str | None = Field(default=None, sa_column=Column(String(32)))
    #: Whether the last claim's adapter sends it with a signed VERP return path (``[delivery.smtp] verp``): a
    #: bounce of a tagged e-mail must carry its tag, one of an untagged e-mail cannot. None: not recorded
    #: (claimed before relmail kept it, or never claimed).
    return_path_tagged: bool | None = Field(default=None, sa_column=Column(Boolean))
    #: RFC 5322 Message-ID, stored when the delivery is first claimed (derived from run, customer and message, so every attempt carries the same).
    rfc_message_id: str | None = Field(default=None, sa_column=Column(String(300)))
    provider_id: str | None = Field(default=None, sa_column=Column(String(300)))
    attempts: int = Field(default=0, nullable=False)
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    next_attempt_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    updated_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    #: The provider's answer while the delivery is ``committing``, written the moment it arrives
    #: (:meth:`relmail.sending.marker.Marker.answer`), so that recovery after a crash settles by it;
    #: cleared when the answer is recorded.
    answer: str | None = Field(default=None, sa_column=Column(Text))


class RunLock(SQLModel, table=True):
    """Who is working on a run right now: one row per held lock (``relmail.store.locks``).

    The primary key makes acquiring an INSERT that fails if the lock is held,
    on SQLite and PostgreSQL alike; the holder refreshes ``expires_at`` while
    it works, so a crashed holder's lock can be taken over.
    """

    __tablename__ = "run_locks"

    #: What is locked: the run id (``campaign:window``).
    key: str = Field(sa_column=Column(String(200), primary_key=True))
    #: ``host:pid``, for people reading the error message.
    holder: str = Field(sa_column=Column(String(300), nullable=False))
    #: Random per acquisition: only the holder that wrote it can refresh or release.
    token: str = Field(sa_column=Column(String(64), nullable=False))
    #: Hash of hostname, boot and PID namespace: equal means "the holder's PID is checkable from here".
    host_id: str = Field(sa_column=Column(String(64), nullable=False))
    pid: int = Field(nullable=False)
    #: The holder process's start time (clock ticks since boot, Linux), so a reused PID is not mistaken for it.
    pid_start: int | None = Field(default=None, sa_column=Column(BigInteger))
    acquired_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    heartbeat_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))


class WebhookToken(SQLModel, table=True):
    """A signed one-time token a webhook was accepted with (Mailgun), kept for the replay window.

    The signature of such providers covers only (timestamp, token), not the
    body: a second POST with the same token and another body is a replay.
    """

    __tablename__ = "webhook_tokens"

    provider: str = Field(sa_column=Column(String(32), primary_key=True))
    token: str = Field(sa_column=Column(String(128), primary_key=True))
    #: SHA-256 of the body it was accepted with: the provider's own redelivery matches it.
    body_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    #: After this the signed timestamp is outside the window anyway: the row can go.
    expires_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))


class FeedbackReject(SQLModel, table=True):
    """A provider event relmail could not use: where it came from, why, and the event as sent."""

    __tablename__ = "feedback_rejects"

    id: int | None = Field(default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
    received_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False, index=True))
    provider: str = Field(sa_column=Column(String(32), nullable=False))
    #: ``webhook`` or the path of the imported file.
    source: str = Field(sa_column=Column(Text, nullable=False))
    #: The event's 0-based position in the POST body or file, and its line in a file.
    position: int = Field(nullable=False)
    line: int | None = Field(default=None)
    field: str | None = Field(default=None, sa_column=Column(String(200)))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    #: The provider's event as JSON text, as it was sent (cut at 64 KiB).
    raw_event: str = Field(sa_column=Column(Text, nullable=False))


class CustomerTotals(SQLModel, table=True):
    """Per customer, the lifetime aggregates of the events the features read over all history.

    Kept exact by every writer of events in the same transaction
    (:mod:`relmail.store.aggregates`), so a plan reads one row per customer
    instead of the customer's whole history.
    """

    __tablename__ = "customer_totals"

    customer_id: str = Field(sa_column=Column(String(64), primary_key=True))
    purchases: int = Field(default=0, nullable=False)
    #: Sum of the purchases' values (NULL when none had one).
    spend: float | None = Field(default=None)
    first_purchase_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_purchase_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_open_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))
    last_click_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime))


class CustomerProduct(SQLModel, table=True):
    """Purchases per (customer, product): what a customer owns."""

    __tablename__ = "customer_products"

    customer_id: str = Field(sa_column=Column(String(64), primary_key=True))
    product_id: str = Field(sa_column=Column(String(64), primary_key=True))
    purchases: int = Field(nullable=False)


class CustomerMessage(SQLModel, table=True):
    """The last ``email_sent`` of each message to each customer: "already sent"."""

    __tablename__ = "customer_messages"

    customer_id: str = Field(sa_column=Column(String(64), primary_key=True))
    message_id: str = Field(sa_column=Column(String(100), primary_key=True))
    last_sent_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
