"""Applying what a webhook POST or an export file held: valid events in, invalid ones on record.

:func:`ingest` does three things in one transaction: it claims the POST's
replay token (Mailgun), applies the valid events
(:func:`~relmail.feedback.apply.apply_events`) and writes each invalid
event to ``feedback_rejects`` with its position, field, reason and the
provider's raw event. Either all three happen or none: a database failure
leaves nothing half-done, and the provider's retry of the same POST is
accepted again (its token was not kept).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection, Engine

from ..errors import SignatureError
from ..store.db import dialect_insert
from ..store.models import FeedbackReject, WebhookToken
from .apply import ApplyResult, apply_events
from .provider import Batch, Nonce

#: Raw events longer than this are cut when they are recorded.
MAX_RAW = 64 * 1024


class ReplayedWebhook(SignatureError):
    """A signed one-time token came back with another body (answered with 403)."""


def ingest(target: Engine | Connection, batch: Batch, source: str | None = None) -> ApplyResult:
    """Apply ``batch``'s valid events and record its invalid ones; one transaction.

    ``source`` is recorded on the preference rows an opt-out writes
    (default: ``esp-webhook`` for POSTs, ``esp-import`` for files). Raises
    :class:`ReplayedWebhook` (nothing written) for a replayed token.
    """
    if isinstance(target, Engine):
        with target.begin() as conn:
            return ingest(conn, batch, source)
    conn = target
    now = datetime.now(UTC)
    duplicate_post = batch.nonce is not None and not claim(conn, batch.nonce, now)
    from_file = batch.source != "webhook"
    result = apply_events(conn, batch.events, source or ("esp-import" if from_file else "esp-webhook"),
                          origin=batch.source if from_file else None)
    result.received = batch.records
    result.invalid = list(batch.invalid)
    result.ignored = batch.ignored.copy()
    result.redelivered = duplicate_post
    if batch.invalid and not duplicate_post:
        record_rejects(conn, batch, now)
    return result


def claim(conn: Connection, nonce: Nonce, now: datetime) -> bool:
    """Remember ``nonce``; False if the same body was accepted with it before.

    A token seen with another body is a replay: :class:`ReplayedWebhook`.
    Tokens past their window are forgotten first (a replay of those fails
    the signature's freshness check anyway).
    """
    table = WebhookToken.__table__
    conn.execute(delete(table).where(table.c.expires_at < now))
    inserted = conn.execute(
        dialect_insert(conn, table)
        .values(provider=nonce.provider, token=nonce.token, body_sha256=nonce.digest, expires_at=nonce.expires_at)
        .on_conflict_do_nothing(index_elements=[table.c.provider, table.c.token])
        .returning(table.c.token)
    ).first()
    if inserted is not None:
        return True
    seen = conn.execute(
        select(table.c.body_sha256).where(table.c.provider == nonce.provider, table.c.token == nonce.token)
    ).scalar_one()
    if seen != nonce.digest:
        raise ReplayedWebhook(f"{nonce.provider}: this signed token was already used with another body (a replayed webhook)")
    return False


def record_rejects(conn: Connection, batch: Batch, now: datetime) -> int:
    """Write ``batch``'s invalid events to ``feedback_rejects``; returns how many.

    An event already recorded from the same source at the same position
    (a file imported again) is not recorded twice.
    """
    table = FeedbackReject.__table__
    known = {tuple(row) for row in conn.execute(
        select(table.c.position, table.c.raw_event).where(
            table.c.provider == batch.provider, table.c.source == batch.source,
            table.c.position.in_(sorted({bad.index for bad in batch.invalid}))))}
    rows = [
        {
            "received_at": now,
            "provider": batch.provider,
            "source": batch.source,
            "position": bad.index,
            "line": bad.line,
            "field": (bad.field or None) and bad.field[:200],
            "reason": bad.reason,
            "raw_event": json.dumps(bad.raw, ensure_ascii=False, default=str)[:MAX_RAW],
        }
        for bad in batch.invalid
    ]
    rows = [row for row in rows if (row["position"], row["raw_event"]) not in known]
    if rows:
        conn.execute(table.insert(), rows)
    return len(rows)


def rejects(target: Engine | Connection, provider: str | None = None, limit: int = 50) -> list[dict]:
    """The most recent recorded invalid events, newest first (for ``relmail feedback rejects``)."""
    if isinstance(target, Engine):
        with target.connect() as conn:
            return rejects(conn, provider, limit)
    table = FeedbackReject.__table__
    stmt = select(table).order_by(table.c.id.desc()).limit(limit)
    if provider:
        stmt = stmt.where(table.c.provider == provider)
    out = []
    for row in target.execute(stmt).mappings():
        item = dict(row)
        item["received_at"] = item["received_at"].isoformat()
        out.append(item)
    return out
