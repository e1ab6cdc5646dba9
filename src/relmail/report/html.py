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
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from ..learn.outcomes import IRRITATION
from ..rules import KINDS, REASON_KINDS
from . import charts
from .figures import FEEDBACK
from .page import PAGE, SEARCH_JS
from .trend import METRICS, RATES, measured


def _reason_color(code: str) -> str:
    return charts.KIND_COLORS[REASON_KINDS.get(code, "unknown")]


#: The feedback columns' headings: "delivered" is what the provider reported, not the acceptance of the hand-over.
FEEDBACK_LABELS = {"delivered": "reported delivered", "bounced_soft": "soft bounce", "bounced_blocked": "blocked",
                   "bounced_hard": "hard bounce"}
#: The trend's rows: label, and how a value and its change print.
TREND_LABELS = {
    "sent": "e-mails sent", "delivered_emails": "reported delivered", "suppression_rate": "suppressed",
    "customers_mailed": "customers mailed", "open_rate": "open rate", "click_rate": "click rate",
    "conversion_rate": "conversion rate", "unsubscribes_per_1000": "unsubscribes per 1,000",
    "complaints_per_1000": "complaints per 1,000", "revenue": "revenue",
}


def trend_value(metric: str, value: float | None) -> str:
    """A trend figure as it prints: 31.6% for a rate, 2.40 per 1,000, 12,345.50 revenue, 678 e-mails."""
    if value is None:
        return "–"
    if metric in RATES:
        return f"{100 * value:.1f}%"
    if metric.endswith("_per_1000"):
        return f"{value:.2f}"
    if metric == "revenue":
        return f"{value:,.2f}"
    return f"{int(value):,}"


def trend_change(metric: str, change: float | None) -> str:
    """A change from the previous run: +1.2 pts for a rate, in its own units otherwise."""
    if change is None:
        return "–"
    if metric in RATES:
        return f"{100 * change:+.1f} pts"
    if metric.endswith("_per_1000"):
        return f"{change:+.2f}"
    if metric == "revenue":
        return f"{change:+,.2f}"
    return f"{int(change):+,}"


def trend_verdict(metric: str, change: float | None) -> str | None:
    """"better" or "worse" for the shop when the figure moved and its direction means something; else None."""
    if not change or not METRICS[metric]:
        return None
    return "better" if change * METRICS[metric] > 0 else "worse"


def trend_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric: the newest run's figure, the previous run's, the change and a sparkline of every run."""
    if not runs:
        return []
    last, before = runs[-1], (runs[-2] if len(runs) > 1 else None)
    return [{"metric": m, "label": TREND_LABELS[m], "now": trend_value(m, last[m]),
             "before": trend_value(m, before[m]) if before else "–", "change": trend_change(m, last["change"][m]),
             "verdict": trend_verdict(m, last["change"][m]), "spark": charts.sparkline([r[m] for r in runs])}
            for m in METRICS]


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
    # The figures keep ISO 8601 (JSON); the page shows a time as the command line does: 2026-12-07 16:13 UTC.
    env.filters["utc"] = lambda iso: f"{datetime.fromisoformat(iso).astimezone(UTC):%Y-%m-%d %H:%M} UTC"
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
    revenue_rows = []
    for e in figures["incrementality"]:
        for name, o in e["outcomes"].items():
            if name == "irritation" or (not o["rate_sent"] and not o["rate_holdout"]):
                continue
            lift_rows.append({"entry": e, "outcome": name, "reach": name in REACH, "verdict": verdict(name, o["low"], o["high"]), **o})
        r = e.get("revenue_per_customer")
        if r and r.get("sent") is not None and (r["sent"] or r["holdout"]):
            more = r["low"] is not None and r["high"] is not None and (r["low"] > 0 or r["high"] < 0)
            revenue_rows.append({"entry": e, **r, "verdict": ("better" if r["low"] > 0 else "worse") if more else None})
    scale = max([max(abs(r["low"] or 0), abs(r["high"] or 0)) for r in lift_rows] + [0.01])
    for r in lift_rows:
        r["chart"] = charts.interval(r["lift"], r["low"], r["high"], scale, r["verdict"])
    money_scale = max([max(abs(r["low"] or 0), abs(r["high"] or 0)) for r in revenue_rows] + [0.01])
    for r in revenue_rows:
        r["chart"] = charts.interval(r["lift"], r["low"], r["high"], money_scale, r["verdict"], money=True)
    return env.from_string(PAGE).render(
        f=figures, run=figures["run"], totals=figures["totals"], messages=messages,
        actions_chart=actions, reasons_chart=reasons, irritation_chart=irritation, histograms=histograms,
        reason_codes=reason_codes, feedback_kinds=FEEDBACK, feedback_labels=FEEDBACK_LABELS, colors=charts.COLORS,
        kind_colors=charts.KIND_COLORS, kinds=KINDS, lift_rows=lift_rows, lift_scale=scale, revenue_rows=revenue_rows, money_scale=money_scale,
        trend=figures.get("trend", []), trend_rows=trend_rows(figures.get("trend", [])), trend_labels=TREND_LABELS,
        metrics=list(METRICS), trend_value=trend_value, measured=measured,
        previews=previews or [], search_js=SEARCH_JS, script_hash=script_hash, reason_color=_reason_color,
    )
