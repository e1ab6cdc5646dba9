"""MkDocs hook: keep the ``\\b`` blocks of relmail's ``--help`` texts as code.

click prints a paragraph that follows a ``\\b`` line without re-wrapping it;
relmail uses that for the ``Example:`` block of every command. mkdocs-click
only drops the ``\\b`` line, so the examples would run together into one
paragraph. This turns each such paragraph into a heading line and a code
block, so the reference page shows the examples as ``--help`` does.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterator

import click
from mkdocs_click import _docs


def _description(ctx: click.Context, remove_ascii_art: bool = False) -> Iterator[str]:
    text = ctx.command.help or ctx.command.short_help
    if not text:
        return
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        if lines and lines[0].strip() == "\b":
            body = lines[1:]
            if body and body[0].rstrip().endswith(":") and not body[0].startswith(" "):
                yield f"**{body[0].strip()}**"
                yield ""
                body = body[1:]
            yield "```sh"
            yield from textwrap.dedent("\n".join(body)).splitlines()
            yield "```"
        else:
            yield from lines
        yield ""


_docs._make_description = _description
