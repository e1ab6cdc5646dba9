"""Inline-once against inline-after-render: the check that inlining the template's CSS once changes nothing.

The e-mail rendered from the template whose CSS was inlined once is compared
with the same e-mail inlined after rendering, after parsing both with lxml
and collapsing whitespace (Jinja statements leave line breaks where they
stood).
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

from .bounds import run_bounded
from .environment import template_from_source
from .inline import inline_document

if TYPE_CHECKING:
    from .inputs import CustomerContext, MessageSpec
    from .renderer import Renderer

_A_HREF = re.compile(r"(<(?:a|area)\b[^>]*?\shref=\")([^\"]*)(\")", re.IGNORECASE | re.DOTALL)


def _normalize(html: str) -> str:
    import lxml.html

    doc = lxml.html.document_fromstring(html)
    out = lxml.html.tostring(doc, encoding="unicode", method="html")
    out = re.sub(r">\s+<", "><", out)
    return re.sub(r"\s+", " ", out).strip()


def inline_difference(renderer: Renderer, spec: MessageSpec, ctx: CustomerContext) -> str | None:
    """None when inline-once equals inline-after-render for this customer, else a short diff."""
    compiled = renderer.compile(spec, ctx.locale)
    variables = renderer.context(compiled, ctx, renderer.links.token(ctx.id, spec.topic, spec.run_id))
    plain = template_from_source(renderer.html_env, compiled.flat_source, compiled.html_file)

    def both() -> tuple[str, str]:
        return compiled.html.render(variables), inline_document(plain.render({**variables, "_tracker": None}))

    once, after = run_bounded(renderer.limits, both)
    after = _A_HREF.sub(
        lambda m: m.group(1) + compiled.tracker.add(m.group(2).replace("&amp;", "&")).replace("&", "&amp;") + m.group(3), after
    )
    a, b = _normalize(once), _normalize(after)
    if a == b:
        return None
    diff = difflib.unified_diff(b.replace("><", ">\n<").split("\n"), a.replace("><", ">\n<").split("\n"),
                                "inline-after-render", "inline-once", n=0, lineterm="")
    return "\n".join(list(diff)[2:8])
