"""``relmail init``: create a project folder."""

from __future__ import annotations

import click

from ..project import init_project
from ._common import echo_json, json_option


@click.command("init")
@click.argument("folder", type=click.Path(file_okay=False), default=".")
@click.option("--name", default="Fietsenwinkel", show_default=True, help="Brand and project name.")
@click.option("--force", is_flag=True, help="Overwrite relmail.toml and the example files if they exist.")
@json_option
def init(folder: str, name: str, force: bool, as_json: bool) -> None:
    """Create a relmail project in FOLDER: relmail.toml, campaigns/, segments/, templates/.

    \b
    Example:
      relmail init shop
      cd shop && relmail db upgrade && relmail demo
    """
    project = init_project(folder, name=name, force=force)
    if as_json:
        echo_json({"project": str(project.root), "database_url": project.database_url})
    else:
        click.echo(f"Created relmail project in {project.root}")
        click.echo("Next: relmail db upgrade")


COMMANDS = [init]
