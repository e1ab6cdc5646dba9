"""Repeated keys in a YAML mapping, which PyYAML's loaders accept silently (the last one wins).

A block copied within a campaign or segment file and half edited keeps two
``topic:`` lines or two ``within_days:``; the file loads, and the first
value, the one the author sees first, is ignored. Campaign and segment
files refuse them, as column mappings do.

A file is composed once (:func:`compose`): the same node tree gives the
repeated keys, the line of every key and (:func:`data_of`) the data.

YAML aliases share a node: ``&a [x, x]``, ``&b [*a, *a]`` ... doubles at each
line, so a file of twenty lines names a million values, and every walk over
it (the repeated keys, the lines, the segment grammar, the SQL it compiles
to) visits each one. :func:`compose` refuses a file whose aliases expand it
past :data:`MAX_VALUES`, or that contains itself, before anything walks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml

from .errors import Problem

#: The most values (mappings, lists, keys and scalars) a file may hold once its aliases are expanded.
MAX_VALUES = 100_000


class ExpandsTooFar(yaml.YAMLError):
    """A file whose aliases expand it past :data:`MAX_VALUES`, or that contains itself."""

    def __init__(self, problem: str):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = None


def compose(text: str) -> yaml.Node | None:
    """``text`` composed with PyYAML's safe loader; :class:`ExpandsTooFar` (a ``yaml.YAMLError``) when it is an alias bomb."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None and _expanded(root) > MAX_VALUES:
        raise ExpandsTooFar(f"its aliases (*name) expand it to more than {MAX_VALUES:,} values; write the values out")
    return root


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _expanded(root: yaml.Node) -> int:
    """How many values ``root`` holds with every alias expanded (counted once per shared node, without recursion)."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in _children(node)), MAX_VALUES + 1)
        elif key not in sizes:
            if key in open_:
                raise ExpandsTooFar("an alias (*name) refers to a value it is part of")
            open_.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def repeated_keys(root: yaml.Node | None, file: str, field: Callable[[tuple], str]) -> list[Problem]:
    """A problem per key that repeats one earlier in the same mapping; ``field`` names a key path as the file's errors do."""
    return [Problem(file, line, field(path), f"'{path[-1]}' appears twice (also on line {first}): only the last would count")
            for path, line, first in _repeats(root, ())]


def key_path(path: tuple) -> str:
    """``('all', 1, 'purchased')`` as problems name a key: ``all[1].purchased``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def data_of(root: yaml.Node | None) -> Any:
    """The data of a composed document, as ``yaml.safe_load`` reads it (raises its ``yaml.YAMLError``).

    Read the node's keys and lines first: a merge key (``<<: *base``) is
    resolved by rewriting the node in place.
    """
    return None if root is None else yaml.SafeLoader("").construct_document(root)


def _repeats(node: yaml.Node | None, path: tuple) -> Iterator[tuple[tuple, int, int]]:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in seen:
                yield (*path, name), line, seen[name]
            else:
                seen[name] = line
            yield from _repeats(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _repeats(item, (*path, i))
