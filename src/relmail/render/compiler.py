"""Compiling a message: once per (message, language), everything that is the same for every customer.

:meth:`Compiler.compile` builds the flattened, CSS-inlined HTML template with
UTM on its links, the text template (a ``.txt`` or one derived from the
HTML, :mod:`relmail.render.text`), the subject and preheader templates, the
constant MIME header bytes and the constant template variables, and caches
them. :class:`~relmail.render.renderer.Renderer` renders e-mails from them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NotFound, TemplateError
from . import links as links_mod
from .bounds import Limits
from .currency import Currencies
from .environment import Flattener, content_language, locale_languages, make_environment, template_error, template_from_source, text_direction
from .inline import inline_protected, protect
from .inputs import MessageSpec
from .mime import MimeTemplate
from .optional import optional
from .text import check_derived, derive_text_source, without_hidden

if TYPE_CHECKING:
    from ..project import Project

#: The subfolder of templates/ with overrides of the unsubscribe and preference pages (relmail.web).
PAGES_FOLDER = "pages"


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


class Compiler:
    """Loads and compiles a project's templates.

    ``Compiler(project)`` reads settings and the signing key; compiling is
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
        base_url, mailto = links_mod.checked_unsubscribe(self.settings.unsubscribe_url, self.settings.unsubscribe_mailto)
        self.links = links_mod.LinkBuilder(base_url, mailto, key, self.settings.name)
        self.tracking = links_mod.Tracking.from_settings(self.settings)
        self.currencies = Currencies.from_settings(self.settings)
        #: The currency of the products' price column (a customer's may differ: ``[brand] currency`` by language).
        self._compiled: dict[tuple, CompiledMessage] = {}
        self._lock = threading.Lock()
        b = self.settings.brand
        self.brand = {"name": b.name, "url": b.url, "color": b.color, "logo_url": b.logo_url, "postal_address": b.postal_address}

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
        languages = cached_languages(locale)
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
        html_tmpl = template_from_source(self.html_env, source, html_file)

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
            shown = without_hidden(self.html_env, text_flat, html_file)
            text_source = derive_text_source(self.html_env, self._tracked_for_text(shown, tracker), html_file)
            text_flattener = Flattener(self.text_env, self.templates_dir)
            for marker, partial in partials.items():
                partial_source, partial_files = text_flattener.flatten(partial, languages)
                files += partial_files
                text_source = text_source.replace(marker, "{% with %}" + partial_source + "{% endwith %}")
            check_derived(self.text_env, text_source, html_file)
        text_tmpl = template_from_source(self.text_env, text_source, text_file or f"{html_file} (text part)")

        subject_src = spec.subject_for(languages, self.settings.default_locale)
        try:
            subject = template_from_source(self.text_env, subject_src, f"{spec.id}: subject") if subject_src else None
        except TemplateError as exc:
            file, line, fld = spec.subject_where(languages, self.settings.default_locale)
            where = f"{file}:{line}" if line else file
            raise TemplateError(f"{where}: field '{fld}': {str(exc).split(': ', 2)[-1]}", file, line) from None
        if subject is None and "subject" not in html_tmpl.blocks:
            raise TemplateError(f"{html_file}: no subject: add {{% block subject %}}...{{% endblock %}} or set the message's subject",
                                html_file)
        preheader = template_from_source(self.text_env, spec.preheader, f"{spec.id}: preheader") if spec.preheader else None

        s = self.settings
        language = content_language(html_file, s.default_locale, self.templates_dir)
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
            # rtl for Hebrew, Arabic, Persian ...: <html dir="{{ direction }}">.
            "direction": text_direction(language),
            "_tracker": tracker,
        }
        return CompiledMessage(spec, locale, html_file, tuple(dict.fromkeys(files)), html_tmpl, text_tmpl, subject, preheader, mime,
                               constants, tracker, flat, optional(spec.data, "message.data"), source)

    def _tracked_for_text(self, flat: str, tracker) -> str:
        """The flattened source with UTM applied to links, for the text part."""
        protected = protect(self.html_env, flat, for_text=True)
        return protected.restore(links_mod.track_links(protected.html, tracker, protected.prefix))


@lru_cache(maxsize=256)
def cached_languages(locale: str) -> tuple[str, ...]:
    """:func:`~relmail.render.environment.locale_languages`, remembered: it is asked for every e-mail."""
    return locale_languages(locale)


def _feedback_id(spec: MessageSpec, sender_domain: str) -> str:
    """Gmail's Feedback-ID: campaign:message:topic:sender, no per-recipient data."""
    parts = [spec.campaign_id or "-", spec.id, spec.topic, sender_domain]
    return ":".join(p.replace(":", "-") for p in parts)
