"""``relmail templates check``: lint every template, and render what the campaigns will send as they will send it.

Every file under ``templates/`` is compiled and linted, each finding with
file, line and severity, every finding of every file (a syntax error in one
file does not hide the others' findings, nor the other findings of the
same file):

* syntax errors; a construct that cannot be flattened (a computed
  ``extends``/``include`` name);
* ``<img>`` without ``alt``; ``http://`` links in the source.

Then, for every message of every campaign, each locale *variant* of its
e-mail (:mod:`relmail.render.variants`: the base template and every locale
variant of it or of a partial it includes) is rendered the way the plan and
the send render it: with the campaign's ``message.data``, the products the
plan would recommend, and sample customers **from the store**
(:mod:`relmail.render.samples`): for each variant customers whose locale
gets it, the one with the most optional fields filled in and the one with
the fewest (no name, no attributes). A variant no customer's locale
reaches yet is rendered for the same customers in that locale. Only when the store holds no customers (or with
``generated=True``) are generated samples used. A template no campaign uses
is compiled and linted, not rendered with invented data. Rendered e-mails
are checked for:

* failures (an undefined variable printed, a filter error): errors;
* names a template tests or defaults (``x is defined``, ``x|default(..)``,
  ``{% if x %}``) that are defined for none of the samples: warnings, since
  a typo there silently takes the fallback for every customer
  (:mod:`relmail.render.undefined`);
* an HTML part over 102 KB as sent, after its transfer encoding (Gmail
  clips the message there), and a C1 control character anywhere
  (:mod:`relmail.importers.characters`: Gmail clips any e-mail holding one); ``http://``
  links: warnings;
* **inline-once ≠ inline-after-render**: the e-mail rendered from the
  template whose CSS was inlined once differs from the same e-mail inlined
  after rendering (compared after parsing both with lxml and collapsing
  whitespace: Jinja statements leave line breaks where they stood;
  :mod:`relmail.render.inline_diff`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..campaigns.parse import missing_templates
from ..errors import NotFound, Problem, TemplateError
from ..importers.characters import C1_CONTROL, WINDOWS_1252
from ..windows import current_time
from .environment import content_language, template_error, text_direction
from .inline_diff import inline_difference
from .inputs import MessageSpec
from .mime import transfer_size
from .results import RenderError
from .samples import SampleSource, candidate_locales, full_locale
from .undefined import never_defined, tested_names, which_variants
from .variants import Variant, Variants, other_language

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..campaigns import Campaign
    from .renderer import Renderer

GMAIL_CLIP_BYTES = 102 * 1024

_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE | re.DOTALL)
_ALT = re.compile(r"\balt\s*=", re.IGNORECASE)
_HTTP_LITERAL = re.compile(r"\b(?:href|src)\s*=\s*[\"']?(http://[^\"'\s>]*)", re.IGNORECASE)


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


@dataclass
class CheckReport:
    """What :func:`check_templates` looked at, and found."""

    findings: list[Finding] = field(default_factory=list)
    #: Files compiled and linted.
    files: int = 0
    #: (campaign, message, variant, renders) for every variant rendered.
    rendered: list[tuple[str, str, str, int]] = field(default_factory=list)
    #: Templates of the folder no campaign uses (linted only).
    unused: list[str] = field(default_factory=list)
    #: "store", "store (none in some locales)" or "generated".
    samples: str = "store"
    #: Messages whose template does not exist, each named where its campaign names it (not rendered).
    missing: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def _line_of(source: str, pos: int) -> int:
    return source.count("\n", 0, pos) + 1


def check_templates(renderer: Renderer, campaigns: Iterable[Campaign] = (), engine: Engine | None = None, *, compare: bool = True,
                    size_limit: int = GMAIL_CLIP_BYTES, as_of: datetime | None = None, generated: bool = False) -> CheckReport:
    """Lint every template of ``renderer``'s folder and render every variant of every message of ``campaigns``.

    Samples come from the store behind ``engine`` (see the module
    docstring); with no engine, an empty store or ``generated=True`` they
    are generated. ``as_of`` is the time recommended products are chosen
    for (default: now).
    """
    report = CheckReport()
    report.findings, report.files = _lint(renderer)
    broken = {f.file for f in report.findings if f.severity == "error"}
    campaigns = list(campaigns)
    used = {m.template for camp in campaigns for m in camp.messages}
    report.unused = [t for t in renderer.message_templates() if t not in used]
    for template in report.unused:
        report.findings += _compile_only(renderer, template, broken)
    if campaigns:
        store = SampleSource(engine, as_of or current_time(), generated)
        report.samples = store.kind
        variants = Variants(renderer)
        locales = candidate_locales(renderer, store)
        never: dict[tuple[str, int | None, str], list[tuple[str, str]]] = {}
        variants_of: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for camp in campaigns:
            # A template the campaign names and the folder lacks is the campaign's error, as in a plan.
            missing = missing_templates(camp, renderer.templates_dir)
            report.missing += missing
            report.findings += [Finding("error", p.file, p.line, f"field '{p.field}': {p.message}") for p in missing]
            absent = {p.field for p in missing}
            for i, m in enumerate(camp.messages):
                if f"messages.{i}.template" in absent:
                    continue
                spec = MessageSpec.from_campaign(camp, m, run_id=f"{camp.name}:check")
                report.findings += _check_message(renderer, variants, store, camp.name, m, spec, locales, broken, compare,
                                                  size_limit, report.rendered, never, variants_of)
        report.findings += _topic_label_findings(renderer, store.locales)
        for (file, line, name), where in sorted(never.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
            report.findings.append(Finding("warning", file, line, f"'{name}' is not defined for any sample customer of "
                                           f"{which_variants(file, where, variants_of)}: the template's fallback is used for every one (a typo?)"))
    report.findings += _check_pages(renderer)
    report.findings = list(dict.fromkeys(report.findings))
    return report


def _check_pages(renderer: Renderer) -> list[Finding]:
    """The project's own unsubscribe and preference pages (``templates/pages/``), rendered in every language."""
    from ..web.check import check_pages

    project = getattr(renderer, "project", None)
    if project is None:
        return []
    out = []
    for err in check_pages(project):
        file = Path(project.root) / err.file
        with suppress(ValueError):
            file = file.relative_to(renderer.templates_dir)
        out.append(Finding("error", str(file), err.line, str(err).split(": ", 1)[-1]))
    return out


