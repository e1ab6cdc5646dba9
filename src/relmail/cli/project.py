"""``relmail init``: create a project folder."""

from __future__ import annotations

import os
import shlex

import click

from ..project import blank_language, blank_languages, init_project
from ._common import echo_json, json_option


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False), default=".")
@click.option("--blank", is_flag=True, help="A project for your own shop (needs --domain): one neutral segment, campaign and "
              "template, and a .gitignore, instead of the example bike shop.")
@click.option("--name", help="Brand and project name (default: Fietsenwinkel, the example shop).")
@click.option("--domain", help="With --blank: your shop's domain; sender, reply-to, brand and unsubscribe addresses use it.")
@click.option("--locale", default="en_GB", show_default=True,
              help="With --blank: the locale of customers without one, and the language of the example newsletter "
              "(Arabic, German, English, Spanish, French, Hebrew, Dutch or Polish; English for another language).")
@click.option("--timezone", default="UTC", show_default=True, help="With --blank: the shop's time zone (IANA name).")
@click.option("--force", is_flag=True, help="Overwrite relmail.toml and the example files if they exist.")
@json_option
def init(folder: str, blank: bool, name: str | None, domain: str | None, locale: str, timezone: str, force: bool,
         as_json: bool) -> None:
    """Create a relmail project in FOLDER: relmail.toml, campaigns/, segments/, templates/.

    Without --blank it is the example bike shop (for `relmail demo`); with
    --blank --name NAME --domain DOMAIN a project for your own shop.

    \b
    Example:
      relmail init shop && cd shop && relmail db upgrade && relmail demo
      relmail init leesteken --blank --name "Boekhandel Het Leesteken" --domain leesteken.example \\
          --locale nl_NL --timezone Europe/Amsterdam
    """
    if blank and not domain:
        raise click.UsageError("--blank needs --domain DOMAIN (the sender and unsubscribe addresses use it)")
    if not blank and (domain or locale != "en_GB" or timezone != "UTC"):
        raise click.UsageError("--domain, --locale and --timezone go with --blank (the example shop has its own)")
    project = init_project(folder, name=name or ("My shop" if blank else "Fietsenwinkel"), force=force, blank=blank,
                           domain=domain, locale=locale, timezone=timezone)
    language = blank_language(locale) if blank else None
    if as_json:
        echo_json({"project": str(project.root), "database_url": project.database_url, "blank": blank,
                   **({"newsletter_language": language or "en"} if blank else {})})
        return
    click.echo(f"Created relmail project in {project.root}")
    if blank and language is None:
        tag = locale.replace("_", "-").split("-")[0]
        click.echo(f"Note: templates/newsletter.html is in English: relmail has its wording in {', '.join(sorted(blank_languages()))} only. "
                   f"Translate it: e-mails from it say they are in '{tag}' (the language of --locale {locale}).")
    where = os.path.relpath(project.root)
    cd = "" if where == "." else f"cd {shlex.quote(where if not where.startswith('..') else str(project.root))} && "
    if blank:
        from ..importers.mapping import builtin_names

        # The shop's own system, whichever it is: each built-in mapping reads its customer export.
        click.echo(f"Next: {cd}relmail db upgrade && relmail import customers FILE --map NAME")
        click.echo(f"  NAME is the system FILE comes from ({', '.join(builtin_names())}) or a mapping YAML file; "
                   "leave --map out for a file in relmail's own columns (relmail import customers --help)")
    else:
        click.echo(f"Next: {cd}relmail db upgrade && relmail demo")


COMMANDS = [init]
