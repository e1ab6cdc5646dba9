"""What the tests of a shop system's exports share: a project in the shop's zone and language, imports
through the command line, and the rows they wrote."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner
from sqlalchemy import select

from relmail.cli import cli
from relmail.store.db import connect


def localized(project, timezone: str, locale: str):
    """``project`` with the shop's time zone and default locale in its relmail.toml."""
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('timezone = "Europe/Amsterdam"', f'timezone = "{timezone}"')
                      .replace('default_locale = "en_GB"', f'default_locale = "{locale}"'))
    return project


def invoke_import(project, *args: str):
    """``relmail import ARGS`` in ``project``, its result as click gives it."""
    return CliRunner().invoke(cli, ["--project", str(project.root), "import", *args])


def import_json(project, *args: str) -> dict:
    """``relmail import ARGS --json``, which must succeed: its summary."""
    result = invoke_import(project, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def relmail_ok(project, *args: str) -> str:
    """``relmail ARGS`` in ``project``, which must succeed: its output."""
    result = CliRunner().invoke(cli, ["--project", str(project.root), *args])
    assert result.exit_code == 0, result.output
    return result.output


def product_campaign(project, campaign: str, message: str, product: str) -> None:
    """A campaign of one promotion featuring ``product``, for every customer with newsletter consent."""
    (project.root / "campaigns" / f"{campaign}.yml").write_text(
        f"title: {campaign}\npolicy: {{consent: opt-in, min_relevance: 0}}\nmessages:\n"
        f"  - {{id: {message}, template: {message}, topic: newsletter, segments: [everyone], products: ['{product}'],"
        " offer: promotion, value: 5}\n")
    (project.root / "segments" / "everyone.yml").write_text("name: everyone\ndescription: Every customer\n")
    (project.root / "templates" / f"{message}.html").write_text(
        "<html><head><title>{% block subject %}{{ featured.name }}{% endblock %}</title></head><body>"
        "<a href=\"{{ links.unsubscribe }}\">x</a></body></html>")


def table_rows(project, model) -> list[dict]:
    """Every row of ``model``'s table in the project's store."""
    engine = connect(project.database_url)
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(model.__table__)).mappings()]
    finally:
        engine.dispose()


def rewritten(tmp_path, source, change):
    """``source`` (a CSV export) with ``change(row)`` applied to each data row (a dict by column), header and quoting as
    Magento writes them; the copy keeps the file's name, in ``tmp_path``."""
    with source.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header, data = reader.fieldnames, list(reader)
    out = tmp_path / source.name
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, header, lineterminator="\n")
        writer.writeheader()
        for row in data:
            writer.writerow(change(row) or row)
    return out
