"""Preference histories: rows for the same customer and topic apply in ``updated_at`` order, the latest wins.

A consent export is often a history (every change a row), and several
sources say different things at different times. Within a file the row with
the latest ``updated_at`` wins whatever its position; against the store, a
row is written only when it is later than the stored record. Two rows of
the same time with different values are a true duplicate: nobody can say
which came last, so it is an error naming both (or the stored record's
source).

A consent flag without a date (Shopify's "Accepts Email Marketing") is
stored with :data:`UNDATED`: any dated record, earlier or later, wins over
it, and of two undated flags the one imported last wins (a newer export of
the same shop). An undated flag that changed since the shop's last export
is a change as of the import (yes to no: the customer unsubscribed in the
shop in between). But an undated "yes" never undoes an opt-out, whoever
recorded it (an import, a provider's unsubscribe or complaint, relmail's
unsubscribe link or preference page): an export without dates may be an
old one imported again, and only an opt-in dated after the opt-out may end
it. :meth:`PreferenceHistory.write` is where that rule is kept, for every
import that writes consent. An undated global "no" where nothing is on
record writes nothing: it means "did not opt in", which is what no record
says, not "unsubscribed from everything" (that would also stop the service
mail a customer gets without opting in). An undated "no" for one topic (a
shop's unticked "offers from our partners" box) is written: without it the
global opt-in would count for that topic, against the customer's answer.

The consent an import records for one customer id is the mailbox's
(:class:`MailboxConsent`): every other customer id with the address gets it
too, through its own history, so the rules above decide there as well.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..store import consent_log
from ..store.consent_log import UNDATED
from ..store.mailboxes import mates
from ..store.models import Preference
from ..windows import current_time
from .loader import LOOKUP_BATCH, Loader, batched
from .schemas import schema_for

P = Preference.__table__

Key = tuple[str, str]


class PreferenceHistory:
    """Writes preference rows so that, per (customer, topic), the latest ``updated_at`` wins.

    :meth:`check` is called for each row as the file streams (it remembers
    one entry per key, like duplicate detection does); :meth:`write` takes
    the rows of a chunk and returns the rejected ones with their problem.
    ``compare`` names the fields whose values must agree for two rows of the
    same time; ``update`` how an existing row changes (the consent of a
    customers file leaves the frequency wish alone). ``now`` is the time an
    undated flag that changed since the last export takes effect. Every row
    written is also added to the consent history, with ``origin`` (the file)
    as its detail.
    """

    def __init__(self, conn: Connection, compare: tuple[str, ...] = ("opted_in", "max_per_week"),
                 update: dict[str, str] | None = None, origin: str | None = None, now: datetime | None = None):
        self.conn = conn
        #: The imported file, for the consent history.
        self.origin = origin
        self.compare = compare
        self.now = now or current_time()
        self.loader = Loader(conn, schema_for("preferences"), update)
        #: key -> (updated_at, line, values) of the latest row of the file so far.
        self.latest: dict[Key, tuple[datetime, int, tuple]] = {}
        #: Rows the file or the store has a later record for, rows repeating one, rows written,
        #: undated "no"s with nothing on record (no record is written for them).
        self.superseded = self.repeated = self.written = self.not_opted_in = 0
        #: Undated flags changed since the last export: to no, to yes (both as of ``now``), and to yes
        #: but kept opted out.
        self.withdrawn = self.given = self.kept_opted_out = 0
        #: Undated yeses not written over an opt-out on record, changed since the last export or not.
        self.undated_kept_out = 0

    def check(self, line: int, row: dict[str, Any]) -> tuple[str, str] | None | bool:
        """None: keep the row; False: a later or identical row of the file makes it moot; or a problem."""
        key = (row["customer_id"], row["topic"])
        when, values = row["updated_at"], tuple(row.get(c) for c in self.compare)
        seen = self.latest.get(key)
        if seen is not None:
            before, other, old = seen
            if when < before:
                self.superseded += 1
                return False
            if when == before:
                if values == old:
                    self.repeated += 1
                    return False
                shown = "no date" if when == UNDATED else when.isoformat()
                return ("updated_at", f"same time ({shown}) as line {other} for customer {key[0]!r}, topic {key[1]!r}, "
                                      "with a different value: which one is the latest?")
        self.latest[key] = (when, line, values)
        return None

    def write(self, rows: list[tuple[int, dict[str, Any]]], changed: Collection[Key] = ()) -> list[tuple[int, tuple[str, str]]]:
        """Write the rows later than the store; returns (line, problem) for same-time conflicts with it.

        ``changed``: the keys whose undated row is a flag that changed since the last export.
        """
        newest: dict[Key, tuple[int, dict[str, Any]]] = {}
        for line, row in rows:  # a chunk may hold two rows of one key: the later one goes
            key = (row["customer_id"], row["topic"])
            if key not in newest or row["updated_at"] > newest[key][1]["updated_at"]:
                newest[key] = (line, row)
        stored = self._stored(newest)
        out, problems = [], []
        for key, (line, row) in newest.items():
            have = stored.get(key)
            opted_out = have is not None and not have[3]
            # A topic's unticked box on record (an undated "no" of this source): when the box is ticked since, the
            # customer said yes to what they had only not said yes to yet. A global undated "no" stays an opt-out.
            unticked = opted_out and key[1] != "*" and have[0] == UNDATED and have[2] == row.get("source")
            if row["updated_at"] == UNDATED and opted_out and row["opted_in"] and not (unticked and key in changed):
                # The one place of the rule: an opt-out on record ends only with an opt-in dated after it,
                # so an undated yes is neither written over it nor, when the shop's flag turned yes, dated now.
                self.superseded += 1
                self.kept_opted_out += key in changed
                self.undated_kept_out += 1
                continue
            if key in changed and (not opted_out or unticked):
                # Changed in the shop since its last export: as of now, so it wins over older dated records.
                # (A no adds nothing to an opt-out already there, and keeps that one's date and source.)
                row = {**row, "updated_at": self.now}
                self.given += row["opted_in"]
                self.withdrawn += not row["opted_in"]
            if have is None:
                if row["updated_at"] == UNDATED and not row["opted_in"] and row["topic"] == "*":
                    self.not_opted_in += 1
                else:
                    out.append(row)
                continue
            when, values, source, _ = have
            mine = tuple(row.get(c) for c in self.compare)
            if row["updated_at"] == UNDATED:
                # A newer export of an undated flag (an opt-in it would undo was kept above).
                if when == UNDATED and values != mine:
                    out.append(row)
                else:
                    self.superseded += 1
            elif when < row["updated_at"]:
                out.append(row)
            elif when == row["updated_at"] and values != mine:
                problems.append((line, ("updated_at", f"same time ({when.isoformat()}) as the stored preference for topic "
                                                      f"{key[1]!r} (source {source}), with a different value")))
            else:
                self.superseded += 1
        self.loader.write(out)
        consent_log.record(self.conn, [{"customer_id": row["customer_id"], "topic": row["topic"], "opted_in": row["opted_in"],
                                        "changed_at": row["updated_at"], "source": row.get("source") or "import",
                                        "detail": self.origin} for row in out])
        self.written += len(out)
        return problems

    def _stored(self, keys) -> dict[Key, tuple[datetime, tuple, str, bool]]:
        """(customer, topic) -> the stored record's (updated_at, compared values, source, opted_in)."""
        wanted = set(keys)
        customers = sorted({k[0] for k in wanted})
        found: dict[Key, tuple[datetime, tuple, str, bool]] = {}
        columns = [P.c[c] for c in self.compare]
        for batch in batched(customers, LOOKUP_BATCH):
            query = select(P.c.customer_id, P.c.topic, P.c.updated_at, P.c.source, P.c.opted_in, *columns).where(
                P.c.customer_id.in_(batch))
            for cid, topic, when, source, opted_in, *values in self.conn.execute(query):
                if (cid, topic) in wanted:
                    found[(cid, topic)] = (when, tuple(values), source, opted_in)
        return found

    def close(self) -> None:
        self.loader.close()


