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
@click.option("--window-days", type=float, default=None, help="Outcome window of the lift figures (default [model] window_days, else 14).")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True, help="Confidence level of the lift intervals.")
@pass_state
def run_cmd(state, run, out, fmt, previews, limit, bins, window_days, confidence) -> None:
    """Report on a run: sends, hold-outs and suppressions per message and reason, scores, lift.

    One self-contained HTML file (inline charts, no network fetches: it
    opens offline from a CI artifact) with the run summary, actions and
    reasons per message, score histograms with the threshold, what each
    irritation rule stopped, the lift of this and earlier runs with
    hold-outs, a searchable suppression list and sandboxed previews.
    --format json prints the same figures.

    \b
    Example:
      relmail report weekly:2026-W48 --out report.html
      relmail report weekly:2026-W48 --format json | jq '.totals'
    """
    from ..planning.output import counted
    from ..report import build_html, render_previews, run_figures
    from ..report.charts import pct

    days = window_days or float(state.project.settings.section("model").get("window_days", 14))
    figures = run_figures(state.engine, run, project=state.project, bins=bins, window=timedelta(days=days),
                          confidence=confidence, suppression_limit=limit or None)
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
    t = figures["totals"]
    click.echo(f"wrote {path}: {t['decisions']:,} decisions — {t['send']:,} send, {t['holdout']:,} hold-out, "
               f"{t['suppress']:,} suppressed; {counted(len(figures['incrementality']), 'lift entry', 'lift entries')}, "
               f"{counted(len(shown), 'preview')}")
    if t["deliveries"]:
        d = t["deliveries"]
        click.echo(f"deliveries: {d['accepted']:,} accepted, {d['uncertain']:,} uncertain (no reply, not resent), "
                   f"{d['deferred']:,} deferred, {d['rejected']:,} rejected, {d['failed']:,} failed")
        b = t["feedback"]
        click.echo(f"came back (of {t['customers_mailed']:,} customers mailed): {b['delivered']:,} delivered, {b['bounced_soft']:,} soft bounce, "
                   f"{b['bounced_blocked']:,} blocked (sender refused), {b['bounced_hard']:,} hard bounce, "
                   f"{b['complained']:,} complained, {b['unsubscribed']:,} unsubscribed, "
                   f"{b['opened']:,} opened ({pct(b['opened'], t['customers_mailed'])}), "
                   f"{b['clicked']:,} clicked ({pct(b['clicked'], t['customers_mailed'])})")


COMMANDS = [report]
