"""``relmail report RUN --out report.html``: a run's report as one self-contained HTML file, or JSON.

``report`` is a group shared with other stages (``report incrementality``
lives in :mod:`relmail.cli.model`). A first argument that is not one of its
subcommands is taken as a run id for ``report run``, so ``relmail report
weekly:2026-W48 --out r.html`` and ``relmail report run weekly:2026-W48
--out r.html`` are the same command.
"""

from __future__ import annotations

from datetime import timedelta

import click

from ._common import echo_json, pass_state


class ReportGroup(click.Group):
    """A group whose unknown first argument is the RUN of its default subcommand ``run``."""

    default = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = [self.default, *args]
        return super().parse_args(ctx, args)


def _group() -> ReportGroup:
    """The ``report`` group, taking over the subcommands another module registered first."""
    from . import cli as root

    group = ReportGroup("report", help="Reports on runs: `relmail report RUN --out report.html`, `relmail report incrementality`.")
    existing = root.commands.get("report")
    if isinstance(existing, click.Group):
        group.commands.update(existing.commands)
    return group


report = _group()


@report.command("run")
@click.argument("run")
@click.option("--out", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write the report here (default: <run>.html, or stdout with --format json).")
@click.option("--format", "fmt", type=click.Choice(["html", "json"]), default="html", show_default=True,
              help="html: the page for people; json: the same figures for machines.")
@click.option("--previews", type=click.IntRange(min=0), default=3, show_default=True, help="Rendered e-mails to show (one per message; 0: none).")
@click.option("--limit", type=click.IntRange(min=0), default=5000, show_default=True, help="Suppression rows to include (0: all).")
@click.option("--bins", type=click.IntRange(min=1, max=200), default=20, show_default=True, help="Bars in each score histogram.")
@click.option("--trend", "trend_runs", type=click.IntRange(min=0), default=8, show_default=True,
              help="Runs of the campaign, up to this one, in the week-on-week trend (0: none).")
@click.option("--window-days", type=float, default=None, help="Outcome window of the lift figures (default [model] window_days, else 14).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True, help="Confidence level of the lift intervals.")
@pass_state
def run_cmd(state, run, out, fmt, previews, limit, bins, trend_runs, window_days, confidence) -> None:
    """Report on a run: week on week, sends, hold-outs and suppressions per message and reason, scores, lift.

    One self-contained HTML file (inline charts, no network fetches: it
    opens offline from a CI artifact) with the run summary, the campaign's
    last runs and the change from the run before, actions and
    reasons per message, score histograms with the threshold, what each
    irritation rule stopped, the lift of this and earlier runs with
    hold-outs, a searchable suppression list and sandboxed previews.
    --format json prints the same figures.

    \b
    Example:
      relmail report weekly:2026-W48 --out report.html
      relmail report weekly:2026-W48 --format json | jq '.totals'
    """
    from ..report import build_html, render_previews, run_figures

    days = window_days or float(state.project.settings.section("model").get("window_days", 14))
    figures = run_figures(state.engine, run, project=state.project, bins=bins, window=timedelta(days=days),
                          confidence=confidence, suppression_limit=limit or None, trend_runs=trend_runs)
    if fmt == "json":
        if out:
            import json

            from ..store.private import open_private

            with open_private(out, "w", encoding="utf-8") as fh:
                json.dump(figures, fh, indent=2, ensure_ascii=False)
            click.echo(f"wrote {out}", err=True)
        else:
            echo_json(figures)
        return
    shown = render_previews(state.project, state.engine, figures["run"], [m["message"] for m in figures["messages"]], previews)
    path = out or f"{run.replace(':', '-')}.html"
    from ..store.private import write_private

    write_private(path, build_html(figures, shown))
    for line in summary_lines(figures, path, len(shown)):
        click.echo(line)


def summary_lines(figures: dict, path: str, previews: int) -> list[str]:
    """What ``relmail report RUN --out FILE`` prints: the run in one line, its deliveries, what came back, the trend."""
    from ..planning.output import counted
    from ..report.charts import pct

    t, run = figures["totals"], figures["run"]
    lift = f"{counted(len(figures['incrementality']), 'lift entry', 'lift entries')}, {counted(previews, 'preview')}"
    if run["source"] == "events":
        lines = [f"wrote {path}: run {run['id']} holds no decisions: a mailing history that only e-mail events name "
                 f"(a send made outside relmail, such as the demo's past weeks): {counted(t['sent'], 'e-mail')} "
                 f"to {counted(t['customers_mailed'], 'customer')} by those events; {lift}"]
    else:
        imported = " (imported with relmail runs import: sent elsewhere, no deliveries)" if run["source"] == "imported" else ""
        lines = [f"wrote {path}: {t['decisions']:,} decisions — {t['send']:,} send, {t['holdout']:,} hold-out, "
                 f"{t['suppress']:,} suppressed{imported}; {lift}"]
    if t["deliveries"]:
        d = t["deliveries"]
        lines.append(f"deliveries: {d['accepted']:,} accepted by the mail server or ESP, {d['uncertain']:,} uncertain (no reply, not resent), "
                     f"{d['deferred']:,} deferred, {d['rejected']:,} refused at send (not mailed; {t['refused_hard']:,} hard bounce), "
                     f"{d['failed']:,} failed, {d['withdrawn']:,} withdrawn (opted out, complained or hard-bounced after the plan)")
    if t["customers_mailed"]:
        b, mailed = t["feedback"], t["customers_mailed"]
        lines.append(f"came back (of {mailed:,} customers mailed): {b['delivered']:,} reported delivered by the provider, "
                     f"{b['bounced_soft']:,} soft bounce, {b['bounced_blocked']:,} blocked (sender refused), {b['bounced_hard']:,} hard bounce, "
                     f"{b['complained']:,} complained, {b['unsubscribed']:,} unsubscribed, "
                     f"{b['opened']:,} opened ({pct(b['opened'], mailed)}), {b['clicked']:,} clicked ({pct(b['clicked'], mailed)})")
    return lines + trend_lines(figures)


def trend_lines(figures: dict) -> list[str]:
    """The week-on-week table: one row per figure, one column per run (oldest first), the change from the run before."""
    from ..report.html import TREND_LABELS, trend_change, trend_value
    from ..report.trend import METRICS, measured

    runs = figures.get("trend") or []
    if not runs:
        return []
    campaign = figures["run"]["campaign"]
    if len(runs) == 1:
        head = f"week on week: the first run of {campaign} in the ledger; the change shows once there is a run before it"
    else:
        head = (f"week on week: the last {len(runs)} runs of {campaign}, each over its first {measured(runs[-1]['measured_days'])} "
                f"(change: this run against the one before)")
    table = [["figure", *[r["window"] for r in runs], "change"]]
    table += [[TREND_LABELS[m], *[trend_value(m, r[m]) for r in runs], trend_change(m, runs[-1]["change"][m])] for m in METRICS]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["", head] + ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                         for row in table]

COMMANDS = [report]
