"""A few e-mails of a run, rendered as their recipients got them, made safe to embed in a report.

The report is a file people open from a CI artifact or a mail attachment,
so a preview must neither fetch anything (remote images would tell a
tracker who opened the report) nor carry working links for a customer: it
is rendered with a throw-away signing key (its unsubscribe links are
invalid) and remote image and style references are replaced by an inline
placeholder (:mod:`relmail.render.offline`, shared with ``relmail
preview``). The report embeds the HTML in a sandboxed ``srcdoc`` iframe (no
scripts, no same-origin access), and the page's Content-Security-Policy,
which the iframe inherits, blocks anything this rewriting missed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ..campaigns import load_campaign
from ..errors import NotFound, TemplateError
from ..render import MessageSpec, Renderer
from ..render.contexts import customer_contexts, load_catalog
from ..render.offline import offline_html
from ..store.models import Decision

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..project import Project

DEC = Decision.__table__
#: Not a secret: unsubscribe tokens signed with it are refused by ``relmail serve``.
PREVIEW_KEY = "relmail-report-preview-links-do-not-work"


def render_previews(project: Project, engine: Engine, run: dict[str, Any], messages: list[str], limit: int = 3) -> list[dict[str, Any]]:
    """One e-mail for each of the first ``limit`` of ``messages`` that have sends in the run.

    The recipient is the send with the highest score (ties: lowest id): the
    e-mail the campaign is most sure of. A message whose campaign entry or
    template is gone gets an entry with ``error`` instead of ``html``.
    """
    if limit <= 0 or not messages:
        return []

    try:
        camp = load_campaign(project, run["campaign"])
    except NotFound as exc:
        return [{"message": messages[0], "customer_id": None, "error": str(exc)}]
    renderer = Renderer(project, signing_key=PREVIEW_KEY)
    out: list[dict[str, Any]] = []
    as_of = datetime.fromisoformat(run["as_of"])
    with engine.connect() as conn:
        catalog = load_catalog(conn, as_of)
        for message_id in messages:
            if len(out) >= limit:
                break
            row = conn.execute(
                select(DEC.c.customer_id, DEC.c.score)
                .where(DEC.c.run_id == run["id"], DEC.c.message_id == message_id, DEC.c.action == "send")
                .order_by(DEC.c.score.desc(), DEC.c.customer_id)
                .limit(1)
            ).first()
            if row is None:
                continue
            entry: dict[str, Any] = {"message": message_id, "customer_id": row.customer_id, "score": round(float(row.score), 4)}
            try:
                m = camp.message(message_id)
                ctx = customer_contexts(conn, [row.customer_id], as_of, catalog, tuple(m.products)).get(row.customer_id)
                if ctx is None:
                    raise NotFound(f"customer {row.customer_id} no longer exists (erased?)")
                email = renderer.render(MessageSpec.from_campaign(camp, m, run["id"]), ctx)
                entry.update(subject=email.subject, locale=email.locale, template=email.template, html=offline_html(email.html))
            except (NotFound, TemplateError) as exc:
                entry["error"] = str(exc)
            out.append(entry)
    return out
