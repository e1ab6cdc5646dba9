"""The text part: a ``.txt`` template, or one derived from the HTML template once.

Deriving happens on the template *source*, not on each e-mail: the Jinja
constructs are protected by plain tokens (see :mod:`relmail.render.inline`),
html2text turns the HTML into readable text with the links kept as
``[text](url)``, and the tokens are swapped back. The result is a text
template rendered per e-mail without autoescaping.

What a reader of the HTML never sees is left out of the text part: the
``<head>``; every element hidden by its style once the stylesheet is
inlined (``display:none``, ``visibility:hidden``, ``mso-hide:all``, inline or
from a class rule, as ESP galleries hide the preheader) or by the
``hidden`` attribute; and anything between ``<!-- relmail:text-skip -->`` and
``<!-- /relmail:text-skip -->`` (spacer tricks). Jinja statements inside a
hidden element stay (a ``{% set %}`` there still runs); its text and
expressions go. An element hidden only by a media query (on phones) is
text like any other, and so is one whose hiding depends on a Jinja
construct in its tag.
"""

from __future__ import annotations

import re

from ..errors import TemplateError
from .inline import Protected, inline_protected, protect, split_document

_SKIP = re.compile(r"<!--\s*relmail:text-skip\s*-->.*?<!--\s*/relmail:text-skip\s*-->", re.DOTALL | re.IGNORECASE)
_HEAD = re.compile(r"<head[\s>].*?</head\s*>", re.DOTALL | re.IGNORECASE)
_EMPTY_LINK = re.compile(r"\[\s*\]\([^()\s]*\)")  # image-only links, images being left out
#: A declaration that hides an element, in a ``style`` attribute (``!important`` or not).
_HIDES = re.compile(r"(?:^|;)\s*(?:display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all)\s*(?:!\s*important\s*)?(?:;|$)",
                    re.IGNORECASE)
#: Cheap test of a source for anything that might hide an element (in a style attribute, a CSS rule or the attribute).
_MAY_HIDE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|mso-hide\s*:\s*all|\shidden[\s>=/]", re.IGNORECASE)


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


def without_hidden(env, source: str, name: str | None = None) -> str:
    """``source`` (an HTML template) without the elements its CSS or ``hidden`` attributes hide, their statements kept.

    The stylesheet is inlined first (:func:`~relmail.render.inline.inline_protected`,
    shared with the HTML part when the sources are the same), so a class
    rule hides as an inline style does. A source that hides nothing comes
    back unchanged.
    """
    if not _MAY_HIDE.search(source):
        return source
    import lxml.etree
    import lxml.html

    protected, inlined = inline_protected(env, source, name)
    parts = split_document(inlined)
    if parts is not None:
        head, doc, tail = parts
        root = lxml.html.document_fromstring(doc)
    else:
        head, tail = "", ""
        root = lxml.html.fragment_fromstring(inlined, create_parent="div")
    hidden = [el for el in root.iter() if isinstance(el.tag, str) and el.getparent() is not None and _hides(el, protected.prefix)]
    outermost = [el for el in hidden if not any(a in hidden for a in el.iterancestors())]
    if not outermost:
        return source
    for el in outermost:
        statements = [c for c in el.iter(lxml.etree.Comment) if _is_statement(c.text or "", protected)]
        parent, at = el.getparent(), el.getparent().index(el)
        for offset, comment in enumerate(statements):
            comment.tail = None
            parent.insert(at + offset, comment)
        el.drop_tree()  # keeps its tail text
    if parts is not None:
        body = lxml.html.tostring(root, encoding="unicode", method="html")
    else:
        body = (root.text or "") + "".join(lxml.html.tostring(child, encoding="unicode", method="html") for child in root)
    return protected.restore(head + body + tail)


def _hides(el, prefix: str) -> bool:
    """Whether the element is hidden whatever the data (a Jinja construct between its attributes may add or drop the style)."""
    if any(attr.startswith(f"data-{prefix}") for attr in el.attrib):
        return False
    return el.get("hidden") is not None or bool(_HIDES.search(el.get("style") or ""))


def _is_statement(comment: str, protected: Protected) -> bool:
    """Whether a placeholder comment (``rmj00004j``) stands for a Jinja statement (``{% ... %}``)."""
    m = re.fullmatch(rf"{protected.prefix}(\d{{5}})j", comment)
    return m is not None and protected.constructs[int(m.group(1))].startswith("{%")


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
