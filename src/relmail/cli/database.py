"""``relmail db``: create and upgrade the schema."""

from __future__ import annotations

import click

from ..errors import FeatureStoreCorrected
from ..store import aggregates, columnar
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


@db.command("rebuild-features")
@json_option
@pass_state
def db_rebuild_features(state: State, as_json: bool) -> None:
    """Recompute the per-customer aggregates (the feature store) from the raw events.

    Reports the rows it had to correct and exits 16 when there were any: the
    store is right again, but something wrote events without keeping the
    aggregates. Run it after writing events outside relmail. Also writes the
    columnar copy of the events anew (beside a SQLite file, or in the
    project's .relmail/columns for PostgreSQL), which plans read for the
    windowed features.

    \b
    Example:
      relmail db rebuild-features
    """
    with state.engine.begin() as conn:
        rebuilt = aggregates.rebuild(conn)
    copy = columnar.update(state.engine, columnar.location(state.engine, state.project.root), rebuild=True)
    summary = {"customers": rebuilt.customers, "corrected": rebuilt.total, "tables": rebuilt.corrected,
               "columnar_copy": {"path": None if copy.root is None else str(copy.root), "events": copy.events,
                                 "seconds": round(copy.seconds, 2)}}
    if as_json:
        echo_json(summary)
    wrong = ", ".join(f"{table}: {', '.join(f'{n} {kind}' for kind, n in counts.items() if n)}"
                      for table, counts in rebuilt.corrected.items() if any(counts.values()))
    if rebuilt.total:
        raise FeatureStoreCorrected(f"the feature store differed from the raw events in {rebuilt.total:,} row(s) "
                                    f"({wrong}); corrected")
    if not as_json:
        click.echo(f"Feature store rebuilt for {rebuilt.customers:,} customers: it matched the raw events")
        if copy.root is not None:
            click.echo(f"Columnar copy of {copy.events:,} events written to {copy.root} in {copy.seconds:.1f} s")


COMMANDS = [db]
