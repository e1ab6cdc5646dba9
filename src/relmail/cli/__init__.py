"""The ``relmail`` command line: a thin layer over the library.

Each module in this package holds the commands of one stage and exposes
them in ``COMMANDS``; :data:`MODULES` is the registry. Commands parse
options, call the library, and format; any :class:`~relmail.errors.RelmailError`
becomes one line on stderr and the error's exit code.
"""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import RelmailError, ValidationError

#: Command modules, one per stage; each exposes ``COMMANDS``.
MODULES = (
    "project",
    "database",
    "imports",
    "feedback",
    # Before "model": its ``runs import`` joins this module's ``runs`` group.
    "runs",
    "model",
    "render",
    "demo",
    "customers",
    "delivery",
    "plan",
    "segments",
    "send",
    "report",
    "locks",
)


class RelmailGroup(click.Group):
    """Maps RelmailError (and any database driver's error) to a one-line message and its exit code."""

    def invoke(self, ctx: click.Context):
        raw = [*ctx._protected_args, *ctx.args]  # the command's own arguments, before click consumes them
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if "--json" in raw:  # a usage error (exit 2) is one JSON object on stdout too; click prints the usage
                from ._common import echo_json

                echo_json({"ok": False, "error": exc.format_message(), "exit_code": exc.exit_code, "problems": []})
            raise
        except RelmailError as exc:
            _fail(ctx, exc)
        except KeyboardInterrupt:
            from ..errors import Interrupted

            # One line, and with --json one object on stdout, like every other error.
            _fail(ctx, Interrupted("interrupted (Ctrl-C or SIGTERM); run the same command again"))
        except Exception as exc:
            from ..store.faults import as_relmail_error

            error = as_relmail_error(exc)
            if error is None:
                raise
            _fail(ctx, error)


#: How many problems of a ValidationError beyond those its line names are listed below it.
LISTED_BELOW = 50


def _fail(ctx: click.Context, exc: RelmailError) -> None:
    from ._common import json_error

    json_error(ctx, exc)
    click.echo(f"Error: {exc}", err=True)
    # The line names the first problems only; a marketer fixing a folder of segment or campaign
    # files needs the others too, one per line, without a second run or --json.
    rest = exc.problems[exc.shown_in_line:] if isinstance(exc, ValidationError) else []
    for problem in rest[:LISTED_BELOW]:
        click.echo(f"  {problem}", err=True)
    if len(rest) > LISTED_BELOW:
        click.echo(f"  ... and {len(rest) - LISTED_BELOW} more (--json lists every problem)", err=True)
    detail = getattr(exc, "detail", None)
    if detail and ctx.params.get("verbose"):
        click.echo(detail, err=True)
    ctx.exit(exc.exit_code)


@click.group(cls=RelmailGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="relmail")
@click.option(
    "--project",
    "-p",
    "project_dir",
    type=click.Path(file_okay=False, path_type=str),
    envvar="RELMAIL_PROJECT",
    help="Project folder (default: the nearest folder holding relmail.toml).",
)
@click.option("--verbose", "-v", is_flag=True,
              help="With an error, also print the detail behind it (the database's own message and the SQL statement).")
@click.pass_context
def cli(ctx: click.Context, project_dir: str | None, verbose: bool) -> None:
    """relmail: decide which marketing e-mails are worth sending to whom, say why, and send them well.

    \b
    Quick start:
      relmail init shop && cd shop
      relmail db upgrade
      relmail demo --customers 5000
    """
    from ._common import State

    ctx.obj = State(project_dir)
    ctx.call_on_close(ctx.obj.close)


for _name in MODULES:
    for _command in importlib.import_module(f"{__name__}.{_name}").COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="relmail")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
