"""Inline SVG charts drawn by our own code: no chart library, nothing fetched, prints as it shows.

Every drawn element carries its number in a ``data-value`` attribute and a
``<title>`` (the browser's tooltip), so a test or a screen reader reads the
same figures a person sees. Labels go through :func:`markupsafe.escape`:
message ids and reason codes come from campaign files.
"""

from __future__ import annotations

from markupsafe import Markup, escape

#: One colour per action, and the irritation chart's, shared by every chart and the legend.
COLORS = {
    "send": "#2563eb",
    "holdout": "#f59e0b",
    "suppress": "#cbd5e1",
    "irritation": "#7c3aed",
    "only": "#4c1d95",
}
#: One colour per kind of reason code (:data:`relmail.rules.KINDS`): the "Why not" chart, its legend and badges.
KIND_COLORS = {
    "compliance": "#dc2626",
    "irritation": "#7c3aed",
    "experiment": "#f59e0b",
    "value": "#0d9488",
    "arbitration": "#64748b",
    "failure": "#111827",
    "unknown": "#94a3b8",
}
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""


def fmt(n: float | int | None) -> str:
    """A count as people read it: 12,345."""
    if n is None:
        return "–"
    return f"{int(n):,}" if float(n).is_integer() else f"{n:,.2f}"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def for_any_screen(draw) -> Markup:
    """A chart drawn twice, for a desktop and for a phone (the page shows one): an SVG scales its text with its
    width, so one drawing 760 units wide shrinks a phone's labels to an unreadable 5 px."""
    return Markup(f'<div class="only-wide">{draw(760)}</div><div class="only-narrow">{draw(380)}</div>')


