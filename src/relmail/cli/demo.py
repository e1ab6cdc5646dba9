"""``relmail demo`` (fill the store with the demo shop) and ``relmail summary``."""

from __future__ import annotations

import sys

import click

from ._common import State, echo_json, echo_table, json_option, pass_state, show_progress


@click.command("demo")
@click.option("--customers", "-n", type=click.IntRange(min=1), default=5000, show_default=True, help="How many customers.")
@click.option("--seed", type=click.IntRange(min=0), default=7, show_default=True, help="Random seed: same seed, same shop.")
@click.option("--as-of", "as_of", metavar="TIME", help="The shop's 'now', ISO 8601 with a zone (default: this hour, UTC).")
@click.option("--replace", is_flag=True, help="Delete the store's customers, events, products, runs and ledger first.")
@json_option
@pass_state
def demo(state: State, customers: int, seed: int, as_of: str | None, replace: bool, as_json: bool) -> None:
    """Fill the store with the demo shop: a Dutch bike shop with customers, a year of events and past sends.

    Same --seed, --as-of and --customers give the same data on SQLite and
    PostgreSQL.  Creates the schema first if the database is empty.  Refuses
    (exit 9) if the store already holds data, unless --replace.  Ends with a
    summary of the store and the ids of customers with a known story.

    \b
    Example:
      relmail demo
      relmail demo --customers 1000000 --seed 42 --as-of 2026-11-23T09:00:00Z --replace
      relmail demo --json | jq .summary.events.by_type
    """
    from ..demo import generate, parse_as_of
    from ..store.db import current_revision, upgrade
    from ..store.summary import store_summary

    when = parse_as_of(as_of) if as_of else None
    if current_revision(state.raw_engine) is None:
        # A fresh project: the demo is the first thing people run.
        upgrade(state.raw_engine)
    engine = state.engine

    if show_progress() and not as_json:
        with click.progressbar(length=customers, label="Generating customers", file=sys.stderr) as bar:
            done = [0]

            def progress(n: int) -> None:
                bar.update(n - done[0])
                done[0] = n

            result = generate(engine, customers=customers, seed=seed, as_of=when, replace=replace, progress=progress)
    else:
        result = generate(engine, customers=customers, seed=seed, as_of=when, replace=replace)
    summary = store_summary(engine)
    if as_json:
        echo_json({"generated": result.as_dict(), "summary": summary})
        return
    click.echo(
        f"Generated the demo shop in {result.seconds:.1f} s: {result.customers:,} customers, "
        f"{result.total_events:,} events, seed {result.seed}, as of {result.as_of.isoformat()}."
    )
    click.echo()
    print_summary(summary)


@click.command("summary")
@json_option
@pass_state
def summary(state: State, as_json: bool) -> None:
    """Show what the store holds: customers, products, consent, events by type, runs.

    \b
    Example:
      relmail summary
      relmail summary --json | jq .events.by_type
    """
    from ..store.summary import store_summary

    data = store_summary(state.engine)
    if as_json:
        echo_json(data)
    else:
        print_summary(data)


def print_summary(s: dict) -> None:
    """The summary as plain tables, readable in a terminal and in a CI log."""
    c, p, pref, ev, runs = s["customers"], s["products"], s["preferences"], s["events"], s["runs"]
    echo_table([*c["by_locale"].items(), ("total", c["total"])], ["locale", "customers"])
    click.echo()
    echo_table([*p["by_category"].items(), ("total", p["total"])], ["category", "products"])
    click.echo()
    rows = [(("* (all e-mail)" if t == "*" else t), n) for t, n in pref["opted_out"].items()]
    echo_table([*rows, ("frequency wishes", pref["frequency_wishes"])], ["opted out of", "customers"])
    click.echo()
    echo_table([*ev["by_type"].items(), ("total", ev["total"])], ["event", "count"])
    click.echo(f"open service tickets: {ev['open_tickets']:,}")
    click.echo()
    if runs["recent"]:
        echo_table([(r["id"], r["window"], r["status"]) for r in runs["recent"]], ["run", "window", "status"])
    else:
        click.echo("runs: none")
    click.echo()
    click.echo(
        f"decisions {s['decisions']:,}  deliveries {s['deliveries']:,}  suppressed addresses {s['suppressions']:,}"
    )
    demo = s.get("demo")
    if demo and demo.get("featured_owners"):
        click.echo()
        echo_table(list(demo["featured_owners"].items()), ["featured product", "owners"])
    if demo and demo.get("special_customers"):
        from ..demo import DESCRIPTIONS

        click.echo()
        rows = [(cid, role, DESCRIPTIONS.get(role, "")) for role, cid in demo["special_customers"].items()]
        echo_table(rows, ["customer", "role", "story"])
        first = next(iter(demo["special_customers"].values()))
        click.echo()
        click.echo(f"Look closer: relmail customers show {first}")


COMMANDS = [demo, summary]
