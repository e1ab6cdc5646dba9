"""``relmail plan`` and ``relmail why``: decide who gets what, and say why."""

from __future__ import annotations

import contextlib
import sys

import click

from ..errors import RelmailError
from ._common import State, customer_id_of, echo_json, echo_table, json_option, pass_state, show_progress


@click.command("plan")
@click.argument("campaign")
@click.option("--window", "-w", required=True,
              help="ISO week (2026-W48), day, month; this-week / next-week / today / tomorrow / this-month / next-month; "
                   "or auto: the current window of the campaign's schedule (see --cadence).")
@click.option("--cadence", type=click.Choice(["weekly", "daily", "monthly"]),
              help="With --window auto: the current ISO week, day or month (default: the campaign's schedule).")
@click.option("--as-of", help="The plan's 'now' (ISO 8601 with zone); default: now, kept within the window "
              "(its start for a window to come, its end for a past one).")
@click.option("--dry-run", is_flag=True, help="Compute everything, write nothing to the database.")
@click.option("--replan", is_flag=True, help="Replace the decisions of an existing run that were not delivered yet.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write the decisions to FILE (.csv, .jsonl or .md).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "md"]), help="Format of --out (default: from its extension).")
@click.option("--limit", default=200, show_default=True, help="Rows of the suppression list and of the changes in Markdown and text output.")
@click.option("--diff-against", "baseline", metavar="RUN|FILE",
              help="Show what changed against a stored run (weekly:2026-W49, or last: the campaign's newest run) "
                   "or a plan file (.csv/.jsonl).")
@click.option("--max-suppression-rate", type=click.FloatRange(0, 1), help="Gate: fail (exit 20) above this share suppressed.")
@click.option("--min-sends", type=click.IntRange(0), help="Gate: fail (exit 21) with fewer sends.")
@click.option("--render-sample", default=3, show_default=True, type=click.IntRange(0),
              help="Gate: recipients drawn per template variant the plan sends (at least one per locale), plus "
                   "its fullest and emptiest recipient; any failure exits 22 (0: skip).")
@click.option("--workers", type=click.IntRange(1), help="Processes deciding customer ranges in parallel (default: one per core; "
              "an audience under 50,000 customers per worker stays in one process).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where the workers run: local processes, or a Dask cluster (PostgreSQL only).")
@click.option("--scheduler", help="Dask scheduler address for --executor dask (default: $RELMAIL_DASK_SCHEDULER).")
@json_option
@pass_state
def plan_command(state: State, campaign, window, cadence, as_of, dry_run, replan, out, fmt, limit, baseline,
                 max_suppression_rate, min_sends, render_sample, workers, executor, scheduler, as_json) -> None:
    """Plan CAMPAIGN for a window: who gets which message, who is held out, who is suppressed and why.

    Writes one run and one decision per (customer, message) to the ledger,
    unless --dry-run. A window is planned once; --replan replaces what was
    not delivered yet. Writing a plan holds the run's lock: while a sender
    or another planner works on the run, the command exits 9.

    Gates fail the command with their own exit code, after everything is
    printed and written: a template variant that fails to render for a
    recipient 22, --max-suppression-rate 20, --min-sends 21.

    \b
    Example:
      relmail plan weekly --window 2026-W48
      relmail plan weekly --window next-week --dry-run --out plan.md --diff-against last
      relmail plan weekly --window this-week --dry-run --out plan.md \\
          --diff-against main-plan.jsonl --max-suppression-rate 0.95 --min-sends 100
      relmail plan weekly --window 2026-W48 --replan --json
      relmail plan weekly --window 2026-W48 --executor dask --scheduler tcp://10.0.0.5:8786
    """
    from ..campaigns import load_campaign
    from ..errors import NotFound
    from ..planning.diff import diff, load_baseline
    from ..planning.gate import render_sample as render_gate
    from ..planning.output import check_gates, counted, failed_gates, write_plan
    from ..planning.run import plan
    from ..windows import parse_time

    camp = load_campaign(state.project, campaign)
    # Read before planning: a replan replaces the run 'last' may name.
    old = None
    if baseline:
        try:
            old = load_baseline(state.engine, baseline, camp.name)
        except NotFound:
            if baseline.strip() != "last":
                raise
            # A fresh install's first scheduled preview: nothing to compare with is no failure.
            click.echo(f"Note: campaign '{camp.name}' has no run yet: no changes to show (--diff-against last).", err=True)
    with contextlib.ExitStack() as held:
        bar = None

        def progress(decided: int, audience: int) -> None:
            nonlocal bar
            if bar is None:
                bar = held.enter_context(click.progressbar(length=audience, label="Deciding customers",
                                                           file=sys.stderr))
            bar.update(decided - bar.pos)

        result = plan(state.project, state.engine, camp, window, cadence=cadence,
                      as_of=parse_time(as_of) if as_of else None, dry_run=dry_run, replan=replan,
                      workers=workers, executor=executor, scheduler=scheduler, keep_features=out is not None,
                      progress=progress if show_progress() and not as_json else None)
    render_gate(state.project, state.engine, camp, result, render_sample)
    changes = diff(old, result) if old is not None else None
    written = write_plan(result, out, fmt, limit, changes) if out else None
    if as_json:
        payload = result.summary()
        if out:
            payload["out"] = {"path": out, "format": written}
        if changes is not None:
            payload["diff"] = changes.as_dict()
        # Which gates failed, for a pipeline that reads the JSON (the exit code is the first one's).
        payload["gates_failed"] = [f.as_dict() for f in failed_gates(result, max_suppression_rate, min_sends)]
        echo_json(payload)
    else:
        _print_plan(result, window, dry_run, replan, limit, changes, render_sample)
        if out:
            if written == "md":
                # A pull-request comment: the counts and the suppression list, not every decision.
                held = sum(m.holdout + m.suppress for m in result.messages)
                click.echo(f"Wrote the summary of {len(result.decisions):,} decisions to {out} (md), with "
                           f"{min(held, limit):,} of the {counted(held, 'suppression or hold-out', 'suppressions and hold-outs')}.")
            else:
                click.echo(f"Wrote {len(result.decisions):,} decisions to {out} ({written}).")
    check_gates(result, max_suppression_rate, min_sends)


def _print_plan(result, window: str, dry_run: bool, replan: bool, limit: int, changes, render_sample: int = 3) -> None:
    from ..planning.output import change_rows, counted, gate_rows, kept_sentence, rate_basis, reason_rows, summary_rows

    win = result.window
    if window.strip() == "auto":
        click.echo(f"Window auto -> {win.key} ({win.start:%Y-%m-%d %H:%M} to {win.end:%Y-%m-%d %H:%M} UTC, {win.timezone})")
    mode = "dry run: nothing written" if dry_run else ("replanned" if replan else "written")
    click.echo(f"Run {result.run_id} as of {result.as_of:%Y-%m-%d %H:%M} UTC ({mode})")
    kept = kept_sentence(result)
    if kept:
        click.echo(kept)
    click.echo("")
    echo_table(*reversed(summary_rows(result)))
    headers, rows = reason_rows(result)
    if rows:
        click.echo("")
        echo_table(rows, headers)
    for message_id, facts in result.models.items():
        missing = f"; features the plan lacks: {', '.join(facts['missing_features'])}" if facts["missing_features"] else ""
        click.echo(f"Scored {message_id} with model {facts['version']} (outcome {facts['outcome']}){missing}.")
        if facts.get("uplift_unused"):
            click.echo(f"  Its uplift holds no one back (NEGATIVE_UPLIFT): {facts['uplift_unused']}.")
    renders = sum(c.rendered for c in result.render_checks)
    gate = (f"render gate: {renders:,} renders of {len(result.render_checks)} template variants, {result.render_errors} failed"
            if render_sample else "render gate skipped (--render-sample 0)")
    click.echo(f"\nSuppression rate {result.suppression_rate:.1%}{rate_basis(result)}; {gate}.")
    if result.render_checks:
        echo_table(*reversed(gate_rows(result)))
    for problem in result.render_problems[:limit]:
        click.echo(f"  render error: {problem}")
    for warning in result.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if changes is not None:
        tail = f"; {changes.kept:,} kept by the replan" if changes.kept else ""
        click.echo(f"\nChanges since {changes.against}: {counted(len(changes.customers), 'customer')}, "
                   f"{counted(changes.changed, 'decision')} ({changes.unchanged:,} unchanged{tail})")
        if changes.customers:
            echo_table([[t, n] for t, n in changes.transitions.items()], ["change", "decisions"])
            reasons = changes.reason_rows()
            if reasons:
                click.echo("")
                echo_table([list(r) for r in reasons], ["reason", "added", "removed"])
            click.echo("")
            headers, rows = change_rows(changes, limit)
            echo_table(rows, headers)
            if changes.changed > len(rows):
                click.echo(f"... and {changes.changed - len(rows):,} more changed decisions (--limit, or --json for all)")


@click.command("why")
@click.argument("customer")
@click.option("--run", "run_id", help="Run id (campaign:window, or campaign:last); default: the customer's latest run.")
@click.option("--campaign", help="With --window: explain the run of this campaign for that window, planning it as a dry run "
                                 "would when it is not written yet.")
@click.option("--window", "-w", help="With --campaign: a window name, as relmail plan takes it (2026-W50, next-week, auto).")
@click.option("--as-of", help="With --campaign and a window not written yet: the plan's 'now' (ISO 8601 with zone).")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False),
              help="A dry run's JSON Lines file (relmail plan --out plan.jsonl): explain from it.")
