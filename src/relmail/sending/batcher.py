"""Rendering claimed decisions of one run into the messages an adapter sends.

A :class:`Batcher` compiles every (message, locale) template of the run once,
before anything is sent, and then renders batches of (customer, message)
pairs; forked senders inherit the compiled templates. :func:`outgoing` is
the adapter's view of one rendered e-mail.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from .. import tokens
from ..campaigns import Campaign
from ..delivery import OutgoingMessage
from ..delivery.metadata import metadata
from ..render import MessageSpec, Renderer
from ..render.contexts import customer_contexts, load_prices
from ..render.mime import ascii_domain
from ..render.mime import message_id as derive
from ..store import link_projects
from ..store.models import Customer
from ..windows import current_time

#: How many of the customers' locales a send compiles before the first delivery.
PRECOMPILED_LOCALES = 8


class Batcher:
    """Renders claimed decisions of one run into adapter messages.

    ``as_of`` is the plan's time (what the customer did, the recommendations);
    ``clock`` the time each batch is rendered at, which prices the products:
    the price in the e-mail is the one valid when it is sent, a sale that
    ended between plan and send is not shown.
    """

    def __init__(self, project, engine, camp: Campaign, run_id: str, as_of: datetime,
                 clock: Callable[[], datetime] = current_time):
        self.engine, self.camp, self.run_id, self.as_of, self.clock = engine, camp, run_id, as_of, clock
        self.domain = project.settings.sender.domain
        self.renderer = Renderer(project)
        self.specs = {m.id: MessageSpec.from_campaign(camp, m, run_id) for m in camp.messages}
        self.featured = {m.id: tuple(m.products) for m in camp.messages}
        with engine.begin() as conn:
            # The links about to be signed name this project: the store honours them after a rename.
            link_projects.record(conn, project.settings.name)
        with engine.connect() as conn:
            self.prices = load_prices(conn)
            C = Customer.__table__
            # The most common locales (a store with dozens compiles the rare ones when first needed).
            common = conn.execute(select(C.c.locale).where(C.c.locale.is_not(None)).group_by(C.c.locale)
                                  .order_by(func.count().desc()).limit(PRECOMPILED_LOCALES)).scalars()
            locales = {project.settings.default_locale, *common}
        # Every (message, locale) the run can need is compiled here, once: a broken template or locale
        # variant fails before anything is sent, and forked workers inherit the compiled templates
        # (premailer's CSS inlining is the expensive part of compiling a template and language).
        for spec in self.specs.values():
            for locale in sorted(locales):
                self.renderer.compile(spec, locale)
        #: The process that built this batcher (a forked worker must :meth:`rebind` before use).
        self.pid = os.getpid()

    def rebind(self, engine) -> Batcher:
        """A copy that reads through ``engine``: the compiled templates and catalogue, shared by a forked process."""
        import copy

        twin = copy.copy(self)
        twin.engine, twin.pid = engine, os.getpid()
        return twin

    def topic(self, message_id: str) -> str | None:
        """The consent topic of campaign message ``message_id``."""
        spec = self.specs.get(message_id)
        return spec.topic if spec is not None else None

    def message_id(self, customer_id: str, message_id: str) -> str:
        """The RFC 5322 Message-ID the renderer gives this e-mail (derived, so every attempt carries the same)."""
        return derive(self.run_id, customer_id, message_id, self.domain)

    def render(
        self, pairs: Sequence[tuple[str, str]], to: str | None = None, to_name: str = ""
    ) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], str]]:
        """(e-mail, context) and errors for (customer, message) pairs; ``to`` readdresses (proof sends).

        A proof's To header is ``to`` with ``to_name`` ("" for none), never the
        customer's name: the reviewer is not the customer, and the customer's
        name is theirs to keep (the body still shows what the customer would
        read).

        A proof is rendered as run :data:`~relmail.tokens.PROOF_RUN`: its
        unsubscribe and preference links change nothing (:mod:`relmail.web`),
        and what a provider or a bounce reports about it is not applied to the
        customer whose data it shows (:mod:`relmail.feedback.apply`).
        """
        from dataclasses import replace

        by_message: dict[str, list[str]] = {}
        for customer, message in pairs:
            by_message.setdefault(message, []).append(customer)
        emails: dict[tuple[str, str], Any] = {}
        errors: dict[tuple[str, str], str] = {}
        # One moment per batch: the products' prices and the templates' now.
        self.renderer.now = at = self.clock()
        catalog = self.prices.at(at)
        with self.engine.connect() as conn:
            for message, customers in by_message.items():
                spec = self.specs.get(message)
                if spec is not None and to is not None:
                    spec = replace(spec, run_id=tokens.PROOF_RUN)
                if spec is None:
                    for c in customers:
                        errors[(c, message)] = f"message '{message}' is no longer in campaign '{self.camp.name}'"
                    continue
                contexts = customer_contexts(conn, customers, self.as_of, catalog, self.featured[message])
                if to is not None:
                    contexts = {c: replace(ctx, email=to, to_name=to_name) for c, ctx in contexts.items()}
                for c in customers:
                    if c not in contexts:
                        errors[(c, message)] = "customer no longer exists (erased?)"
                for result in self.renderer.render_many((spec, contexts[c]) for c in customers if c in contexts):
                    key = (result.customer_id, result.message_id)
                    if result.ok:
                        emails[key] = (result.email, contexts[result.customer_id])
                    else:
                        errors[key] = str(result.error.reason if hasattr(result.error, "reason") else result.error)
        return emails, errors


_PASSED_HEADERS = ("Message-ID", "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID",
                   "X-Relmail-Run", "X-Relmail-Message", "X-Relmail-Customer")


class _RawHeaders(Mapping):
    """The headers API providers need, read from the rendered bytes only when asked.

    SMTP, SES and the file outbox send the bytes as they are and never look;
    parsing every e-mail's header block for them cost about a sixth of the
    send loop.
    """

    def __init__(self, raw: bytes):
        self._raw = raw
        self._parsed: dict[str, str] | None = None

    def _headers(self) -> dict[str, str]:
        if self._parsed is None:
            from email.parser import BytesHeaderParser
            from email.policy import compat32

            parsed = BytesHeaderParser(policy=compat32).parsebytes(self._raw)
            self._parsed = {n: " ".join(parsed[n].split()) for n in _PASSED_HEADERS if parsed[n] is not None}
        return self._parsed

    def __getitem__(self, name: str) -> str:
        return self._headers()[name]

    def __iter__(self):
        return iter(self._headers())

    def __len__(self) -> int:
        return len(self._headers())


def outgoing(email, ctx, settings, key: str, run_id: str, topic: str | None = None):
    """The adapter's view of a rendered e-mail: the bytes, plus the fields API providers need."""
    return OutgoingMessage(
        key=key,
        to=ascii_domain(ctx.email),  # an umlaut domain in its IDNA form: SMTP without SMTPUTF8 and ESPs take only that
        to_name=ctx.addressee or None,
        from_addr=ascii_domain(settings.sender.from_email),  # the envelope sender unless envelope_from is set
        from_name=settings.sender.from_name,
        reply_to=ascii_domain(settings.sender.reply_to) if settings.sender.reply_to else None,
        subject=email.subject,
        html=email.html,
        text=email.text,
        headers=_RawHeaders(email.raw),
        raw=email.raw,
        metadata=metadata(email.customer_id, run_id, email.message_id),
        tags=(run_id.split(":")[0], email.message_id),
        topic=topic,
    )