def _topic_label_findings(renderer: Renderer, customer_locales: dict[str, int]) -> list[Finding]:
    """A topic without a label in a language the store's customers get their pages in: they would read its slug.

    Only for a shop whose customers see the pages in more than one language; a
    plain string label is the project's choice for every language.
    """
    from ..feedback.consent import topic_defaults
    from ..importers.fields import language_of
    from ..web.pages import Pages

    project = getattr(renderer, "project", None)
    if project is None:
        return []
    pages = Pages(project)
    served = sorted({pages.language(loc or None) for loc in customer_locales})
    if len(served) < 2:
        return []
    out = []
    for slug in topic_defaults(project):
        label = pages.topic_config.get(slug, {}).get("label")
        if isinstance(label, str):
            continue
        have = {language_of(k) for k in label or {}}
        for lang in served:
            if lang not in have:
                shown = pages.topic(slug, lang).label
                out.append(Finding("warning", "relmail.toml", None, f"topic '{slug}' has no label in '{lang}': customers "
                                   f"reading pages in that language see it as '{shown}'; add [topics.{slug}] label = {{ {lang} = \"...\" }}"))
    return out


def _lint(renderer: Renderer) -> tuple[list[Finding], int]:
    """Syntax and source findings of every file, each file checked whatever the others (or its own syntax) hold."""
    findings: list[Finding] = []
    root = renderer.templates_dir
    files = renderer.template_files()  # templates/pages/ holds the web pages, not e-mails
    for path in files:
        name = str(path.relative_to(root))
        env = renderer.html_env if name.endswith(".html") else renderer.text_env
        try:
            env.get_template(name)
        except Exception as exc:  # syntax errors, with file and line
            err = template_error(exc, name)
            findings.append(Finding("error", name, getattr(err, "line", None), str(err).split(": ", 1)[-1]))
        if name.endswith(".html"):
            source = path.read_text(encoding="utf-8")
            for m in _IMG.finditer(source):
                if not _ALT.search(m.group(0)):
                    findings.append(Finding("error", name, _line_of(source, m.start()), "<img> without alt text"))
            for m in _HTTP_LITERAL.finditer(source):
                findings.append(Finding("warning", name, _line_of(source, m.start()), f"link without https: {m.group(1)}"))
    return findings, len(files)


