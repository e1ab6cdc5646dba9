"""MkDocs hook: show the Sphinx roles of relmail's docstrings as plain code.

The docstrings cross-reference with ``:class:`~relmail.errors.Conflict```
(readable in ``help()`` and editors); mkdocstrings leaves the role in front
of the code span. This drops the role and, for ``~``, keeps the last part of
the dotted name, as Sphinx would show it; a paragraph ending in reST's ``::``
(before a literal block) ends in one colon.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, **kwargs) -> str:
    # reST's "text::" before a literal block reads "text:" once the block is code.
    return _ROLE.sub(_plain, html).replace("::</p>", ":</p>")