@click.option("--top", default=3, show_default=True, help="Score contributions to show per message.")
@json_option
@pass_state
def why_command(state: State, customer, run_id, campaign, window, as_of, plan_file, top, as_json) -> None:
    """Explain every decision for CUSTOMER (an id, or the customer's e-mail address): score, what made it, each rule that
    fired and the data behind it.

    From the ledger (a written run), from a preview of a window not planned
    yet (--campaign and --window: that one customer is planned as a dry run
    would plan them, with the same features, rules and hold-out seed), or
    from a dry run's file (--plan). All three give the same sentences; from
    the store, an UNSUBSCRIBED decision also says when and from where the
    opt-out came (link, one-click, preference page, import, ESP webhook or
    export), or that its source is not recorded. --plan asks the store when
    the project's database opens, and explains from the file alone when not.

    \b
    Example:
      relmail why C0000003
      relmail why C0000007 --run weekly:2026-W48 --json
      relmail why C0000007 --campaign weekly --window next-week
      relmail why C0000007 --plan plan.jsonl
      relmail why anna.devries@mail.example --campaign weekly --window next-week
    """
    from ..planning.why import explain, explain_plan_file, explain_window, format_explanations
    from ..windows import parse_time

    chosen = [name for name, value in (("--run", run_id), ("--campaign", campaign), ("--plan", plan_file)) if value]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} name different sources; give one")
    if bool(campaign) != bool(window):
        raise click.UsageError("--campaign and --window go together")
    if as_of and not campaign:
        raise click.UsageError("--as-of applies to --campaign and --window only")
    if plan_file:
        store = _store_if_any(state)
        facts, explanations = explain_plan_file(plan_file, customer if store is None else customer_id_of(store, customer), store)
    elif campaign:
        facts, explanations = explain_window(state.project, state.engine, customer_id_of(state.engine, customer), campaign,
                                             window, as_of=parse_time(as_of) if as_of else None)
    else:
        facts, explanations = explain(state.engine, customer_id_of(state.engine, customer), run_id)
    if as_json:
        echo_json({**facts, "as_of": facts["as_of"].isoformat(), "decisions": [e.as_dict() for e in explanations]})
    else:
        click.echo(format_explanations(facts, explanations, top))


def _store_if_any(state: State):
    """The project's store, or None when there is no project or its database does not open.

    ``why --plan`` explains from the file alone (a CI artifact looked at
    anywhere); the store only adds where an opt-out came from.
    """
    try:
        return state.engine
    except RelmailError:
        return None


COMMANDS = [plan_command, why_command]
