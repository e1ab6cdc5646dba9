"""The run report as one self-contained HTML file.

Jinja with autoescape builds the page; the charts are inline SVG from
:mod:`relmail.report.charts`; the only script is the suppression-list
search box, allowed by its hash in the page's Content-Security-Policy
(``default-src 'none'``: the page and its preview iframes can fetch
nothing, so it opens offline and tells no tracker it was read).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from jinja2 import Environment

from ..learn.outcomes import IRRITATION
from ..rules import HARD
from . import charts
from .figures import FEEDBACK
from .page import PAGE, SEARCH_JS


def _reason_color(code: str) -> str:
    if code in HARD:
        return charts.COLORS["hard"]
    return charts.COLORS.get(code, charts.COLORS["irritation"])


#: Outcomes a hold-out cannot have: it got no e-mail to open or click, so their "lift" is the senders' rate.
REACH = ("open", "click")


def verdict(outcome: str, low: float | None, high: float | None) -> str | None:
    """"better" or "worse" for the shop when the interval excludes zero, else None.

    More unsubscribes or complaints is worse; opens and clicks say how far the e-mail reached, not whether it
    changed anything, so they never read as a success.
    """
    if outcome in REACH or low is None or high is None or low <= 0 <= high:
        return None
    more = low > 0
    return ("worse" if more else "better") if outcome in IRRITATION else ("better" if more else "worse")


def build_html(figures: dict[str, Any], previews: list[dict[str, Any]] | None = None) -> str:
    """The report page for ``figures`` (from :func:`relmail.report.run_figures`) and rendered ``previews``."""
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = charts.fmt
    env.globals["pct"] = charts.pct
    script_hash = base64.b64encode(hashlib.sha256(SEARCH_JS.encode()).digest()).decode()
    messages = figures["messages"]
    actions = charts.for_any_screen(lambda width: charts.stacked_bars(
        "actions", [(m["message"], [(a, m[a]) for a in ("send", "holdout", "suppress")]) for m in messages], width))
    reasons = charts.for_any_screen(lambda width: charts.bars("reasons", [
        {"key": r["code"], "label": r["code"], "value": r["decisions"], "color": _reason_color(r["code"]),
         "title": f"{r['code']}: {charts.fmt(r['decisions'])} decisions — {r['summary']}"}
        for r in figures["reasons"]
    ], width))
    irritation = charts.for_any_screen(lambda width: charts.bars("irritation", [
        {"key": r["code"], "label": r["code"], "value": r["stopped"], "inner": r["only"], "color": charts.COLORS["irritation"],
         "title": f"{r['code']}: stopped {charts.fmt(r['stopped'])} e-mails — {r['summary']}"}
        for r in figures["irritation"]
    ], width))
    histograms = [(m, charts.histogram(m["message"], m["score"]["histogram"], m["score"]["threshold"])) for m in messages]
    reason_codes = list(dict.fromkeys(c for m in messages for c in m["reasons"]))
    lift_rows = []
    for e in figures["incrementality"]:
        for name, o in e["outcomes"].items():
            if name == "irritation" or (not o["rate_sent"] and not o["rate_holdout"]):
                continue
            lift_rows.append({"entry": e, "outcome": name, "reach": name in REACH, "verdict": verdict(name, o["low"], o["high"]), **o})
    scale = max([max(abs(r["low"] or 0), abs(r["high"] or 0)) for r in lift_rows] + [0.01])
    for r in lift_rows:
        r["chart"] = charts.interval(r["lift"], r["low"], r["high"], scale, r["verdict"])
    return env.from_string(PAGE).render(
        f=figures, run=figures["run"], totals=figures["totals"], messages=messages,
        actions_chart=actions, reasons_chart=reasons, irritation_chart=irritation, histograms=histograms,
        reason_codes=reason_codes, feedback_kinds=FEEDBACK, hard=HARD, colors=charts.COLORS, lift_rows=lift_rows,
        lift_scale=scale,
        previews=previews or [], search_js=SEARCH_JS, script_hash=script_hash, reason_color=_reason_color,
    )
