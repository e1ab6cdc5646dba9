"""``relmail locks``: who is working on which run, and the operator's way out of a stuck lock."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ._common import State, echo_json, echo_table, json_option, pass_state


@click.group("locks", invoke_without_command=True)
@json_option
@pass_state
@click.pass_context
def locks_group(ctx: click.Context, state: State, as_json: bool) -> None:
    """List the run locks: which plan or send holds which run, since when, and whether it looks alive.

    A lock whose holder stopped refreshing it, or whose process is gone on
    this host, is taken over by the next `relmail send`/`plan` on its own;
    `relmail locks release` is for the rest.

    \b
    Example:
      relmail locks
      relmail locks --json
      relmail locks release weekly:2026-W48 --force
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..store import locks

    now, here = datetime.now(UTC), locks.host_id()
    held = locks.held_locks(state.engine)
    if as_json:
        echo_json([{"key": i.key, "holder": i.holder, "acquired_at": i.acquired_at.isoformat(),
                    "heartbeat_at": i.heartbeat_at.isoformat(), "expires_at": i.expires_at.isoformat(),
                    "stale": i.stale(now, here)} for i in held])
        return
    if not held:
        click.echo("No run is locked.")
        return
    echo_table([[i.key, i.holder, f"{i.acquired_at:%Y-%m-%d %H:%M:%S}", f"{i.heartbeat_at:%H:%M:%S}",
                 i.stale(now, here) or "alive"] for i in held],
               ["run", "holder", "since (UTC)", "heartbeat", "state"])


@locks_group.command("release")
@click.argument("run")
@click.option("--force", is_flag=True, help="Required: releasing a live holder's lock lets a second sender start.")
@json_option
@pass_state
def locks_release(state: State, run: str, force: bool, as_json: bool) -> None:
    """Delete the lock on RUN whoever holds it: an operator's last resort.

    Only for a holder you know is gone but that is not recognised as stale
    yet (a lost machine, before `lock_timeout_minutes`). A holder that is
    still sending stops at its next batch with exit 17 when it finds its
    lock gone; the ledger keeps every e-mail once either way.

    \b
    Example:
      relmail locks release weekly:2026-W48 --force
    """
    from ..errors import NotFound
    from ..store import locks

    if not force:
        raise click.UsageError("releasing a lock needs --force (see relmail locks release --help)")
    info = locks.force_release(state.engine, run)
    if info is None:
        raise NotFound(f"run {run} is not locked")
    if as_json:
        echo_json({"released": run, "holder": info.holder})
    else:
        click.echo(f"Released the lock on {run} held by {info.holder}.")


COMMANDS = [locks_group]
