"""What ``relmail segments show`` tells about a segment: its size, a sample of members, its SQL.

:func:`describe` counts the members as of a time against every customer
that existed then, draws a seeded sample of member ids (same seed, same
sample) and, when asked, renders the SQL the segment compiles to as text
for reading, its parameters shown inline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select

from ..errors import Problem, did_you_mean, likely
from ..store.db import which_exist
from ..store.mailed import MailedNames
from ..store.models import Customer, Event, Product, Run
from ..store.topics import not_known, unknown_topics
from . import Segment, audience, customer_by
from .compile import attribute_present, of_campaign, run_prefix
from .grammar import ids_of, walk

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class SegmentFacts:
    """A segment as of one time."""

    name: str
    description: str
    file: Path
    as_of: datetime
    #: Members as of ``as_of``.
    size: int
    #: Customers that existed at ``as_of``.
    customers: int
    #: Sorted sample of member ids.
    sample: list[str]
    #: The segment's SQL for reading (None unless asked for).
    sql: str | None = None
    #: Names the segment uses that nothing knows (see :func:`unknown_names`).
    unknown: list[Problem] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.size / self.customers if self.customers else 0.0


def describe(engine: Engine, segment: Segment, as_of: datetime, *, topics: Iterable[str],
             campaigns: Mapping[str, Iterable[str]] | None = None, sample: int = 10, seed: int = 0, sql: bool = False) -> SegmentFacts:
    """Size, share and a sample of ``segment`` as of ``as_of`` (and its SQL with ``sql=True``).

    ``topics`` are the consent topics ``[topics]`` in ``relmail.toml`` declares (known, whether or not
    a consent record names them yet); ``campaigns`` the message ids each campaign file declares, by
    campaign name (:func:`relmail.campaigns.declared_messages`).
    """
    members = audience(engine, [segment], as_of)
    c = Customer.__table__
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(c).where(customer_by(as_of))).scalar_one()
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(members, size=min(sample, len(members)), replace=False).tolist()) if len(members) else []
    return SegmentFacts(segment.name, segment.description, segment.file, as_of, len(members), int(total), picked,
                        sql_text(segment.select(as_of), engine.dialect) if sql else None,
                        unknown_names(engine, segment, topics, campaigns or {}))


#: Conditions that name catalogue products or their categories, and the keys that do.
CATALOGUE_KEYS = {"purchased": ("category", "product"), "viewed": ("category", "product"), "owns": ("product",), "uses": ("product",)}


def unknown_names(engine: Engine, segment: Segment, topics: Iterable[str],
                  campaigns: Mapping[str, Iterable[str]] | None = None) -> list[Problem]:
    """The categories and product ids ``segment`` names that no product in the catalogue has, the
    attribute keys no customer has, the consent topics that are not known (``topics``: those
    ``[topics]`` in ``relmail.toml`` declares), and the messages and campaigns that no campaign file
    declares (``campaigns``: message ids by campaign name), no run is of and no e-mail event names.

    Such a condition matches nobody, silently: a typo (``poezi``, ``Land``
    for ``country``, ``sping-launch``), or a catalogue or customers not imported yet.
    """
    named: list[tuple[str, str, str, int | None]] = []
    for node in walk(segment.root):
        for key in CATALOGUE_KEYS.get(node.kind, ()):
            for value in ids_of((node.args or {}).get(key)) or []:
                named.append((key, value, node.path, node.line))
    mailed = MailedNames(engine)  # shared: its range of events is found once, when a name needs it
    found = (_unknown_catalogue_names(engine, segment, named) + _unknown_attributes(engine, segment)
             + _unknown_topics(engine, segment, topics, mailed) + _unknown_mailings(engine, segment, campaigns or {}, mailed))
    return sorted(found, key=lambda problem: problem.line or 0)


#: Conditions that name a consent topic.
TOPIC_CONDITIONS = ("consent", "received_email", "opened_email", "clicked_email")


def _unknown_topics(engine: Engine, segment: Segment, topics: Iterable[str], mailed: MailedNames) -> list[Problem]:
    """Topics that are not known (see :mod:`relmail.store.topics`): 'promotion' for 'promotions' tests nobody's consent."""
    named = [(node.args["topic"], node.path, node.line) for node in walk(segment.root)
             if node.kind in TOPIC_CONDITIONS and node.args.get("topic") not in (None, "*")]
    if not named:
        return []
    unknown = unknown_topics(engine, {topic for topic, *_ in named}, topics, mailed=mailed)
    return [Problem(str(segment.file), line, f"{path}.topic",
                    not_known(topic, mailed) + (did_you_mean(unknown[topic]) or " (a topic not used yet?)"))
            for topic, path, line in named if topic in unknown]


#: Conditions on e-mails that may name messages and campaigns.
MAILING_CONDITIONS = ("received_email", "opened_email", "clicked_email")


