"""What the fault tests share: a project on a PostgreSQL database of its own, an SMTP server that
records Message-IDs and can misbehave, and the tally of what arrived (once, twice, uncertain, lost).

A test that changes database settings (``lock_timeout``, ``ALLOW_CONNECTIONS``,
``CONNECTION LIMIT``) gets a database of its own, so no other test sees
them; the shared server itself is never reconfigured.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiosmtpd.smtp import SMTP
from sqlalchemy import create_engine, select, text
from tests.smtp_server import Handler

from relmail.project import Project, init_project
from relmail.sending import ledger
from relmail.store.db import make_engine, upgrade
from relmail.store.models import Decision, Delivery


class FaultyHandler(Handler):
    """The recording handler, slowed by ``delay`` seconds per message and calling ``on_data(n)`` after the n-th."""

    delay: float = 0.0
    on_data: Callable[[int], None] | None = None

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.on_data is not None and reply.startswith("250"):
            self.on_data(len(self.messages))
        return reply


class MidDataSMTP(SMTP):
    """aiosmtpd's server, which can also drop the connection in the middle of DATA.

    For a recipient scripted ``handler.script("body", rcpt, "drop")`` it
    answers DATA with 354, reads the first line of the message and closes the
    connection: the client is still writing the message, or about to write
    its final dot.
    """

    async def smtp_DATA(self, arg: str) -> None:
        rcpts = self.envelope.rcpt_tos if self.envelope is not None else []
        if rcpts and self.event_handler._next("body", rcpts[0]) == "drop":
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader.readuntil(b"\r\n"), 5)
            self._reader._buffer.clear()  # the rest of the message is not to be read as commands
            self.transport.abort()
            return
        await super().smtp_DATA(arg)


def faulty(server, delay: float = 0.0, on_data: Callable[[int], None] | None = None) -> FaultyHandler:
    """Turn ``server``'s handler into a :class:`FaultyHandler` that can also drop mid-DATA (before it is started)."""
    handler = server.handler
    handler.__class__ = FaultyHandler
    handler.delay, handler.on_data = delay, on_data
    controller = server.controller
    controller.factory = lambda: MidDataSMTP(controller.handler, **controller.SMTP_kwargs)
    return handler


def message_ids(handler: Handler) -> list[str]:
    """The Message-ID of every message the server stored, in arrival order (repeats included)."""
    return [email.message_from_bytes(m.data)["Message-ID"] for m in handler.messages]


@dataclass
class Tally:
    """What reached the SMTP server, against what the ledger says."""

    sends: int
    once: int
    twice: int
    uncertain: int
    uncertain_received: int
    rejected: int
    lost: int

    def line(self, faults: int, label: str) -> str:
        return (f"{label}: faults injected {faults}, e-mails {self.sends}, received once {self.once}, "
                f"received twice {self.twice}, flagged uncertain {self.uncertain} "
                f"({self.uncertain_received} of them received), rejected {self.rejected}, lost {self.lost}")


def tally(engine, run_id: str, received: list[str]) -> Tally:
    """Compare the Message-IDs received with the run's deliveries.

    *Uncertain* deliveries were handed over without an answer (the dot went
    out, the reply never came, or the sender died right after its mark):
    accepted and flagged, never resent. *Lost* is an e-mail the ledger does
    not explain: not received, yet neither flagged uncertain nor refused by
    the server (and not left unsent).
    """
    D, DEC = Delivery.__table__, Decision.__table__
    with engine.connect() as conn:
        sends = conn.execute(select(DEC.c.id).where(DEC.c.run_id == run_id, DEC.c.action == "send")).all()
        rows = conn.execute(select(D.c.rfc_message_id, D.c.status, D.c.last_error).where(D.c.run_id == run_id)).all()
    counts = Counter(received)
    uncertain = [r for r in rows if r.status == "accepted" and ledger.UNCERTAIN in (r.last_error or "")]
    refused = [r for r in rows if r.status in ("rejected", "failed")]
    explained = {r.rfc_message_id for r in uncertain + refused}
    lost = [r for r in rows if r.rfc_message_id not in counts and r.rfc_message_id not in explained]
    return Tally(
        sends=len(sends),
        once=sum(1 for n in counts.values() if n == 1),
        twice=sum(1 for n in counts.values() if n > 1),
        uncertain=len(uncertain),
        uncertain_received=sum(1 for r in uncertain if r.rfc_message_id in counts),
        rejected=len(refused),
        lost=len(lost) + (len(sends) - len(rows)),
    )


class OwnDatabase:
    """A fresh, upgraded PostgreSQL database for one test, with an admin connection to it."""

    def __init__(self, pg_databases):
        self.url = pg_databases.create()
        self.name = self.url.rsplit("/", 1)[1]
        engine = make_engine(self.url)
        upgrade(engine)
        engine.dispose()
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        self.server_admin = pg_databases.admin
        self.roles: list[str] = []

    def sql(self, statement: str, **params):
        with self.admin.connect() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None

    def alter(self, setting: str) -> None:
        """``ALTER DATABASE <this one> <setting>`` (from another database, so it works while connections are refused)."""
        with self.server_admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{self.name}" {setting}'))

    def terminate(self, keep: int | None = None) -> int:
        """Terminate every other backend of this database; returns how many."""
        with self.server_admin.connect() as conn:
            return conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid() AND pid IS DISTINCT FROM :keep"
            ), {"d": self.name, "keep": keep}).scalar()

    def connections(self) -> int:
        with self.server_admin.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND backend_type = 'client backend' "
                "AND pid <> pg_backend_pid()"), {"d": self.name}).scalar()

    def role(self, connection_limit: int) -> str:
        """A login role limited to ``connection_limit`` connections, allowed to use this database; its URL."""
        name = f"relmail_fault_{uuid.uuid4().hex[:8]}"
        with self.server_admin.connect() as conn:
            conn.execute(text(f'CREATE ROLE "{name}" LOGIN CONNECTION LIMIT {connection_limit}'))
        self.roles.append(name)
        self.sql(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{name}"')
        self.sql(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{name}"')
        head, tail = self.url.split("://", 1)
        return f"{head}://{name}@{tail.split('@', 1)[1]}"

    def close(self) -> None:
        self.alter("ALLOW_CONNECTIONS true")
        self.alter("RESET ALL")
        for name in self.roles:
            self.sql(f'DROP OWNED BY "{name}"')
        self.admin.dispose()
        self.terminate()
        with self.server_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
            for name in self.roles:
                conn.execute(text(f'DROP ROLE IF EXISTS "{name}"'))


def project_on(tmp_path, monkeypatch, url: str, customers: int = 120):
    """A ``relmail init`` project on ``url`` with the send tests' shop and campaign; (project, engine)."""
    from tests import sendkit

    monkeypatch.setenv("RELMAIL_DATABASE_URL", url)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    project = init_project(tmp_path / "shop")
    engine = sendkit.build(project, customers=customers)
    return project, engine


def use_plain_smtp(project, server, **extra):
    """Deliver through ``server`` (plain SMTP, no AUTH), with ``extra`` adapter settings; the project reloaded."""
    cfg = server.config(pool_size=2, messages_per_connection=50, **extra)
    lines = [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in cfg.items()]
    text_ = (project.root / "relmail.toml").read_text().replace('adapter = "file"', 'adapter = "smtp"')
    (project.root / "relmail.toml").write_text(text_ + "\n[delivery.smtp]\n" + "\n".join(lines) + "\n")
    return Project.load(project.root)
