"""``relmail send``: plan if needed, render and deliver a run, exactly once."""

from __future__ import annotations

import sys
from datetime import UTC

import click

from ._common import (
    State,
    echo_json,
    echo_table,
    json_option,
    pass_state,
    show_progress,
)


@click.command("send")
@click.argument("campaign")
@click.option("--window", "-w", required=True,
              help="The window (idempotency key): 2026-W48, 2026-11-23, 2026-11, or auto (the current one, see --cadence).")
@click.option("--cadence", type=click.Choice(["weekly", "daily", "monthly"]),
              help="With --window auto: resolve to the current ISO week, day or month (default: the campaign's schedule).")
@click.option("--limit", type=click.IntRange(min=1), help="Hand over at most this many e-mails in this invocation.")
@click.option("--only-customer", "only", multiple=True, help="Only this customer's e-mails (repeatable).")
@click.option("--test-to", metavar="ADDRESS",
              help="Proof send: mail the chosen customers' e-mails to ADDRESS (or 'Name <ADDRESS>', the name its To shows "
                   "instead of the customer's); nothing is recorded.")
@click.option("--dry-run", is_flag=True, help="Render everything, deliver nothing, write nothing.")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1), help="E-mails per ledger batch.")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Senders that render and deliver in parallel (default: all cores, or every thread of the Dask cluster; "
                   "never more than there are batches; 1 = in this process).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where the senders run: local processes, or the workers of a Dask cluster (PostgreSQL only).")
@click.option("--scheduler", envvar="RELMAIL_DASK_SCHEDULER", metavar="ADDRESS",
              help="The Dask scheduler for --executor dask, e.g. tcp://10.0.0.5:8786 (default: $RELMAIL_DASK_SCHEDULER).")
@click.option("--max-deferred-share", type=click.FloatRange(0, 1), default=0.5, show_default=True, metavar="SHARE",
              help="Exit 14 when more than this share of the e-mails attempted was deferred (1: never).")
