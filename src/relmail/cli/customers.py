"""``relmail customers``: look at one customer, export their data, erase them."""

from __future__ import annotations

import json
from collections import Counter

import click

from ._common import State, customer_id_of, echo_json, echo_table, json_option, pass_state


@click.group("customers")
def customers() -> None:
    """One customer: what is stored (show, export) and the right to erasure (forget)."""


@customers.command("show")
@click.argument("customer_id")
@click.option("--events", "last_events", type=click.IntRange(min=0), default=10, show_default=True, help="How many recent events to list.")
@json_option
@pass_state
def show(state: State, customer_id: str, last_events: int, as_json: bool) -> None:
    """Show a customer (an id, or the customer's e-mail address): profile, consent, events by type, the most recent
    events, ledger rows.

    \b
    Example:
      relmail customers show C0000003
      relmail customers show C0000003 --json | jq .preferences
      relmail customers show anna.devries@mail.example
    """
    from ..store.erasure import export

    data = export(state.engine, customer_id_of(state.engine, customer_id))
    by_type = Counter(e["type"] for e in data["events"])
    info = {
        "customer": data["customer"],
        "preferences": data["preferences"],
        "events_by_type": dict(sorted(by_type.items())),
        "recent_events": data["events"][-last_events:] if last_events else [],
        "decisions": len(data["decisions"]),
        "deliveries": len(data["deliveries"]),
        "suppressed": data["suppressed"],
    }
    if as_json:
        echo_json(info)
        return
    c = data["customer"]
    name = " ".join(x for x in (c["first_name"], c["last_name"]) if x)
    click.echo(f"{c['id']}  {name} <{c['email']}>  {c['locale']}  {c['timezone']}  since {c['created_at'] or 'unknown'}")
    click.echo("attributes: " + json.dumps(c["attributes"], ensure_ascii=False, sort_keys=True))
    if data["suppressed"]:
        click.echo(f"address suppressed: {data['suppressed']['reason']}")
    if c.get("removed_at"):
        click.echo(f"removed from the shop: not in the complete customers export of {c['removed_at']} (never mailed)")
    click.echo()
    prefs = [(p["topic"], "in" if p["opted_in"] else "OUT", p["max_per_week"], p["source"], _since(p["updated_at"]))
             for p in data["preferences"]]
    if prefs:
        echo_table(prefs, ["topic", "consent", "max/week", "source", "since"])
    else:
        click.echo("preferences: none")
    click.echo()
    echo_table([*by_type.most_common(), ("total", len(data["events"]))], ["event", "count"])
    if info["recent_events"]:
        click.echo()
        rows = [
            (e["occurred_at"], e["type"], e["product_id"] or e["message_id"], e["feature"] or e["run_id"], e["value"])
            for e in reversed(info["recent_events"])
        ]
        echo_table(rows, ["time", "event", "product/message", "feature/run", "value"])
    click.echo()
    click.echo(f"ledger: {info['decisions']} decisions, {info['deliveries']} deliveries")


def _since(updated_at: str | None) -> str:
    """A preference's date as shown: an undated flag (a shop's "accepts marketing") has none."""
    return updated_at or "no date"


@customers.command("export")
@click.argument("customer_id")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the JSON to this file instead of stdout.")
@pass_state
def export_cmd(state: State, customer_id: str, output: str | None) -> None:
    """Print everything stored about one customer as JSON (GDPR right of access).

    Customer, preferences, events, decisions and deliveries, and whether the
    address is on the suppression list.  Exit 8 if the id is unknown.

    \b
    Example:
      relmail customers export C0000001 > C0000001.json
      relmail customers export C0000001 -o C0000001.json
    """
    from ..store.erasure import export

    data = export(state.engine, customer_id)
    if output:
        from ..store.private import open_private

        with open_private(output, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
            fh.write("\n")
        click.echo(f"Wrote {output}: {len(data['events'])} events, {len(data['decisions'])} decisions", err=True)
    else:
        echo_json(data)


@customers.command("forget")
@click.argument("customer_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_state
def forget_cmd(state: State, customer_id: str, yes: bool, as_json: bool) -> None:
    """Erase a customer (GDPR right to erasure): personal data and events go, a salted address hash stays.

    Deletes the customer, their preferences and events in one transaction,
    and puts a salted hash of the address on the suppression list, so a
    later import of the same address is not mailed without fresh consent.
    Also removes what relmail wrote about them elsewhere: the file adapter's
    rendered e-mails (.eml files, outbox.mbox entries) and the ledger's
    pointers to them, and recorded invalid provider events naming the
    address. Ledger rows (decisions, deliveries) stay for the never-send-twice
    guarantee, stripped of logged features and error texts; deliveries not
    yet sent are cancelled. relmail cannot reach copies outside its project:
    the e-mail provider's logs and suppression lists, backups, exports you
    made (see the erasure section of the docs).  Exit 8 if the id is unknown.

    \b
    Example:
      relmail customers forget C0000005 --yes
      relmail customers forget C0000005 --yes --json
    """
    from ..store.erasure import forget

    if not yes:
        click.confirm(f"Erase customer {customer_id} and all their data? This cannot be undone", abort=True, err=True)
    from ..store import columnar

    result = forget(state.engine, customer_id, columnar.location(state.engine, state.project.root))
    if as_json:
        echo_json(result)
        return
    d, kept, outbox = result["deleted"], result["ledger_kept"], result["outbox"]
    suppression = result["suppression"]
    if suppression["added"]:
        listed = "address hash added to the suppression list"
    elif suppression["previous_reason"] == suppression["reason"]:
        listed = "address hash already on the suppression list (an earlier erasure of this address)"
    else:
        listed = f"address hash already on the suppression list as {suppression['previous_reason']!r}, now {suppression['reason']!r}"
    click.echo(f"Erased {customer_id}: {d['events']:,} events and {d['preferences']} preferences deleted; {listed}.")
    click.echo(
        f"Outbox: {len(outbox['files_removed'])} .eml file(s) and {outbox['mbox_entries_removed']} mbox entr(ies) removed, "
        f"{outbox['ledger_pointers_cleared']} ledger pointer(s) cleared; {d['feedback_rejects']} recorded invalid provider event(s) deleted."
    )
    for path in outbox["files_removed"]:
        click.echo(f"  removed {path}")
    if result["columnar_copy"] == "removed":
        click.echo(f"Columnar copy of the events deleted: it could not be rewritten without them "
                   f"({result['columnar_copy_error']}); the next plan builds it anew.")
    click.echo(
        f"Ledger kept without personal data: {kept['decisions']} decisions, {kept['deliveries']} deliveries"
        f" ({result['deliveries_cancelled']} pending deliveries cancelled)."
    )


COMMANDS = [customers]