class MailboxConsent:
    """The consent an import records for one customer id, given to every other customer id with its address.

    A guest checkout and a registered account with one address (trimmed, in
    any case) are one person: an opt-out of either reaches both, and so does
    an opt-in, whichever id the file names (a shop's newsletter flag per
    customer, a preferences file, a file that names people by address). Each
    other id's own history decides, as for a row of its own
    (:class:`PreferenceHistory`): its later record stays (the latest change of
    the mailbox wins: an old guest checkout's "no" never undoes the account's
    later opt-in), and a yes without a date never undoes its opt-out. A
    customer id the file has a row of its own for (``in_file``) keeps what that
    row says.

    :meth:`keep` runs per chunk on the rows the import kept (two look-ups per
    chunk through the mailbox index; only rows of shared addresses stay in
    memory, a few in most files), :meth:`write` once after the last chunk,
    when every record is as the file leaves it.
    """

    def __init__(self, conn: Connection, origin: str | None, now: datetime, compare: tuple[str, ...] = ("opted_in",),
                 update: dict[str, str] | None = None):
        self.conn = conn
        self.origin = origin
        self.now = now
        self.compare, self.update = compare, update
        #: Customer id -> (its first record, its consent rows, the topics of those changed since the last export).
        self.kept: dict[str, tuple[Any, list[dict[str, Any]], set[str]]] = {}
        #: Addresses whose consent reached another customer id; records written there; undated yeses kept out there.
        self.addresses = self.written = self.undated_kept_out = 0

    def keep(self, rows: list[tuple[Any, dict[str, Any]]], changed: Collection[Key] = ()) -> None:
        """Remember the rows (``(record, preference row)``) whose customer another customer id shares the address with."""
        shared = mates(self.conn, {row["customer_id"] for _, row in rows})
        for record, row in rows:
            owner = row["customer_id"]
            if owner in shared:
                entry = self.kept.setdefault(owner, (record, [], set()))
                entry[1].append(row)
                if (owner, row["topic"]) in changed:
                    entry[2].add(row["topic"])

    def write(self, in_file: Callable[[str, str], bool], reject: Callable[[Any, list], None]) -> None:
        """Give the kept rows to the other ids of their mailboxes; ``in_file(customer, topic)``: the file's own row
        decides for it. A same-time conflict with another id's record rejects the row (``reject(record, problems)``),
        as one with the row's own customer would: the import stays all or nothing."""
        if not self.kept:
            return
        history = PreferenceHistory(self.conn, compare=self.compare, update=self.update,
                                    origin=f"{self.origin}: the address's consent, for every customer id with it", now=self.now)
        rows, changed, records = [], set(), {}
        try:
            for owner, others in mates(self.conn, self.kept).items():
                record, given, topics = self.kept[owner]
                reached = False
                for cid in others:
                    mine = [row for row in given if not in_file(cid, row["topic"])]
                    rows += [(record.line, {**row, "customer_id": cid}) for row in mine]
                    changed.update((cid, row["topic"]) for row in mine if row["topic"] in topics)
                    reached = reached or bool(mine)
                self.addresses += reached
                records[record.line] = (record, others)
            for line, (field, message) in history.write(rows, changed):
                record, others = records[line]
                reject(record, [(field, f"{message}: customer {', '.join(map(repr, others))}, which has this address "
                                        "too (the file's consent is the address's, for every customer id with it)")])
            self.written = history.written
            self.undated_kept_out = history.undated_kept_out
        finally:
            history.close()
