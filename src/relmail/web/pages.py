"""The pages a customer sees: templates, translations, topic labels and the brand.

Templates are files (``relmail/web/templates/``); a project overrides any of
them by putting a file of the same name in ``templates/pages/``. Text is
translated with gettext catalogues managed by Babel: ``relmail/web/locale/<lang>/LC_MESSAGES/relmail.po``
(English, Dutch, German, French, Spanish, Italian, Polish, Hebrew and Arabic ship; a project adds or
overrides a language with
``templates/pages/locale/<lang>/LC_MESSAGES/relmail.po``). Catalogues are read
from their ``.po`` files when first needed, so nothing has to be compiled
at install time.

A page is in the customer's language (their ``locale``; else the project's
``default_locale``), with ``lang`` set, the brand's name, logo and colour
(``[brand]``), and the labels and descriptions of the topics from
``[topics.<topic>]`` in ``relmail.toml``::

    [topics.promotions]
    label = { en = "Offers and new bikes", nl = "Aanbiedingen en nieuwe fietsen" }
    description = { en = "A few times a month.", nl = "Een paar keer per maand." }

A plain string is used for every language.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
from dataclasses import dataclass
from gettext import GNUTranslations, NullTranslations
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import ChoiceLoader, StrictUndefined, select_autoescape
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from ..errors import ConfigError, TemplateError
from ..importers.fields import language_of
from ..render.bounds import Limits, render_bounded
from ..render.environment import text_direction
from ..render.loader import ContainedLoader
from ..render.sandbox import BoundedSandbox

if TYPE_CHECKING:
    from ..project import Project

log = logging.getLogger("relmail.web")

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"
PACKAGE_LOCALES = Path(__file__).parent / "locale"
DOMAIN = "relmail"
#: The accent used when ``[brand] color`` is missing or not a hex colour.
FALLBACK_COLOR = "#1a73e8"


class PageTemplateError(TemplateError):
    """A page template of the project (``templates/pages/``) does not compile or render; names file and line."""


@dataclass(frozen=True)
class Topic:
    """A topic as a page shows it: the slug the form posts, a label and a description in one language."""

    slug: str
    label: str
    description: str


@dataclass(frozen=True)
class Brand:
    name: str
    logo_url: str
    url: str
    postal_address: str
    #: The brand colour, darkened where needed so text in it on white reads (WCAG AA, 4.5:1).
    accent: str
    #: White or near-black, whichever reads on ``accent``.
    on_accent: str

    @classmethod
    def from_settings(cls, settings) -> Brand:
        b = settings.brand
        colour = b.color if re.fullmatch(r"#(?:[0-9a-fA-F]{3}){1,2}", b.color or "") else FALLBACK_COLOR
        accent = readable_on_white(colour)
        on_accent = "#ffffff" if contrast(accent, "#ffffff") >= 4.5 else "#111111"
        logo = b.logo_url if b.logo_url.startswith(("https://", "data:image/")) else ""
        return cls(b.name, logo, b.url, b.postal_address, accent, on_accent)


def _rgb(colour: str) -> tuple[float, float, float]:
    h = colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return tuple(int(h[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def _luminance(colour: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in _rgb(colour))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two hex colours (1 to 21)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _hex(r: float, g: float, b: float) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in (r, g, b))


def readable_on_white(colour: str) -> str:
    """``colour``, darkened in steps until text in it on white has a 4.5:1 contrast."""
    r, g, b = _rgb(colour)
    while contrast(_hex(r, g, b), "#ffffff") < 4.5:
        r, g, b = r * 0.9, g * 0.9, b * 0.9
    return _hex(r, g, b)


def _localized(value, lang: str, default_lang: str, where: str):
    """A string, or the entry of a per-language table for ``lang`` (then the default language, then English)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"relmail.toml {where}: use a string, or a table of strings by language (en = \"...\", nl = \"...\")")
    table = {language_of(k): v for k, v in value.items()}
    for key in (lang, default_lang, "en"):
        if key in table:
            return table[key]
    return next(iter(table.values()), None)


def bdi(value) -> Markup:
    """``{% trans brand=brand.name|bdi %}``: a name set apart from the sentence around it (``<bdi>``).

    A Latin brand or topic label ending in a neutral character (``Bio+``, ``Shop!``) inside a
    Hebrew or Arabic sentence otherwise has that character drawn at its other end.
    """
    return Markup("<bdi>%s</bdi>") % value


