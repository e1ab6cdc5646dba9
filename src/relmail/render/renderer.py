"""The renderer: message definition + customer context → complete e-mail.

Per message definition and language, compiled once (:meth:`Renderer.compile`):
the flattened, CSS-inlined HTML template with UTM on its links, the text
template, the subject template and the constant MIME header bytes. Per
e-mail only what differs is done: the Jinja renders, the signed token, the
personal headers and the body encodings.
"""

from __future__ import annotations

import html as html_lib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import tokens
from ..errors import NotFound, TemplateError
from . import links as links_mod
from .bounds import LOCATE_SECONDS, LimitExceeded, Limits, collect, render_bounded, run_bounded
from .catalog import Catalog, catalog_variables, has_localized, localized
from .currency import Currencies
from .environment import Flattener, locale_languages, make_environment, template_error
from .inline import inline_protected, protect
from .mime import MimeTemplate, message_id
from .optional import named, optional
from .text import check_derived, derive_text_source, tidy

if TYPE_CHECKING:
    from ..project import Project

#: The subfolder of templates/ with overrides of the unsubscribe and preference pages (relmail.web).
PAGES_FOLDER = "pages"


@dataclass(frozen=True)
class MessageSpec:
    """What to render: one message of a campaign run.

    ``template`` is the name without extension (``ebike_launch`` →
    ``templates/ebike_launch.html`` or a locale variant). ``subject`` and
    ``preheader`` are optional Jinja strings; without ``subject`` the
    template's ``{% block subject %}`` is the subject.
    """

    id: str
    template: str
    topic: str
    campaign_id: str = ""
    run_id: str = ""
    #: A Jinja string, or per-locale strings ``{"nl": ..., "en": ...}`` (campaign files allow both).
    subject: str | Mapping[str, str] | None = field(default=None, hash=False)
    preheader: str | None = None
    #: Extra message data for the template (``message.data``), e.g. the offer.
    data: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: (campaign file, index of the message in it): where a failing ``subject`` is named.
    origin: tuple[str, int] | None = field(default=None, hash=False, compare=False)

    def __hash__(self) -> int:
        # Computed once: the spec is the key of the compiled-template cache,
        # looked up for every e-mail.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.id, self.template, self.topic, self.campaign_id, self.run_id, _freeze(self.subject), self.preheader))
            object.__setattr__(self, "_hash", h)
        return h

    @classmethod
    def from_campaign(cls, campaign, message, run_id: str = tokens.PREVIEW_RUN) -> MessageSpec:
        """The spec of a :class:`relmail.campaigns.Message` of ``campaign`` in run ``run_id``."""
        return cls(
            id=message.id,
            template=message.template,
            topic=message.topic,
            campaign_id=campaign.name,
            run_id=run_id,
            subject=message.subject or None,
            data=dict(message.data),
            origin=_origin(campaign, message),
        )

    def subject_for(self, languages: tuple[str, ...], default_locale: str) -> str | None:
        """The subject source for a language: exact locale, then language, then the default."""
        return self.subject_key(languages, default_locale)[1]

    def subject_key(self, languages: tuple[str, ...], default_locale: str) -> tuple[str | None, str | None]:
        """(the key of the per-locale table it came from, or None for one string; the subject source)."""
        if self.subject is None or isinstance(self.subject, str):
            return None, self.subject
        table = {k.replace("-", "_"): (k, v) for k, v in self.subject.items()}
        for key in (*languages, default_locale, default_locale.split("_")[0], "default"):
            if key in table:
                return table[key]
        return next(iter(table.values()), (None, None))

    def subject_where(self, languages: tuple[str, ...], default_locale: str) -> tuple[str, int | None, str]:
        """(file, line, field) of the subject used for ``languages``: the campaign file's ``messages.N.subject[.KEY]``."""
        from ..campaigns.parse import line_in_file

        key = self.subject_key(languages, default_locale)[0]
        if self.origin is None:
            return f"{self.campaign_id or 'campaign'} message {self.id}", None, "subject" + (f".{key}" if key else "")
        file, index = self.origin
        loc = ("messages", index, "subject", *((key,) if key else ()))
        return file, line_in_file(Path(file), loc), ".".join(map(str, loc))


def content_language(html_file: str, default_locale: str) -> str:
    """The language an e-mail is written in, as a BCP 47 tag: its variant's suffix, else the default locale's language.

    ``newsletter.pl.html`` → ``pl``, ``welcome.nl_NL.html`` → ``nl-NL``; the base ``newsletter.html`` is in the
    project's ``default_locale`` language. A Brazilian customer who gets the base e-mail reads it in that
    language, so it is what ``<html lang>`` and ``Content-Language`` must say, not ``pt``.
    """
    parts = Path(html_file).name.split(".")
    if len(parts) >= 3:
        return parts[-2].replace("_", "-")
    return (default_locale or "en").replace("-", "_").split("_", 1)[0].lower()


