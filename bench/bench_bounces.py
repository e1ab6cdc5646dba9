"""Benchmark: reading a bounce mailbox into a store with a large ledger (relmail feedback bounces).

Builds a store with ``--deliveries`` accepted deliveries (each with its
Message-ID and ``email_sent`` event, one customer each), then an mbox of
``--bounces`` messages: RFC 3464 hard bounces returning the headers of a
random delivery (80%), the same without the headers (found by address, 10%),
qmail bounces (5%) and out-of-office replies (5%). Times the import, the
re-import of the same mailbox (every event a duplicate), the reading and
the matching apart, the matching's look-up by address, and, as the
measurement behind migration 0010, its look-up by Message-ID with and
without the index on ``deliveries.rfc_message_id``.

    python bench/bench_bounces.py --deliveries 200000 --bounces 5000 --backend sqlite
    python bench/bench_bounces.py --backend postgresql --json
"""

from __future__ import annotations

import argparse
import json
import mailbox
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import fresh_database  # noqa: E402 - the sibling benchmark's helper

SENT_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
DOMAIN = "fietsenwinkel.example"

DSN = """Return-Path: <>
Date: Mon, 23 Nov 2026 10:{minute:02d}:00 +0000
From: MAILER-DAEMON@mail.{domain} (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
Message-Id: <bounce.{n}@mail.{domain}>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B{n}"

--B{n}
Content-Type: text/plain; charset=us-ascii

<{rcpt}>: host mx.example.com said: 550 5.1.1 User unknown

--B{n}
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.{domain}

Final-Recipient: rfc822; {rcpt}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{rcpt}>: User unknown
{returned}
--B{n}--
"""
RETURNED = """
--B{n}
Content-Type: text/rfc822-headers

From: Shop <news@{domain}>
To: {rcpt}
Subject: Nieuws
Message-ID: {mid}
"""
QMAIL = """Return-Path: <>
Date: 23 Nov 2026 10:{minute:02d}:00 -0000
From: MAILER-DAEMON@mx.example.net
Subject: failure notice
Message-ID: <qmail.{n}@mx.example.net>

Hi. This is the qmail-send program at mx.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<{rcpt}>:
Remote host said: 550 5.1.1 User unknown

--- Below this line is a copy of the message.

To: {rcpt}
Message-ID: {mid}
"""
AWAY = """From: {rcpt}
Date: Mon, 23 Nov 2026 10:{minute:02d}:00 +0000
Subject: Automatic reply: Nieuws
Message-ID: <away.{n}@example.org>
Auto-Submitted: auto-replied

Ik ben afwezig.
"""


def fill(engine, deliveries: int) -> None:
    from relmail.render.mime import message_id
    from relmail.store import aggregates
    from relmail.store.models import Customer, Delivery, Event

    for start in range(0, deliveries, 10_000):
        ids = range(start, min(start + 10_000, deliveries))
        with engine.begin() as conn:
            conn.execute(Customer.__table__.insert(), [
                {"id": f"C{i:08d}", "email": f"c{i}@example.com", "created_at": SENT_AT - timedelta(days=400), "attributes": {}}
                for i in ids])
            conn.execute(Delivery.__table__.insert(), [
                {"decision_id": i, "run_id": "weekly:2026-W48", "customer_id": f"C{i:08d}", "message_id": "news",
                 "status": "accepted", "adapter": "smtp", "updated_at": SENT_AT,
                 "rfc_message_id": message_id("weekly:2026-W48", f"C{i:08d}", "news", DOMAIN)} for i in ids])
            conn.execute(Event.__table__.insert(), [
                {"event_id": f"sent:{i}", "customer_id": f"C{i:08d}", "type": "email_sent", "occurred_at": SENT_AT,
                 "run_id": "weekly:2026-W48", "message_id": "news", "topic": "news"} for i in ids])
    with engine.begin() as conn:  # as a send keeps them: the import below then refreshes only the bounced customers
        aggregates.refresh(conn)


