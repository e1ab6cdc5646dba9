"""``relmail segments``: list the segment files, show a segment's size and a sample."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ._common import State, echo_json, echo_table, json_option, pass_state


def parse_as_of(_ctx, _param, value: str | None) -> datetime:
    """An ISO-8601 time with an offset (or ``Z``); default now. Naive times are refused."""
    if value is None:
        return datetime.now(UTC).replace(microsecond=0)
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

    found = load_segments(state.project)
    rows = []
    for name, seg in sorted(found.items()):
        row = {"name": name, "description": seg.description, "file": _relative(state, seg.file)}
        if sizes:
            with state.engine.connect() as conn:
                row["size"] = seg.count(conn, as_of)
        rows.append(row)
    if as_json:
        echo_json({"as_of": _iso(as_of) if sizes else None, "segments": rows})
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
    import numpy as np
    from sqlalchemy import func, select

    from ..errors import NotFound
    from ..segments import audience, customer_by, load_segments
    from ..store.models import Customer

    found = load_segments(state.project)
    if name not in found:
        raise NotFound(f"no segment '{name}' (have: {', '.join(sorted(found)) or 'none'})")
    seg = found[name]
    engine = state.engine
    members = audience(engine, [seg], as_of)
    c = Customer.__table__
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(c).where(customer_by(as_of))).scalar_one()
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(members, size=min(sample_size, len(members)), replace=False).tolist()) if len(members) else []
    share = len(members) / total if total else 0.0
    sql = _sql_text(seg.select(as_of), engine) if show_sql else None
    if as_json:
        out = {"name": name, "description": seg.description, "file": _relative(state, seg.file), "as_of": _iso(as_of),
               "size": len(members), "customers": total, "share": round(share, 4), "sample": picked}
        if sql is not None:
            out["sql"] = sql
        echo_json(out)
        return
    click.echo(f"Segment:  {name} ({_relative(state, seg.file)})")
    if seg.description:
        click.echo(f"          {seg.description}")
    click.echo(f"As of:    {_iso(as_of)}")
    click.echo(f"Size:     {len(members):,} of {total:,} customers ({share:.1%})")
    click.echo(f"Sample:   {' '.join(picked) if picked else '(none)'}")
    if sql is not None:
        click.echo("SQL:")
        click.echo(sql)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _relative(state: State, path) -> str:
    try:
        return str(path.relative_to(state.project.root))
    except ValueError:
        return str(path)


def _sql_text(stmt, engine) -> str:
    """The statement as text for reading, its parameters shown inline."""
    dialect = engine.dialect
    if dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import psycopg2

        # Compiled for reading only: this dialect adds no "::VARCHAR" cast to every parameter.
        dialect = psycopg2.dialect()
    compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    text = str(compiled)
    params = compiled.construct_params()
    names = compiled.positiontup or []
    if names:  # positional ("?"): substitute in order
        for key in names:
            text = text.replace("?", _literal(params[key]), 1)
    else:
        for key in sorted(params, key=len, reverse=True):
            text = text.replace(f"%({key})s", _literal(params[key]))
    return text


def _literal(value) -> str:
    if isinstance(value, datetime):
        return f"'{_iso(value)}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    return "NULL" if value is None else str(value)


COMMANDS = [segments]
