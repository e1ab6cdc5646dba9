"""A small real store and a one-message campaign for the send tests."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from pathlib import Path

from sqlalchemy import select

from relmail.demo import generate
from relmail.store.db import make_engine
from relmail.store.models import Decision, Delivery, Event

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
WINDOW = "2026-W48"
RUN = "sendtest:2026-W48"

CAMPAIGN = """\
title: Send test
policy:
  min_relevance: 0
  holdout_share: 0
  max_messages_per_run: 1
messages:
  - id: sendtest-news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: loyalty
    value: 10
"""


#: Engines made by :func:`build`; the ``project`` fixture disposes them when its test ends.
BUILT: list = []


def build(project, customers: int = 150):
    """Fill the project's store with a demo shop and add the ``sendtest`` campaign."""
    Path(project.root, "campaigns", "sendtest.yml").write_text(CAMPAIGN)
    engine = make_engine(project.database_url)
    BUILT.append(engine)
    generate(engine, customers=customers, seed=3, as_of=AS_OF)
    return engine


def outbox_pairs(project) -> list[tuple[str, str]]:
    """(customer, message) of every .eml in the project's outbox, from the e-mails' own headers."""
    pairs = []
    for path in sorted((project.root / "outbox").glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        pairs.append((msg["X-Relmail-Customer"], msg["X-Relmail-Message"]))
    return pairs


def ledger_pairs(engine, run: str = RUN):
    """Sorted (customer, message) pairs of the run: send decisions, accepted deliveries, email_sent events."""
    D, DEC, E = Delivery.__table__, Decision.__table__, Event.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(DEC.c.customer_id, DEC.c.message_id).where(DEC.c.run_id == run, DEC.c.action == "send")).all()
        accepted = conn.execute(select(D.c.customer_id, D.c.message_id).where(D.c.run_id == run, D.c.status == "accepted")).all()
        sent = conn.execute(select(E.c.customer_id, E.c.message_id).where(E.c.type == "email_sent", E.c.run_id == run)).all()
    return sorted(map(tuple, sends)), sorted(map(tuple, accepted)), sorted(map(tuple, sent))


def use_smtp(project, server) -> None:
    """Point the project's delivery at the in-process SMTP ``server`` (AUTH, a pool of 2 connections)."""
    from tests.smtp_server import USER

    cfg = server.config(username=USER, pool_size=2, messages_per_connection=50)
    lines = [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in cfg.items()]
    text = (project.root / "relmail.toml").read_text().replace('adapter = "file"', 'adapter = "smtp"')
    text += "\n[delivery.smtp]\n" + "\n".join(lines).replace("'", '"') + "\n"
    (project.root / "relmail.toml").write_text(text)


def edit_template(project, name: str, old: str, new: str) -> None:
    """Replace ``old`` (once) in template ``name`` and in each of its language variants (``name.nl.html`` ...):
    the demo shop's customers read Dutch and English, so a change meant for every recipient goes in each."""
    for path in [project.templates_dir / f"{name}.html", *sorted(project.templates_dir.glob(f"{name}.*.html"))]:
        path.write_text(path.read_text().replace(old, new, 1))