def write_mailbox(path: Path, deliveries: int, bounces: int, seed: int = 7) -> Path:
    from relmail.render.mime import message_id

    rng = random.Random(seed)
    box = mailbox.mbox(path)
    for n, i in enumerate(rng.sample(range(deliveries), bounces)):
        rcpt, mid = f"c{i}@example.com", message_id("weekly:2026-W48", f"C{i:08d}", "news", DOMAIN)
        values = {"n": n, "rcpt": rcpt, "mid": mid, "domain": DOMAIN, "minute": n % 60}
        roll = rng.random()
        if roll < 0.8:
            text = DSN.format(**values, returned=RETURNED.format(**values))
        elif roll < 0.9:
            text = DSN.format(**values, returned="")
        elif roll < 0.95:
            text = QMAIL.format(**values)
        else:
            text = AWAY.format(**values)
        box.add(text.encode())
    box.flush()
    box.close()
    return path


def timed(engine, path: Path) -> tuple[float, dict]:
    from relmail.feedback import import_bounces

    start = time.perf_counter()
    result = import_bounces(engine, [path])
    return time.perf_counter() - start, result.as_dict()


def warm(engine, work) -> float:
    """Seconds of ``work(conn)`` on a read-only connection; the first run warms the caches, the second is the figure."""
    times = []
    for _ in range(2):
        with engine.connect() as conn:
            start = time.perf_counter()
            work(conn)
            times.append(time.perf_counter() - start)
    return times[-1]


def lookups(engine, box) -> dict:
    """The matching's two look-ups apart: by Message-ID (what the index on ``deliveries.rfc_message_id`` serves), by address."""
    from relmail.feedback.bounces import _deliveries, _sent_to
    from relmail.store.addresses import normalize

    ids = {r.report.original_message_id for r in box.reports if r.report.original_message_id}
    addresses = sorted({normalize(o.recipient) for r in box.reports for o in r.report.outcomes})[:500]
    return {"ids": len(ids), "by_message_id_s": round(warm(engine, lambda c: _deliveries(c, ids)), 3),
            "by_address_500_s": round(warm(engine, lambda c: _sent_to(c, set(addresses))), 3)}


def bench(backend: str, deliveries: int, bounces: int) -> dict:
    from sqlalchemy import text

    from relmail.feedback.bounces import match, read_bounces
    from relmail.store.db import make_engine, refresh_statistics

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url, cleanup = fresh_database(backend, folder, "bounces")
        engine = make_engine(url)
        try:
            fill(engine, deliveries)
            with engine.begin() as conn:
                refresh_statistics(conn, "deliveries", deliveries)
            path = write_mailbox(folder / "bounces.mbox", deliveries, bounces)
            start = time.perf_counter()
            box = read_bounces(path)
            read_s = time.perf_counter() - start
            match_s = warm(engine, lambda conn: match(conn, box))
            indexed = lookups(engine, box)
            first, result = timed(engine, path)
            again, repeat = timed(engine, path)
            with engine.begin() as conn:
                conn.execute(text("DROP INDEX ix_deliveries_rfc_message_id"))
            unindexed = lookups(engine, box)
        finally:
            engine.dispose()
            cleanup()
    return {
        "backend": backend, "deliveries": deliveries, "bounces": bounces,
        "read_s": round(read_s, 2), "match_s": round(match_s, 3), "message_ids": indexed["ids"],
        "by_message_id_s": indexed["by_message_id_s"], "by_message_id_without_index_s": unindexed["by_message_id_s"],
        "by_address_500_s": indexed["by_address_500_s"],
        "import_s": round(first, 2), "messages_per_s": round(bounces / first), "reimport_s": round(again, 2),
        "applied": result["applied"], "matched_by": result["matched_by"], "ignored": result["ignored"],
        "duplicates_on_reimport": repeat["duplicates"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=200_000)
    parser.add_argument("--bounces", type=int, default=5_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = [bench(b, args.deliveries, args.bounces) for b in backends]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['backend']}: {r['bounces']:,} bounces against {r['deliveries']:,} deliveries: import {r['import_s']} s "
              f"({r['messages_per_s']:,} messages/s; reading {r['read_s']} s, matching {r['match_s']} s), "
              f"again {r['reimport_s']} s; {r['message_ids']:,} Message-IDs looked up in {r['by_message_id_s']} s, "
              f"{r['by_message_id_without_index_s']} s without the index; 500 addresses in {r['by_address_500_s']} s; "
              f"applied {r['applied']}, matched by {r['matched_by']}, ignored {r['ignored']}")


if __name__ == "__main__":
    main()