def _origin(campaign, message) -> tuple[str, int] | None:
    path = getattr(campaign, "path", None)
    if path is None:
        return None
    try:
        return str(path), list(campaign.messages).index(message)
    except ValueError:
        return None


@dataclass
class CustomerContext:
    """Who it is for: the customer's fields, recommended products, extra data."""

    id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: Product dicts: id, name, price, url, category, image_url, attributes; never a featured one.
    recommended_products: list[Mapping[str, Any]] = field(default_factory=list)
    #: Anything else a template needs (owned products, service due date ...), as ``data``.
    data: Mapping[str, Any] = field(default_factory=dict)
    #: The message's featured products, and the catalogue ``product("SKU")`` looks ids up in.
    featured_products: list[Mapping[str, Any]] = field(default_factory=list)
    #: Featured ids the catalogue does not have (the template's ``featured`` then names the first).
    absent_featured: tuple[str, ...] = ()
    catalog: Catalog | None = None

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)


@dataclass(frozen=True)
class RenderedEmail:
    """A complete e-mail: the parts, the headers, and the RFC 5322 bytes."""

    customer_id: str
    message_id: str
    subject: str
    html: str
    text: str
    headers: tuple[tuple[str, str], ...]
    raw: bytes
    rfc_message_id: str
    template: str
    locale: str


class RenderError(TemplateError):
    """A template failed for one customer; nothing was produced for them."""

    def __init__(self, customer_id: str, message_id: str, reason: str, file: str | None = None, line: int | None = None):
        self.customer_id, self.message_id, self.reason = customer_id, message_id, reason
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{message_id} for {customer_id}: {where}{reason}", file, line)


@dataclass(frozen=True)
class RenderResult:
    """One item of :meth:`Renderer.render_many`: an e-mail, or the error for that customer."""

    customer_id: str
    message_id: str
    email: RenderedEmail | None = None
    error: RenderError | None = None

    @property
    def ok(self) -> bool:
        return self.email is not None


@dataclass
class CompiledMessage:
    """Everything about one (message, language) that is the same for every customer."""

    spec: MessageSpec
    locale: str
    html_file: str
    files: tuple[str, ...]
    html: Any
    text: Any
    subject: Any | None
    preheader: Any | None
    mime: MimeTemplate
    constants: dict[str, Any]
    tracker: links_mod.LinkTracker
    flat_source: str
    #: ``message.data`` with the optional-data policy applied (see :mod:`relmail.render.optional`).
    data: Mapping[str, Any] = field(default_factory=dict)
    #: The Jinja source ``html`` was compiled from: flattened, CSS inlined, links tracked.
    source: str = ""


