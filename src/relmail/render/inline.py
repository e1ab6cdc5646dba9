"""CSS inlining of a template *source*, once, with every Jinja construct intact.

premailer takes milliseconds per document, far more than rendering it, so
relmail inlines the flattened template source once and renders the result
for every customer. Two traps stand in the way, and both are handled here:

* premailer (through lxml's serializer) percent-encodes ``{{ p.url }}`` in
  ``href``/``src`` into ``%7B%7B%20p.url%20%7D%7D``;
* an HTML parser moves text (``{% for %}``, ``{% if %}``) that sits between
  table rows out of the table ("foster parenting").

So each construct is first replaced by a placeholder chosen for where it
stands in the HTML: an HTML comment ``<!--rmj00001j-->`` in content (parsers
keep comments in place, even between rows), an opaque alphanumeric token
``rmj00002j`` in an attribute value or in ``<title>``/``<style>``, and a
valueless attribute ``data-rmj00003`` between attributes. After premailer the
placeholders are swapped back. Jinja comments are dropped (they render to
nothing); constructs inside HTML comments (MSO conditionals) are left as they
are, premailer does not look inside comments. The inlining itself, and
how it keeps media queries working, is :mod:`relmail.render.css`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import TemplateError
from .css import inline_css
from .environment import segments

_RAW_TAGS = {"style", "script", "title", "textarea"}
_TAGNAME = re.compile(r"(/?)([A-Za-z][^\s/>]*)")
_DOCTYPE = re.compile(r"\s*<!doctype[^>]*>", re.IGNORECASE)
_HTML_OPEN = re.compile(r"<html[\s>]", re.IGNORECASE)
_HTML_CLOSE = re.compile(r"</html\s*>", re.IGNORECASE)

class _Scanner:
    """Just enough of an HTML tokenizer to know where a construct stands."""

    def __init__(self):
        self.state = "data"
        self.tag = ""
        self.closing = False
        self.after_equals = False

    def feed(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            st = self.state
            if st == "data":
                j = text.find("<", i)
                if j < 0:
                    return
                if text.startswith("<!--", j):
                    self.state, i = "comment", j + 4
                elif text.startswith("<!", j) or text.startswith("<?", j):
                    self.state, i = "decl", j + 2
                else:
                    m = _TAGNAME.match(text, j + 1)
                    if m:
                        self.state, self.closing, self.tag = "tag", m.group(1) == "/", m.group(2).lower()
                        self.after_equals = False
                        i = m.end()
                    else:
                        i = j + 1
            elif st == "tag":
                m = re.compile(r"[^\"'>]*").match(text, i)
                skipped = m.group(0).rstrip()
                if skipped:
                    self.after_equals = skipped.endswith("=")
                i = m.end()
                if i >= n:
                    return
                ch = text[i]
                i += 1
                if ch == ">":
                    self.state = "raw" if (not self.closing and self.tag in _RAW_TAGS) else "data"
                else:
                    self.state = "dq" if ch == '"' else "sq"
            elif st in ("dq", "sq"):
                j = text.find('"' if st == "dq" else "'", i)
                if j < 0:
                    return
                self.state, self.after_equals, i = "tag", False, j + 1
            elif st == "comment":
                j = text.find("-->", i)
                if j < 0:
                    return
                self.state, i = "data", j + 3
            elif st == "decl":
                j = text.find(">", i)
                if j < 0:
                    return
                self.state, i = "data", j + 1
            elif st == "raw":
                m = re.compile(r"</" + re.escape(self.tag) + r"[\s>]", re.IGNORECASE).search(text, i)
                if not m:
                    return
                self.state, i = "data", m.start()


@dataclass(frozen=True)
class Protected:
    """A template source with Jinja constructs replaced by placeholders."""

    html: str
    constructs: tuple[str, ...]
    prefix: str

    def restore(self, text: str) -> str:
        """Swap every placeholder in ``text`` back for its Jinja construct."""
        c = self.constructs
        return _restore_re(self.prefix).sub(lambda m: c[int(m.group(1) or m.group(2) or m.group(3))], text)


def _restore_re(prefix: str) -> re.Pattern:
    return re.compile(rf"<!--{prefix}(\d{{5}})j-->|\s*data-{prefix}(\d{{5}})(?:=\"\")?|{prefix}(\d{{5}})j")


def _pick_prefix(source: str) -> str:
    for prefix in ("rmj", "rmk", "rmq", "rmx", "rmz"):
        if not re.search(prefix + r"\d{5}", source):
            return prefix
    raise TemplateError("template source contains every placeholder prefix relmail could use (rmj00000 ...)")


def protect(env, source: str, name: str | None = None, *, for_text: bool = False) -> Protected:
    """Replace each Jinja construct in ``source`` by a placeholder that survives HTML parsing.

    ``for_text=True`` uses plain tokens everywhere (html2text drops comments).
    """
    prefix = _pick_prefix(source)
    scanner = _Scanner()
    out: list[str] = []
    constructs: list[str] = []
    for seg in segments(env, source, name):
        if seg.kind == "data":
            out.append(seg.text)
            scanner.feed(seg.text)
            continue
        if seg.kind == "comment":
            continue
        st = scanner.state
        if st in ("comment", "decl"):
            out.append(seg.text)
            continue
        n = len(constructs)
        constructs.append(seg.text)
        if st == "data":
            out.append(f"{prefix}{n:05d}j" if for_text else f"<!--{prefix}{n:05d}j-->")
        elif st == "tag" and not scanner.after_equals:
            out.append(f" data-{prefix}{n:05d} ")
        elif st == "raw" and scanner.tag == "style" and seg.kind == "stmt":
            raise TemplateError(
                f"{name or '<template>'}:{seg.lineno}: Jinja statements inside <style> cannot be inlined; "
                "use expressions there, or put conditional styles in a media query or a class"
            )
        else:
            out.append(f"{prefix}{n:05d}j")
    return Protected("".join(out), tuple(constructs), prefix)


def _premailer(document: str, placeholder: re.Pattern | None = None) -> str:
    """The CSS inliner on a document starting at ``<html``; returns it without doctype."""
    return inline_css(document, placeholder)


def split_document(html: str) -> tuple[str, str, str] | None:
    """(before ``<html``, the html element, after ``</html>``) or None for a fragment."""
    start = _HTML_OPEN.search(html)
    if not start:
        return None
    ends = list(_HTML_CLOSE.finditer(html))
    end = ends[-1].end() if ends else len(html)
    return html[: start.start()], html[start.start() : end], html[end:]


def inline_document(html: str) -> str:
    """Inline the CSS of a rendered document (the slow per-e-mail way, for checks and baselines)."""
    parts = split_document(html)
    if parts is None:
        return html
    head, doc, tail = parts
    return head + _premailer(doc) + tail


_CACHE: dict[str, tuple[Protected, str]] = {}


def inline_protected(env, source: str, name: str | None = None) -> tuple[Protected, str]:
    """(the protection, the inlined source still holding placeholders), once per distinct source.

    Memoised by the SHA-256 of the source: every message and locale that
    shares a flattened source pays for premailer once per process.
    """
    key = hashlib.sha256(source.encode("utf-8")).hexdigest()
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    protected = protect(env, source, name)
    parts = split_document(protected.html)
    if parts is None:
        result = (protected, protected.html)
    else:
        head, doc, tail = parts
        result = (protected, head + _premailer(doc, re.compile(protected.prefix + r"\d{5}j")) + tail)
    _CACHE[key] = result
    return result


def inline_source(env, source: str, name: str | None = None) -> str:
    """The Jinja source with its CSS inlined and every construct intact."""
    protected, html = inline_protected(env, source, name)
    return protected.restore(html)
