"""What every command needs: the project, the database, output helpers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy.engine import Engine

from ..project import Project


@dataclass
class State:
    project_dir: str | None
    _project: Project | None = field(default=None, repr=False)
    _engine: Engine | None = field(default=None, repr=False)
    _raw_engine: Engine | None = field(default=None, repr=False)

    @property
    def project(self) -> Project:
        if self._project is None:
            self._project = Project.load(self.project_dir)
        return self._project

    @property
    def engine(self) -> Engine:
        """An engine on a database with a current schema (or a clear error)."""
        if self._engine is None:
            from ..store.db import connect

            self._engine = connect(self.project.database_url)
        return self._engine

    @property
    def raw_engine(self) -> Engine:
        """An engine on the project's database whatever its schema (for ``db upgrade`` and ``db status``)."""
        if self._raw_engine is None:
            from ..store.db import make_engine

            self._raw_engine = make_engine(self.project.database_url)
        return self._raw_engine

    def close(self) -> None:
        """Close the engines' pooled connections (called when the command ends).

        A process exit closes them anyway; a program or test calling many
        commands in one process must not leave them to the garbage collector.
        """
        for engine in (self._engine, self._raw_engine):
            if engine is not None:
                engine.dispose()
        self._engine = self._raw_engine = None


pass_state = click.make_pass_decorator(State)

def _asked_for_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    # Context.meta is shared by every context of the invocation: the error handler reads it.
    ctx.meta["relmail.json"] = value
    return value


json_option = click.option("--json", "as_json", is_flag=True, callback=_asked_for_json,
                           help="Print one JSON object instead of text.")


def customer_id_of(engine: Engine, name: str) -> str:
    """CUSTOMER as a command line names it, an id or an e-mail address, as the customer id (:func:`relmail.store.mailboxes.customer_named`)."""
    from ..store.mailboxes import customer_named

    with engine.connect() as conn:
        return customer_named(conn, name)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta["relmail.json_written"] = True


def json_error(ctx: click.Context, exc: Any) -> None:
    """With --json, an error the command did not answer in JSON itself is one JSON object on stdout too.

    A script that runs ``relmail ... --json | jq`` then always gets an object (``ok`` false,
    the message, the exit code, and the problems with file, line and field), never empty input.
    """
    if not ctx.meta.get("relmail.json") or ctx.meta.get("relmail.json_written"):
        return
    problems = getattr(exc, "problems", None) or []
    message = exc.args[0] if problems and exc.args else str(exc)
    echo_json({"ok": False, "error": message, "exit_code": exc.exit_code, "problems": [p.as_dict() for p in problems]})


def echo_table(rows: Iterable[Iterable[Any]], headers: list[str]) -> None:
    """A plain aligned table: readable in a terminal and in a CI log."""
    rows = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in rows) and rows != [] for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    click.echo(line(headers))
    click.echo("  ".join("-" * w for w in widths))
    for row in rows:
        click.echo(line(row))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def show_progress() -> bool:
    """Progress bars only on a terminal, and not in CI: CI logs and pipes stay quiet.

    Some CI runners give the job a terminal (GitLab's Docker executor, a
    ``docker run -t``): the ``CI`` variable every CI service sets keeps a
    redrawn bar out of the job's log there too.
    """
    return sys.stderr.isatty() and os.environ.get("CI", "").strip().lower() in ("", "0", "false", "no")