class Renderer:
    """Loads and compiles a project's templates and renders e-mails.

    ``Renderer(project)`` reads settings and the signing key; compiling is
    lazy and cached per (message, language). :meth:`check_syntax` compiles
    every file and raises :class:`TemplateError` with file and line.
    """

    def __init__(self, project: Project, *, signing_key: str | None = None, templates_dir: Path | None = None):
        self.project = project
        self.settings = project.settings
        self.templates_dir = Path(templates_dir or project.templates_dir)
        if not self.templates_dir.is_dir():
            raise NotFound(f"templates folder {self.templates_dir} does not exist")
        self.limits = Limits.from_settings(self.settings)
        self.html_env = make_environment(self.templates_dir, autoescape=True, limits=self.limits)
        self.text_env = make_environment(self.templates_dir, autoescape=False, limits=self.limits)
        self.flattener = Flattener(self.html_env, self.templates_dir)
        key = signing_key or project.secret("signing_key")
        self.links = links_mod.LinkBuilder(self.settings.unsubscribe_url.rstrip("/"), self.settings.unsubscribe_mailto, key)
        self.tracking = links_mod.Tracking.from_settings(self.settings)
        self.currencies = Currencies.from_settings(self.settings)
        #: The currency of the products' price column (a customer's may differ: ``[brand] currency`` by language).
        self.currency = self.currencies.base
        self._compiled: dict[tuple, CompiledMessage] = {}
        self._lock = threading.Lock()
        b = self.settings.brand
        self.brand = {"name": b.name, "url": b.url, "color": b.color, "logo_url": b.logo_url, "postal_address": b.postal_address}

    # -- compiling -------------------------------------------------------

    def template_files(self) -> list[Path]:
        """Every e-mail template file (``.html``, ``.txt``) under the folder; ``pages/`` holds the web pages, not e-mails."""
        return sorted(p for p in self.templates_dir.rglob("*")
                      if p.suffix in (".html", ".txt") and p.relative_to(self.templates_dir).parts[0] != PAGES_FOLDER)

    def check_syntax(self) -> list[str]:
        """Compile every template file; the files checked, or :class:`TemplateError` at the first error."""
        names = [str(p.relative_to(self.templates_dir)) for p in self.template_files()]
        for name in names:
            env = self.html_env if name.endswith(".html") else self.text_env
            try:
                env.get_template(name)
            except Exception as exc:  # TemplateSyntaxError and friends
                raise template_error(exc, name) from None
        return names

    def message_templates(self) -> list[str]:
        """Template names (without extension or locale) of the messages in the folder."""
        out = set()
        for p in self.templates_dir.glob("*.html"):
            out.add(p.name.split(".", 1)[0])
        return sorted(out)

    def languages_of(self, template: str) -> list[str]:
        """The locale suffixes that have a variant of ``template`` (``nl`` for ``x.nl.html``)."""
        langs = []
        for p in self.templates_dir.glob(f"{template}.*.html"):
            langs.append(p.name[len(template) + 1 : -len(".html")])
        return sorted(langs)

    def compile(self, spec: MessageSpec, locale: str | None = None) -> CompiledMessage:
        """The compiled form of ``spec`` for ``locale`` (cached)."""
        locale = locale or self.settings.default_locale
        languages = _languages(locale)
        key = (spec, languages)
        hit = self._compiled.get(key)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._compiled.get(key)
            if hit is None:
                hit = self._compile(spec, locale, languages)
                self._compiled[key] = hit
        return hit

    def _compile(self, spec: MessageSpec, locale: str, languages: tuple[str, ...]) -> CompiledMessage:
        html_name = f"{spec.template}.html"
        html_file = self.flattener.resolve(html_name, languages)
        for f in (html_file,):
            try:
                self.html_env.get_template(f)
            except Exception as exc:
                raise template_error(exc, f) from None
        flat, files = self.flattener.flatten(html_name, languages)
        query = self.tracking.query(campaign=spec.campaign_id, message=spec.id, run=spec.run_id, topic=spec.topic)
        tracker = links_mod.LinkTracker(query, self.tracking.domains, self.links.never_track)
        protected, inlined = inline_protected(self.html_env, flat, html_file)
        source = protected.restore(links_mod.track_links(inlined, tracker, protected.prefix))
        html_tmpl = self._from_string(self.html_env, source, html_file)

        try:
            text_file = self.flattener.resolve(f"{spec.template}.txt", languages)
        except NotFound:
            text_file = None
        if text_file is not None:
            text_source, text_files = Flattener(self.text_env, self.templates_dir).flatten(f"{spec.template}.txt", languages)
            files += text_files
        else:
            # Partials with a .txt beside them speak for themselves in the text part.
            partials: dict[str, str] = {}
            text_flat, _ = self.flattener.flatten(html_name, languages, text_partials=partials)
            text_source = derive_text_source(self.html_env, self._tracked_for_text(text_flat, tracker), html_file)
            text_flattener = Flattener(self.text_env, self.templates_dir)
            for marker, partial in partials.items():
                partial_source, partial_files = text_flattener.flatten(partial, languages)
                files += partial_files
                text_source = text_source.replace(marker, "{% with %}" + partial_source + "{% endwith %}")
            check_derived(self.text_env, text_source, html_file)
        text_tmpl = self._from_string(self.text_env, text_source, text_file or f"{html_file} (text part)")

        subject_src = spec.subject_for(languages, self.settings.default_locale)
        try:
            subject = self._from_string(self.text_env, subject_src, f"{spec.id}: subject") if subject_src else None
        except TemplateError as exc:
            file, line, fld = spec.subject_where(languages, self.settings.default_locale)
            where = f"{file}:{line}" if line else file
            raise TemplateError(f"{where}: field '{fld}': {str(exc).split(': ', 2)[-1]}", file, line) from None
        if subject is None and "subject" not in html_tmpl.blocks:
            raise TemplateError(f"{html_file}: no subject: add {{% block subject %}}...{{% endblock %}} or set the message's subject",
                                html_file)
        preheader = self._from_string(self.text_env, spec.preheader, f"{spec.id}: preheader") if spec.preheader else None

        s = self.settings
        language = content_language(html_file, s.default_locale)
        constant_headers = [
            ("Content-Language", language),
            ("Feedback-ID", _feedback_id(spec, s.sender.domain)),
            ("X-Relmail-Run", spec.run_id),
            ("X-Relmail-Message", spec.id),
        ]
        mime = MimeTemplate(s.sender.from_name, s.sender.from_email, s.sender.reply_to, [(n, v) for n, v in constant_headers if v])
        constants = {
            "brand": self.brand,
            "sender": {"name": s.sender.from_name, "email": s.sender.from_email},
            "campaign": {"id": spec.campaign_id},
            "currency": self.currencies.for_locale(locale),
            "language": language,
            "_tracker": tracker,
        }
        return CompiledMessage(spec, locale, html_file, tuple(dict.fromkeys(files)), html_tmpl, text_tmpl, subject, preheader, mime,
                               constants, tracker, flat, optional(spec.data, "message.data"), source)

    def _tracked_for_text(self, flat: str, tracker) -> str:
        """The flattened source with UTM applied to links, for the text part."""
        protected = protect(self.html_env, flat, for_text=True)
        return protected.restore(links_mod.track_links(protected.html, tracker, protected.prefix))

    @staticmethod
    def _from_string(env, source: str, name: str):
        try:
            code = env.compile(source, name=name, filename=name)
        except Exception as exc:
            raise template_error(exc, name) from None
        return env.template_class.from_code(env, code, env.make_globals(None), None)

    # -- rendering -------------------------------------------------------

    def context(self, compiled: CompiledMessage, ctx: CustomerContext, token: str) -> dict[str, Any]:
        """The template variables for one customer (see docs/readme/render.md for the list)."""
        spec = compiled.spec
        # Optional data (attributes, products, message.data): a missing key tests false, printing it fails.
        locale = ctx.locale or compiled.locale
        # The products in the customer's language (a product's name_de, url_de ... for a de_* customer).
        catalog = ctx.catalog.for_locale(locale, self.currencies) if ctx.catalog is not None else None
        own_price = bool(locale) and self.currencies.own_price_needed(locale)

        def local(p: Mapping[str, Any]) -> Mapping[str, Any]:
            found = catalog.get(p.get("id")) if catalog is not None else None
            if found is not None:
                return found
            return optional(localized(p, locale, self.currencies) if locale and (own_price or has_localized(p)) else p, "product")

        products = [local(p) for p in ctx.recommended_products]
        unsubscribe = self.links.unsubscribe_url(token)
        return {
            **compiled.constants,
            "customer": {
                "id": ctx.id,
                "email": ctx.email,
                "first_name": ctx.first_name,
                "last_name": ctx.last_name,
                "name": ctx.name,
                "locale": locale,
                "attributes": optional(ctx.attributes, "customer.attributes"),
            },
            "products": products,
            "recommended_products": products,
            **catalog_variables(catalog, [named(local(p), "featured") for p in ctx.featured_products], ctx.absent_featured),
            "message": {"id": spec.id, "topic": spec.topic, "campaign_id": spec.campaign_id, "run_id": spec.run_id, "data": compiled.data},
            "links": {"unsubscribe": unsubscribe, "preferences": self.links.preferences_url(token), "home": self.brand["url"]},
            "data": ctx.data,
            "locale": locale,
            "timezone": ctx.timezone or self.settings.timezone,
            "now": datetime.now(UTC),
            "preheader": "",
        }

    def render(self, spec: MessageSpec, ctx: CustomerContext) -> RenderedEmail:
        """The complete e-mail for one customer, or :class:`RenderError` (nothing half-rendered).

        The renders run within the project's :class:`~relmail.render.bounds.Limits`.
        """
        compiled = self.compile(spec, ctx.locale)
        token = self.links.token(ctx.id, spec.topic, spec.run_id)
        variables = self.context(compiled, ctx, token)
        budget = self.limits.max_email_bytes
        try:
            html, subject, text = run_bounded(self.limits, self._render_parts, compiled, variables)
        except Exception as exc:  # any failure inside a template is this customer's render error
            raise self._render_error(compiled, ctx, variables, exc) from None
        subject = " ".join(subject.split())
        rfc_id = message_id(spec.run_id, ctx.id, spec.id, self.settings.sender.domain)
        personal = [("X-Relmail-Customer", ctx.id)]
        try:
            raw = compiled.mime.build(
                to_name=ctx.name,
                to_email=ctx.email,
                subject=subject,
                html=html,
                text=text,
                rfc_message_id=rfc_id,
                headers=personal,
                list_unsubscribe=variables["links"]["unsubscribe"],
                list_unsubscribe_mailto=self.links.unsubscribe_mailto(token),
            )
        except TemplateError as exc:
            raise RenderError(ctx.id, spec.id, str(exc)) from None
        if len(raw) > budget:
            too_big = LimitExceeded(f"the e-mail is {len(raw):,} bytes, over the limit of {budget:,}", "max_email_bytes")
            raise RenderError(ctx.id, spec.id, str(too_big), compiled.html_file)
        return RenderedEmail(ctx.id, spec.id, subject, html, text, tuple(personal), raw, rfc_id, compiled.html_file, compiled.locale)

    def _render_parts(self, compiled: CompiledMessage, variables: dict) -> tuple[str, str, str]:
        """(HTML, subject, text) of one e-mail, each stopped past the e-mail's size limit."""
        budget = self.limits.max_email_bytes
        if compiled.preheader is not None:
            variables["preheader"] = _run(compiled.preheader, variables, budget)
        tmpl = compiled.html
        render_ctx = tmpl.new_context(variables)
        html = collect(tmpl.root_render_func(render_ctx), budget)
        if compiled.subject is not None:
            subject = _run(compiled.subject, variables, budget)
        else:
            # After the root render, so top-level {% set %} are visible to the block.
            subject = html_lib.unescape(collect(tmpl.blocks["subject"](render_ctx), budget))
        text = tidy(collect(compiled.text.root_render_func(compiled.text.new_context(variables)), budget - len(html), budget))
        return html, subject, text

    def render_many(self, items: Iterable[tuple[MessageSpec, CustomerContext]]) -> Iterator[RenderResult]:
        """Render a batch; a failing customer yields an error result and the batch continues.

        A syntax error in a template is not a per-customer problem: it raises
        :class:`TemplateError` (the plan fails before anything is sent).
        """
        for spec, ctx in items:
            self.compile(spec, ctx.locale)  # raises TemplateError for broken templates
            try:
                yield RenderResult(ctx.id, spec.id, email=self.render(spec, ctx))
            except RenderError as exc:
                yield RenderResult(ctx.id, spec.id, error=exc)

    def _render_error(self, compiled: CompiledMessage, ctx: CustomerContext, variables: dict, exc: Exception) -> RenderError:
        """Locate the failure in the original files by rendering them unflattened (error path only)."""
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TemplateError) else str(exc)
        if type(exc).__name__ == "UndefinedError":
            reason = f"undefined variable: {exc}"
        elif type(exc).__name__ == "SecurityError":
            reason = f"blocked by the sandbox: {exc}"
        file, line = None, None
        try:
            render_bounded(self.html_env.get_template(compiled.html_file), variables, self.limits,
                           seconds=min(self.limits.timeout_seconds, LOCATE_SECONDS))
        except Exception as again:  # the same failure, now with the real file and line
            file, line = _template_frame(again.__traceback__, self.templates_dir)
            if file is None and again.__context__ is not None:  # a timeout: where the clock stopped it
                file, line = _template_frame(again.__context__.__traceback__, self.templates_dir)
        if file is None and compiled.subject is not None:
            try:
                _run(compiled.subject, variables, self.limits.max_email_bytes)
            except Exception:  # the campaign's subject failed, not the template: name its file, line and field
                file, line, fld = compiled.spec.subject_where(_languages(compiled.locale), self.settings.default_locale)
                return RenderError(ctx.id, compiled.spec.id, f"field '{fld}': {reason}", file, line)
        return RenderError(ctx.id, compiled.spec.id, reason, file or compiled.html_file, line)


def _run(template, variables: dict, budget: int) -> str:
    """One template's output for ``variables``, stopped past ``budget`` characters."""
    return collect(template.root_render_func(template.new_context(variables)), budget)


def _template_frame(tb, root: Path) -> tuple[str | None, int | None]:
    found = (None, None)
    root_s = str(root)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(root_s) or filename.endswith((".html", ".txt")):
            rel = filename[len(root_s) :].lstrip("/") if filename.startswith(root_s) else filename
            found = (rel, tb.tb_lineno)
        tb = tb.tb_next
    return found


@lru_cache(maxsize=256)
def _languages(locale: str) -> tuple[str, ...]:
    return locale_languages(locale)


def _freeze(value):
    return tuple(sorted(value.items())) if isinstance(value, Mapping) else value


def _feedback_id(spec: MessageSpec, sender_domain: str) -> str:
    """Gmail's Feedback-ID: campaign:message:topic:sender, no per-recipient data."""
    parts = [spec.campaign_id or "-", spec.id, spec.topic, sender_domain]
    return ":".join(p.replace(":", "-") for p in parts)
