"""The render gate: render every template variant a plan will send, for real recipients, before anything is sent.

A plan that would send a template which fails for real customers must fail
in CI. A message's e-mail is made of different files for different
recipients: the locale variant of its HTML template (``ebike_launch.nl.html``
or the base ``ebike_launch.html``), of its text template or the text
derived from the HTML, of each partial it includes, and the campaign's
subject for that locale. The gate groups a message's recipients (its
``send`` decisions) by those files (a :class:`~relmail.render.variants.Variant`) and renders, per
variant:

* one recipient of every locale that gets it (a locale can break a
  filter's formatting even where the files are the same),
* more recipients drawn at random (seeded by the run's seed) up to
  ``sample`` per variant, and
* the recipient with the most optional fields filled in and the one with
  the fewest, as ``relmail templates check`` picks them
  (:func:`~relmail.render.samples.fullest_and_emptiest`): a template that
  prints an attribute only some customers have fails for the emptiest,
  however few they are, and one that breaks on long data for the fullest,

exactly as ``relmail send`` would render them: the same renderer, the same
customer contexts and recommended products, as of the plan's time. A
recipient order (by id, by locale) cannot hide a broken variant.
Every failure is a :class:`RenderProblem` naming the message, the variant,
the customer and the template's file and line. Nothing is written or sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from ..errors import NotFound, TemplateError
from ..render import MessageSpec, Renderer, RenderError
from ..render.contexts import customer_contexts, load_catalog
from ..render.samples import fullest_and_emptiest
from ..render.variants import Variant, Variants, other_language
from ..store.models import Customer
from .consent_warning import PlanWarning

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.engine import Connection, Engine

    from ..campaigns import Campaign
    from ..project import Project
    from .run import PlanResult

#: Customer ids per query: an IN list this long is fine on SQLite and PostgreSQL alike.
BATCH = 5_000

C = Customer.__table__

#: Links are built but never followed in a check: a stand-in key is fine when none is set.
CHECK_KEY = "relmail-render-check"


@dataclass
class VariantCheck:
    """What the gate did for one variant."""

    variant: Variant
    #: Recipients of the plan who get this variant.
    recipients: int
    #: Their distinct locales.
    locales: int
    rendered: int = 0
    failed: int = 0

    def as_dict(self) -> dict:
        return {"message": self.variant.message_id, "variant": str(self.variant), "files": list(self.variant.html + self.variant.text),
                "recipients": self.recipients, "locales": self.locales, "rendered": self.rendered, "failed": self.failed}


@dataclass(frozen=True)
class RenderProblem:
    """One e-mail that failed to render."""

    message_id: str
    variant: str
    customer_id: str
    locale: str
    error: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else (f"{self.file}: " if self.file else "")
        return f"{self.message_id} [{self.variant}] for {self.customer_id} ({self.locale}): {where}{self.error}"

    def as_dict(self) -> dict:
        return {"message": self.message_id, "variant": self.variant, "customer_id": self.customer_id, "locale": self.locale,
                "file": self.file, "line": self.line, "error": self.error}


def render_sample(project: Project, engine: Engine, campaign: Campaign, result: PlanResult, sample: int = 3) -> list[RenderProblem]:
    """Render every variant of every message of ``result`` for its recipients; see the module docstring.

    ``sample`` is the number of recipients drawn per variant (at least one
    per locale that gets it), rendered with the variant's fullest and
    emptiest recipient; 0 skips the gate. Sets ``result.render_errors``,
    ``result.render_problems`` and ``result.render_checks``; returns the problems.
    """
    result.render_checks, result.render_problems, result.render_errors = [], [], 0
    if sample <= 0:
        return []
    d = result.decisions
    sends = np.flatnonzero(d.action == "send") if len(d) else np.zeros(0, dtype=np.int64)
    if not len(sends):
        return []
    try:
        renderer = Renderer(project, signing_key=project.secret("signing_key", required=False) or CHECK_KEY)
    except NotFound as exc:
        problems = [RenderProblem(m, "", str(d.customer_id[sends][d.message_id[sends] == m][0]), "", str(exc))
                    for m in dict.fromkeys(d.message_id[sends].tolist())]
        result.render_problems, result.render_errors = problems, len(problems)
        return problems
    locales = _locales(engine, d.customer_id[sends], project.settings.default_locale)
    rng = np.random.default_rng(result.seed)
    variants = Variants(renderer)
    picks: list[tuple[VariantCheck, MessageSpec, list[tuple[str, str]]]] = []
    problems: list[RenderProblem] = []
    with engine.connect() as conn:  # one connection for every variant's fullest and emptiest recipient
        for m in campaign.messages:
            mine = d.message_id[sends] == m.id
            if not mine.any():
                continue
            spec = MessageSpec.from_campaign(campaign, m, result.run_id)
            customers, their_locales = d.customer_id[sends][mine], locales[mine]
            groups: dict[Variant, dict[str, list[int]]] = {}
            for loc in sorted(set(their_locales.tolist())):
                rows = np.flatnonzero(their_locales == loc)
                try:
                    variant = variants.of(spec, loc)
                except (TemplateError, NotFound) as exc:
                    # A file that cannot even be read for this locale: every recipient of it fails alike.
                    problems.append(RenderProblem(m.id, f"{m.template} for {loc}", str(customers[rows[0]]), loc, _reason(exc),
                                                  getattr(exc, "file", None), getattr(exc, "line", None)))
                    continue
                groups.setdefault(variant, {})[loc] = rows.tolist()
            audience = next((s.audience for s in result.messages if s.message_id == m.id), 0)
            result.warnings += _language_warnings(m.id, groups, project.settings.default_locale, audience, renderer.templates_dir)
            for variant, by_locale in groups.items():
                count = sum(len(rows) for rows in by_locale.values())
                check = VariantCheck(variant, recipients=count, locales=len(by_locale))
                chosen = _choose(rng, by_locale, sample)
                chosen += [x for x in _extremes(conn, customers, by_locale) if x not in chosen]
                picks.append((check, spec, [(str(customers[i]), loc) for i, loc in chosen]))
    with engine.connect() as conn:
        catalog = load_catalog(conn, result.as_of)
        for check, spec, chosen in picks:
            message = campaign.message(check.variant.message_id)
            contexts = customer_contexts(conn, [c for c, _ in chosen], result.as_of, catalog, tuple(message.products))
            for customer_id, loc in chosen:
                check.rendered += 1
                ctx = contexts.get(customer_id)
                problem = None
                if ctx is None:
                    problem = RenderProblem(spec.id, str(check.variant), customer_id, loc, "customer no longer exists (erased?)")
                else:
                    try:
                        renderer.render(spec, ctx)
                    except RenderError as exc:
                        problem = RenderProblem(spec.id, str(check.variant), customer_id, loc, exc.reason, exc.file, exc.line)
                    except TemplateError as exc:  # the variant does not compile: the same for all its recipients
                        problem = RenderProblem(spec.id, str(check.variant), customer_id, loc, _reason(exc),
                                                getattr(exc, "file", None), getattr(exc, "line", None))
                if problem is not None:
                    check.failed += 1
                    problems.append(problem)
            result.render_checks.append(check)
    result.render_problems, result.render_errors = problems, len(problems)
    return problems


def _language_warnings(message_id: str, groups: dict[Variant, dict[str, list[int]]], default_locale: str,
                       audience: int, templates_dir: Path) -> list[PlanWarning]:
    """A warning per variant some recipients get in a language not theirs (:func:`.other_language`)."""
    out = []
    for variant, by_locale in groups.items():
        text = other_language(variant, {loc: len(rows) for loc, rows in by_locale.items()}, default_locale, templates_dir)
        if text is not None:
            out.append(PlanWarning(message_id, "OTHER_LANGUAGE", 0, audience, f"{message_id}: {text}"))
    return out


def _locales(engine, customer_ids: np.ndarray, default: str) -> np.ndarray:
    """Each customer's locale (the project's default where none is recorded), aligned with ``customer_ids``."""
    wanted = np.unique(customer_ids.astype(str))
    found: dict[str, str] = {}
    with engine.connect() as conn:
        if len(wanted) <= BATCH:
            rows = conn.execute(select(C.c.id, C.c.locale).where(C.c.id.in_(wanted.tolist())))
        else:
            # A large plan: one pass over the table beats a giant IN list.
            rows = conn.execute(select(C.c.id, C.c.locale))
        for cid, loc in rows:
            found[cid] = loc or default
    return np.array([found.get(cid, default) for cid in customer_ids.tolist()], dtype=object)


def _choose(rng: np.random.Generator, by_locale: dict[str, list[int]], sample: int) -> list[tuple[int, str]]:
    """One recipient per locale (most recipients first), then random others up to ``sample``."""
    order = sorted(by_locale, key=lambda loc: (-len(by_locale[loc]), loc))
    chosen = [(int(rng.choice(by_locale[loc])), loc) for loc in order]
    taken = {i for i, _ in chosen}
    rest = [(i, loc) for loc in order for i in by_locale[loc] if i not in taken]
    more = max(0, sample - len(chosen))
    if more and rest:
        for k in sorted(rng.choice(len(rest), size=min(more, len(rest)), replace=False).tolist()):
            chosen.append(rest[k])
    return chosen


def _extremes(conn: Connection, customers: np.ndarray, by_locale: dict[str, list[int]]) -> list[tuple[int, str]]:
    """The fullest and the emptiest recipient of a variant (:func:`.fullest_and_emptiest`), as :func:`_choose` gives them.

    A query per :data:`BATCH` recipients gives each batch's two, and a last one picks among those: the cost
    grows with the recipients' count over the batch, and no recipient's row is read into Python.
    """
    rows = np.concatenate([np.asarray(r, dtype=np.int64) for r in by_locale.values()])
    ids = customers[rows].astype(str)
    found: list[str] = []
    for start in range(0, len(ids), BATCH):
        found += fullest_and_emptiest(conn, C.c.id.in_(ids[start:start + BATCH].tolist()))
    best = fullest_and_emptiest(conn, C.c.id.in_(found)) if len(ids) > BATCH else found
    locs = np.repeat(np.array(list(by_locale), dtype=object), [len(r) for r in by_locale.values()])
    at = [int(np.flatnonzero(ids == cid)[0]) for cid in best]
    return [(int(rows[k]), str(locs[k])) for k in at]


def _reason(exc: TemplateError) -> str:
    """The error without the ``file:line:`` it starts with (shown separately)."""
    text = str(exc)
    file, line = getattr(exc, "file", None), getattr(exc, "line", None)
    for head in (f"{file}:{line}: ", f"{file}: "):
        if file and text.startswith(head):
            return text[len(head):]
    return text
