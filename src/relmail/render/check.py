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
plan would recommend, and sample customers **from the store**: for each
variant customers whose locale gets it, the one with the most optional
fields filled in and the one with the fewest (no name, no attributes). A
variant no customer's locale reaches yet is rendered for the same
customers in that locale. Only when the store holds no customers (or with
``generated=True``) are generated samples used. A template no campaign uses
is compiled and linted, not rendered with invented data. Rendered e-mails
are checked for:

* failures (an undefined variable printed, a filter error): errors;
* names a template tests or defaults (``x is defined``, ``x|default(..)``,
  ``{% if x %}``) that are defined for none of the samples: warnings, since
  a typo there silently takes the fallback for every customer;
* HTML over 102 KB (Gmail clips the message there); ``http://`` links;
* **inline-once ≠ inline-after-render**: the e-mail rendered from the
  template whose CSS was inlined once differs from the same e-mail inlined
  after rendering (compared after parsing both with lxml and collapsing
  whitespace: Jinja statements leave line breaks where they stood).
"""

from __future__ import annotations

import copy
import difflib
import re
import sys
from collections.abc import Iterable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import BaseLoader
from jinja2.exceptions import TemplateNotFound
from jinja2.utils import missing
from sqlalchemy import String, case, cast, func, select

from ..campaigns.parse import missing_templates
from ..errors import NotFound, Problem, TemplateError
from ..store.models import Customer
from ..windows import current_time
from . import optional
from .bounds import run_bounded
from .catalog import Catalog
from .contexts import customer_contexts, load_catalog
from .environment import locale_languages, template_error, variant_names
from .inline import inline_document
from .renderer import CustomerContext, MessageSpec, Renderer, RenderError
from .variants import Variant, Variants

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..campaigns import Campaign

GMAIL_CLIP_BYTES = 102 * 1024
#: Store customers rendered per variant: the fullest record and the emptiest one.
SAMPLES_PER_VARIANT = 2

_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE | re.DOTALL)
_ALT = re.compile(r"\balt\s*=", re.IGNORECASE)
_HTTP_LITERAL = re.compile(r"\b(?:href|src)\s*=\s*[\"']?(http://[^\"'\s>]*)", re.IGNORECASE)
_A_HREF = re.compile(r"(<(?:a|area)\b[^>]*?\shref=\")([^\"]*)(\")", re.IGNORECASE | re.DOTALL)
#: A locale suffix in a file name: ``welcome.nl.html``, ``footer.pt_BR.html``.
_SUFFIX = re.compile(r"^[^.]+\.([a-z]{2,3}(?:_[A-Za-z]{2,4})?)\.(?:html|txt)$")
#: Names Jinja itself looks up and may find undefined (not the template author's data).
_JINJA_NAMES = {"caller", "varargs", "kwargs", "loop", "self", "super"}
C = Customer.__table__


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
class Sample:
    """A customer a variant is rendered for, and where it came from."""

    context: CustomerContext
    #: ``C0000042``, ``C0000042 as nl_NL`` (a store customer in the variant's locale), or ``generated C0000003``.
    label: str


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


def sample_contexts(locale: str = "en_GB") -> list[CustomerContext]:
    """Generated customers (for an empty store): with and without products and names, with awkward characters."""
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
    featured = products[:1]  # a message's own featured products replace it (_Store.samples)
    return [
        CustomerContext("C0000001", "jan.devries@example.nl", "Jan", "de Vries", locale, "Europe/Amsterdam",
                        {"loyalty_tier": "loyal", "city": "Utrecht"}, products[1:], {"owned_products": ["EB-100"]},
                        featured_products=featured, catalog=catalog),
        CustomerContext("C0000002", "amy@example.co.uk", None, None, locale, "Europe/London", {}, [], {"owned_products": []},
                        featured_products=featured, catalog=catalog),
        CustomerContext("C0000003", "zoe@example.org", "Zoë <b>&</b>", "O'Brien-Müller", locale, "Europe/Amsterdam",
                        {"loyalty_tier": "new"}, products[1:2], {"owned_products": []}, featured_products=featured, catalog=catalog),
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
    plain = renderer._from_string(renderer.html_env, compiled.flat_source, compiled.html_file)

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
        store = _Store(engine, as_of or current_time(), generated)
        report.samples = store.kind
        if store.kind == "generated":
            # Invented products have no price per currency: do not ask them for one (the store's products are asked).
            renderer = copy.copy(renderer)
            renderer.currencies = replace(renderer.currencies, require_own_price=False)
        variants = Variants(renderer)
        locales = _candidate_locales(renderer, store)
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
        for (file, line, name), where in sorted(never.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
            report.findings.append(Finding("warning", file, line, f"'{name}' is not defined for any sample customer of "
                                           f"{_which_variants(file, where, variants_of)}: the template's fallback is used for every one (a typo?)"))
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
            renderer.compile(spec, _full_locale(locale))
        except (TemplateError, NotFound) as exc:
            file = getattr(exc, "file", None) or f"{template}.html"
            if file not in broken:
                out.append(Finding("error", file, getattr(exc, "line", None), _strip_where(str(exc), file)))
    return out


class _Store:
    """Sample customers from the store (or generated ones when it is empty)."""

    def __init__(self, engine, as_of: datetime, generated: bool):
        self.engine, self.as_of = engine, as_of
        self.locales: dict[str, int] = {}
        self.catalog: dict[str, dict] = {}
        if engine is not None and not generated:
            with engine.connect() as conn:
                self.locales = {loc or "": n for loc, n in conn.execute(select(C.c.locale, func.count()).group_by(C.c.locale))}
                self.catalog = load_catalog(conn)
        self.kind = "store" if self.locales else "generated"

    def samples(self, locales: list[str], featured: tuple[str, ...]) -> list[Sample]:
        """The fullest and the emptiest customer of ``locales`` (the first locale's, re-localised, if none has one)."""
        if self.kind == "generated":
            loc = locales[0]
            out = []
            for ctx in sample_contexts(loc):
                # The message's featured products: stand-ins for ids a store without products cannot name.
                shown = [ctx.catalog(p) for p in featured]
                out.append(Sample(replace(ctx, featured_products=shown), f"generated {ctx.id}"))
            return out
        own = [loc for loc in locales if loc in self.locales]
        ids = self._pick(own or None)
        with self.engine.connect() as conn:
            contexts = customer_contexts(conn, ids, self.as_of, self.catalog, featured)
        out = []
        for cid in ids:
            ctx = contexts[cid]
            if own:
                out.append(Sample(ctx, cid))
            else:
                # No customer's locale reaches this variant yet: the store's customers, as if in that locale.
                out.append(Sample(replace(ctx, locale=locales[0]), f"{cid} as {locales[0]}"))
        return out

    def _pick(self, locales: list[str] | None) -> list[str]:
        """Ids of the customer with the most optional fields filled in and of the one with the fewest."""
        fullness = sum(case((func.length(func.coalesce(col, "")) > 0, 1), else_=0) for col in (C.c.first_name, C.c.last_name))
        size = func.length(cast(C.c.attributes, String))
        q = select(C.c.id)
        if locales is not None:
            real = [loc for loc in locales if loc]
            cond = C.c.locale.in_(real) if real else None
            if "" in locales:
                cond = C.c.locale.is_(None) if cond is None else (cond | C.c.locale.is_(None))
            q = q.where(cond)
        richest = self._first(q.order_by(fullness.desc(), size.desc(), C.c.id))
        emptiest = self._first(q.order_by(fullness, size, C.c.id))
        return list(dict.fromkeys(x for x in (richest, emptiest) if x is not None))

    def _first(self, q) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(q.limit(1)).scalar()


def _candidate_locales(renderer: Renderer, store: _Store) -> list[str]:
    """Locales that between them reach every variant: the store's, the default, one per suffix in the folder, and a base one."""
    found = [loc or renderer.settings.default_locale for loc, _ in sorted(store.locales.items(), key=lambda kv: -kv[1])]
    found.append(renderer.settings.default_locale)
    suffixes = sorted({m.group(1) for p in renderer.templates_dir.rglob("*") if (m := _SUFFIX.match(p.name))})
    found += [_full_locale(s) for s in suffixes]
    # A locale no file has a variant for reaches the base templates (a default locale with its own variant does not).
    languages = {x.lower() for s in suffixes for x in (s, s.split("_")[0])}
    found.append(next(loc for loc in ("en_GB", "en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "sv_SE", "pl_PL")
                      if not ({loc.lower(), loc.split("_")[0]} & languages)))
    return list(dict.fromkeys(found))


def _check_message(renderer, variants: Variants, store: _Store, campaign: str, m, spec: MessageSpec, locales: list[str],
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
    for variant, locs in groups.items():
        if any(f in broken for f in variant.files):
            continue  # its syntax error is reported; rendering would only repeat it
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
            undefined.append(_tested_names(renderer, spec, ctx))
            size = len(email.html.encode("utf-8"))
            if size > size_limit:
                out.append(Finding("warning", variant.html[0], None, f"{where}, sample {sample.label}: HTML is {size / 1024:.0f} KB; "
                                                                      f"Gmail clips messages over {size_limit // 1024} KB"))
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
        for key in _never_defined(undefined):
            never.setdefault(key, []).append((where, variant.html[0]))
    return out


def _which_variants(file: str, found: list[tuple[str, str]], variants_of: dict[str, list[tuple[str, tuple[str, ...]]]]) -> str:
    """``weekly/newsletter`` when no variant made of ``file`` defines the name, else ``weekly/newsletter (newsletter.html only)``.

    A partial shared by a German and a Polish variant may test an attribute only the German and Polish
    products have: saying "any sample customer" of the message would send its author looking for a typo.
    """
    by_message: dict[str, list[str]] = {}
    for where, html in found:
        by_message.setdefault(where, []).append(html)
    out = []
    for where, htmls in by_message.items():
        htmls = list(dict.fromkeys(htmls))
        using = {h for h, files in variants_of.get(where, ()) if file in files}
        out.append(where if set(htmls) >= using else f"{where} ({', '.join(htmls)} only; the other variants have it)")
    return ", ".join(out)


def _never_defined(renders: list[tuple[dict[str, Any], list]]) -> list[tuple[str, int | None, str]]:
    """(file, line, name) of the names tested (or defaulted) in the templates that no sample defines.

    A name that is a path into the template variables (``customer.attributes.city``)
    is looked up in every sample's variables; a name the template made itself
    (``{% set %}``, a loop variable) counts as never defined when every render
    found it undefined.
    """
    if not renders:
        return []
    seen: dict[tuple[str, int | None, str], int] = {}
    for _, names in renders:
        for key in dict.fromkeys(names):
            seen[key] = seen.get(key, 0) + 1
    out = []
    for (file, line, name), count in seen.items():
        root = name.split(".")[0].split("[")[0]
        if root in renders[0][0]:
            never = not any(_defined(variables, name) for variables, _ in renders)
        else:
            never = count == len(renders)
        if never:
            out.append((file, line, name))
    return out


def _defined(variables: dict[str, Any], dotted: str) -> bool:
    """Whether ``customer.attributes.city`` (``products[].discount``: in any element) exists in ``variables``."""
    values = [variables]
    for part in dotted.replace("[]", ".[]").split("."):
        nxt = []
        for value in values:
            if part == "[]":
                nxt += list(value) if isinstance(value, list | tuple) else []
            elif isinstance(value, dict):
                if part in value:
                    nxt.append(value[part])
            elif hasattr(value, part):
                nxt.append(getattr(value, part))
        values = nxt
        if not values:
            return False
    return True


def _tested_names(renderer: Renderer, spec: MessageSpec, ctx: CustomerContext) -> tuple[dict[str, Any], list[tuple[str, int | None, str]]]:
    """The names a render of ``spec`` for ``ctx`` looked up and found undefined, with file and line.

    Renders the message's own files again (not the flattened, inlined
    source, whose lines are not the files'), through a loader that picks
    the customer's locale variant of every file, with an undefined type
    that records each lookup that came back empty.
    """
    compiled = renderer.compile(spec, ctx.locale)
    variables = renderer.context(compiled, ctx, renderer.links.token(ctx.id, spec.topic, spec.run_id))
    languages = locale_languages(ctx.locale or renderer.settings.default_locale)
    found: list[tuple[str, int | None, str]] = []
    paths = _paths(variables)
    for env, name in ((renderer.html_env, f"{spec.template}.html"), (renderer.text_env, f"{spec.template}.txt")):
        overlay = env.overlay(loader=_VariantLoader(env.loader, languages))
        try:
            tmpl = overlay.get_template(name)
        except TemplateNotFound:
            continue
        except Exception:  # a syntax error: reported by the lint
            continue
        # A failure was reported by the real render; what the render looked up before it still counts.
        with _recording(overlay, found, paths, renderer.templates_dir), suppress(Exception):
            tmpl.render(variables)
    return variables, [x for x in found if x[2].split(".")[0].split("[")[0] not in _JINJA_NAMES and not x[2].startswith("_")]


class _VariantLoader(BaseLoader):
    """Loads the locale variant of each template name (``footer.html`` → ``footer.nl.html``)."""

    def __init__(self, base, languages: tuple[str, ...]):
        self.base, self.languages = base, languages

    def get_source(self, environment, template):
        for candidate in variant_names(template, self.languages):
            try:
                return self.base.get_source(environment, candidate)
            except TemplateNotFound:
                continue
        raise TemplateNotFound(template)


def _paths(variables: dict[str, Any]) -> dict[int, str]:
    """id(object) → its dotted path in the template variables (``customer.attributes``), for naming lookups."""
    out: dict[int, str] = {}
    todo: list[tuple[str, Any, int]] = [(k, v, 0) for k, v in variables.items()]
    # Breadth first, in the variables' order: a list known by two names (products, recommended_products) gets the first.
    for path, value, depth in todo:
        if isinstance(value, dict | list | tuple) and id(value) not in out:
            out[id(value)] = path
            if depth < 4:
                items = value.items() if isinstance(value, dict) else ((None, v) for v in list(value)[:20])
                for key, child in items:
                    todo.append((f"{path}.{key}" if key is not None else f"{path}[]", child, depth + 1))
    return out


@contextmanager
def _recording(env, sink: list, paths: dict[int, str], root: Path):
    """Make ``env``'s undefined values record (file, line, dotted name) of the lookup that made them."""
    base = env.undefined
    made: dict[int, str] = {}

    class Recording(base):
        __slots__ = ()

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            obj, name = getattr(self, "_undefined_obj", None), getattr(self, "_undefined_name", None)
            if name is None:
                return
            owner = made.get(id(obj)) or paths.get(id(obj))
            dotted = name if owner is None and _is_missing(obj) else f"{owner or type(obj).__name__}.{name}"
            made[id(self)] = dotted
            sink.append((*_position(root), dotted))

    def missing(value: optional.Missing) -> None:
        # Optional data (attributes, products, message.data) tests a missing key as false: a typo
        # there is silent in a render, so the check names it like any other undefined lookup.
        name = value._undefined_name
        sink.append((*_position(root), "products[]" + name[len("product"):] if name.startswith("product.") else name))

    env.undefined = Recording
    optional.observers.append(missing)
    try:
        yield
    finally:
        env.undefined = base
        optional.observers.remove(missing)


def _is_missing(obj) -> bool:
    return obj is missing


def _position(root: Path) -> tuple[str, int | None]:
    """File and line of the innermost template frame on the stack."""
    frame = sys._getframe(2)
    while frame is not None:
        tmpl = frame.f_globals.get("__jinja_template__")
        if tmpl is not None:
            filename = tmpl.filename or tmpl.name or "<template>"
            with suppress(ValueError):  # a file outside the templates folder keeps its own path
                filename = str(Path(filename).resolve().relative_to(root.resolve()))
            return filename, tmpl.get_corresponding_lineno(frame.f_lineno)
        frame = frame.f_back
    return "<template>", None


def _strip_where(text: str, file: str) -> str:
    return text.split(": ", 1)[1] if text.startswith(f"{file}:") and ": " in text else text


def _full_locale(lang: str) -> str:
    """``nl`` → ``nl_NL``: the likely full locale of a file's language suffix, for a sample customer."""
    if "_" in lang:
        return lang
    from babel import Locale
    from babel.core import get_global

    likely = get_global("likely_subtags").get(lang.lower())
    try:
        found = Locale.parse(likely) if likely else None
    except (ValueError, LookupError):
        found = None
    # An unknown suffix stays as it is: the variant is still chosen by name.
    return f"{found.language}_{found.territory}" if found is not None and found.territory else lang


__all__ = ["CheckReport", "Finding", "GMAIL_CLIP_BYTES", "check_templates", "inline_difference", "sample_contexts"]
