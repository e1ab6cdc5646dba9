"""``relmail db``: create and upgrade the schema."""

from __future__ import annotations

import click

from ..store.db import current_revision, head_revision, upgrade
from ..store.faults import redact
from ._common import State, echo_json, json_option, pass_state


@click.group("db")
def db() -> None:
    """Create, upgrade and inspect the database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Migrate to this revision.")
@json_option
@pass_state
def db_upgrade(state: State, revision: str, as_json: bool) -> None:
    """Create the schema, or upgrade it to the version this relmail needs.

    \b
    Example:
      relmail db upgrade
      RELMAIL_DATABASE_URL=postgresql://postgres@127.0.0.1/test relmail db upgrade
    """
    url = state.project.database_url
    before, after = upgrade(state.raw_engine, revision)
    if as_json:
        echo_json({"database": redact(url), "before": before, "after": after})
    elif before == after:
        click.echo(f"Schema is current ({after}) in {redact(url)}")
    else:
        click.echo(f"Upgraded {redact(url)}: {before or 'empty'} -> {after}")


@db.command("status")
@json_option
@pass_state
def db_status(state: State, as_json: bool) -> None:
    """Show the database URL and whether its schema is current.

    \b
    Example:
      relmail db status --json
    """
    url = state.project.database_url
    have, want = current_revision(state.raw_engine), head_revision()
    if as_json:
        echo_json({"database": redact(url), "revision": have, "head": want, "current": have == want})
    else:
        click.echo(f"{redact(url)}: schema {have or 'missing'} (relmail needs {want})")


COMMANDS = [db]