def stacked_bars(chart: str, rows: list[tuple[str, list[tuple[str, int]]]], width: int = 760, label_width: int | None = None) -> Markup:
    """Horizontal stacked bars, one row per label; segments are (key, value) coloured by key."""
    row_h, gap = 26, 10
    label_width = label_width or (150 if width >= 600 else 125)
    bar_w = width - label_width - 90
    peak = max([sum(v for _, v in segs) for _, segs in rows] + [1])
    height = len(rows) * (row_h + gap) + 4
    parts = [f'<svg class="chart" data-chart="{chart}" viewBox="0 0 {width} {height}" width="100%" role="img" {FONT}>']
    for i, (label, segs) in enumerate(rows):
        y = i * (row_h + gap) + 2
        total = sum(v for _, v in segs)
        parts.append(f'<g class="bar-row" data-label="{escape(label)}" data-total="{total}">')
        parts.append(f'<text x="{label_width - 8}" y="{y + row_h * 0.68:.1f}" text-anchor="end" font-size="13" fill="#1e293b">{escape(label)}</text>')
        x = float(label_width)
        for key, value in segs:
            w = bar_w * value / peak
            parts.append(
                f'<rect class="seg" data-key="{escape(key)}" data-value="{value}" x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row_h}" '
                f'fill="{COLORS.get(key, "#94a3b8")}"><title>{escape(label)} · {escape(key)}: {fmt(value)} ({pct(value, total)})</title></rect>'
            )
            if w > 38:
                ink = "#1e293b" if key in ("suppress", "holdout") else "#ffffff"
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + row_h * 0.68:.1f}" text-anchor="middle" font-size="12" fill="{ink}">{fmt(value)}</text>')
            x += w
        parts.append(f'<text class="total" x="{x + 6:.1f}" y="{y + row_h * 0.68:.1f}" font-size="12" fill="#475569">{fmt(total)}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(chart: str, rows: list[dict], width: int = 760, label_width: int | None = None) -> Markup:
    """Horizontal bars: rows of {label, value, color, key, inner (optional darker part), title}."""
    row_h, gap = 20, 8
    label_width = label_width or (230 if width >= 600 else 160)
    bar_w = width - label_width - 70
    peak = max([r["value"] for r in rows] + [1])
    height = max(len(rows), 1) * (row_h + gap) + 4
    parts = [f'<svg class="chart" data-chart="{chart}" viewBox="0 0 {width} {height}" width="100%" role="img" {FONT}>']
    for i, r in enumerate(rows):
        y = i * (row_h + gap) + 2
        w = bar_w * r["value"] / peak
        parts.append(f'<g class="bar-row" data-key="{escape(r["key"])}" data-value="{r["value"]}">')
        parts.append(f'<text x="{label_width - 8}" y="{y + 14}" text-anchor="end" font-size="12" fill="#1e293b">{escape(r["label"])}</text>')
        parts.append(f'<rect x="{label_width}" y="{y}" width="{w:.2f}" height="{row_h}" rx="2" fill="{r["color"]}"><title>{escape(r["title"])}</title></rect>')
        if r.get("inner"):
            wi = bar_w * r["inner"] / peak
            parts.append(f'<rect class="inner" data-value="{r["inner"]}" x="{label_width}" y="{y}" width="{wi:.2f}" height="{row_h}" rx="2" fill="{COLORS["only"]}">'
                         f'<title>{escape(r["label"])}: {fmt(r["inner"])} stopped by this rule alone</title></rect>')
        parts.append(f'<text x="{label_width + w + 6:.1f}" y="{y + 14}" font-size="12" fill="#475569">{fmt(r["value"])}</text></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def histogram(message: str, hist: dict[str, list[int]], threshold: float | None, width: int = 340, height: int = 168) -> Markup:
    """Score distribution of one message, stacked by action, with the relevance threshold as a dashed line.

    The axes say what they count: decisions (up) per relevance score (across).
    """
    left, bottom, top = 44, 38, 16
    plot_w, plot_h = width - left - 8, height - bottom - top
    n = len(next(iter(hist.values()), [])) or 1
    totals = [sum(hist.get(a, [0] * n)[i] for a in ("send", "holdout", "suppress")) for i in range(n)]
    peak = max(totals + [1])
    bw = plot_w / n
    thr = "" if threshold is None else f"{threshold:g}"
    parts = [f'<svg class="chart histogram" data-chart="scores" data-message="{escape(message)}" data-threshold="{thr}" '
             f'viewBox="0 0 {width} {height}" width="100%" role="img" {FONT}>']
    base = top + plot_h
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#94a3b8"/>')
    parts.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="10" fill="#64748b">{fmt(peak)}</text>')
    parts.append(f'<text x="{left - 4}" y="{base}" text-anchor="end" font-size="10" fill="#64748b">0</text>')
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<text x="{left + tick * plot_w:.1f}" y="{base + 14}" text-anchor="middle" font-size="10" fill="#64748b">{tick:g}</text>')
    parts.append(f'<text class="axis-title" data-axis="x" x="{left + plot_w / 2:.1f}" y="{base + 31}" text-anchor="middle" font-size="11" '
                 f'fill="#475569">relevance score</text>')
    parts.append(f'<text class="axis-title" data-axis="y" x="0" y="0" transform="translate(11 {top + plot_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle" font-size="11" fill="#475569">decisions</text>')
    for i in range(n):
        y = base
        lo, hi = i / n, (i + 1) / n
        for action in ("send", "holdout", "suppress"):
            v = hist.get(action, [0] * n)[i]
            if not v:
                continue
            h = plot_h * v / peak
            y -= h
            parts.append(f'<rect class="bin" data-action="{action}" data-bin="{i}" data-value="{v}" x="{left + i * bw + 0.5:.2f}" y="{y:.2f}" '
                         f'width="{max(bw - 1, 0.5):.2f}" height="{h:.2f}" fill="{COLORS[action]}"><title>score {lo:.2f}–{hi:.2f} · {action}: {fmt(v)}</title></rect>')
    if threshold is not None:
        x = left + min(max(threshold, 0.0), 1.0) * plot_w
        parts.append(f'<line class="threshold" x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{base}" stroke="#dc2626" stroke-width="1.5" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{x + 4:.1f}" y="{top + 2}" font-size="10" fill="#dc2626">threshold {thr}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline(values: list[float | None], width: int = 72, height: int = 22) -> Markup:
    """A run-by-run line of one figure, oldest left, the newest run a dot; a run without the figure leaves a gap."""
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return Markup("")
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    step = (width - 8) / max(len(values) - 1, 1)

    def point(i: int, v: float) -> str:
        return f"{4 + i * step:.1f},{height - 4 - (v - lo) / span * (height - 8):.1f}"

    lines, run = [], []
    for i, v in enumerate(values):
        if v is None:
            lines.append(run)
            run = []
        else:
            run.append(point(i, v))
    lines.append(run)
    parts = [f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'data-values="{escape(" ".join("" if v is None else f"{v:g}" for v in values))}">']
    parts += [f'<polyline points="{" ".join(r)}" fill="none" stroke="#2563eb" stroke-width="1.5"/>' for r in lines if len(r) > 1]
    if values[-1] is not None:
        x, y = point(len(values) - 1, values[-1]).split(",")
        parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="#2563eb"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


#: The colour of an interval by what the lift means for the shop (None: not told from zero, or no lift at all).
VERDICT_COLORS = {"better": "#16a34a", "worse": "#dc2626", None: "#64748b"}


def interval(lift: float | None, low: float | None, high: float | None, scale: float, verdict: str | None = None,
             width: int = 220, height: int = 22, money: bool = False) -> Markup:
    """One confidence interval on a scale symmetric around zero lift (a forest-plot row), coloured by ``verdict``.

    ``money``: the lift is an amount (revenue per customer), not a share in points.
    """
    if lift is None or low is None or high is None:
        return Markup('<span class="muted">–</span>')
    mid = width / 2

    def x(v: float) -> float:
        return mid + max(-1.0, min(1.0, v / scale)) * (mid - 6)

    color = VERDICT_COLORS[verdict]
    return Markup(
        f'<svg class="ci" data-lift="{lift:.6f}" data-low="{low:.6f}" data-high="{high:.6f}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
        f'<line x1="{mid}" y1="2" x2="{mid}" y2="{height - 2}" stroke="#cbd5e1"/>'
        f'<line x1="{x(low):.1f}" y1="{height / 2}" x2="{x(high):.1f}" y2="{height / 2}" stroke="{color}" stroke-width="3" stroke-linecap="round"/>'
        f'<circle cx="{x(lift):.1f}" cy="{height / 2}" r="4.5" fill="{color}"/>'
        + (f"<title>lift {lift:+.2f} per customer, {low:+.2f} to {high:+.2f}</title></svg>" if money else
           f"<title>lift {100 * lift:+.2f} points, {100 * low:+.2f} to {100 * high:+.2f}</title></svg>")
    )