def _humanize(slug: str) -> str:
    words = re.sub(r"[-_]+", " ", slug).strip()
    return words[:1].upper() + words[1:]


class Pages:
    """Renders the customer-facing pages of one project, in any language that has a catalogue."""

    def __init__(self, project: Project):
        self.project = project
        self.settings = project.settings
        self.brand = Brand.from_settings(project.settings)
        self.limits = Limits.from_settings(project.settings)
        self.default_lang = language_of(project.settings.default_locale) or "en"
        overrides = Path(project.templates_dir) / "pages"
        self.overrides = overrides
        self.template_dirs = [d for d in (overrides, PACKAGE_TEMPLATES) if d.is_dir()]
        self.locale_dirs = [d for d in (overrides / "locale", PACKAGE_LOCALES) if d.is_dir()]
        self.topic_config = project.settings.section("topics")
        for slug, entry in self.topic_config.items():
            if not isinstance(entry, dict):
                raise ConfigError(f"relmail.toml [topics.{slug}]: must be a table with label and description")
        self._envs: dict[tuple[str, bool], SandboxedEnvironment] = {}
        #: Translations of the catalogues that were left out, with file and line (see :meth:`translations`).
        self.catalog_problems: list[PageTemplateError] = []
        #: Log what :attr:`catalog_problems` gets (a check that reports them itself says no).
        self.log_problems = True
        self._lock = threading.Lock()

    # -- languages ---------------------------------------------------------

    def languages(self) -> list[str]:
        """Languages with a catalogue, in the project's override folder or the package."""
        found = {p.parent.parent.name for d in self.locale_dirs for p in d.glob(f"*/LC_MESSAGES/{DOMAIN}.po")}
        return sorted(found)

    def language(self, locale: str | None) -> str:
        """The page language for a customer's ``locale``: theirs when a catalogue exists, else the project's, else English."""
        available = self.languages()
        for lang in (language_of(locale), self.default_lang, "en"):
            if lang in available:
                return lang
        return "en"

    def best_match(self, accept_language) -> str:
        """For a visitor not known (a bad link): the browser's preferred language among the catalogues."""
        chosen = accept_language.best_match(self.languages()) if accept_language else None
        return chosen or self.language(None)

    def translations(self, lang: str) -> GNUTranslations | NullTranslations:
        """The catalogues for ``lang``, read and compiled in memory from their ``.po`` files.

        The project's catalogue comes first and the package's is its
        fallback, so a project can change one wording and keep the rest.
        """
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        chain: GNUTranslations | NullTranslations | None = None
        for folder in self.locale_dirs:
            po = folder / lang / "LC_MESSAGES" / f"{DOMAIN}.po"
            if not po.is_file():
                continue
            with po.open("rb") as fh:
                catalog = read_po(fh, locale=lang, domain=DOMAIN)
            self._drop_broken(catalog, po)
            buf = io.BytesIO()
            write_mo(buf, catalog, use_fuzzy=False)
            buf.seek(0)
            found = GNUTranslations(buf)
            if chain is None:
                chain = found
            else:
                chain.add_fallback(found)
        return chain or NullTranslations()

    def _drop_broken(self, catalog, po: Path) -> None:
        """Leave out translations Babel's checkers refuse (a placeholder the template does not pass, wrong plural forms).

        Such a translation would fail the page for every customer of the language; without it the text shows in
        English. Each is logged, and kept in :attr:`catalog_problems` (``relmail templates check`` reports them).
        """
        for message, errors in catalog.check():
            where = po
            with contextlib.suppress(ValueError):
                where = po.relative_to(self.project.root)
            msgid = message.id[0] if isinstance(message.id, tuple) else message.id
            problem = PageTemplateError(f"{where}:{message.lineno}: the translation of {msgid!r}: "
                                        f"{'; '.join(str(e) for e in errors)} (the page shows it in English)", str(where), message.lineno)
            if str(problem) not in {str(p) for p in self.catalog_problems}:
                self.catalog_problems.append(problem)
                if self.log_problems:
                    log.error("%s", problem)
            message.string = ("",) * len(message.string) if isinstance(message.string, tuple) else ""

    def environment(self, lang: str, *, package_only: bool = False) -> SandboxedEnvironment:
        """A sandboxed, autoescaping environment with ``lang``'s catalogue installed (one per language).

        ``package_only``: relmail's own page templates, without the project's
        (what a customer sees when the project's template fails).
        """
        key = (lang, package_only)
        env = self._envs.get(key)
        if env is None:
            with self._lock:
                env = self._envs.get(key)
                if env is None:
                    dirs = [PACKAGE_TEMPLATES] if package_only else self.template_dirs
                    # The e-mails' sandbox and [render] limits: a page is marketer-authored code too.
                    env = BoundedSandbox(
                        limits=self.limits,
                        loader=ChoiceLoader([ContainedLoader(d) for d in dirs]),
                        autoescape=select_autoescape(default=True, default_for_string=True),
                        extensions=["jinja2.ext.i18n"],
                        # As in the e-mails: a misspelt name ({{ topic.lable }}) is an error with file and line, not a blank.
                        undefined=StrictUndefined,
                        trim_blocks=True,
                        lstrip_blocks=True,
                    )
                    # The catalogue's msgids are whitespace-trimmed (babel.cfg): so is the text looked up.
                    env.policies["ext.i18n.trimmed"] = True
                    env.filters["bdi"] = bdi
                    env.install_gettext_translations(self.translations(lang), newstyle=True)
                    self._envs[key] = env
        return env

    def own_templates(self) -> list[Path]:
        """The project's page templates (``templates/pages/*.html``)."""
        return sorted(self.overrides.glob("*.html")) if self.overrides.is_dir() else []

    # -- content -------------------------------------------------------------

    def topic(self, slug: str, lang: str) -> Topic:
        """``slug`` with its label and description in ``lang`` from ``[topics.<slug>]`` (else the slug, humanised)."""
        entry = self.topic_config.get(slug, {})
        label = _localized(entry.get("label"), lang, self.default_lang, f"[topics.{slug}] label") or _humanize(slug)
        description = _localized(entry.get("description"), lang, self.default_lang, f"[topics.{slug}] description") or ""
        return Topic(slug, label, description)

    def topics(self, slugs, lang: str) -> list[Topic]:
        """``slugs`` as :class:`Topic` in ``lang``: in the order of ``[topics]`` in relmail.toml, then the rest by name."""
        order = {slug: i for i, slug in enumerate(self.topic_config)}
        return [self.topic(slug, lang) for slug in sorted(slugs, key=lambda s: (order.get(s, len(order)), s))]

    def render(self, name: str, lang: str, **context) -> str:
        """Page ``name`` in ``lang``, with the brand and the language in its context.

        When the project's own template (or its ``base.html``) fails, the
        error is logged with its file and line and the customer gets
        relmail's own page: an unsubscribe must never end in a server error.
        """
        try:
            return self._render(self.environment(lang), name, lang, context)
        except Exception as exc:
            if not self.own_templates():
                raise
            log.error("%s (the page is shown with relmail's own %s instead)", self.template_error(exc, name), name)
            return self._render(self.environment(lang, package_only=True), name, lang, context)

    def _render(self, env: SandboxedEnvironment, name: str, lang: str, context: dict) -> str:
        # dir: rtl for Hebrew, Arabic ...: <html lang="{{ lang }}" dir="{{ dir }}">.
        return render_bounded(env.get_template(name), {"brand": self.brand, "lang": lang, "dir": text_direction(lang), **context},
                              self.limits)

    def template_error(self, exc: Exception, name: str) -> PageTemplateError:
        """``exc`` of rendering page ``name`` as an error naming the template file (relative to the project) and line."""
        from ..render.environment import template_error

        err = template_error(exc, name)
        file = Path(err.file or name)
        if not file.is_absolute():
            file = self.overrides / file if (self.overrides / file).is_file() else PACKAGE_TEMPLATES / file
        with contextlib.suppress(ValueError):
            file = file.relative_to(self.project.root)
        message = str(err).split(": ", 1)[-1] if err.line or err.file else str(err)
        where = f"{file}:{err.line}" if err.line else str(file)
        return PageTemplateError(f"{where}: {message}", str(file), err.line)
