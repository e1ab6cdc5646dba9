"""The render gate: render each planned message for a few of its recipients.

A plan that would send a template which fails for real customers must fail
in CI, before anything is sent. For every message, the first ``sample``
customers (by id) the plan sends it to or holds out are rendered with the
project's templates; every failure is collected with the customer, the
message and the template's file and line. Nothing is written or sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NotFound, TemplateError
from ..render.contexts import customer_contexts, load_catalog
from ..render.renderer import MessageSpec, Renderer

#: Links are built but never followed in a check: a stand-in key is fine when none is set.
CHECK_KEY = "relmail-render-check"


@dataclass(frozen=True)
class RenderProblem:
    message_id: str
    customer_id: str
    error: str

    def __str__(self) -> str:
        return f"{self.message_id} for {self.customer_id}: {self.error}"


def render_sample(project, engine, campaign, result, sample: int = 3) -> list[RenderProblem]:
    """Render each message for up to ``sample`` of its recipients; sets ``result.render_errors``."""
    if sample <= 0:
        return []
    d = result.decisions
    picks: dict[str, list[str]] = {}
    for m in campaign.messages:
        mine = (d.message_id == m.id) & np.isin(d.action, ["send", "holdout"]) if len(d) else np.zeros(0, dtype=bool)
        ids = sorted(d.customer_id[mine].tolist())[:sample]
        if ids:
            picks[m.id] = ids
    problems: list[RenderProblem] = []
    if picks:
        try:
            renderer = Renderer(project, signing_key=project.secret("signing_key", required=False) or CHECK_KEY)
        except NotFound as exc:
            problems = [RenderProblem(mid, ids[0], str(exc)) for mid, ids in picks.items()]
            result.render_errors = len(problems)
            return problems
        # The contexts a send builds (featured products, the catalogue, recommendations), so a template
        # that looks up a product the catalogue lacks fails here, before anything is sent.
        with engine.connect() as conn:
            catalog = load_catalog(conn)
            contexts = {m.id: customer_contexts(conn, picks[m.id], result.as_of, catalog, m.products)
                        for m in campaign.messages if m.id in picks}
        for m in campaign.messages:
            spec = MessageSpec.from_campaign(campaign, m, result.run_id)
            for cid in picks.get(m.id, []):
                ctx = contexts[m.id][cid]
                try:
                    renderer.render(spec, ctx)
                except TemplateError as exc:
                    problems.append(RenderProblem(m.id, cid, str(exc)))
    result.render_errors = len(problems)
    result.render_problems = problems
    return problems
