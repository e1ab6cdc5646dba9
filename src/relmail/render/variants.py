"""Which files a message's e-mail is made of for a recipient's locale: its template *variant*.

A message names a template (``ebike_launch``); what a recipient gets is
built from the locale variant of each file involved: the HTML template
(``ebike_launch.nl.html`` or the base ``ebike_launch.html``), the text
template or the text derived from the HTML, every layout and partial it
includes (``partials/footer.nl.html``), and the campaign's subject for that
locale. Recipients whose locales resolve to the same files get the same
variant. :func:`variant_of` resolves them without compiling anything (no
CSS inlining), so a check can group thousands of recipients cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFound
from .compiler import Compiler
from .environment import Flattener, locale_languages
from .inputs import MessageSpec


@dataclass(frozen=True)
class Variant:
    """The files one group of a message's recipients gets their e-mail from."""

    message_id: str
    #: The HTML template file and the files it includes (locale variants resolved), in order.
    html: tuple[str, ...]
    #: The text template's files, or () when the text part is derived from the HTML.
    text: tuple[str, ...]
    #: The campaign subject's locale key (``nl``, ``default``), or "" for the template's subject block.
    subject: str = ""

    def __str__(self) -> str:
        text = self.text[0] if self.text else "text from the HTML"
        # Included files that are locale variants (``partials/footer.nl.html``) tell variants of one template apart.
        parts = [f for f in dict.fromkeys(self.html[1:] + self.text[1:]) if Path(f).name.count(".") > 1]
        extra = f" with {', '.join(parts)}" if parts else ""
        subject = f", subject[{self.subject}]" if self.subject else ""
        return f"{self.html[0]} + {text}{extra}{subject}"

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.html + self.text))


class Variants:
    """Resolves the variant of any message for any locale, over one renderer's templates folder."""

    def __init__(self, renderer: Compiler):
        self.default_locale = renderer.settings.default_locale
        self.html = Flattener(renderer.html_env, renderer.templates_dir)
        self.text = Flattener(renderer.text_env, renderer.templates_dir)

    def of(self, spec: MessageSpec, locale: str | None) -> Variant:
        """The variant a recipient with ``locale`` (None: the project's default) gets ``spec`` from.

        Raises :class:`~relmail.errors.TemplateError` for a file that cannot
        be read (a syntax error) and :class:`~relmail.errors.NotFound` for a
        missing template.
        """
        languages = locale_languages(locale or self.default_locale)
        html = self.html.flatten(f"{spec.template}.html", languages)[1]
        try:
            text = self.text.flatten(f"{spec.template}.txt", languages)[1]
        except NotFound:
            text = ()
        subject = ""
        if spec.subject is not None and not isinstance(spec.subject, str):
            table = {k.replace("-", "_"): k for k in spec.subject}
            default = self.default_locale
            subject = next((table[k] for k in (*languages, default, default.split("_")[0], "default") if k in table),
                           next(iter(spec.subject), ""))
        return Variant(spec.id, tuple(html), tuple(text), subject)


def other_language(variant: Variant, customers_by_locale: dict[str, int], default_locale: str, templates_dir: Path) -> str | None:
    """What recipients of ``variant`` in a language it is not written in get, and what to add; None if all read it.

    The base template is written in the language its ``<html lang>`` names, else that of ``default_locale``
    (:func:`~relmail.render.environment.content_language`): a shop that adds French customers and no
    ``.fr.html`` sends them the Dutch e-mail without any render failing, so only a warning can say so.
    ``customers_by_locale``: how many recipients have each locale.
    """
    from ..importers.fields import language_of
    from .environment import content_language

    written = content_language(variant.html[0], default_locale, templates_dir).split("-")[0].lower()
    others = {loc: n for loc, n in customers_by_locale.items() if n and language_of(loc) != written}
    if not others:
        return None
    stem, _, suffix = variant.html[0].rpartition(".")
    who = ", ".join(f"{count:,} {loc}" for loc, count in sorted(others.items(), key=lambda kv: (-kv[1], kv[0])))
    wanted = ", ".join(f"{stem}.{lang}.{suffix}" for lang in dict.fromkeys(language_of(loc) for loc in sorted(others)))
    return (f"{sum(others.values()):,} recipient(s) get {variant.html[0]}, written in '{written}', not in their language "
            f"({who}); add {wanted} for them")
