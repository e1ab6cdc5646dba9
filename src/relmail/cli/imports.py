"""``relmail import``: customers, products, preferences, events and orders from CSV or JSON Lines."""

from __future__ import annotations

import sys

import click

from ._common import State, echo_json, json_option, pass_state, show_progress

_EXAMPLES = {
    "customers": (
        "Import customers; extra CSV columns (or a JSON 'attributes' object) become attributes.",
        "relmail import customers crm/customers.csv\n"
        "  relmail import customers customers_export.csv --map shopify\n"
        "  relmail import customers subscribed_members_export.csv --map mailchimp\n"
        "  relmail import customers customers.jsonl --skip-invalid --rejects bad.jsonl\n"
        "  relmail import customers customers_export.csv --map shopify --complete",
    ),
    "products": (
        "Import products; CSV 'features' are |-separated (app|gps-tracking); extra columns become attributes.",
        "relmail import products products.csv\n  relmail import products products_export.csv --map shopify\n"
        "  gunzip -c products.jsonl.gz | relmail import products - --format jsonl",
    ),
    "preferences": (
        "Import consent per (customer_id, topic); topic '*' is the global switch. Per customer and topic the "
        "latest updated_at wins, in the file and against the store.",
        "relmail import preferences consent.csv --max-errors 100",
    ),
    "events": (
        "Import events (purchases, views, usage, tickets, e-mail events); rows with an event_id are upserted.",
        "relmail import events events.csv.gz\n  relmail import events events.jsonl --json | jq .rows_per_second",
    ),
    "orders": (
        "Import orders, one row per line item: each line is a purchase event 'order:<order>:<line>' of the customer "
        "named by customer_id or e-mail address; cancelled and refunded lines are not purchases.",
        "relmail import orders orders_export.csv --map shopify\n  relmail import orders orders.csv --json",
    ),
}


@click.group("import")
def import_group() -> None:
    """Import customers, products, preferences, events and orders from CSV or JSON Lines.

    Every field is checked; any bad row means nothing is imported (exit code
    4) and every problem is listed with file, line and field, unless
    --skip-invalid. Rows are upserted on their ids, so re-importing a file
    is safe. --map reads a shop's own export through a column mapping (the
    built-in shopify, woocommerce, magento, prestashop, mailchimp and klaviyo, or a YAML file).
    """


def _make(kind: str, summary: str, example: str) -> click.Command:
    @click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
    @click.option("--map", "mapping", metavar="NAME_OR_FILE",
                  help="Read the file through a column mapping: shopify, woocommerce, magento, prestashop, mailchimp, klaviyo, "
                       "or a mapping YAML file.")
    @click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="File format (default: from the suffix or the content).")
    @click.option("--skip-invalid", is_flag=True, help="Import the good rows and write the bad ones to the rejects file.")
    @click.option("--rejects", type=click.Path(dir_okay=False), help="Rejects file for --skip-invalid (default: <name>.rejects.<format>).")
    @click.option("--max-errors", type=click.IntRange(min=0), default=20, show_default=True, help="Problems to list (0: all).")
    @click.option("--chunk-size", type=click.IntRange(min=1), default=10_000, show_default=True, help="Rows per bulk write.")
    @click.option("--decimal", type=click.Choice([".", ","]),
                  help="With --map: the decimal mark of its money columns that name none (',' for an export re-saved by "
                       "a spreadsheet that writes 12,50).")
    @click.option("--time-format", metavar="FORMAT",
                  help="With --map: the format (strftime codes) of its time columns that name none ('%d-%m-%Y %H:%M' for an "
                       "export re-saved by a spreadsheet that writes 14-03-2026 10:12).")
    @json_option
    @pass_state
    def command(state: State, file: str, mapping, fmt, skip_invalid: bool, rejects, max_errors: int, chunk_size: int,
                decimal: str | None, time_format: str | None, as_json: bool, strict_addresses: bool = False,
                complete: bool = False, max_removed: str | None = None) -> None:
        if decimal is not None and mapping is None:
            raise click.UsageError("--decimal applies to the money columns of a mapping: give --map")
        if time_format is not None:
            if mapping is None:
                raise click.UsageError("--time-format applies to the time columns of a mapping: give --map")
            if "%" not in time_format:
                raise click.BadParameter(f"{time_format!r} has no strftime codes (e.g. '%d-%m-%Y %H:%M')",
                                         param_hint="--time-format")
        if max_removed is not None and not complete:
            raise click.UsageError("--max-removed limits what --complete removes: give --complete")
        if complete and skip_invalid:
            raise click.UsageError("--complete imports the whole export or nothing: it cannot --skip-invalid "
                                   "(the customers of skipped rows would be removed)")
        _run(state, kind, file, mapping, fmt, skip_invalid, rejects, max_errors, chunk_size, as_json, strict_addresses, decimal,
             time_format, complete, max_removed)

    if kind == "customers":
        command = click.option("--strict-addresses", is_flag=True,
                               help="Refuse customers whose address is not a valid address (default: import them flagged, never mailed).")(command)
        command = click.option("--complete", is_flag=True,
                               help="The file is every customer the shop has: stored customers it does not list (accounts "
                                    "deleted or merged in the shop) are kept but never mailed again (REMOVED_FROM_SHOP).")(command)
        command = click.option("--max-removed", metavar="N|N%",
                               help="With --complete: refuse the import if it would remove more customers than this, a "
                                    "number or a share of those listed (default: 10%).")(command)
    command.__name__ = f"import_{kind}"
    help_text = (
        f"{summary}\n\nFILE is a .csv (separated by commas, semicolons or tabs) or .jsonl file (optionally .gz), or - for stdin.\n\n"
        f"\b\nExample:\n  {example}"
    )
    return import_group.command(kind, help=help_text)(command)


