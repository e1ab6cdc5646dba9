"""The sandboxed Jinja environment, locale variants, and source flattening.

Templates run in Jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`
(no access to Python internals, no mutating the context), bounded in size
and time (:mod:`relmail.render.bounds`), with HTML
autoescaping and :class:`~jinja2.StrictUndefined`: a missing variable is an
error unless the template gives a fallback with ``default``. Optional data
(customer attributes, product fields, ``message.data``) is the exception for
tests: a missing key there tests false (:mod:`relmail.render.optional`).

CSS can only be inlined into a *whole document*, but a message template is a
child of a layout plus partials. :func:`flatten` therefore resolves
``{% extends %}`` and ``{% include %}`` at the source level into one
self-contained Jinja source (blocks stay blocks, so ``block`` semantics and
``self.block()`` are unchanged), which :mod:`relmail.render.inline` inlines
once. Extends and includes must name their template with a string literal
for that reason; a computed name is refused with the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jinja2 import StrictUndefined, TemplateSyntaxError, pass_context, select_autoescape
from jinja2.exceptions import TemplateNotFound

from ..errors import NotFound, TemplateError
from ..importers.fields import language_of
from . import filters
from .bounds import LimitExceeded, Limits
from .loader import ContainedLoader
from .sandbox import BoundedSandbox

#: Statements that open a construct closed by ``end<keyword>``.
_PAIRED = {"for", "if", "block", "macro", "call", "filter", "with", "autoescape", "trans"}
_MAX_DEPTH = 20


def make_environment(templates_dir: Path | str | None, *, autoescape: bool = True, limits: Limits | None = None) -> BoundedSandbox:
    """A sandboxed environment over ``templates_dir`` with the relmail filters and ``limits``.

    ``autoescape=True`` escapes HTML in ``.html`` files and in string
    templates; text templates get an environment built with ``False``.
    """
    loader = ContainedLoader(templates_dir) if templates_dir is not None else None
    env = BoundedSandbox(
        limits=limits,
        loader=loader,
        undefined=StrictUndefined,
        autoescape=select_autoescape(["html", "htm", "xml"], default_for_string=autoescape, default=autoescape)
        if autoescape
        else False,
        keep_trailing_newline=True,
        auto_reload=False,
        cache_size=-1,
    )
    filters.install(env)
    env.filters["track"] = _track
    return env


@pass_context
def _track(ctx, value):
    """UTM parameters for this message's links (identity when rendering outside a message)."""
    tracker = ctx.get("_tracker")
    return tracker.filter(value) if tracker is not None else value


def locale_languages(locale: str | None) -> tuple[str, ...]:
    """Variant suffixes to try for ``locale``, most specific first: ``nl_NL`` → (nl_NL, nl)."""
    if not locale:
        return ()
    loc = locale.replace("-", "_")
    lang = language_of(loc)
    return (loc, lang) if loc != lang else (lang,)


def variant_names(name: str, languages: tuple[str, ...]) -> list[str]:
    """``welcome.html`` with (nl_NL, nl) → welcome.nl_NL.html, welcome.nl.html, welcome.html."""
    stem, dot, ext = name.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    return [f"{stem}.{lang}{suffix}" for lang in languages] + [name]


def content_language(html_file: str, default_locale: str, templates_dir: Path | None = None) -> str:
    """The language an e-mail is written in, as a BCP 47 tag: its variant's suffix, else the base's own, else the default locale's.

    ``newsletter.pl.html`` → ``pl``, ``welcome.nl_NL.html`` → ``nl-NL``; the base ``newsletter.html`` is in the
    language its own ``<html lang="en">`` names, written out (not ``{{ language }}``), else in the project's
    ``default_locale`` language. A Brazilian customer who gets the base e-mail reads it in that language, so it
    is what ``<html lang>`` and ``Content-Language`` must say, not ``pt``. A shop in Belgium mails in Dutch
    by default, with a French variant and an English base for everyone else: the base says so itself.
    """
    parts = Path(html_file).name.split(".")
    if len(parts) >= 3:
        return parts[-2].replace("_", "-")
    declared = _declared_language(Path(templates_dir) / html_file) if templates_dir is not None else None
    return declared or language_of(default_locale or "en")


def text_direction(language: str) -> str:
    """``rtl`` for a language written right to left (``he``, ``ar``, ``fa-IR``), else ``ltr``: for ``<html dir>``."""
    from babel import Locale, UnknownLocaleError

    try:
        return Locale.parse(language.replace("-", "_")).text_direction
    except (ValueError, UnknownLocaleError):
        return "ltr"


#: ``<html lang="en">`` with the value written out; ``lang="{{ language }}"`` does not match.
_HTML_LANG = re.compile(r"<html\b[^>]*?\blang\s*=\s*[\"']([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*)[\"']", re.IGNORECASE)