def _compile_only(renderer: Renderer, template: str, broken: set[str]) -> list[Finding]:
    """Compile a template no campaign uses, in every locale it has a variant for; nothing is rendered."""
    out = []
    spec = MessageSpec(id=template, template=template, topic="-", subject="-")
    for locale in [renderer.settings.default_locale, *renderer.languages_of(template)]:
        try:
            renderer.compile(spec, full_locale(locale))
        except (TemplateError, NotFound) as exc:
            file = getattr(exc, "file", None) or f"{template}.html"
            if file not in broken:
                out.append(Finding("error", file, getattr(exc, "line", None), _strip_where(str(exc), file)))
    return out


def _check_message(renderer, variants: Variants, store: SampleSource, campaign: str, m, spec: MessageSpec, locales: list[str],
                   broken: set[str], compare: bool, size_limit: int, rendered: list, never: dict, variants_of: dict) -> list[Finding]:
    """Render every variant of one message for its samples.

    ``never`` collects (file, line, name) → (message, variant) where no sample defines it; ``variants_of``
    message → every variant rendered.
    """
    out: list[Finding] = []
    groups: dict[Variant, list[str]] = {}
    for loc in locales:
        try:
            groups.setdefault(variants.of(spec, loc), []).append(loc)
        except (TemplateError, NotFound) as exc:
            file = getattr(exc, "file", None) or f"{m.template}.html"
            if file not in broken:
                out.append(Finding("error", file, getattr(exc, "line", None),
                                   f"{campaign}/{m.id} for {loc}: {_strip_where(str(exc), file)}"))
    where = f"{campaign}/{m.id}"
    default = renderer.settings.default_locale
    for variant, locs in groups.items():
        if any(f in broken for f in variant.files):
            continue  # its syntax error is reported; rendering would only repeat it
        # The store's customers of these locales (those with none read the default locale's).
        customers = {loc: store.locales.get(loc, 0) + (store.locales.get("", 0) if loc == default else 0) for loc in locs}
        text = other_language(variant, customers, default, renderer.templates_dir)
        if text is not None:
            out.append(Finding("warning", variant.html[0], None, f"{where}: {text} (customers in the store)"))
        samples = store.samples(locs, tuple(m.products))
        undefined: list[tuple[dict[str, Any], list[tuple[str, int | None, str]]]] = []
        for sample in samples:
            ctx = sample.context
            try:
                email = renderer.render(spec, ctx)
            except RenderError as exc:
                out.append(Finding("error", exc.file or variant.html[0], exc.line, f"{where} [{variant}], sample {sample.label}: {exc.reason}"))
                continue
            except (TemplateError, NotFound) as exc:
                file = getattr(exc, "file", None) or variant.html[0]
                out.append(Finding("error", file, getattr(exc, "line", None), f"{where} [{variant}]: {_strip_where(str(exc), file)}"))
                break
            undefined.append(tested_names(renderer, spec, ctx))
            if sample is samples[0]:
                out.extend(direction_findings(email.html, content_language(variant.html[0], renderer.settings.default_locale,
                                                                           renderer.templates_dir), variant.html[0], f"{where} [{variant}]"))
            size = transfer_size(email.html)
            if size > size_limit:
                out.append(Finding("warning", variant.html[0], None, f"{where}, sample {sample.label}: the HTML part is {size / 1024:.0f} KB "
                                                                      f"as sent; Gmail clips messages over {size_limit // 1024} KB"))
            for part, value in (("subject", email.subject), ("HTML", email.html), ("text", email.text)):
                if found := C1_CONTROL.search(value):
                    char = found.group()
                    meant = f" (Windows-1252 {WINDOWS_1252[ord(char)]!r} stored wrongly)" if ord(char) in WINDOWS_1252 else ""
                    out.append(Finding("warning", variant.html[0], None, f"{where}, sample {sample.label}: the {part} holds the control "
                                                                          f"character U+{ord(char):04X}{meant}; Gmail shows such an e-mail as "
                                                                          f"clipped"))
            for url in sorted(set(re.findall(r"href=\"(http://[^\"]*)\"", email.html))):
                out.append(Finding("warning", variant.html[0], None, f"{where}, sample {sample.label}: link without https: {url}"))
            if compare:
                try:
                    diff = inline_difference(renderer, spec, ctx)
                except TemplateError as exc:  # a limit of [render], hit by the second render
                    out.append(Finding("error", variant.html[0], None, f"{where}, sample {sample.label}: {exc}"))
                    continue
                if diff:
                    out.append(Finding("error", variant.html[0], None,
                                       f"{where}, sample {sample.label}: inline-once differs from inline-after-render:\n{diff}"))
        rendered.append((campaign, m.id, str(variant), len(samples)))
        variants_of.setdefault(where, []).append((variant.html[0], tuple(variant.files)))
        for key in never_defined(undefined):
            never.setdefault(key, []).append((where, variant.html[0]))
    return out