for _kind, (_summary, _example) in _EXAMPLES.items():
    _make(_kind, _summary, _example)


def _run(state: State, kind: str, file: str, mapping, fmt, skip_invalid: bool, rejects, max_errors: int, chunk_size: int,
         as_json: bool, strict_addresses: bool, decimal: str | None = None, time_format: str | None = None,
         complete: bool = False, max_removed: str | None = None) -> None:
    from ..errors import ValidationError
    from ..importers import import_file

    if file == "-" and skip_invalid and not rejects:
        raise click.UsageError("reading stdin with --skip-invalid needs --rejects PATH")
    settings = state.project.settings
    engine = state.engine
    bar = None
    if show_progress() and file != "-" and not as_json:
        import os

        bar = click.progressbar(length=os.path.getsize(file) if os.path.isfile(file) else 0, label=f"Importing {kind}", file=sys.stderr)
    done = [0]

    def progress(rows: int, position: int, size: int | None) -> None:
        if bar is not None and position > done[0]:
            bar.update(position - done[0])
            done[0] = position

    try:
        if bar is not None:
            bar.__enter__()
        result = import_file(
            engine,
            kind,
            file,
            fmt=fmt,
            skip_invalid=skip_invalid,
            rejects=rejects,
            max_errors=max_errors,
            chunk_size=chunk_size,
            defaults={"locale": settings.default_locale, "timezone": settings.timezone},
            progress=progress,
            mapping=mapping,
            strict_addresses=strict_addresses,
            variables={"brand.url": settings.brand.url.rstrip("/"), "brand.name": settings.brand.name},
            decimal=decimal,
            time_format=time_format,
            complete=complete,
            **({"max_removed": max_removed} if max_removed is not None else {}),
        )
    except ValidationError as exc:
        if bar is not None:
            bar.__exit__(None, None, None)
        _fail(exc, max_errors, as_json)
        return
    if bar is not None:
        bar.__exit__(None, None, None)
    if as_json:
        echo_json(result.as_dict())
        return
    noun = "purchases" if kind == "orders" else kind
    source = f" from {result.rows_read:,} rows" if result.mapping or kind == "orders" else ""
    via = f" (mapping {result.mapping})" if result.mapping else ""
    click.echo(f"Imported {result.rows_imported:,} {noun}{source}{via} in {result.seconds:.1f} s "
               f"({result.rows_per_second:,.0f} rows/s)")
    for line in summary_lines(result):
        click.echo(f"  {line}")
    if result.rows_rejected:
        click.echo(f"Skipped {result.rows_rejected:,} invalid row(s) of {result.rows_read:,}; rejects in {result.rejects_path}", err=True)
        for problem in result.problems:
            click.echo(f"  {problem}", err=True)
        _more(result.rows_rejected, len(result.problems), max_errors)
    if result.suppressed_opt_outs:
        click.echo(
            f"{result.suppressed_opt_outs:,} customer(s) have an address on the suppression list as erased, marked "
            "as spam or suppressed by the shop: wrote a global opt-out (source suppression-list) for each",
            err=True,
        )


