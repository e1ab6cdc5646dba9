"""``relmail templates check``: lint every template and prove inline-once is exact.

Findings, each with file, line (when known) and severity:

* syntax errors (every file, not only the first);
* a construct that cannot be flattened (computed extends/include names);
* undefined variables and other failures against the sample customers;
* ``<img>`` without ``alt``; ``http://`` links (literal in the source, or
  produced by a render);
* rendered HTML over 102 KB (Gmail clips the message there);
* **inline-once ≠ inline-after-render**: each message template is rendered
  for every sample customer both ways, from the compiled template whose
  CSS was inlined once, and by rendering the plain template and running
  premailer on the result, and any difference is reported.

The comparison parses both outputs with lxml and collapses whitespace
between and inside text runs: Jinja statements leave line breaks and
indentation where they stood, which HTML does not render.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..errors import NotFound, TemplateError
from .catalog import Catalog
from .environment import template_error
from .inline import inline_document
from .renderer import CustomerContext, MessageSpec, Renderer, RenderError

GMAIL_CLIP_BYTES = 102 * 1024

_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE | re.DOTALL)
_ALT = re.compile(r"\balt\s*=", re.IGNORECASE)
_HTTP_LITERAL = re.compile(r"\b(?:href|src)\s*=\s*[\"']?(http://[^\"'\s>]*)", re.IGNORECASE)
_A_HREF = re.compile(r"(<(?:a|area)\b[^>]*?\shref=\")([^\"]*)(\")", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{self.severity}: {where}: {self.message}"

    def as_dict(self) -> dict:
        return {"severity": self.severity, "file": self.file, "line": self.line, "message": self.message}


def sample_contexts(locale: str = "en_GB") -> list[CustomerContext]:
    """Sample customers: with and without products and names, with awkward characters."""
    shop = "https://fietsenwinkel.example/p/"
    # Every key a catalogue product has (render.contexts.load_catalog), some of them empty.
    products = [
        {"id": "EB-200", "name": "E-bike Stad 200", "price": 2499.0, "url": shop + "EB-200", "category": "e-bikes",
         "image_url": "https://fietsenwinkel.example/img/EB-200.jpg", "attributes": {"vendor": "Stadsfiets"}},
        {"id": "LOCK-S1", "name": "SlimSlot S1 smart lock", "price": 129.0, "url": shop + "LOCK-S1", "category": "accessories",
         "image_url": None, "attributes": {}},
        {"id": "SERVICE-PLUS", "name": "Onderhoudsbeurt Plus", "price": 89.0, "url": None, "category": "maintenance",
         "image_url": None, "attributes": {}},
    ]
    # No database here: product("...") of any id gives a stand-in (the plan's render gate uses the real catalogue).
    catalog = Catalog({p["id"]: p for p in products}, stand_in=True)
    featured = products[:1]
    return [
        CustomerContext("C0000001", "jan.devries@example.nl", "Jan", "de Vries", locale, "Europe/Amsterdam",
                        {"loyalty_tier": "loyal", "city": "Utrecht"}, products[1:], featured_products=featured, catalog=catalog),
        CustomerContext("C0000002", "amy@example.co.uk", None, None, locale, "Europe/London", {}, [],
                        featured_products=featured, catalog=catalog),
        CustomerContext("C0000003", "zoe@example.org", "Zoë <b>&</b>", "O'Brien-Müller", locale, "Europe/Amsterdam",
                        {"loyalty_tier": "new"}, products[1:2], featured_products=featured, catalog=catalog),
    ]


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
    once = compiled.html.render(variables)
    plain = renderer._from_string(renderer.html_env, compiled.flat_source, compiled.html_file)
    after = inline_document(plain.render({**variables, "_tracker": None}))
    after = _A_HREF.sub(
        lambda m: m.group(1) + compiled.tracker.add(m.group(2).replace("&amp;", "&")).replace("&", "&amp;") + m.group(3), after
    )
    a, b = _normalize(once), _normalize(after)
    if a == b:
        return None
    diff = difflib.unified_diff(b.replace("><", ">\n<").split("\n"), a.replace("><", ">\n<").split("\n"),
                                "inline-after-render", "inline-once", n=0, lineterm="")
    return "\n".join(list(diff)[2:8])


def _line_of(source: str, pos: int) -> int:
    return source.count("\n", 0, pos) + 1


def check_templates(renderer: Renderer, *, compare: bool = True, size_limit: int = GMAIL_CLIP_BYTES) -> list[Finding]:
    """Every finding for the templates folder of ``renderer`` (empty: all good)."""
    findings: list[Finding] = []
    root = renderer.templates_dir
    broken: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".html", ".txt")):
        name = str(path.relative_to(root))
        env = renderer.html_env if name.endswith(".html") else renderer.text_env
        try:
            env.get_template(name)
        except Exception as exc:  # syntax errors, with file and line
            err = template_error(exc, name)
            findings.append(Finding("error", name, getattr(err, "line", None), str(err).split(": ", 1)[-1]))
            broken.add(name)
            continue
        if name.endswith(".html"):
            source = path.read_text(encoding="utf-8")
            for m in _IMG.finditer(source):
                if not _ALT.search(m.group(0)):
                    findings.append(Finding("error", name, _line_of(source, m.start()), "<img> without alt text"))
            for m in _HTTP_LITERAL.finditer(source):
                findings.append(Finding("warning", name, _line_of(source, m.start()), f"link without https: {m.group(1)}"))

    for template in renderer.message_templates():
        locales = [renderer.settings.default_locale] + [f"{lang}" for lang in renderer.languages_of(template)]
        seen_files = set()
        for locale in locales:
            spec = MessageSpec(id=template, template=template, topic="newsletter", campaign_id="check", run_id="check")
            try:
                compiled = renderer.compile(spec, _full_locale(locale))
            except (TemplateError, NotFound) as exc:
                file = f"{template}.html"
                if not any(b.startswith(template + ".") for b in broken):
                    findings.append(Finding("error", getattr(exc, "file", file) or file, getattr(exc, "line", None), str(exc)))
                continue
            if compiled.html_file in seen_files:
                continue
            seen_files.add(compiled.html_file)
            for ctx in sample_contexts(_full_locale(locale)):
                try:
                    email = renderer.render(spec, ctx)
                except RenderError as exc:
                    findings.append(Finding("error", exc.file or compiled.html_file, exc.line, f"sample {ctx.id}: {exc.reason}"))
                    continue
                size = len(email.html.encode("utf-8"))
                if size > size_limit:
                    findings.append(Finding("warning", compiled.html_file, None,
                                            f"sample {ctx.id}: HTML is {size / 1024:.0f} KB; Gmail clips messages over {size_limit // 1024} KB"))
                for url in sorted(set(re.findall(r"href=\"(http://[^\"]*)\"", email.html))):
                    findings.append(Finding("warning", compiled.html_file, None, f"sample {ctx.id}: link without https: {url}"))
                if compare:
                    diff = inline_difference(renderer, spec, ctx)
                    if diff:
                        findings.append(Finding("error", compiled.html_file, None,
                                                f"sample {ctx.id}: inline-once differs from inline-after-render:\n{diff}"))
    return _dedupe(findings)


def _full_locale(lang: str) -> str:
    """``nl`` → ``nl_NL``-like locale for a sample customer (Babel's likely subtag)."""
    if "_" in lang:
        return lang
    from babel import Locale

    try:
        return str(Locale.parse(lang))
    except Exception:  # unknown language suffix: keep it, the variant is still chosen by name
        return lang


def _dedupe(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


__all__ = ["Finding", "check_templates", "inline_difference", "sample_contexts", "GMAIL_CLIP_BYTES"]
