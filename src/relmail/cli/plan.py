"""``relmail plan`` and ``relmail why``: decide who gets what, and say why."""

from __future__ import annotations

import contextlib
import sys

import click

from ._common import State, echo_json, echo_table, json_option, pass_state, show_progress


@click.command("plan")
@click.argument("campaign")
@click.option("--window", "-w", required=True,
              help="ISO week (2026-W48), day, month, this-week / today / this-month, or auto (see --cadence).")
@click.option("--cadence", type=click.Choice(["weekly", "daily", "monthly"]),
              help="With --window auto: the current ISO week, day or month (default: the campaign's schedule).")
@click.option("--as-of", help="The plan's 'now' (ISO 8601 with zone); default: now, capped at the window's end.")
@click.option("--dry-run", is_flag=True, help="Compute everything, write nothing to the database.")
@click.option("--replan", is_flag=True, help="Replace the decisions of an existing run that were not delivered yet.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write the decisions to FILE (.csv, .jsonl or .md).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "md"]), help="Format of --out (default: from its extension).")
@click.option("--limit", default=200, show_default=True, help="Rows of the suppression list in Markdown output.")
@click.option("--diff-against", type=click.Path(dir_okay=False), help="A previous plan file (.csv/.jsonl): show who moved.")
@click.option("--max-suppression-rate", type=click.FloatRange(0, 1), help="Gate: fail (exit 20) above this share suppressed.")
@click.option("--min-sends", type=click.IntRange(0), help="Gate: fail (exit 21) with fewer sends.")
@click.option("--render-sample", default=3, show_default=True, type=click.IntRange(0),
              help="Gate: render each message for this many of its recipients; any failure exits 22 (0: skip).")
@click.option("--workers", type=click.IntRange(1), help="Processes deciding customer ranges in parallel (default: one per core; "
              "an audience under 50,000 customers per worker stays in one process).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where the workers run: local processes, or a Dask cluster (PostgreSQL only).")
@click.option("--scheduler", help="Dask scheduler address for --executor dask (default: $RELMAIL_DASK_SCHEDULER).")
@json_option
@pass_state
def plan_command(state: State, campaign, window, cadence, as_of, dry_run, replan, out, fmt, limit, diff_against,
                 max_suppression_rate, min_sends, render_sample, workers, executor, scheduler, as_json) -> None:
    """Plan CAMPAIGN for a window: who gets which message, who is held out, who is suppressed and why.

    Writes one run and one decision per (customer, message) to the ledger,
    unless --dry-run. A window is planned once; --replan replaces what was
    not delivered yet. Gates fail the command with their own exit code:
    render errors 22, --max-suppression-rate 20, --min-sends 21. --window auto
    is the current window of the campaign's schedule in the project's time
    zone. Writing a plan holds the run's lock: while a sender or another
    planner works on the run, the command exits 9.

    \b
    Example:
      relmail plan weekly --window 2026-W48
      relmail plan weekly --window auto --dry-run --out plan.md
      relmail plan weekly --window this-week --dry-run --out plan.md \\
          --diff-against last-plan.jsonl --max-suppression-rate 0.95 --min-sends 100
      relmail plan weekly --window 2026-W48 --replan --json
      relmail plan weekly --window 2026-W48 --executor dask --scheduler tcp://10.0.0.5:8786
    """
    from ..campaigns import load_campaign
    from ..planning.gate import render_sample as render_check
    from ..planning.output import check_gates, diff, read_plan, reason_rows, summary_rows, write_plan
    from ..planning.run import plan, run_id_for
    from ..store import locks
    from ..windows import parse_time, resolve_window

    old = read_plan(diff_against) if diff_against else None
    camp = load_campaign(state.project, campaign)
    win = resolve_window(window, state.project.settings.timezone, cadence=cadence, campaign=camp)
    if window.strip() == "auto" and not as_json:
        click.echo(f"Window auto -> {win.key} ({win.start:%Y-%m-%d %H:%M} to {win.end:%Y-%m-%d %H:%M} UTC, {win.timezone})")
    with contextlib.ExitStack() as held:
        if not dry_run:
            # A replan must not delete the decisions of a run a sender is working on.
            held.enter_context(locks.acquire(state.engine, run_id_for(camp.name, win.key),
                                             timeout=locks.timeout_for(state.project)))
        bar = None

        def progress(decided: int, audience: int) -> None:
            nonlocal bar
            if bar is None:
                bar = held.enter_context(click.progressbar(length=audience, label="Deciding customers",
                                                           file=sys.stderr))
            bar.update(decided - bar.pos)

        result = plan(state.project, state.engine, camp, win,
                      as_of=parse_time(as_of) if as_of else None, dry_run=dry_run, replan=replan,
                      workers=workers, executor=executor, scheduler=scheduler, keep_features=out is not None,
                      progress=progress if show_progress() and not as_json else None)
    render_check(state.project, state.engine, camp, result, render_sample)
    written = write_plan(result, out, fmt, limit) if out else None
    moves = diff(old, result) if old is not None else None
    if as_json:
        payload = result.summary()
        if out:
            payload["out"] = {"path": out, "format": written}
        if moves is not None:
            payload["moved"] = [m.__dict__ for m in moves]
        echo_json(payload)
    else:
        mode = "dry run: nothing written" if dry_run else ("replanned" if replan else "written")
        click.echo(f"Run {result.run_id} as of {result.as_of:%Y-%m-%d %H:%M} UTC ({mode})")
        if result.kept:
            click.echo(f"Kept {result.kept:,} decisions already delivered or in flight; replaced {result.replaced:,}.")
        click.echo("")
        echo_table(*reversed(summary_rows(result)))
        headers, rows = reason_rows(result)
        if rows:
            click.echo("")
            echo_table(rows, headers)
        for message_id, facts in result.models.items():
            missing = f"; features the plan lacks: {', '.join(facts['missing_features'])}" if facts["missing_features"] else ""
            click.echo(f"Scored {message_id} with model {facts['version']} (outcome {facts['outcome']}){missing}.")
        click.echo(f"\nSuppression rate {result.suppression_rate:.1%}; render errors {result.render_errors}.")
        for warning in result.warnings:
            click.echo(f"Warning: {warning}", err=True)
        for problem in result.render_problems[:limit]:
            click.echo(f"  render error: {problem}")
        if out:
            click.echo(f"Wrote {len(result.decisions):,} decisions to {out} ({written}).")
        if moves is not None:
            click.echo(f"\n{len(moves):,} moved since {diff_against}:")
            for m in moves[:limit]:
                why = " ".join(m.reasons_after) if m.after != "send" else "was " + (" ".join(m.reasons_before) or m.before)
                click.echo(f"  {m.customer_id}  {m.message_id}: {m.before} -> {m.after}  ({why})")
            if len(moves) > limit:
                click.echo(f"  ... and {len(moves) - limit:,} more")
    check_gates(result, max_suppression_rate, min_sends)


@click.command("why")
@click.argument("customer")
@click.option("--run", "run_id", help="Run id (campaign:window); default: the customer's latest run.")
@click.option("--top", default=3, show_default=True, help="Score contributions to show per message.")
@json_option
@pass_state
def why_command(state: State, customer, run_id, top, as_json) -> None:
    """Explain every decision for CUSTOMER: score, what made it, each rule that fired and the data behind it.

    \b
    Example:
      relmail why C0000003
      relmail why C0000007 --run weekly:2026-W48 --json
    """
    from ..planning.why import explain, format_explanations

    facts, explanations = explain(state.engine, customer, run_id)
    if as_json:
        echo_json({**facts, "as_of": facts["as_of"].isoformat(), "decisions": [e.as_dict() for e in explanations]})
    else:
        click.echo(format_explanations(facts, explanations, top))


COMMANDS = [plan_command, why_command]
