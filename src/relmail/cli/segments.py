"""``relmail segments``: list the segment files, show a segment's size and a sample."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ..windows import current_time
from ._common import State, echo_json, echo_table, json_option, pass_state


def parse_as_of(_ctx, _param, value: str | None) -> datetime:
    """An ISO-8601 time with an offset (or ``Z``); default now. Naive times are refused."""
    if value is None:
        return current_time().replace(microsecond=0)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not an ISO-8601 time (e.g. 2026-11-23T06:00:00Z)") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"'{value}' has no time zone; add Z or an offset such as +01:00")
    return parsed.astimezone(UTC)


as_of_option = click.option("--as-of", "as_of", callback=parse_as_of, metavar="TIME",
                            help="Evaluate as of this time (ISO-8601 with offset or Z; default now).")


@click.group("segments")
def segments() -> None:
    """Inspect the segments defined in segments/*.yml."""


@segments.command("list")
@click.option("--sizes", is_flag=True, help="Also count each segment's members (runs every segment's query).")
@as_of_option
@json_option
@pass_state
def segments_list(state: State, sizes: bool, as_of: datetime, as_json: bool) -> None:
    """List the segments with their descriptions (and sizes with --sizes).

    \b
    Example:
      relmail segments list
      relmail segments list --sizes --as-of 2026-11-23T06:00:00Z --json
    """
    from ..segments import load_segments
    from ..segments.describe import iso

    found = load_segments(state.project)
    rows = []
    for name, seg in sorted(found.items()):
        row = {"name": name, "description": seg.description, "file": _relative(state, seg.file)}
        if sizes:
            with state.engine.connect() as conn:
                row["size"] = seg.count(conn, as_of)
        rows.append(row)
    if as_json:
        echo_json({"as_of": iso(as_of) if sizes else None, "segments": rows})
        return
    if not rows:
        click.echo(f"No segments in {state.project.segments_dir}")
        return
    headers = ["name", "size", "description"] if sizes else ["name", "description"]
    echo_table([[r[h] for h in headers] for r in rows], headers)


@segments.command("show")
@click.argument("name")
@as_of_option
@click.option("--sample", "sample_size", default=10, show_default=True, type=click.IntRange(min=0),
              help="How many member ids to show.")
@click.option("--seed", default=0, show_default=True, help="Seed of the sample (same seed, same sample).")
@click.option("--sql", "show_sql", is_flag=True, help="Also print the SQL the segment compiles to.")
@json_option
@pass_state
def segments_show(state: State, name: str, as_of: datetime, sample_size: int, seed: int, show_sql: bool,
                  as_json: bool) -> None:
    """Show a segment's size as of a time and a random sample of its members.

    \b
    Example:
      relmail segments show cyclists
      relmail segments show lapsed --as-of 2026-11-23T06:00:00Z --sample 5 --json
      relmail segments show lock-owners --sql
    """
    from ..campaigns import declared_messages
    from ..errors import NotFound, Problem
    from ..segments import load_segments
    from ..segments.describe import describe, iso

    found = load_segments(state.project)
    if name not in found:
        raise NotFound(f"no segment '{name}' (have: {', '.join(sorted(found)) or 'none'})")
    facts = describe(state.engine, found[name], as_of, topics=state.project.settings.section("topics"),
                     campaigns=declared_messages(state.project), sample=sample_size, seed=seed, sql=show_sql)
    warnings = [Problem(_relative(state, Path(w.file)), w.line, w.field, w.message) for w in facts.unknown]
    if as_json:
        out = {"name": name, "description": facts.description, "file": _relative(state, facts.file), "as_of": iso(as_of),
               "size": facts.size, "customers": facts.customers, "share": round(facts.share, 4), "sample": facts.sample}
        if facts.sql is not None:
            out["sql"] = facts.sql
        out["warnings"] = [str(w) for w in warnings]
        echo_json(out)
        return
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(f"Segment:  {name} ({_relative(state, facts.file)})")
    if facts.description:
        click.echo(f"          {facts.description}")
    click.echo(f"As of:    {iso(as_of)}")
    click.echo(f"Size:     {facts.size:,} of {facts.customers:,} customers ({facts.share:.1%})")
    click.echo(f"Sample:   {' '.join(facts.sample) if facts.sample else '(none)'}")
    if facts.sql is not None:
        click.echo("SQL:")
        click.echo(facts.sql)


def _relative(state: State, path) -> str:
    try:
        return str(path.relative_to(state.project.root))
    except ValueError:
        return str(path)


COMMANDS = [segments]
