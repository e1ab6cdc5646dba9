"""What an import does with a chunk of valid rows, per kind.

* :class:`TableWriter` (products, events): upsert on the key; a repeated
  key in one file is an error naming both lines.
* :class:`CustomersWriter`: the same, plus what a shop's customers file
  carries besides the customer: the global consent flag (through
  :class:`~relmail.importers.history.PreferenceHistory`), addresses for the
  suppression list, the erasure link, and with ``match: email`` the
  customer an address already belongs to, and the consent of an address
  for every customer id with it.
* :class:`PreferencesWriter`: preference histories (latest wins).
* :class:`relmail.importers.orders.OrdersWriter`: line items as purchase events.

A writer's :meth:`check` runs as each row streams in (it may keep one entry
per key); :meth:`write` runs per chunk and reports rejected rows through the
run's ``reject``; :meth:`finish` runs once after the last chunk.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from ..store.addresses import address_hash, salt
from ..store.models import EMAIL_LOWER, Customer, Suppression
from ..windows import current_time
from .addresses import customers_by_address
from .complete import Listing, relist, still_removed
from .history import UNDATED, MailboxConsent, PreferenceHistory
from .loader import LOOKUP_BATCH, Loader, SuppressionLink, batched, one_of, upsert_statement
from .mapping import Merge
from .schemas import Fallback, Schema

#: How a re-import updates a stored row, per column (see :data:`relmail.importers.loader.UPDATES`):
#: a blank name does not erase what another source said, the sign-up date is the earliest any source
#: gave (a shop's first order before the newsletter opt-in), attributes merge.
UPDATE_FORMS = {
    "customers": {"first_name": "keep", "last_name": "keep", "created_at": "earliest", "attributes": "merge"},
    "products": {"attributes": "merge"},
}

C, S = Customer.__table__, Suppression.__table__

#: Customer columns a blank cell fills from the project's settings: for a new customer only.
FALLBACK_COLUMNS = ("locale", "timezone")


def update_columns(schema: Schema, provided: set[str] | None) -> dict[str, str]:
    """Column -> update form for the columns the source provides (None: all of them)."""
    forms = UPDATE_FORMS.get(schema.kind, {})
    out = {}
    for name in schema.written:
        if name in schema.key or (provided is not None and name not in provided and name not in dict(schema.computed)):
            continue
        out[name] = forms.get(name, "set")
    return out


class TableWriter:
    """Upserts rows on the schema's key."""

    def __init__(self, run, conn: Connection, schema: Schema, provided: set[str] | None):
        self.run = run
        self.conn = conn
        self.schema = schema
        self.loader = Loader(conn, schema, update_columns(schema, provided))
        #: key -> first line, for "duplicate id, also on line N" (the only per-file memory).
        self.seen: dict[Any, int] = {}
        self.details: dict[str, int] = {}

    def check(self, line: int, row: dict[str, Any]) -> list[tuple[str | None, str]]:
        problems = _sale_problems(row)
        key = self.key(row)
        if key is None:
            return problems
        first = self.seen.setdefault(key, line)
        if first == line:
            return problems
        names = "+".join(self.schema.key)
        shown = key if isinstance(key, str) else "/".join(key)
        return [*problems, (names, f"duplicate {names} {shown!r}: also on line {first}")]

    def key(self, row: dict[str, Any]) -> Any:
        key = self.schema.key
        if len(key) == 1:
            return row.get(key[0])
        values = tuple(row.get(k) for k in key)
        return None if None in values else values

    def write(self, pending: list) -> None:
        if not self.run.may_write():
            return
        rows = [row for _, row in pending]
        self.loader.write(rows)
        self.run.imported += len(rows)

    def finish(self) -> None:
        """After the last chunk: every row went out with its chunk."""

    def close(self) -> None:
        self.loader.close()


def _sale_problems(row: dict[str, Any]) -> list[tuple[str | None, str]]:
    """A product's sale that ends before it starts: a typo in one of the dates, which no guess mends."""
    starts, ends = row.get("sale_starts_at"), row.get("sale_ends_at")
    if starts is None or ends is None or ends > starts:
        return []
    return [("sale_ends_at", f"the sale ends ({ends.isoformat()}) before it starts ({starts.isoformat()})")]