def _declared_language(path: Path) -> str | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return _declared_in(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _declared_in(path: str, mtime_ns: int, size: int) -> str | None:
    """The language a template file's ``<html lang>`` names (read once per version of the file)."""
    try:
        found = _HTML_LANG.search(Path(path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return found.group(1).replace("_", "-") if found else None


@dataclass(frozen=True)
class Segment:
    """A piece of template source: plain data, or one Jinja construct."""

    kind: str  # data | expr | stmt | comment | raw
    text: str
    lineno: int
    keyword: str = ""
    #: For ``stmt``: the non-whitespace tokens after the keyword.
    args: tuple[tuple[str, str], ...] = ()


def segments(env, source: str, name: str | None = None) -> list[Segment]:
    """Split ``source`` into data and Jinja constructs with Jinja's own lexer."""
    out: list[Segment] = []
    current: list[str] = []
    toks: list[tuple[str, str]] = []
    start_line = 1
    kind = None
    try:
        for lineno, tok, value in env.lex(source, name):
            if kind is None:
                if tok == "data":
                    out.append(Segment("data", value, lineno))
                    continue
                kind = {"variable_begin": "expr", "block_begin": "stmt", "comment_begin": "comment", "raw_begin": "raw"}[tok]
                current, toks, start_line = [value], [], lineno
                if kind == "raw":
                    continue
                continue
            current.append(value)
            if tok not in ("whitespace",) and not tok.endswith("_end"):
                toks.append((tok, value))
            if tok in ("variable_end", "block_end", "comment_end", "raw_end"):
                keyword = toks[0][1] if kind == "stmt" and toks else ""
                out.append(Segment(kind, "".join(current), start_line, keyword, tuple(toks[1:])))
                kind = None
    except TemplateSyntaxError as exc:
        raise template_error(exc) from None
    return out


def template_error(exc: Exception, name: str | None = None) -> TemplateError:
    """A :class:`TemplateError` naming file and line from a Jinja exception."""
    filename = getattr(exc, "filename", None) or getattr(exc, "name", None)
    lineno = getattr(exc, "lineno", None)
    if lineno is None:
        # Runtime errors carry no position; Jinja rewrites the traceback so
        # the innermost template frame names the file and line. A render that
        # ran out of time was stopped where its __context__ says.
        for cause in (exc, exc.__context__):
            tb = cause.__traceback__ if cause is not None else None
            while tb is not None:
                code = tb.tb_frame.f_code.co_filename
                if code.endswith((".html", ".txt")):
                    filename, lineno = code, tb.tb_lineno
                tb = tb.tb_next
            if lineno is not None:
                break
    filename = filename or name or "<template>"
    where = f"{filename}:{lineno}" if lineno else str(filename)
    message = getattr(exc, "message", None) or str(exc)
    return TemplateError(f"{where}: {message}", str(filename), lineno)


def template_from_source(env, source: str, name: str):
    """A template of ``env`` compiled from ``source``, named ``name`` in its errors; :class:`TemplateError` if it does not compile."""
    try:
        code = env.compile(source, name=name, filename=name)
    except Exception as exc:
        raise template_error(exc, name) from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


class Flattener:
    """Resolves extends/include into one source, picking locale variants."""

    def __init__(self, env, templates_dir: Path):
        self.env = env
        self.dir = Path(templates_dir)

    def resolve(self, name: str, languages: tuple[str, ...]) -> str:
        """The file name (relative to the templates folder) to use for ``name``."""
        for candidate in variant_names(name, languages):
            if (self.dir / candidate).is_file():
                return candidate
        raise NotFound(f"template '{name}' not found in {self.dir}")

    def has(self, name: str, languages: tuple[str, ...]) -> bool:
        """Whether ``name`` (or a locale variant of it) exists."""
        return any((self.dir / candidate).is_file() for candidate in variant_names(name, languages))

    def source(self, name: str) -> str:
        try:
            return self.env.loader.get_source(self.env, name)[0]
        except TemplateNotFound:
            raise NotFound(f"template '{name}' not found in {self.dir}") from None

    def flatten(self, name: str, languages: tuple[str, ...] = (), _depth: int = 0,
                text_partials: dict[str, str] | None = None, _done: dict | None = None) -> tuple[str, tuple[str, ...]]:
        """(one self-contained Jinja source, the files it was made of).

        With ``text_partials`` (for deriving a text part), an include of
        ``x.html`` that has a ``x.txt`` beside it becomes a marker, and
        ``text_partials`` maps the marker to ``x.txt``: the text part then
        says it in the partial's own words (a product list one per line).
        """
        if _depth > _MAX_DEPTH:
            raise TemplateError(f"{name}: extends/include nested more than {_MAX_DEPTH} deep (a cycle?)")
        # A partial included many times is flattened once per call (a product card in a loop, a button).
        _done = {} if _done is None else _done
        if name in _done:
            return _done[name]
        resolved = self.resolve(name, languages)
        segs = segments(self.env, self.source(resolved), resolved)
        files = [resolved]
        parent = next((s for s in segs if s.kind == "stmt" and s.keyword == "extends"), None)
        if parent is not None:
            parent_name = _literal(parent, resolved)
            parent_src, parent_files = self.flatten(parent_name, languages, _depth + 1, text_partials, _done)
            files += parent_files
            blocks = _blocks(segs)
            prelude = _prelude(segs)
            body = _substitute(segments(self.env, parent_src, parent_name), blocks)
            source = prelude + body
        else:
            source = "".join(s.text for s in segs)
        # Includes last, so those in the layout and in the child both resolve.
        out: list[str] = []
        made = 0
        for seg in segments(self.env, source, resolved):
            if seg.kind == "stmt" and seg.keyword == "include":
                inc_name = _literal(seg, resolved)
                text_name = inc_name[: -len(".html")] + ".txt" if inc_name.endswith(".html") else None
                if text_partials is not None and text_name and self.has(text_name, languages):
                    marker = f"{{{{ relmail_text_partial_{len(text_partials):05d} }}}}"
                    text_partials[marker] = text_name
                    out.append(marker)
                    continue
                inc_src, inc_files = self.flatten(inc_name, languages, _depth + 1, text_partials, _done)
                files += inc_files
                # A with-scope keeps the partial's own {% set %} from leaking,
                # as a real include would.
                out.append("{% with %}" + inc_src + "{% endwith %}")
                made += len(inc_src)
                self._check_size(made, resolved)
            else:
                out.append(seg.text)
                made += len(seg.text)
        _done[name] = "".join(out), tuple(dict.fromkeys(files))
        return _done[name]

    def _check_size(self, made: int, name: str) -> None:
        # Seven partials that each include the next ten times are a million includes: flattening happens
        # before any render, outside the render's clock, so the source's size is what is bounded.
        limit = getattr(self.env, "limits", Limits()).max_email_bytes
        if made > limit:
            raise LimitExceeded(f"{name}: with its includes the template is over {limit:,} characters", "max_email_bytes")


def _literal(seg: Segment, file: str) -> str:
    if not seg.args or seg.args[0][0] != "string":
        raise TemplateError(
            f"{file}:{seg.lineno}: {seg.keyword} must name its template with a string literal "
            "(CSS is inlined at compile time, so the file must be known then)"
        )
    if seg.keyword == "include" and any(v == "without" for _, v in seg.args[1:]):
        raise TemplateError(f"{file}:{seg.lineno}: 'include ... without context' is not supported in e-mail templates")
    return seg.args[0][1][1:-1]


def _walk_blocks(segs: list[Segment]):
    """Yield (name, start index, end index) of every block, outermost first."""
    stack: list[tuple[str, int]] = []
    found = []
    for i, seg in enumerate(segs):
        if seg.kind != "stmt":
            continue
        if seg.keyword == "block":
            stack.append((seg.args[0][1], i))
        elif seg.keyword == "endblock":
            block, start = stack.pop()
            found.append((block, start, i))
    return sorted(found, key=lambda b: b[1])


def _blocks(segs: list[Segment]) -> dict[str, list[Segment]]:
    return {name: segs[start + 1 : end] for name, start, end in _walk_blocks(segs)}


def _prelude(segs: list[Segment]) -> str:
    """A child's top-level statements outside blocks (set, import, macro ...)."""
    keep: list[str] = []
    depth = 0
    in_block = 0
    for seg in segs:
        if seg.kind == "stmt":
            if seg.keyword == "block":
                in_block += 1
                continue
            if seg.keyword == "endblock":
                in_block -= 1
                continue
            if in_block or seg.keyword == "extends":
                continue
            if seg.keyword in _PAIRED or (seg.keyword == "set" and not any(v == "=" for _, v in seg.args)):
                depth += 1
            elif seg.keyword.startswith("end"):
                depth -= 1
            keep.append(seg.text)
        elif not in_block and (depth > 0 or seg.kind == "comment"):
            keep.append(seg.text)
    return "".join(keep)


_SUPER = re.compile(r"\{\{-?\s*super\(\)\s*-?\}\}")


def _substitute(segs: list[Segment], overrides: dict[str, list[Segment]]) -> str:
    """The parent's source with each overridden block's body replaced."""
    out: list[str] = []
    i = 0
    spans = {start: (name, end) for name, start, end in _walk_blocks(segs)}
    while i < len(segs):
        if i in spans and spans[i][0] in overrides:
            name, end = spans[i]
            original = _substitute(segs[i + 1 : end], overrides)
            child = "".join(s.text for s in overrides[name])
            out.append(segs[i].text + _SUPER.sub(lambda _m, body=original: body, child) + segs[end].text)
            i = end + 1
            continue
        out.append(segs[i].text)
        i += 1
    return "".join(out)
