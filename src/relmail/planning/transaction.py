"""The plan's one transaction: the run's row, its decisions written range by range, one e-mail per address.

A plan is all or nothing: the transaction opens with the first range
decided, each range is written as it arrives while the workers decide the
next, and the commit comes after the last range and the
one-e-mail-per-address and one-budget-per-mailbox steps (:mod:`.addresses`,
:mod:`.mailbox_budget`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime

import numpy as np
from sqlalchemy import delete, exists, select, update
from sqlalchemy.exc import IntegrityError

from ..campaigns import Campaign
from ..errors import Conflict
from ..rules import SHARED_ADDRESS
from ..store.models import Delivery, Run
from . import addresses, mailbox_budget
from . import decisions as dec
from .mailbox_budget import MailboxRooms
from .partition import MessageSummary, PartitionResult, PlanJob
from .pending import KEEP_STATES
from .shared_mailbox import MailboxFacts

RUNS, DELIVERIES, DEC = Run.__table__, Delivery.__table__, dec.DEC


def write_range(conn, run_id: str, out: PartitionResult, now: datetime) -> None:
    """One range's decisions into the ledger, customer by customer (each one's messages in campaign order).

    Each insert then lands at the end of the (run, customer, message) index
    instead of sweeping through it once per message.
    """
    rows = dec.Decisions.concat(out.parts)
    position = np.concatenate(out.positions) if out.positions else np.zeros(0, dtype=np.int64)
    message = np.repeat(np.arange(len(out.parts)), [len(p) for p in out.parts])
    dec.write(conn, run_id, rows, now, order=np.lexsort((message, position)))


def one_per_address(engine, conn, camp: Campaign, run_id: str, parts: list[list[dec.Decisions]],
                    send_addresses: list[list[np.ndarray | None]], summaries: list[MessageSummary], kept: dict[str, set[str]],
                    mailboxes: MailboxFacts | None = None, rooms: MailboxRooms | None = None) -> None:
    """Customers sharing an address get each message once (:mod:`.addresses`), and together at most the
    mailbox's budget (:mod:`.mailbox_budget`, given the ``mailboxes`` and the ranges' ``rooms``): in memory,
    and in the ledger when written."""
    message_ids = [m.id for m in camp.messages]
    with ExitStack() as stack:
        reader = conn if conn is not None else stack.enter_context(engine.connect())
        shared = addresses.find_shared(reader, message_ids, parts, kept, send_addresses)
    for found in shared:
        j = message_ids.index(found.message_id)
        addresses.apply(parts[j], found)
        if conn is not None:
            addresses.write(conn, run_id, parts[j], found)
        n = len(found)
        summaries[j].send -= n
        summaries[j].suppress += n
        summaries[j].reasons[SHARED_ADDRESS] = summaries[j].reasons.get(SHARED_ADDRESS, 0) + n
    if mailboxes is None or rooms is None or not len(rooms.ids):
        return
    changes = mailbox_budget.limit(camp.messages, camp.policy.max_messages_per_run, parts, mailboxes.mailbox_of, rooms, kept)
    if conn is not None:
        mailbox_budget.write(conn, run_id, camp.messages, parts, changes)
    mailbox_budget.apply(parts, summaries, changes)


#: SQLite page cache (KiB) of the connection writing a run's decisions: the two ledger indexes'
#: pages stay cached instead of being evicted and re-read for every few hundred rows.
WRITE_CACHE_KIB = 131_072


@contextmanager
def _write_cache(conn) -> Iterator[None]:
    """A large SQLite page cache on ``conn`` from before its transaction to after the commit; the previous size back then."""
    if conn.dialect.name != "sqlite":
        yield
        return
    # On the driver's connection: through SQLAlchemy the PRAGMA would begin the transaction early.
    raw = conn.connection.driver_connection
    before = raw.execute("PRAGMA cache_size").fetchone()[0]
    raw.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA cache_size = {int(before)}")


@contextmanager
def ledger(engine, job: PlanJob, exists_: bool, now: datetime):
    """A transaction holding the run's row (new, or the old one with its replaceable decisions gone); yields its connection."""
    camp, win, run_id, seed, as_of = job.campaign, job.window, job.run_id, job.seed, job.as_of
    with engine.connect() as conn, _write_cache(conn), conn.begin():
        if exists_:
            keep = exists().where(DELIVERIES.c.decision_id == DEC.c.id, DELIVERIES.c.status.in_(KEEP_STATES))
            replaced = select(DEC.c.id).where(DEC.c.run_id == run_id, ~keep)
            conn.execute(delete(DELIVERIES).where(DELIVERIES.c.run_id == run_id, DELIVERIES.c.decision_id.in_(replaced)))
            conn.execute(delete(DEC).where(DEC.c.run_id == run_id, ~keep))
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(
                as_of=as_of, seed=seed, status="planned", config_hash=camp.digest[:64], updated_at=now))
        else:
            try:
                conn.execute(RUNS.insert().values(
                    id=run_id, campaign=camp.name, window=win.key, as_of=as_of, seed=seed, status="planned",
                    config_hash=camp.digest[:64], created_at=now, updated_at=now))
            except IntegrityError:
                # Another plan of the same window committed while this one computed.
                raise Conflict(f"window {win.key} of campaign '{camp.name}' was planned by another process meanwhile; "
                               "use --replan") from None
        yield conn
