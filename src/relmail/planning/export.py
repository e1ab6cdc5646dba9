"""A run's decisions as a CSV file for a colleague: ``relmail runs export``.

One row per decision, with the reason codes and, in ``explanation``, the
sentence ``relmail why`` gives for each (``CODE: sentence; ...``), built
from the decision's logged features as ``why`` builds it (``why`` adds when
and from where an opt-out came, a look-up in the store per customer). The customer's
contact details are columns only when asked for (``with_contact``): a
suppression list without them can go anywhere an id may. A text cell a
spreadsheet would run as a formula starts with an apostrophe
(:mod:`relmail.store.spreadsheet_cells`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..errors import ValidationError
from ..store.models import Customer, Decision
from ..store.private import open_private
from ..store.spreadsheet_cells import writer as spreadsheet_writer
from .runs import ACTIONS, resolve_run
from .why import ALL_PASSED, because

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

DEC, CUS = Decision.__table__, Customer.__table__
#: Columns of :func:`export_run`'s CSV, and the contact columns ``with_contact`` adds.
EXPORT_FIELDS = ["run_id", "customer_id", "message_id", "action", "score", "expected_value", "reasons", "explanation"]
CONTACT_FIELDS = ["email", "first_name", "last_name", "locale"]


def export_run(engine: Engine, run: str, out: str | Path, *, actions: Sequence[str] = ACTIONS, with_contact: bool = False,
               campaign: str | None = None, batch: int = 10_000) -> tuple[str, int]:
    """Write one CSV row per decision of ``run`` with an action in ``actions``; returns (run id, rows).

    ``explanation`` holds ``CODE: sentence`` per reason code, the sentences
    of ``relmail why``. Contact columns (:data:`CONTACT_FIELDS`) only with
    ``with_contact``; an erased customer's are empty. Rows stream from the
    database ``batch`` at a time, in customer order.
    """
    unknown = sorted(set(actions) - set(ACTIONS))
    if unknown or not actions:
        raise ValidationError(f"--actions: {', '.join(unknown) or 'none given'}; choose from {', '.join(ACTIONS)}")
    cols = [DEC.c.customer_id, DEC.c.message_id, DEC.c.action, DEC.c.score, DEC.c.expected_value, DEC.c.reasons, DEC.c.features]
    source = DEC
    if with_contact:
        cols += [CUS.c.email, CUS.c.first_name, CUS.c.last_name, CUS.c.locale]
        source = DEC.outerjoin(CUS, CUS.c.id == DEC.c.customer_id)
    rows = 0
    with engine.connect() as conn:
        run_id = resolve_run(conn, run, campaign)
        q = (select(*cols).select_from(source).where(DEC.c.run_id == run_id, DEC.c.action.in_(list(actions)))
             .order_by(DEC.c.customer_id, DEC.c.id))
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(q)
        with open_private(out, "w", newline="", encoding="utf-8") as fh:
            writer = spreadsheet_writer(fh)
            writer.writerow(EXPORT_FIELDS + (CONTACT_FIELDS if with_contact else []))
            for r in result:
                sentences = because(r[5].split(), r[6] or {}, float(r[3]))
                text = "; ".join(f"{code}: {sentence}" for code, sentence in sentences) or (ALL_PASSED if r[2] == "send" else "")
                line = [run_id, r[0], r[1], r[2], round(float(r[3]), 4), round(float(r[4]), 4), r[5], text]
                if with_contact:
                    line += ["" if v is None else v for v in r[7:11]]
                writer.writerow(line)
                rows += 1
    return run_id, rows
