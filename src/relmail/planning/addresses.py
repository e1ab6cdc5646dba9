"""One e-mail per address and message: customers who share an address get a message once.

A shop's export holds the same mailbox under two customer ids more often
than anyone expects: a duplicate account (a guest checkout, then a
registered one), a couple or a small business sharing one address, the same
address in another case. Each customer is decided on its own, so without
this step the mailbox would get the message once per customer.

After every range of a plan is decided, the sends of each message are
grouped by address (compared without surrounding blanks and without regard
to case); in each group the send with the highest score stays and the
others become ``suppress`` with
``SHARED_ADDRESS``, their logged features naming the customer who gets it
(``same_address_as``). On a tie of scores a registered account goes before
a guest checkout, then the most recently active id, then the lowest id
(:func:`relmail.store.mailboxes.recipient_order`). A send of the same
message already delivered in this run (a re-plan keeps those) holds its
address first. Only the few
customers whose address is shared are touched, in the ledger inside the
plan's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from sqlalchemy import JSON, Text, bindparam, cast, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from ..rules import SHARED_ADDRESS
from ..store.addresses import normalize
from ..store.mailboxes import recipient_order
from ..store.models import MAILBOX, Customer, Decision
from . import decisions as dec

#: Customer ids per ``IN (...)`` when reading addresses (well under SQLite's 32,766 parameters).
CHUNK = 5_000

C, DEC = Customer.__table__, Decision.__table__


@dataclass(frozen=True)
class Shared:
    """The sends of one message that another customer's send of it replaces: rows per decided part."""

    message_id: str
    #: Per part of the message (one per range, in order): the rows that lose, and who keeps the address for each.
    rows: list[np.ndarray]
    winners: list[np.ndarray]

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows)


def normalized(emails: np.ndarray) -> np.ndarray:
    """Addresses as they are compared (:func:`relmail.store.addresses.normalize`; "" for none)."""
    return np.array([normalize(e) if e else "" for e in emails.tolist()], dtype=object)


def addresses(conn: Connection, customer_ids: Iterable[str]) -> dict[str, str]:
    """Customer id → normalized address, read from the store (for the ids that have one)."""
    ids = sorted(set(customer_ids))
    out: dict[str, str] = {}
    for a in range(0, len(ids), CHUNK):
        for cid, email in conn.execute(select(C.c.id, C.c.email).where(C.c.id.in_(ids[a:a + CHUNK]))):
            if email:
                out[cid] = normalize(email)
    return out


def sharing(conn: Connection, customer_ids: Iterable[str]) -> set[str]:
    """The other customers whose address (trimmed, in any case) one of ``customer_ids`` has."""
    ids = sorted(set(customer_ids))
    if not ids:
        return set()
    key = MAILBOX
    found: set[str] = set()
    # A chunk of ids per statement: PostgreSQL takes at most 65,535 bound parameters.
    for a in range(0, len(ids), CHUNK):
        theirs = select(key).where(C.c.id.in_(ids[a:a + CHUNK]), C.c.email.is_not(None), C.c.email != "")
        found.update(conn.execute(select(C.c.id).where(key.in_(theirs))).scalars())
    return found - set(ids)


def find_shared(conn: Connection, message_ids: Sequence[str], parts: Sequence[Sequence[dec.Decisions]],
                kept: Mapping[str, Iterable[str]],
                send_addresses: Sequence[Sequence[np.ndarray | None]] | None = None) -> list[Shared]:
    """Per message (``parts[j]`` its decided parts), the sends that share an address with a better one.

    ``send_addresses[j][p]``: the normalized address of each send of
    ``parts[j][p]`` in row order, as the plan's workers read them with the
    features (see :func:`normalized`); where it is None the addresses are
    read from the store. ``kept``: message id → customers whose send of it
    this run already delivered or has in flight; they hold their address
    before any new send.
    """
    sends = [[np.flatnonzero(p.action == "send") for p in message_parts] for message_parts in parts]
    given = send_addresses or [[None] * len(message_parts) for message_parts in parts]
    missing: set[str] = set()
    for message_parts, rows, known in zip(parts, sends, given):
        for p, r, k in zip(message_parts, rows, known):
            if k is None:
                missing.update(p.customer_id[r].tolist())
    for message_id in message_ids:
        missing.update(kept.get(message_id, ()))
    stored = addresses(conn, missing) if missing else {}
    ranks: dict[str, tuple[int, float]] = {}

    def rank(ids: np.ndarray) -> np.ndarray:
        """The tie-break of each of ``ids`` (see the module): read once per plan for the ids of shared addresses."""
        ranks.update(recipient_order(conn, set(ids.tolist()) - ranks.keys()))
        return np.array([ranks[c] for c in ids.tolist()], dtype=float).reshape(-1, 2)

    out = []
    for message_id, message_parts, rows, known in zip(message_ids, parts, sends, given):
        customer = [p.customer_id[r] for p, r in zip(message_parts, rows)]
        mail = [k if k is not None else np.array([stored.get(c, "") for c in cs.tolist()], dtype=object)
                for k, cs in zip(known, customer)]
        found = _shared(message_id, message_parts, rows, customer, mail,
                        {stored[c]: c for c in sorted(kept.get(message_id, ()), reverse=True) if c in stored}, rank)
        if found is not None:
            out.append(found)
    return out