@click.option("--max-render-errors", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Exit 19 when more than N e-mails failed to render (recorded RENDER_ERROR, never sent).")
@json_option
@pass_state
def send_cmd(state: State, campaign: str, window: str, cadence: str | None, limit: int | None, only: tuple[str, ...], test_to: str | None,
             dry_run: bool, batch_size: int, workers: int | None, executor: str, scheduler: str | None,
             max_deferred_share: float, max_render_errors: int, as_json: bool) -> None:
    """Plan (if the window has no run yet), render and deliver CAMPAIGN for WINDOW.

    Every delivery moves through the ledger (planned, sending, committing,
    accepted/deferred/rejected), so running the same command again after a
    crash or a kill sends every remaining e-mail once and none twice.
    Deferred e-mails are retried by the next run of the command once due.

    --window auto resolves to the current window in the project's time zone,
    so a scheduler can run the same command every time. While one process
    sends a run, a second one is refused (exit 17) by a lock in the database;
    the lock of a crashed sender is taken over once it is stale.

    --executor dask runs the senders on a Dask cluster's workers, which need
    only the relmail package and access to the PostgreSQL database; the
    run lock stays with this process.

    The summary counts this invocation's e-mails by outcome: accepted,
    uncertain (handed over, no reply from the server: assumed delivered,
    never resent), deferred (retried by the next run), rejected, failed,
    and withdrawn (not sent on purpose: the customer opted out, complained
    or hard-bounced after the plan; final, and no reason to fail the run).
    When more than --max-deferred-share of the e-mails it attempted were
    deferred, the command exits 14 after the summary; when more than
    --max-render-errors e-mails failed to render for their customer (each
    recorded RENDER_ERROR and never sent, the others sent), it exits 19.

    Ctrl-C or SIGTERM stops the send in order: what is already being
    handed over gets its answer and is recorded, nothing further is sent or
    retried; the summary is printed and the command exits 130, and the same
    command sends the rest. The same signal again stops at once; the other
    one does not (a CI runner cancelling a job sends SIGINT, then SIGTERM).

    \b
    Example:
      relmail send weekly --window 2026-W48
      relmail send weekly --window auto
      relmail send daily-digest --window auto --cadence daily
      relmail send weekly --window 2026-W48 --workers 8
      relmail send weekly --window 2026-W48 --executor dask --scheduler tcp://10.0.0.5:8786
      relmail send weekly --window 2026-W48 --dry-run --json
      relmail send weekly --window 2026-W48 --test-to proof@example.com --only-customer C0000001
    """
    from ..errors import DeliveryError, SendStopped, TemplateError
    from ..sending.run import SendOptions, send
    from ..sending.stopping import StopRequest, on_signals

    bar = None
    if show_progress() and not (dry_run or test_to or as_json):
        bar = click.progressbar(length=limit or 0, label="Sending", file=sys.stderr, show_pos=True)

    def progress(done: dict) -> None:
        if bar is not None:
            failed = done.get("failed", 0) + done.get("rejected", 0)
            bar.label = f"Sending (accepted {done.get('accepted', 0)}, deferred {done.get('deferred', 0)}, failed {failed})"
            bar.update(done.get("handed_over", 0) - bar.pos)

    stop = StopRequest()
    with on_signals(stop, lambda text: click.echo(f"\n{text}", err=True)):
        options = SendOptions(cadence=cadence, limit=limit, only_customers=only or None, dry_run=dry_run,
                              test_to=test_to, batch_size=batch_size, progress=progress, workers=workers,
                              executor=executor, scheduler=scheduler if executor == "dask" else None, stop=stop)
        result = send(state.project, state.engine, campaign, window, options)
    if bar is not None:
        bar.render_finish()
    summary = result.summary()
    real = not (dry_run or test_to)
    if as_json:
        echo_json(summary)
    else:
        mode = "dry run" if dry_run else (f"proof send to {test_to}" if test_to else "send")
        if window.strip() == "auto" and result.window is not None:
            w = result.window
            click.echo(f"Window auto -> {w.key} ({w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC, {w.timezone})")
        if result.lock_taken_over:
            click.echo(f"Took over the run lock: {result.lock_taken_over}; resuming its run.", err=True)
        click.echo(f"Run {result.run_id} ({mode}{', planned now' if result.planned_now else ''}) in {result.seconds:.1f} s")
        _print_counts(result, real)
        for customer, message, reason in result.render_errors[:20]:
            click.echo(f"RENDER_ERROR {customer} {message}: {reason}", err=True)
        if len(result.render_errors) > 20:
            click.echo(f"... and {len(result.render_errors) - 20} more render errors", err=True)
        if result.next_retry_at:
            due = result.next_retry_at.astimezone(UTC) if result.next_retry_at.tzinfo else result.next_retry_at
            click.echo(f"Deferred e-mails are due again from {due:%Y-%m-%d %H:%M:%S} UTC; "
                       "run the same command then.")
    if real and result.done.get("deferred") and result.deferred_share <= max_deferred_share:
        # Not enough to fail the run, but never silent: a scheduler's log keeps stderr.
        reasons = "; ".join(f"{n:,} x {why}" for why, n in result.deferred_reasons.items())
        click.echo(f"Warning: {result.done['deferred']:,} of {result.done.get('handed_over', 0):,} e-mails deferred"
                   f"{f' ({reasons})' if reasons else ''}; the next run retries them.", err=True)
    if result.resubscribed and not as_json:
        click.echo(f"{result.resubscribe_provider}: {result.resubscribed:,} unsubscribe listing(s) lifted for customers "
                   "who opted in again.")
    if result.resubscribe_failed:
        first = result.resubscribe_failed[0]
        click.echo(f"Warning: {result.resubscribe_provider} did not lift {len(result.resubscribe_failed):,} unsubscribe listing(s) of customers "
                   f"who opted in again (first: customer {first['customer_id']}: {first['error']}); their e-mails may be "
                   "dropped; the next send tries again.", err=True)
    if test_to and result.deferred_reasons:
        # Nothing retries a proof: it did not arrive, and the send says why and fails.
        reasons = "; ".join(f"{n:,} x {why}" for why, n in result.deferred_reasons.items())
        raise DeliveryError(f"{sum(result.deferred_reasons.values()):,} proof e-mail(s) to {test_to} not delivered "
                            f"({reasons}); nothing is retried: check [delivery] and send the proof again")
    if dry_run and result.render_errors:
        raise TemplateError(f"{len(result.render_errors)} e-mail(s) failed to render in the dry run")
    if result.stopped:
        left = sum(result.states.get(k, 0) for k in ("planned", "deferred"))
        raise SendStopped(f"stopped on request after recording the e-mails in hand; {left:,} e-mail(s) not sent yet, "
                          "the same command resumes")
    result.check_render_errors(max_render_errors)
    result.check_deferred(max_deferred_share)


def _print_counts(result, real: bool) -> None:
    """This invocation's e-mails by outcome (every outcome of a real send, zeros too), then the ledger's states."""
    from ..sending.ledger import WITHDRAWN
    from ..sending.loop import OUTCOMES

    done = {k: v for k, v in result.done.items() if k != "handed_over"}
    rows = [("rendered", done.pop("rendered"))] if "rendered" in done else []
    if real:
        rows += [(k, done.pop(k, 0)) for k in OUTCOMES]
    rows += sorted(done.items())
    if rows:
        echo_table(rows, ["this invocation", "e-mails"])
    settled = result.recovered or {}
    if real and any(settled.values()):
        # A sender died (a killed worker, a lost machine): say so, or a clean summary hides it.
        click.echo(f"Settled the e-mails of a sender that died: {settled.get('requeued', 0):,} back to planned and sent "
                   f"again by this run, {settled.get('answered', 0):,} by the provider's answer it had written, "
                   f"{settled.get('assumed_delivered', 0):,} at their point of no return with no answer recorded "
                   "as delivered (uncertain, never sent twice).")
    if real and result.done.get(WITHDRAWN):
        click.echo(f"{result.done[WITHDRAWN]:,} e-mail(s) withdrawn, not sent on purpose: the customer opted out, "
                   f"complained, hard-bounced or was removed from the shop after the plan (relmail why CUSTOMER --run {result.run_id} says when).")
    if real and result.done.get("uncertain"):
        click.echo(f"{result.done['uncertain']:,} e-mail(s) uncertain: handed over completely but the server's reply "
                   "was lost; recorded as delivered and never sent again.")
    if result.states:
        click.echo("")
        echo_table(sorted(result.states.items()), ["ledger state", "deliveries"])
        if result.uncertain:
            click.echo(f"({result.uncertain:,} of the accepted deliveries are uncertain: no reply from the server.)")


COMMANDS = [send_cmd]
