"""Run reports: one self-contained HTML file (or JSON) with a run's figures.

Public API::

    from relmail.report import run_figures, build_html, render_previews, write_report

    figures = run_figures(engine, "weekly:2026-W48", project=project)   # JSON-ready dict
    html = build_html(figures, render_previews(project, engine, figures["run"], ["newsletter"]))
    write_report(project, engine, "weekly:2026-W48", "report.html")     # both, into a file
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..render.offline import offline_html
from ..store.private import write_private
from .figures import SUPPRESSION_LIMIT, irritation_codes, run_figures
from .html import build_html
from .previews import render_previews

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..project import Project

__all__ = ["SUPPRESSION_LIMIT", "build_html", "irritation_codes", "offline_html", "render_previews", "run_figures", "write_report"]


def write_report(project: Project, engine: Engine, run_id: str, out: str | Path, previews: int = 3, **options: Any) -> dict[str, Any]:
    """Write the HTML report of ``run_id`` to ``out``; returns the figures it shows.

    ``options`` go to :func:`run_figures` (``bins``, ``window``, ``confidence``, ``suppression_limit``).
    """
    figures = run_figures(engine, run_id, project=project, **options)
    shown = render_previews(project, engine, figures["run"], [m["message"] for m in figures["messages"]], previews)
    path = Path(out)
    write_private(path, build_html(figures, shown))
    return figures
