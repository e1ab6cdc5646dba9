"""Repeated keys in a YAML mapping, which PyYAML's loaders accept silently (the last one wins).

A block copied within a campaign or segment file and half edited keeps two
``topic:`` lines or two ``within_days:``; the file loads, and the first
value, the one the author sees first, is ignored. Campaign and segment
files refuse them, as column mappings do.

A file is composed once: the same node tree gives the repeated keys, the
line of every key and (:func:`data_of`) the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import yaml

from .errors import Problem


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