_HTML_TAG = re.compile(r"<html\b[^>]*>", re.IGNORECASE)
_BODY = re.compile(r"<body\b[^>]*>(.*)", re.IGNORECASE | re.DOTALL)
_DIR_RTL = re.compile(r"\sdir\s*=\s*[\"']?rtl\b", re.IGNORECASE)


def direction_findings(html: str, language: str, file: str, where: str) -> list[Finding]:
    """Warnings for an e-mail in a right-to-left language that does not say so where mail programs look.

    Without ``dir="rtl"`` on ``<html>`` a Hebrew or Arabic e-mail is laid out
    left to right: lines start on the left and a sentence's final full stop
    lands at its beginning. Gmail keeps no attribute of ``<html>`` or ``<body>``,
    so an element inside the body (the outermost table or div) needs it too.
    """
    if text_direction(language) != "rtl":
        return []
    tag = _HTML_TAG.search(html)
    body = _BODY.search(html)
    missing, fix = [], []
    if tag is None or not _DIR_RTL.search(tag.group(0)):
        missing.append("on <html>")
        fix.append("write <html lang=\"{{ language }}\" dir=\"{{ direction }}\">")
    if body is not None and not _DIR_RTL.search(body.group(1)):
        missing.append("on an element in <body> (Gmail keeps no attribute of <html> or <body>)")
        fix.append("give the outermost table or div dir=\"{{ direction }}\"")
    if not missing:
        return []
    return [Finding("warning", file, None, f"{where}: an e-mail in '{language}', a right-to-left language, without dir=\"rtl\" "
                                           f"{' and '.join(missing)}: mail programs lay it out left to right; {' and '.join(fix)}")]


def _strip_where(text: str, file: str) -> str:
    return text.split(": ", 1)[1] if text.startswith(f"{file}:") and ": " in text else text


__all__ = ["CheckReport", "Finding", "GMAIL_CLIP_BYTES", "check_templates"]