def _shared(message_id: str, parts: Sequence[dec.Decisions], rows: list[np.ndarray], customers: list[np.ndarray],
            mails: list[np.ndarray], held: dict[str, str], rank=None) -> Shared | None:
    """The losing sends of one message; ``held``: address → customer that holds it already; ``rank``: customer ids ->
    their (guest, recency) tie-break columns (:func:`relmail.store.mailboxes.recipient_order`), None: the lowest id."""
    if not rows:
        return None
    mail = np.concatenate(mails) if mails else np.zeros(0, dtype=object)
    has = mail != ""
    if not has.any():
        return None
    address = mail[has]
    # Only addresses that occur twice (or that a delivered send holds) can lose anything.
    _, first, count = np.unique(address.astype(str), return_index=True, return_counts=True)
    repeated = set(address[first[count > 1]].tolist()) | set(held)
    if not repeated:
        return None
    shared = np.array([a in repeated for a in address.tolist()], dtype=bool)
    idx = np.flatnonzero(has)[shared]
    part = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])[idx]
    row = np.concatenate(rows)[idx]
    customer = np.concatenate(customers)[idx].astype(str)
    score = np.concatenate([p.score[r] for p, r in zip(parts, rows)])[idx]
    mail = mail[idx].astype(str)
    # Best first within each address: highest score, then an account before a guest, the most recently active,
    # the lowest customer id.
    tie = rank(customer) if rank is not None else np.zeros((len(customer), 2))
    order = np.lexsort((customer, tie[:, 1], tie[:, 0], -np.nan_to_num(score, nan=-np.inf), mail))
    lose_rows: list[list[int]] = [[] for _ in parts]
    lose_winner: list[list[str]] = [[] for _ in parts]
    for i in order.tolist():
        winner = held.setdefault(mail[i], customer[i])
        if winner != customer[i]:
            lose_rows[part[i]].append(int(row[i]))
            lose_winner[part[i]].append(winner)
    if not any(lose_rows):
        return None
    rows_out, winners_out = [], []
    for r, w in zip(lose_rows, lose_winner):
        o = np.argsort(r, kind="stable")
        rows_out.append(np.array(r, dtype=np.int64)[o])
        winners_out.append(np.array(w, dtype=object)[o])
    return Shared(message_id, rows_out, winners_out)


def apply(parts: Sequence[dec.Decisions], shared: Shared) -> None:
    """Turn the losing sends of ``shared`` into suppressions in the decided parts (in place)."""
    for p, rows, winners in zip(parts, shared.rows, shared.winners):
        if not len(rows):
            continue
        p.action[rows] = "suppress"
        p.reasons[rows] = SHARED_ADDRESS
        for i, w in zip(rows.tolist(), winners.tolist()):
            text = p.features[i]
            if text != "{}":  # features kept in memory (a dry run, or asked for)
                p.features[i] = _with_winner(text, w)


def write(conn: Connection, run_id: str, parts: Sequence[dec.Decisions], shared: Shared) -> None:
    """The same change in the ledger, inside the plan's transaction (the decisions are written already)."""
    rows = [{"r": run_id, "c": c, "m": shared.message_id, "w": w}
            for p, idx, winners in zip(parts, shared.rows, shared.winners)
            for c, w in zip(p.customer_id[idx].tolist(), winners.tolist())]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        added = func.jsonb_build_object("same_address_as", cast(bindparam("w"), Text))
        features = cast(cast(DEC.c.features, JSONB).op("||")(added), JSON)
    else:
        features = func.json_set(DEC.c.features, "$.same_address_as", bindparam("w"))
    stmt = (update(DEC)
            .where(DEC.c.run_id == bindparam("r"), DEC.c.customer_id == bindparam("c"), DEC.c.message_id == bindparam("m"))
            .values(action="suppress", reasons=SHARED_ADDRESS, features=features))
    conn.execute(stmt, rows)


def _with_winner(text: str, winner: str) -> str:
    logged = orjson.loads(text)
    logged["same_address_as"] = winner
    return orjson.dumps(logged).decode()
