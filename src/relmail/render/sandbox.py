"""The sandbox templates render in: Jinja's immutable sandbox, with every step that can multiply data checked first.

Wherever a template can make a large value in one step (``*`` on strings,
lists and whole numbers, ``+``, ``~``, ``%`` and ``**``, ``format`` and
``format_map``, the string methods and filters that pad, join, replace,
translate, indent, wrap, batch or pretty-print, ``range()`` and
``lipsum()``), :class:`BoundedSandbox` checks the size of the result
*before* it is made against the :class:`~relmail.render.bounds.Limits` of
the render, and raises :class:`~relmail.render.bounds.LimitExceeded`: one
step is a single call into C that the render's clock cannot interrupt.
Output size and time are bounded by :mod:`relmail.render.bounds`.
"""

from __future__ import annotations

import json
import math
import re
import types
from collections import Counter
from collections.abc import Mapping
from functools import update_wrapper, wraps
from typing import Any

from jinja2.compiler import CodeGenerator
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from .bounds import LimitExceeded, Limits
from .optional import OptionalDict


def weight(value: Any, budget: int) -> int:
    """Characters of a string, items of a list or tuple plus the weight of what they hold (stops past ``budget``)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        total = len(value)
        for item in value:
            if isinstance(item, (str, list, tuple)):
                total += weight(item, budget - total)
                if total > budget:
                    break
        return total
    return 1


#: Plain dicts (and the optional-data dicts, which subclass dict without adding attributes).
_DICTS = (dict, OptionalDict)
_DICT_ATTRIBUTES = frozenset(dir(OptionalDict))
#: str's methods are builtin methods; Markup's are Python methods.
_METHODS = (types.BuiltinMethodType, types.MethodType)
_PRINTF_WIDTH = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")
#: The most digits a whole number a template makes may have (``**`` and ``*``).
MAX_DIGITS = 10_000


def _shown(value: Any) -> int:
    """How many characters ``%s`` makes of ``value``."""
    if isinstance(value, str):
        return len(value)
    try:
        return len(str(value))
    except ValueError:  # an int past Python's digit limit: the real formatting fails as well
        return 0


class _Checks:
    """The size checks, bound to one environment's limits."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.cap = limits.max_sequence

    def size(self, n: float) -> None:
        if n > self.cap:
            raise LimitExceeded(f"the template would make a string or list {int(n):,} long (characters or items), "
                                f"over the limit of {self.cap:,}", "max_sequence")

    def width(self, n: Any) -> None:
        if isinstance(n, int) and not isinstance(n, bool):
            self.size(n)

    def digits(self, n: float) -> None:
        if n > MAX_DIGITS:
            raise LimitExceeded(f"the template would make a number of {n:,.0f} digits, over the limit of {MAX_DIGITS:,}", "max_sequence")

    def printf(self, fmt: str, args: Any) -> None:
        values = args if isinstance(args, tuple) else (args,)
        keyed: dict[str, int] = {}
        made = len(fmt)
        for key, star_or_width, precision in _PRINTF_WIDTH.findall(fmt):
            for part in (star_or_width, precision):
                if part.isdigit():
                    self.size(int(part))
            if key and isinstance(args, Mapping):
                # '%(name)s' * 20000 % {'name': a long string}: one value, shown at every conversion.
                if key not in keyed:
                    keyed[key] = _shown(args.get(key, ""))
                made += keyed[key]
        if "*" in fmt:
            for v in values:
                self.width(v)
        if not isinstance(args, Mapping):
            made += sum(_shown(v) for v in values)
        self.size(made)

    def binop(self, op: str, left: Any, right: Any) -> None:
        if op == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and not isinstance(n, bool):
                    self.size(weight(seq, self.cap) * max(n, 0))
            if type(left) is int and type(right) is int:
                # Squaring a large number again and again doubles its digits each time.
                self.digits((abs(left).bit_length() + abs(right).bit_length()) * math.log10(2))
        elif op == "+":
            if isinstance(left, str) and isinstance(right, str) or isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
                self.size(weight(left, self.cap) + weight(right, self.cap))
        elif op == "%" and isinstance(left, str):
            self.printf(left, right)
        elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            self.digits(right * math.log10(abs(left)))

    def method(self, obj: str, name: str, args: tuple, kwargs: dict) -> None:
        if name in ("ljust", "rjust", "center", "zfill") and args:
            self.width(args[0])
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            if isinstance(tab, int):
                self.size(len(obj) + obj.count("\t") * tab)
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            self.replaced(obj, args[0], args[1], args[2] if len(args) > 2 else -1)
        elif name == "join" and args and isinstance(args[0], (list, tuple)):
            self.joined(obj, args[0])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            self.translated(obj, args[0])

    def translated(self, s: str, table: Mapping) -> None:
        made = len(s)
        for char, n in Counter(s).items():
            new = table.get(ord(char))
            if isinstance(new, str):
                made += n * (len(new) - 1)
        self.size(made)

    def replaced(self, s: str, old: str, new: str, count: Any) -> None:
        hits = s.count(old) if old else len(s) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        self.size(len(s) + hits * (len(new) - len(old)))

    def joined(self, sep: str, items: list | tuple) -> None:
        self.size(weight(list(items), self.cap) + len(sep) * max(len(items) - 1, 0))


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` so the joined string's size is checked."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with relmail's :class:`Limits` on sizes and ranges."""

    intercepted_binops = frozenset({"*", "+", "%", "**"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, *args, limits: Limits | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits or Limits()
        self.checks = _Checks(self.limits)
        self.globals["range"] = self._range
        self.globals["lipsum"] = self._lipsum(self.globals["lipsum"])
        for name, check in _FILTER_CHECKS.items():
            self.filters[name] = _checked_filter(self.filters[name], check, self.checks)

    def getattr(self, obj, attribute: str):
        # ``customer.first_name`` on a dict: Jinja tries the attribute first, which for a dict
        # raises (and catches) an AttributeError on every lookup. A name that is no dict method
        # can only be an item, so look it up directly: the same result, without the exception.
        if type(obj) in _DICTS and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context, operator: str, left, right):
        self.checks.binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # Jinja's own signature and body, plus the size check
        if type(__obj) in _METHODS and isinstance(__obj.__self__, str):
            __self.checks.method(__obj.__self__, __obj.__name__, args, kwargs)
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        return __context.call(__obj, *args, **kwargs)

    def wrap_str_format(self, value):
        # Jinja's own wrapper, with a formatter that checks each field as it is made: a width can come
        # from an argument ('{:{w}}', '{0[w]:{0[w]}}', format_map) and one argument can be shown many times.
        if type(value) not in _METHODS or value.__name__ not in ("format", "format_map") or not isinstance(value.__self__, str):
            return None
        fmt = value.__self__
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args, **kwargs):
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument and no keyword arguments")
                args, kwargs = (), args[0]
            if isinstance(fmt, Markup):
                formatter = _BoundedEscapeFormatter(self, self.checks, escape=fmt.escape)
            else:
                formatter = _BoundedFormatter(self, self.checks)
            return type(fmt)(formatter.vformat(fmt, args, kwargs))

        return update_wrapper(wrapper, value)

    def checked_concat(self, joined: str) -> str:
        self.checks.size(len(joined))
        return joined

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > self.limits.max_range:
            raise LimitExceeded(f"range() of {len(numbers):,} numbers is over the limit of {self.limits.max_range:,}", "max_range")
        return numbers

    def _lipsum(self, lipsum):
        checks = self.checks

        def bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # Jinja's names
            checks.size(n * max * 12)  # a dozen characters a word, at most
            return lipsum(n, html, min, max)

        return bounded_lipsum


class _BoundedFormatter(SandboxedFormatter):
    """Jinja's sandboxed ``str.format``, checking each field's width and the running length of what it made."""

    def __init__(self, env, checks: _Checks, **kwargs):
        super().__init__(env, **kwargs)
        self.checks = checks
        self.made = 0

    def format_field(self, value, format_spec: str):
        for digits in _DIGITS.findall(format_spec):  # the spec with any '{w}' in it already filled in
            self.checks.size(int(digits))
        out = super().format_field(value, format_spec)
        self.made += len(out)
        self.checks.size(self.made)
        return out


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    """The same for ``Markup.format``, which escapes each field."""


def _center(checks, value, width=80, *rest, **kw):
    checks.width(width)
    return value


def _indent(checks, value, width=4, *rest, **kw):
    lines = str(value).count("\n") + 1
    checks.size(len(str(value)) + lines * (len(width) if isinstance(width, str) else width if isinstance(width, int) else 0))
    return value


def _join(checks, value, d="", attribute=None, *rest, **kw):
    if not isinstance(value, (list, tuple, str)):
        value = list(value)  # a generator (map, select ...): its items are bounded, their joint size is checked
    checks.joined(str(d), list(value))
    return value


def _replace(checks, value, old, new, count=None, *rest, **kw):
    checks.replaced(str(value), str(old), str(new), count if count is not None else -1)
    return value


def _format(checks, value, *args, **kwargs):
    checks.printf(str(value), kwargs or tuple(args))
    return value


def _wordwrap(checks, value, width=79, break_long_words=True, wrapstring=None, *rest, **kw):
    text = str(value)
    per_line = width if isinstance(width, int) and width > 0 else 1
    checks.size(len(text) + (len(text) // per_line + 1) * len(wrapstring or "\n"))
    return value


def _batch(checks, value, linecount, fill_with=None, *rest, **kw):
    checks.width(linecount)
    return value


def _tojson(checks, value, indent=None, *rest, **kw):
    if indent is not None:
        # Every line is indented by its depth times the indent: the size grows linearly with the indent's width.
        width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
        checks.width(width)
        flat, one = (len(json.dumps(value, indent=n, sort_keys=True, default=str)) for n in (0, 1))
        checks.size(flat + (one - flat) * width)
    return value


_FILTER_CHECKS = {"center": _center, "indent": _indent, "join": _join, "replace": _replace, "format": _format,
                  "wordwrap": _wordwrap, "batch": _batch, "slice": _batch, "tojson": _tojson}


def _checked_filter(real, check, checks: _Checks):
    """``real`` with ``check`` run on its arguments first; Jinja's pass_* markers are kept."""
    if getattr(real, "jinja_pass_arg", None) is None:

        @wraps(real)
        def checked(value, *args, **kwargs):
            return real(check(checks, value, *args, **kwargs), *args, **kwargs)
    else:

        @wraps(real)
        def checked(first, value, *args, **kwargs):
            return real(first, check(checks, value, *args, **kwargs), *args, **kwargs)

    return checked