#: How the summary says each detail of an import (only the non-zero ones are shown).
_DETAILS = {
    "consent_records": "{n:,} consent record(s) written (topic '*')",
    "topic_consent_records": "{n:,} consent record(s) written for topics of their own (the mapping's consent.TOPIC columns)",
    "without_consent": "{n:,} customer(s) without marketing consent (no record written)",
    "withdrawn_since_last_export": "{n:,} customer(s) whose consent flag turned from yes to no since the last export: "
                                   "opted out as of now",
    "given_since_last_export": "{n:,} customer(s) whose consent flag turned from no to yes since the last export: "
                               "opted in as of now",
    "kept_opted_out": "{n:,} customer(s) whose consent flag turned from no to yes since the last export, but who "
                      "opted out: kept opted out (a yes without a date never undoes an opt-out; an older export "
                      "imported again says the same); a new opt-in needs its date (import preferences)",
    "undated_opt_outs": "{n:,} opt-out(s) without a consent time: opted out as of now (an opt-out without its "
                        "date still ends every earlier opt-in)",
    "undated_opt_ins": "{n:,} opt-in(s) without a consent time: stored without a date (any dated record wins "
                       "over it, and it never undoes an opt-out)",
    "undated_opt_ins_kept_out": "{n:,} of the opt-ins without a consent time are of customers who opted out: "
                                "kept opted out; a new opt-in needs its date (import preferences)",
    "suppressed_addresses": "{n:,} address(es) on the suppression list",
    "matched_by_email": "{n:,} row(s) matched to a stored customer by e-mail address",
    "removed_from_shop": "{n:,} stored customer(s) not in this complete export: removed from the shop, kept but never "
                         "mailed again (REMOVED_FROM_SHOP) unless an import lists them again",
    "relisted": "{n:,} customer(s) the shop had removed are listed again: mailed as before",
    "address_changed": "{n:,} stored customer(s) given another e-mail address by this file: the file's replaces "
                       "theirs (an older export imported after a newer one puts an old address back)",
    "still_removed": ("{n:,} row(s) of customers the shop removed, found by address (a mailing list's): still removed, "
                      "never mailed (REMOVED_FROM_SHOP) unless the shop's customers export lists them again"),
    "merged_rows": "{n:,} row(s) of an address already in the file merged into its customer (duplicates: merge)",
    "translation_rows": "{n:,} translation row(s): their fields given to the product row before them (name_<language> ...)",
    "sales_not_below_price": "{n:,} sale price(s) not below the product's price: no sale (the shop charges the lower price)",
    "shared_addresses": "{n:,} address(es) that more than one customer has (another id, or another case): a "
                        "plan mails each address once per message (SHARED_ADDRESS) and within one budget per run "
                        "(SHARED_BUDGET); merge them in the source",
    "consent_shared_addresses": "{n:,} address(es) of the file that several customer ids have (a guest checkout and "
                                "an account, another case): the consent the file gives the address is recorded "
                                "for every one of them",
    "consent_shared_records": "{n:,} consent record(s) written for those other customer ids",
    "consent_shared_kept_out": "{n:,} opt-in(s) without a date not given to another customer id with the address "
                               "that opted out: kept opted out",
    "lines_not_purchases": "{n:,} line(s) of cancelled, refunded or unpaid orders: not purchases",
    "purchases_removed": "{n:,} purchase(s) of earlier imports removed (their order was cancelled or refunded since)",
    "lines_without_customer": "{n:,} line(s) without a customer id or e-mail address: not imported",
    "matched_by_account": "{n:,} line(s) of orders whose address no customer has, matched by the account's other orders "
                          "(an address changed since)",
    "accounts_linked": "{n:,} link(s) of a shop's account number to the customer its orders name by address, stored: "
                       "later files find an old address through them",
    "lines_unknown_customer": "{n:,} line(s) of orders by an address no customer has (guest checkouts): not imported",
    "lines_unknown_product": "{n:,} purchase(s) of products not in the catalogue (kept; import products to link them)",
    "lines_without_product": "{n:,} purchase(s) without a product id (no SKU?): they count for recency and spend, "
                             "not for segments or rules on products and categories",
    "superseded": "{n:,} row(s) older than a later row of the file or the store: the later one stays",
    "repeated": "{n:,} row(s) repeating another of the same time and value",
}


def summary_lines(result) -> list[str]:
    """The import's flags, skips and details as sentences (what ``relmail import`` prints under its first line)."""
    out = []
    if result.flagged_addresses:
        lines = ", ".join(f"{line} ({why})" for line, why in zip(result.flagged_lines, result.flagged_reasons, strict=True))
        more = "" if len(result.flagged_lines) >= result.flagged_addresses else ", ..."
        out.append(f"{result.flagged_addresses:,} customer(s) with an invalid address imported and flagged "
                   f"(never mailed: INVALID_ADDRESS): line {lines}{more}")
    for reason, n in result.skipped.items():
        out.append(f"{reason}: {n:,} skipped")  # the reason is a mapping's plural noun: "1 image rows" would not read
    for key, n in result.details.items():
        if n and key in _DETAILS and key != "purchases":
            out.append(_DETAILS[key].format(n=n))
    return out


def _fail(exc, max_errors: int, as_json: bool) -> None:
    """List every problem on its own line, then exit with the ValidationError code."""
    bad_rows = getattr(exc, "bad_rows", len(exc.problems))
    if as_json:
        echo_json({"ok": False, "error": exc.args[0], "bad_rows": bad_rows, "problems": [p.as_dict() for p in exc.problems]})
    else:
        click.echo(f"Error: {exc.args[0]}", err=True)
        for problem in exc.problems:
            if str(problem) != exc.args[0]:  # "no such file" is said once, not twice
                click.echo(f"  {problem}", err=True)
        _more(bad_rows, len(exc.problems), max_errors)
    raise click.exceptions.Exit(exc.exit_code)


def _more(bad_rows: int, shown: int, max_errors: int) -> None:
    if max_errors and shown >= max_errors:
        click.echo(f"  (showing the first {shown} problems of {bad_rows:,} bad row(s); --max-errors 0 lists all)", err=True)


COMMANDS = [import_group]
