"""Names a template tests or defaults that no sample customer defines: a typo there silently takes the fallback.

``x is defined``, ``x|default(..)`` and ``{% if x %}`` on a name no sample
defines are warned about by ``templates check``. :func:`tested_names` renders
a message's own files through a loader that picks the customer's locale
variant and an undefined type that records every empty lookup;
:func:`never_defined` keeps the names no sample defines.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import BaseLoader
from jinja2.exceptions import TemplateNotFound
from jinja2.utils import missing

from . import optional
from .environment import locale_languages, variant_names

if TYPE_CHECKING:
    from .inputs import CustomerContext, MessageSpec
    from .renderer import Renderer

#: Names Jinja itself looks up and may find undefined (not the template author's data).
_JINJA_NAMES = {"caller", "varargs", "kwargs", "loop", "self", "super"}


def which_variants(file: str, found: list[tuple[str, str]], variants_of: dict[str, list[tuple[str, tuple[str, ...]]]]) -> str:
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


def never_defined(renders: list[tuple[dict[str, Any], list]]) -> list[tuple[str, int | None, str]]:
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


def tested_names(renderer: Renderer, spec: MessageSpec, ctx: CustomerContext) -> tuple[dict[str, Any], list[tuple[str, int | None, str]]]:
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
