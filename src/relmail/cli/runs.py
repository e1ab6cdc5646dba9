"""``relmail runs list|show|export|discard``: the runs in the ledger (``runs import`` lives with the learning commands)."""

from __future__ import annotations

import sys

import click

from ._common import State, echo_json, echo_table, json_option, pass_state


@click.group("runs")
def runs() -> None:
    """Runs in the ledger: list them, show one, export its decisions, discard one planned by mistake, import a past experiment."""


@runs.command("list")
@click.option("--campaign", "-c", help="Only the runs of this campaign.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0), help="Newest runs to show (0: all).")
@click.option("--quiet", "-q", is_flag=True, help="Print the run ids only, one a line (for scripts).")
@json_option
@pass_state
def runs_list(state: State, campaign: str | None, limit: int, quiet: bool, as_json: bool) -> None:
    """List the runs, newest first: window, as-of time, status, decisions per action, deliveries.

    \b
    Example:
      relmail runs list
      relmail runs list --campaign weekly --json
      last=$(relmail runs list --campaign weekly --limit 1 --quiet)
    """
    from ..planning.runs import list_runs

    found = list_runs(state.engine, campaign, limit or None)
    if as_json:
        echo_json([r.as_dict() for r in found])
        return
    if quiet:
        for r in found:
            click.echo(r.id)
        return
    if not found:
        click.echo("No runs in the ledger" + (f" for campaign '{campaign}'" if campaign else "") + " yet.")
        return
    rows = [[r.id, r.window, f"{r.as_of:%Y-%m-%d %H:%M}", r.status, r.decisions, r.actions.get("send", 0),
             r.actions.get("holdout", 0), r.actions.get("suppress", 0), _deliveries(r.deliveries)] for r in found]
    echo_table(rows, ["run", "window", "as of (UTC)", "status", "decisions", "send", "holdout", "suppress", "deliveries"])


@runs.command("show")
@click.argument("run")
@click.option("--campaign", "-c", help="With RUN 'last': the campaign whose newest run to show.")
@json_option
@pass_state
def runs_show(state: State, run: str, campaign: str | None, as_json: bool) -> None:
    """Show one run: its window and status, decisions per message and action, reasons, deliveries.

    RUN is a run id (weekly:2026-W48), CAMPAIGN:last, or last with --campaign.

    \b
    Example:
      relmail runs show weekly:2026-W48
      relmail runs show weekly:last --json
    """
    from ..planning.runs import ACTIONS, run_details

    details = run_details(state.engine, run, campaign, state.project)
    if as_json:
        echo_json(details.as_dict())
        return
    s = details.summary
    click.echo(f"Run {s.id} ({s.status}): window {s.window}, as of {s.as_of:%Y-%m-%d %H:%M} UTC, "
               f"planned {s.created_at:%Y-%m-%d %H:%M} UTC, last change {s.updated_at:%Y-%m-%d %H:%M} UTC")
    click.echo("")
    rows = [[m, *(v[a] for a in ACTIONS), _deliveries(v["deliveries"])] for m, v in details.messages.items()]
    rows.append(["total", *(s.actions.get(a, 0) for a in ACTIONS), _deliveries(s.deliveries)])
    echo_table(rows, ["message", *ACTIONS, "deliveries"])
    if details.reasons:
        click.echo("")
        echo_table([[code, n] for code, n in details.reasons.items()], ["reason", "decisions"])


@runs.command("export")
@click.argument("run")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The CSV file to write.")
@click.option("--actions", default="suppress,holdout", show_default=True,
              help="Comma-separated actions to export: suppress, holdout, send.")
@click.option("--with-contact", is_flag=True, help="Add the customers' e-mail address, name and locale (personal data).")
@click.option("--campaign", "-c", help="With RUN 'last': the campaign whose newest run to export.")
@pass_state
def runs_export(state: State, run: str, out: str, actions: str, with_contact: bool, campaign: str | None) -> None:
    """Write a run's decisions as CSV, one row per decision, with the reasons in words.

    Columns: run_id, customer_id, message_id, action, score, expected_value,
    reasons (the codes) and explanation: for each code the sentence
    relmail why gives. --with-contact adds email, first_name, last_name and
    locale; without it the file holds no personal data beyond the customer id.

    \b
    Example:
      relmail runs export weekly:2026-W48 --out suppressed.csv
      relmail runs export weekly:last --out sends.csv --actions send --with-contact
    """
    from ..planning.export import export_run

    wanted = tuple(a.strip() for a in actions.split(",") if a.strip())
    run_id, n = export_run(state.engine, run, out, actions=wanted, with_contact=with_contact, campaign=campaign)
    click.echo(f"Wrote {n:,} decisions of run {run_id} ({', '.join(wanted)}) to {out}"
               + (" with contact details" if with_contact else "") + ".")


@runs.command("discard")
@click.argument("run")
@click.option("--campaign", "-c", help="With RUN 'last': the campaign whose newest run to discard.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@json_option
@pass_state
def runs_discard(state: State, run: str, campaign: str | None, yes: bool, as_json: bool) -> None:
    """Remove a run planned by mistake: its decisions and the run, when none of its e-mails was sent.

    A written plan's decisions count as pending sends in the frequency caps
    of later plans; a plan of the wrong window or of an unfinished campaign
    is taken back with this. Refused (exit 9) once any e-mail of the run was
    handed over or attempted: the ledger then keeps what was sent. To plan
    the same window again instead, use relmail plan --replan.

    \b
    Example:
      relmail runs discard spring:2026-W50
      relmail runs discard spring:last --yes
    """
    from ..planning.runs import discard_run
    from ..store.locks import timeout_for

    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("discarding a run needs --yes when stdin is not a terminal")
        click.confirm(f"Remove run {run} and all its decisions?", abort=True)
    done = discard_run(state.engine, run, campaign, timeout=timeout_for(state.project))
    if as_json:
        echo_json(done)
    else:
        click.echo(f"Discarded run {done['run']}: {done['decisions']:,} decisions, {done['deliveries']:,} planned deliveries.")


def _deliveries(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n:,}" for status, n in sorted(counts.items())) or "-"


COMMANDS = [runs]