def _unknown_mailings(engine: Engine, segment: Segment, campaigns: Mapping[str, Iterable[str]],
                      mailed: MailedNames) -> list[Problem]:
    """Message ids and campaign names no campaign file declares, no run is of and no e-mail event names.

    A message of a campaign since deleted is known by its e-mails; one never
    sent is not (a typo, or a message not sent yet). The campaign files and
    the runs answer first; only a name they do not know is looked for in
    the newest events (:mod:`relmail.store.mailed`), never in all of them.
    Suggestions come from the campaign files.
    """
    declared = {message for messages in campaigns.values() for message in messages}
    named = [(key, value, node.path, node.line) for node in walk(segment.root) if node.kind in MAILING_CONDITIONS
             for key in ("message", "campaign") for value in ids_of(node.args.get(key)) or []]
    known = {"message": declared, "campaign": set(campaigns)}
    asked = {key: {value for k, value, *_ in named if k == key} - known[key] for key in known}
    if asked["campaign"]:
        # A campaign is known by the ids of its runs, as the condition tests the e-mails' run ids
        # (of_campaign); the runs table holds one row per campaign and window, a few thousand at most.
        with engine.connect() as conn:
            runs = set(conn.execute(select(Run.__table__.c.id)).scalars())
        asked["campaign"] = {c for c in asked["campaign"] if not any(run.startswith(run_prefix(c)) for run in runs)}
    # The events, for what the files and the runs do not know.
    mailed_names = mailed.which({**{f"message\t{m}": Event.__table__.c.message_id == m for m in asked["message"]},
                                 **{f"campaign\t{c}": of_campaign(c) for c in asked["campaign"]}})
    out = []
    for key, value, path, line in named:
        if value not in asked[key] or f"{key}\t{value}" in mailed_names:
            continue
        said = (f"no campaign file declares message {value!r} and no e-mail event{mailed.among()} names it" if key == "message"
                else f"no campaign file is named {value!r} and no e-mail event{mailed.among()} is of a run of it")
        out.append(Problem(str(segment.file), line, f"{path}.{key}",
                           said + (did_you_mean(likely(value, known[key])) or f" (a typo, or a {key} not sent yet?)")))
    return out


def _unknown_attributes(engine: Engine, segment: Segment) -> list[Problem]:
    """Attribute keys no customer has, looked up in one statement for all of the segment's keys."""
    keys = [(node.args["key"], node.path, node.line) for node in walk(segment.root) if node.kind == "attribute"]
    if not keys:
        return []
    with engine.connect() as conn:
        present = which_exist(conn, {key: attribute_present(key) for key, *_ in keys})
    return [Problem(str(segment.file), line, f"{path}.key", f"no customer has attribute {key!r} "
                    "(a typo, or customers not imported with it? relmail customers show ID lists a customer's attributes)")
            for key, path, line in keys if key not in present]


def _unknown_catalogue_names(engine: Engine, segment: Segment, named: list[tuple[str, str, str, int | None]]) -> list[Problem]:
    if not named:
        return []
    p = Product.__table__
    # A category as the shop writes it ("Zubehör") is stored as an id ("zubehor") by the Shopify
    # mapping: look the id form up too, to name it when the written form matches nothing.
    slugs = {v: category_id(v) for k, v, *_ in named if k == "category"}
    with engine.connect() as conn:
        wanted = {*slugs, *slugs.values()} - {None}
        categories = {c for (c,) in conn.execute(select(p.c.category).where(p.c.category.in_(sorted(wanted))))}
        products = {i for (i,) in conn.execute(select(p.c.id).where(p.c.id.in_([v for k, v, *_ in named if k == "product"])))}
    known = {"category": categories, "product": products}

    def message(key: str, value: str) -> str:
        slug = slugs.get(value) if key == "category" else None
        if slug is not None and slug != value and slug in categories:
            return f"no product in the catalogue has category {value!r}; it has {slug!r} (categories are stored as ids)"
        return f"no product in the catalogue has {key} {value!r} (a typo, or products not imported yet?)"

    return [Problem(str(segment.file), line, f"{path}.{key}", message(key, value))
            for key, value, path, line in named if value not in known[key]]


def category_id(name: str) -> str | None:
    """A category name in the id form the built-in mappings store (``Literaire roman`` -> ``literaire-roman``)."""
    from ..importers.fields import FieldError
    from ..importers.values import make_slug

    try:
        return make_slug()(name)
    except FieldError:
        return None


def sql_text(stmt, dialect) -> str:
    """The statement as text for reading, its parameters shown inline."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import psycopg2

        # Compiled for reading only: this dialect adds no "::VARCHAR" cast to every parameter.
        dialect = psycopg2.dialect()
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    text = str(compiled)
    params = compiled.construct_params()
    names = compiled.positiontup or []
    if names:  # positional ("?"): substitute in order
        for key in names:
            text = text.replace("?", _literal(params[key]), 1)
    else:
        for key in sorted(params, key=len, reverse=True):
            text = text.replace(f"%({key})s", _literal(params[key]))
    return text


def iso(when: datetime) -> str:
    """``2026-11-23T06:00:00Z``: a time as the segment commands print it."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _literal(value) -> str:
    if isinstance(value, datetime):
        return f"'{iso(value)}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return "NULL" if value is None else str(value)
