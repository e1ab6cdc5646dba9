"""The segment file grammar: YAML in, a validated tree of :class:`Node` out.

Errors are collected, not raised one by one: each becomes a
:class:`~relmail.errors.Problem` naming the file, the line and the key path
(``all[1].purchased.within_days``), so one run shows every mistake.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from ..errors import Problem, did_you_mean, likely
from ..importers import fields
from ..yaml_keys import compose, data_of, key_path, repeated_keys

#: Leaf conditions and the keys each accepts (``*`` marks a required key).
CONDITIONS: dict[str, set[str]] = {
    "purchased": {"category", "product", "within_days", "not_within_days", "at_least"},
    "viewed": {"category", "product", "within_days", "not_within_days", "at_least"},
    "owns": {"product*"},
    "uses": {"feature*", "product", "within_days", "fewer_than", "at_least"},
    "received_email": {"within_days", "not_within_days", "topic", "message", "campaign", "at_least"},
    "opened_email": {"within_days", "not_within_days", "topic", "message", "campaign", "at_least"},
    "clicked_email": {"within_days", "not_within_days", "topic", "message", "campaign", "at_least"},
    "tenure_days": {"gt", "lt", "gte", "lte"},
    "attribute": {"key*", "equals", "in", "gt", "lt", "gte", "lte", "exists"},
    "locale": {"in*"},
    "consent": {"topic*", "opted_in"},
    "open_ticket": set(),
}
COMBINATORS = ("all", "any", "not")
SPECIAL = ("segment", "sql")
#: The longest look-back a condition may ask for, in days (a century).
MAX_DAYS = 36_525
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
class Node:
    kind: str  # all | any | not | segment | sql | a CONDITIONS name
    path: str  # key path in the file, for errors
    args: Any = None
    children: list[Node] = field(default_factory=list)
    line: int | None = None


def walk(node: Node | None):
    """Every node of a tree, parents before children."""
    stack = [node] if node else []
    while stack:
        n = stack.pop()
        yield n
        stack.extend(n.children)


def parse_file(path: Path, problems: list[Problem]) -> tuple[str, str, Node | None] | None:
    """(name, description, condition tree) of one file, or None after adding its problems."""
    where = str(path)
    try:
        node = compose(path.read_text(encoding="utf-8"))
        lines: dict[str, int] = {}
        if node is not None:
            _lines(node, "", lines)
        repeated = repeated_keys(node, where, key_path)
        data = data_of(node)  # after the keys are read: a merge key rewrites the node
    except UnicodeDecodeError:
        problems.append(Problem(where, None, None, "not UTF-8 text"))
        return None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(Problem(where, mark.line + 1 if mark else None, None, f"invalid YAML: {getattr(exc, 'problem', exc)}"))
        return None
    if node is None:
        # Empty or only comments: refused rather than read as "every customer",
        # which a file saved before its condition was written would otherwise mean.
        problems.append(Problem(where, 1, None, "the file is empty: a segment file is a mapping with name, description and a condition"))
        return None
    if repeated:
        problems.extend(repeated)
        return None
    before = len(problems)
    if not isinstance(data, dict):
        problems.append(Problem(where, 1, None, "a segment file must be a mapping with name, description and a condition"))
        return None
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        rule = "must be lower-case letters (a-z), digits, '-' or '_'"
        # Without a name: key, the file name is the name, and renaming the file is the fix.
        said = f"{name!r} {rule}" if "name" in data else f"the file name {path.stem!r} is the segment's name and {rule}: rename the file"
        problems.append(Problem(where, lines.get("name"), "name", said))
    elif name != path.stem:
        problems.append(Problem(where, lines.get("name"), "name", f"'{name}' must match the file name '{path.stem}'"))
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem(where, lines.get("description"), "description", "must be text"))
    rest = {k: v for k, v in data.items() if k not in ("name", "description")}
    root = None
    if len(rest) > 1:
        # At the second condition: the first is fine on its own.
        problems.append(Problem(where, lines.get(str(list(rest)[1])), None,
                                f"one top-level condition expected, found {', '.join(map(str, rest))} (wrap them in 'all:')"))
    elif rest:
        root = _parse(rest, "", where, lines, problems)
    if len(problems) > before:
        return None
    return name, description, root


def _lines(node, path: str, out: dict[str, int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = f"{path}.{key.value}" if path else str(key.value)
            out[sub] = key.start_mark.line + 1
            _lines(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, f"{path}[{i}]", out)


def _parse(value: Any, path: str, where: str, lines: dict[str, int], problems: list[Problem]) -> Node | None:
    def bad(at: str, message: str) -> None:
        problems.append(Problem(where, lines.get(at, lines.get(path)), at or None, message))

    if not isinstance(value, dict) or len(value) != 1:
        bad(path, "a condition is a mapping with exactly one key (all, any, not, segment, sql or a condition name)")
        return None
    (key, arg), = value.items()
    at = f"{path}.{key}" if path else str(key)
    if key in ("all", "any"):
        if not isinstance(arg, list):
            bad(at, f"'{key}' takes a list of conditions")
            return None
        kids = [_parse(item, f"{at}[{i}]", where, lines, problems) for i, item in enumerate(arg)]
        return Node(key, at, children=[k for k in kids if k is not None])
    if key == "not":
        kid = _parse(arg, at, where, lines, problems)
        return Node("not", at, children=[kid]) if kid else None
    if key == "segment":
        if not isinstance(arg, str):
            bad(at, "'segment' takes a segment name")
            return None
        return Node("segment", at, arg, line=lines.get(at))
    if key == "sql":
        return _parse_sql(arg, at, bad)
    if key not in CONDITIONS:
        names = list(COMBINATORS) + list(SPECIAL) + sorted(CONDITIONS)
        bad(at, f"unknown condition '{key}' (known: {', '.join(names)}){did_you_mean(likely(key, names))}")
        return None
    leaf = _parse_leaf(key, arg, at, bad)
    if leaf is not None:
        leaf.line = lines.get(at)
    return leaf


def _parse_sql(arg: Any, at: str, bad) -> Node | None:
    if not isinstance(arg, str) or not arg.strip():
        bad(at, "'sql' takes a SELECT returning a customer_id column")
        return None
    first = _first_word(arg)
    if first not in ("select", "with", "values"):
        got = f", not {first.upper()}" if first else ""
        bad(at, f"'sql' takes a query (SELECT ... returning customer_id){got}: a segment only reads")
        return None
    unknown = sorted(set(text(arg)._bindparams) - {"as_of"})
    if unknown:
        bad(at, f"only :as_of can be bound in sql, found :{', :'.join(unknown)}")
        return None
    return Node("sql", at, arg.strip().rstrip(";"))


def _first_word(sql: str) -> str:
    """The statement's first keyword, lower-case, after comments and opening parentheses (``(SELECT ...) UNION ...``)."""
    rest = re.sub(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", "", sql, flags=re.S)
    match = re.match(r"[A-Za-z]+", rest)
    return match.group(0).lower() if match else ""


def ids_of(value: Any) -> list[str] | None:
    """A name or a non-empty list of names as a list; None if it is neither."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _count(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _parse_leaf(kind: str, arg: Any, at: str, bad) -> Node | None:
    # Shorthands: "owns: LOCK-S1", "locale: nl_NL", "open_ticket: true".
    if kind == "owns" and not isinstance(arg, dict):
        arg = {"product": arg}
    # Where a problem with the locales is: 'locale' itself in the shorthand, 'locale.in' otherwise.
    locales_at = at if kind == "locale" and not isinstance(arg, dict) else f"{at}.in"
    if kind == "locale" and not isinstance(arg, dict):
        arg = {"in": arg}
    if kind == "open_ticket":
        if arg is not True:
            bad(at, "'open_ticket' takes 'true'")
            return None
        return Node(kind, at, {})
    if not isinstance(arg, dict):
        bad(at, f"'{kind}' takes a mapping of {', '.join(sorted(k.rstrip('*') for k in CONDITIONS[kind]))}")
        return None
    allowed = {k.rstrip("*") for k in CONDITIONS[kind]}
    ok = True
    for k in arg:
        if k not in allowed:
            bad(f"{at}.{k}", f"unknown key '{k}' for '{kind}' (allowed: {', '.join(sorted(allowed))}){did_you_mean(likely(k, allowed))}")
            ok = False
    for k in CONDITIONS[kind]:
        if k.endswith("*") and k[:-1] not in arg:
            bad(at, f"'{kind}' needs '{k[:-1]}'")
            ok = False
    for k in ("category", "product", "message", "campaign", "in") if kind != "attribute" else ():
        if k in arg and ids_of(arg[k]) is None:
            bad(locales_at if kind == "locale" else f"{at}.{k}", "must be a name or a non-empty list of names")
            ok = False
    for k in ("within_days", "not_within_days", "at_least", "fewer_than", "gt", "lt", "gte", "lte"):
        if k not in arg or kind == "attribute":
            # An attribute compares against any value (and rejects day bounds as unknown keys above).
            continue
        days = k.endswith("within_days") or kind == "tenure_days"
        if not _count(arg[k]):
            bad(f"{at}.{k}", f"must be a non-negative number (got {arg[k]!r}){_unit_hint(arg[k]) if days else ''}")
            ok = False
        elif days and arg[k] > MAX_DAYS:
            # A date that far back does not exist (and nothing is older than a century of history).
            bad(f"{at}.{k}", f"must be at most {MAX_DAYS:,} days")
            ok = False
    for k in ("feature", "topic", "key"):
        if k in arg and (not isinstance(arg[k], str) or not arg[k]):
            bad(f"{at}.{k}", "must be a non-empty name")
            ok = False
    if not ok:
        return None
    if "within_days" in arg and "not_within_days" in arg:
        bad(at, "use either within_days or not_within_days, not both")
        return None
    if kind == "uses" and ("fewer_than" in arg) == ("at_least" in arg):
        bad(at, "'uses' needs exactly one of fewer_than or at_least")
        return None
    if kind == "tenure_days" and not arg:
        bad(at, "'tenure_days' needs gt, lt, gte or lte")
        return None
    if kind == "locale":
        return _check_locale(arg, at, locales_at, bad)
    if kind == "consent" and "opted_in" in arg and not isinstance(arg["opted_in"], bool):
        bad(f"{at}.opted_in", "must be true or false")
        return None
    if kind == "attribute":
        return _check_attribute(arg, at, bad)
    return Node(kind, at, dict(arg))


def _unit_hint(value: Any) -> str:
    """What to write for a count with a unit (``90d``, ``3 days``), as campaign caps spell their windows."""
    match = re.fullmatch(r"\s*(\d+)\s*(d|days?)\s*", value) if isinstance(value, str) else None
    return f": days are a plain number here, write {match.group(1)}" if match else ""


def _check_locale(arg: dict, at: str, locales_at: str, bad) -> Node | None:
    """Locales as the store keeps them (``de-DE`` and ``de_de`` are ``de_DE``, ``DE`` is ``de``).

    Customers' locales are stored in Babel's form, and the condition compares
    them as text: a locale written as a CRM exports it would match nobody, and
    ``DE`` would match on SQLite (whose LIKE ignores case) but not on PostgreSQL.
    """
    wanted = []
    for value in ids_of(arg["in"]):
        try:
            wanted.append(fields.locale(value))  # as the customers import reads and stores them
        except fields.FieldError:
            bad(locales_at, f"unknown locale '{value}' (expected a language like de, or a locale like de_DE or de-DE)")
            return None
    return Node("locale", at, {"in": wanted})


def _check_attribute(arg: dict, at: str, bad) -> Node | None:
    if not _KEY_RE.match(arg["key"]):
        bad(f"{at}.key", "must be letters, digits, '_', '-' or '.'")
        return None
    tests = [k for k in arg if k != "key"]
    if not tests:
        bad(at, "'attribute' needs equals, in, gt, lt, gte, lte or exists")
        return None
    for k in tests:
        v = arg[k]
        if k == "exists" and not isinstance(v, bool):
            bad(f"{at}.exists", "must be true or false")
            return None
        if k in ("gt", "lt", "gte", "lte") and (isinstance(v, bool) or not isinstance(v, (int, float))):
            bad(f"{at}.{k}", "must be a number")
            return None
        if k == "equals" and not isinstance(v, (str, int, float, bool)):
            bad(f"{at}.equals", "must be a text, number or true/false")
            return None
        texts = isinstance(v, list) and all(isinstance(x, str) for x in v)
        numbers = isinstance(v, list) and all(_count(x) or isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        if k == "in" and not (isinstance(v, list) and v and (texts or numbers)):
            bad(f"{at}.in", "must be a non-empty list of texts or of numbers")
            return None
    return Node("attribute", at, dict(arg))