class CustomersWriter(TableWriter):
    """Customers, and what a customers export says besides: consent, suppressed addresses, the erasure link."""

    def __init__(self, run, conn: Connection, schema: Schema, provided: set[str] | None, source: str,
                 match_email: bool = False, flag_keys: dict[str, str] | None = None, dated_consent: bool = False,
                 merge: Merge | None = None, listing: Listing | None = None):
        super().__init__(run, conn, schema, provided)
        #: ``--complete``: the ids the file names, so that the customers it does not name are removed at the end.
        self.listing = listing
        self.now = current_time()
        self.link = SuppressionLink(conn, origin=run.name)
        self.source = source
        #: Topic (``*``: the global consent) -> the attribute that remembers what the export's undated
        #: consent flag for it said last time (``accepts_email_marketing``); empty: the import has no such flag.
        self.flag_keys = flag_keys or {}
        #: The export dates its consent (Klaviyo's "Email Marketing Consent Timestamp"): its "no" is an opt-out
        #: (not "did not opt in", which such a source says with no value), so one whose date is blank is one as of now.
        self.dated_consent = dated_consent
        self.match_email = match_email
        #: ``duplicates: merge``: rows of one address are one customer, merged (see :meth:`_merge`).
        self.merge = merge
        #: With ``merge``: (customer id, consent field) -> what the rows written so far said, for "an opt-out in either wins".
        self.said: dict[tuple[str, str], bool] = {}
        #: Final customer id -> line, after matching addresses to stored customers.
        self.owners: dict[str, int] = {}
        self.consent: PreferenceHistory | None = None
        self.salt: str | None = None
        self.details = {"consent_records": 0, "without_consent": 0, "withdrawn_since_last_export": 0, "given_since_last_export": 0,
                        "kept_opted_out": 0, "undated_opt_outs": 0, "undated_opt_ins": 0, "undated_opt_ins_kept_out": 0,
                        "suppressed_addresses": 0, "matched_by_email": 0, "shared_addresses": 0,
                        "consent_shared_addresses": 0, "consent_shared_records": 0, "consent_shared_kept_out": 0,
                        "relisted": 0, "address_changed": 0, "still_removed": 0}
        if merge is not None:
            self.details["merged_rows"] = 0
        #: The file's addresses, lower-cased: checked for other customers with the same mailbox after the last chunk.
        self.addresses: set[str] = set()
        #: ``match: email``: an address lower-cased -> (its first line, as written there, the id the file gives it).
        self.mailboxes: dict[str, tuple[int, str, str]] = {}
        #: The consent of the rows whose address other customers have too: theirs as well (see :class:`MailboxConsent`).
        self.mailbox = MailboxConsent(conn, run.name, self.now)
        #: ``match: email``: the stored customers rows found by their address, not by their id.
        self.found_by_address: set[str] = set()

    def check(self, line: int, row: dict[str, Any]) -> list[tuple[str | None, str]]:
        """Besides a duplicate id, with ``match: email``: a second row of one address (in any case), wherever the
        file's chunks begin. Checked first: an id made from the address (Klaviyo's ``klaviyo-<hash>``) repeats with
        it, and "duplicate id 'klaviyo-cab2dda0100d2c2d'" would name neither the column nor the address's line.
        With ``duplicates: merge`` a later row of an address is the first one's customer, merged when written."""
        email = row.get("email")
        if self.match_email and email:
            first, spelled, own = self.mailboxes.setdefault(email.lower(), (line, email, row["id"]))
            if first != line and self.merge is not None:
                row["id"], row["_merged"] = own, True
                return []
            if first != line:
                case = f" (as {spelled!r})" if spelled != email else ""
                return [("email", f"the same address is also on line {first}{case}: one address is one "
                                  "customer (match: email), and two rows for one customer are ambiguous")]
        return super().check(line, row)

    def write(self, pending: list) -> None:
        if self.match_email:
            pending = self._match(pending)
        again = 0
        if self.merge is not None:
            pending, again = self._merge(pending)
        if not self.run.may_write():
            return
        for record, row in pending:  # the file's own customers keep what their rows say (MailboxConsent)
            self.owners.setdefault(row["id"], record.line)
        rows = [row for _, row in pending]
        self._keep_stored(rows)
        self._undated_changes(rows)
        self._count_address_changes(rows)
        super().write(pending)
        self.run.imported -= again  # customers an earlier chunk imported
        self.addresses.update(row["email"].lower() for row in rows if row.get("email"))
        ids = [row["id"] for row in rows]
        # A row that found its customer by address (a mailing list's member) does not undo the shop's removal.
        self.details["relisted"] += relist(self.conn, [i for i in ids if i not in self.found_by_address])
        if self.found_by_address:
            self.details["still_removed"] += still_removed(self.conn, [i for i in ids if i in self.found_by_address])
            self.found_by_address.clear()
        if self.listing is not None:
            self.listing.add(ids)
        self.link.apply(rows)
        self._consent(pending)
        self._suppress(rows)

    def _keep_stored(self, rows: list[dict[str, Any]]) -> None:
        """A blank locale or time zone (a :class:`~relmail.importers.schemas.Fallback`): a stored customer's own, else the project's.

        A mailing list whose language field is blank for some people, or a
        JSON record without the key, must not put a customer another source
        gave a language back into the project's: every later e-mail would be
        in the wrong one. One lookup per batch of such rows' ids.
        """
        updated = [c for c in FALLBACK_COLUMNS if c in self.loader.update]
        blank = [row for row in rows if any(row[c].__class__ is Fallback for c in updated)]
        stored: dict[str, Any] = {}
        for condition in one_of(self.conn, C.c.id, {row["id"] for row in blank}):
            stored.update((r.id, r._mapping) for r in self.conn.execute(select(C.c.id, *(C.c[c] for c in updated)).where(condition)))
        for row in blank:
            own = stored.get(row["id"])
            if own is not None:
                row.update({c: own[c] for c in updated if row[c].__class__ is Fallback})
        for row in rows:
            for c in FALLBACK_COLUMNS:
                if row[c].__class__ is Fallback:
                    row[c] = str(row[c])

    def _count_address_changes(self, rows: list[dict[str, Any]]) -> None:
        """Count the stored customers this chunk gives another address (not merely another case): said after the import.

        The file's address replaces the stored one, as a shop's export of its customers should. But an older
        export (a newsletter module's file kept from last week) imported after a newer one silently puts an old
        address back, and the next e-mail goes there: the count makes that visible. One look-up per chunk.
        """
        given = {row["id"]: row["email"].lower() for row in rows if row.get("email")}
        for condition in one_of(self.conn, C.c.id, set(given)):
            for cid, email in self.conn.execute(select(C.c.id, C.c.email).where(condition)):
                self.details["address_changed"] += bool(email) and email.lower() != given[cid]

    def finish(self) -> None:
        """Count the file's addresses that more than one customer has (another id, or the same mailbox in another case).

        Such customers keep their own histories and consent while a plan mails the address once per
        message (``SHARED_ADDRESS``) within one budget per run (``SHARED_BUDGET``): worth merging at the source, so worth
        saying after the import. One pass over the customers' ``lower(email)`` index, not a look-up per address.
        """
        if not self.addresses or not self.run.may_write():
            return
        self.mailbox.write(lambda cid, _topic: cid in self.owners, self.run.reject)
        self.details.update(consent_shared_addresses=self.mailbox.addresses, consent_shared_records=self.mailbox.written,
                            consent_shared_kept_out=self.mailbox.undated_kept_out)
        shared = select(EMAIL_LOWER).group_by(EMAIL_LOWER).having(func.count() > 1)
        self.details["shared_addresses"] = sum(1 for (email,) in self.conn.execute(shared) if email in self.addresses)

    def _match(self, pending: list) -> list:
        """Which customer each row is (``match: email``): one address, compared case-insensitively, is one customer.

        * A row whose id is stored with the same address (in any case) is that customer.
        * Else a row whose address a stored customer has is that customer, whatever id the file
          gives: the one with the address as written, else the one in another case (``Kim@`` for
          ``kim@``, as mailbox providers deliver both to one mailbox); of several, the lowest id.
        * A row that names one stored customer by its id and another by its address is ambiguous:
          an error, never a guess (either would mail the person on the other's consent).
        * Two rows of the file with one address (in any case) would be one customer twice: :meth:`check`
          refused the later one before it reached a chunk.
        """
        stored: dict[str, str] = {}
        for condition in one_of(self.conn, C.c.id, {row["id"] for _, row in pending}):
            stored.update(self.conn.execute(select(C.c.id, C.c.email).where(condition)).all())

        def known(row: dict[str, Any]) -> bool:
            return row["id"] in stored and stored[row["id"]].lower() == row["email"].lower()

        found = customers_by_address(self.conn, {row["email"] for _, row in pending if not known(row)})
        kept = []
        for record, row in pending:
            email, own = row["email"], row["id"]
            owner = own if known(row) else found.get(email)
            if owner is not None and owner != own:
                if own in stored:
                    self.run.reject(record, [("email", self._ambiguous(email, owner, own))])
                    continue
                row["id"] = owner
                self.details["matched_by_email"] += 1
                self.found_by_address.add(owner)
            first = self.owners.setdefault(row["id"], record.line)
            if first != record.line and not row.get("_merged"):
                self.run.reject(record, [("email", f"customer {row['id']!r} (this address) is also on line {first}")])
            else:
                kept.append((record, row))
        return kept

    def _merge(self, pending: list) -> tuple[list, int]:
        """``duplicates: merge``: each later row of an address folded into its customer, in bulk; how many into stored ones.

        A row whose address came earlier in this chunk is folded into that row and leaves
        the chunk; one whose address came in an earlier chunk (already written) is folded
        into the stored customer, one look-up for all of them. Where both give a value the
        later row's wins, unless only the earlier one has ``prefer`` (WooCommerce's
        registered row over the guest row of the same address); the sign-up date is the
        earliest (the loader's ``earliest``), a ``latest`` field the later value, and an
        opt-out in either row wins over an opt-in.
        """
        kept: list = []
        at: dict[str, int] = {}
        later: list[int] = []
        for record, row in pending:
            merged = row.pop("_merged", False)
            if merged and row["id"] in at:
                earlier = kept[at[row["id"]]]
                kept[at[row["id"]]] = (earlier[0], self._fold(earlier[1], row))
                self.details["merged_rows"] += 1
                continue
            at.setdefault(row["id"], len(kept))
            if merged:
                later.append(len(kept))
            kept.append((record, row))
        if later:
            columns = [C.c[name] for name in self.schema.written]
            stored: dict[str, dict[str, Any]] = {}
            for condition in one_of(self.conn, C.c.id, {kept[i][1]["id"] for i in later}):
                stored.update((r.id, dict(r._mapping)) for r in self.conn.execute(select(*columns).where(condition)))
            later = [i for i in later if kept[i][1]["id"] in stored]
            for i in later:
                record, row = kept[i]
                kept[i] = (record, self._fold(stored[row["id"]], row))
            self.details["merged_rows"] += len(later)
        for _, row in kept:
            for name, value in row.items():
                if name.startswith("_consent") and isinstance(value, bool):
                    key = (row["id"], name)
                    self.said[key] = self.said.get(key, True) and value
        return kept, len(later)

    def _fold(self, earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
        """One customer of two rows of one address (see :meth:`_merge`)."""
        merge = self.merge
        assert merge is not None
        if merge.prefer is not None and _field(earlier, merge.prefer) is not None and _field(later, merge.prefer) is None:
            earlier, later = later, earlier
        out = dict(earlier)
        out.update((k, v) for k, v in later.items() if v is not None and v.__class__ is not Fallback)
        out["attributes"] = {**(earlier.get("attributes") or {}), **(later.get("attributes") or {})} or None
        # A stored time is naive UTC on SQLite.
        dates = [d if d.tzinfo else d.replace(tzinfo=UTC) for d in (earlier.get("created_at"), later.get("created_at")) if d]
        out["created_at"] = min(dates, default=None)
        for name in merge.latest:
            values = [v for v in (_field(earlier, name), _field(later, name)) if v is not None]
            if values:
                _set(out, name, max(values, key=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))
        # An opt-out in either row wins, with its own time; the rows written in earlier chunks count too.
        for name in {k for k in (*earlier, *later) if k.startswith("_consent") and k not in ("_consent_at", "_consent_changed")}:
            said = [v for v in (earlier.get(name), later.get(name), self.said.get((out["id"], name))) if isinstance(v, bool)]
            if said and not all(said):
                out[name] = False
                if name == "_consent":
                    out["_consent_at"] = next((row.get("_consent_at") for row in (later, earlier) if row.get(name) is False), None)
                if later.get(name) is not False and earlier.get(name) is not False:
                    out.pop(name)  # the opt-out an earlier chunk wrote stands
                    if name == "_consent":
                        out.pop("_consent_at", None)
                elif self.said.get((out["id"], name)):
                    # An earlier chunk wrote the other row's opt-in, of any date: the opt-out ends it as of now.
                    out["_opt_out_now"] = (*out.get("_opt_out_now", ()), name)
        return out

    def _ambiguous(self, email: str, owner: str, own: str) -> str:
        stored = self.conn.execute(select(C.c.email).where(C.c.id == owner)).scalar_one()
        case = f" (stored as {stored!r})" if stored != email else ""
        return (f"stored customer {owner!r} has this address{case}, but the row's id {own!r} is another stored customer: "
                "which of the two the row is, is ambiguous (an address changed in one source?); correct the address "
                "in the source, or leave the row out with --skip-invalid")

    def _undated_changes(self, rows: list[dict[str, Any]]) -> None:
        """Mark each undated flag that changed since the last export (the topics in ``_consent_changed``).

        Shopify's "Accepts Email Marketing" has no date, so a dated record of another source
        (Mailchimp's opt-in) wins over it. But a customer whose flag said yes in the last
        export and says no in this one unsubscribed in the shop in between: the preference
        history writes that as of now, so it wins over every earlier opt-in, and keeps an
        opt-out on record when the flag turned yes (counted as ``kept_opted_out``). Each
        customer's last flag is kept in ``attributes`` under the column's name
        (``accepts_email_marketing``) to see the change; a topic's flag (PrestaShop's
        partner offers) the same way.
        """
        flags = [(topic, key, _flag_field(topic)) for topic, key in self.flag_keys.items()]
        undated = [row for row in rows if any(row.get(f) is not None and (topic != "*" or row.get("_consent_at") is None)
                                              for topic, _, f in flags)]
        if not undated:
            return
        before: dict[str, Any] = {}
        for batch in batched(sorted({row["id"] for row in undated}), LOOKUP_BATCH):
            for cid, attributes in self.conn.execute(select(C.c.id, C.c.attributes).where(C.c.id.in_(batch))):
                if isinstance(attributes, dict):
                    before[cid] = attributes
        for row in undated:
            last = before.get(row["id"]) or {}
            changed = set()
            for topic, key, f in flags:
                if row.get(f) is None or (topic == "*" and row.get("_consent_at") is not None):
                    continue
                said = bool(row[f])
                row["attributes"] = {**(row.get("attributes") or {}), key: said}
                if isinstance(last.get(key), bool) and last[key] != said:
                    changed.add(topic)
            row["_consent_changed"] = changed

    def _consent(self, pending: list) -> None:
        rows, changed = [], set()
        topics = ["*", *(t for t in self.flag_keys if t != "*")]
        for record, row in pending:
            for topic in topics:
                opted_in = row.get(_flag_field(topic))
                if opted_in is None:
                    continue
                when = row.get("_consent_at") if topic == "*" else None
                if _flag_field(topic) in row.get("_opt_out_now", ()):
                    when = self.now
                rows.append((record, {"customer_id": row["id"], "topic": topic, "opted_in": bool(opted_in), "max_per_week": None,
                                      "updated_at": when or UNDATED, "source": self.source}))
                undated_no = topic == "*" and self.dated_consent and not opted_in and when is None
                if topic in row.get("_consent_changed", ()) or undated_no:
                    changed.add((row["id"], topic))
                # A dated source's yes without its time (Klaviyo's SUBSCRIBED, time blank): an opt-in of unknown date,
                # like a shop's flag, never one as of the import (that would end any opt-out dated before it).
                self.details["undated_opt_ins"] += bool(topic == "*" and self.dated_consent and opted_in and when is None)
        if not rows:
            return
        if self.consent is None:
            # The frequency wish on the global record is the customer's, not the export's.
            self.consent = PreferenceHistory(self.conn, compare=("opted_in",),
                                             update={"opted_in": "set", "updated_at": "set", "source": "set"},
                                             origin=self.run.name, now=self.now)
        kept = []
        for record, row in rows:
            verdict = self.consent.check(record.line, row)
            if verdict is None:
                kept.append((record.line, row))
            elif verdict is not False:
                self.run.reject(record, [verdict])
        by_line = {record.line: record for record, _ in rows}
        refused = set()
        # The global consent and the topics' apart, to say how many records of each were written.
        for detail, part in (("consent_records", [k for k in kept if k[1]["topic"] == "*"]),
                             ("topic_consent_records", [k for k in kept if k[1]["topic"] != "*"])):
            if not part:
                continue
            before, without = self.consent.written, self.consent.not_opted_in
            for line, problem in self.consent.write(part, changed):
                self.run.reject(by_line[line], [problem])
                refused.add(line)
            self.details[detail] = self.details.get(detail, 0) + self.consent.written - before
            if detail == "consent_records":  # customers without marketing consent: the global flag says so
                self.details["without_consent"] += self.consent.not_opted_in - without
        # A dated export marks only its undated opt-outs as changed; an undated flag's changes are Shopify's.
        withdrawn = "undated_opt_outs" if self.dated_consent else "withdrawn_since_last_export"
        self.details.update({withdrawn: self.consent.withdrawn, "given_since_last_export": self.consent.given,
                             "kept_opted_out": self.consent.kept_opted_out})
        if self.dated_consent:
            self.details["undated_opt_ins_kept_out"] = self.consent.undated_kept_out
        self.mailbox.keep([(by_line[line], row) for line, row in kept if line not in refused], changed)

    def _suppress(self, rows: list[dict[str, Any]]) -> None:
        wanted = [row for row in rows if row.get("_suppress")]
        if not wanted:
            return
        if self.salt is None:
            self.salt = salt(self.conn)
        stmt = upsert_statement(self.conn, S, ("email_hash",), ("email_hash", "reason", "created_at"), update={})
        params = {address_hash(row["email"], self.salt): {"email_hash": address_hash(row["email"], self.salt),
                                                         "reason": str(row["_suppress"])[:32],
                                                         "created_at": row.get("_suppressed_at") or self.now} for row in wanted}
        self.conn.execute(stmt, list(params.values()))
        self.details["suppressed_addresses"] += len(params)

    def close(self) -> None:
        if self.consent is not None:
            self.consent.close()
        super().close()


def _field(row: dict[str, Any], name: str) -> Any:
    """A row's field, ``attributes.NAME`` too."""
    if name.startswith("attributes."):
        return (row.get("attributes") or {}).get(name[len("attributes."):])
    return row.get(name)


def _set(row: dict[str, Any], name: str, value: Any) -> None:
    if name.startswith("attributes."):
        row["attributes"] = {**(row.get("attributes") or {}), name[len("attributes."):]: value}
    else:
        row[name] = value


def _flag_field(topic: str) -> str:
    """The row field of a consent flag the import read: ``_consent`` for the global one, ``_consent.TOPIC`` for a topic's."""
    return "_consent" if topic == "*" else f"_consent.{topic}"


class PreferencesWriter:
    """Preference rows through :class:`PreferenceHistory`: in ``updated_at`` order, the latest wins; each row is
    also the consent of the other customer ids with its customer's address (:class:`MailboxConsent`)."""

    def __init__(self, run, conn: Connection):
        self.run = run
        self.history = PreferenceHistory(conn, origin=run.name)
        self.mailbox = MailboxConsent(conn, run.name, self.history.now, compare=self.history.compare)
        self.details: dict[str, int] = {}

    def check(self, line: int, row: dict[str, Any]) -> list[tuple[str | None, str]] | bool:
        verdict = self.history.check(line, row)
        if verdict is None:
            return []
        if verdict is False:
            return False
        return [verdict]

    def write(self, pending: list) -> None:
        if not self.run.may_write():
            return
        by_line = {record.line: record for record, _ in pending}
        before = self.history.written
        problems = self.history.write([(record.line, row) for record, row in pending])
        for line, problem in problems:
            self.run.reject(by_line[line], [problem])
        refused = {line for line, _ in problems}
        self.mailbox.keep([(record, row) for record, row in pending if record.line not in refused])
        self.run.imported += self.history.written - before
        self.details = {"superseded": self.history.superseded, "repeated": self.history.repeated}

    def finish(self) -> None:
        """After the last chunk: the other customer ids of each row's address get its consent, unless the file has a
        row of their own for the topic."""
        if not self.run.may_write():
            return
        self.mailbox.write(lambda cid, topic: (cid, topic) in self.history.latest, self.run.reject)
        if self.mailbox.written:
            self.details.update(consent_shared_addresses=self.mailbox.addresses, consent_shared_records=self.mailbox.written)

    def close(self) -> None:
        self.history.close()
