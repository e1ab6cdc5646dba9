"""The text part: a ``.txt`` template, or one derived from the HTML template once.

Deriving happens on the template *source*, not on each e-mail: the Jinja
constructs are protected by plain tokens (see :mod:`relmail.render.inline`),
html2text turns the HTML into readable text with the links kept as
``[text](url)``, and the tokens are swapped back. The result is a text
template rendered per e-mail without autoescaping.

Anything between ``<!-- relmail:text-skip -->`` and
``<!-- /relmail:text-skip -->`` (the hidden preheader, spacer tricks) is left
out of the text part; so is the ``<head>``.
"""

from __future__ import annotations

import re

from ..errors import TemplateError
from .inline import protect

_SKIP = re.compile(r"<!--\s*relmail:text-skip\s*-->.*?<!--\s*/relmail:text-skip\s*-->", re.DOTALL | re.IGNORECASE)
_HEAD = re.compile(r"<head[\s>].*?</head\s*>", re.DOTALL | re.IGNORECASE)
_EMPTY_LINK = re.compile(r"\[\s*\]\([^()\s]*\)")  # image-only links, images being left out


def html_to_text(html: str) -> str:
    """Readable text from HTML: layout tables ignored, links kept, no line wrapping."""
    import html2text

    h = html2text.HTML2Text()
    h.body_width = 0  # no wrapping: long URLs must stay whole
    h.ignore_images = True
    h.ignore_tables = True  # e-mail layout tables are not data tables
    h.ignore_emphasis = True
    h.unicode_snob = True  # keep é and € as characters, not ASCII look-alikes
    h.single_line_break = False
    return h.handle(html)


def derive_text_source(env, html_source: str, name: str | None = None) -> str:
    """A text-template source derived from an HTML-template source."""
    protected = protect(env, html_source, name, for_text=True)
    body = _HEAD.sub("", _SKIP.sub("", protected.html))
    text = _EMPTY_LINK.sub("", html_to_text(body))
    # Source indentation shows up as leading blanks; a text part reads better flush left.
    text = "\n".join(line.strip() for line in text.split("\n"))
    return protected.restore(text)


def tidy(text: str) -> str:
    """Per-e-mail clean-up of a rendered text part: lines flush left, at most one empty line."""
    out: list[str] = []
    blank = True  # also drops leading empty lines
    for line in text.split("\n"):
        line = line.strip(" \t\r")
        if not line:
            if not blank:
                out.append("")
            blank = True
            continue
        out.append(line)
        blank = False
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def check_derived(env, text_source: str, name: str) -> None:
    """Compile the derived text template, or explain that a ``.txt`` is needed."""
    try:
        env.parse(text_source)
    except Exception as exc:  # any Jinja syntax error in the derived source
        raise TemplateError(
            f"{name}: cannot derive a text part from the HTML ({exc}); add {name.rsplit('.', 1)[0]}.txt"
        ) from None
