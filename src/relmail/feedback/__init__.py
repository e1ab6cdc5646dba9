"""Feedback from the world back into the store: ESP events, unsubscribes, preferences.

Each provider module (:mod:`.sendgrid`, :mod:`.mailgun`, :mod:`.postmark`,
:mod:`.ses`) offers the same three functions:

- ``receive(request, config) -> list[FeedbackEvent]``: verify a webhook
  POST (raising :class:`~relmail.errors.SignatureError`) and parse it;
- ``read_export(path) -> list[FeedbackEvent]``: parse an exported file
  (raising :class:`~relmail.errors.ValidationError` naming file, line, field);
- ``parse_event`` / ``parse_record``: one provider event, for tests and tools.

:data:`PROVIDERS` is the registry; :func:`import_file` reads an export and
applies it all-or-nothing with :func:`~relmail.feedback.apply.apply_events`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from sqlalchemy.engine import Engine

from ..errors import ConfigError
from .apply import ApplyResult, apply_events
from .events import TYPES, FeedbackEvent

#: Provider name -> module name, in the order the CLI lists them.
PROVIDERS = {
    "sendgrid": "sendgrid",
    "mailgun": "mailgun",
    "postmark": "postmark",
    "ses": "ses",
}

__all__ = ["PROVIDERS", "TYPES", "ApplyResult", "FeedbackEvent", "apply_events", "import_file", "provider", "read_export"]


def provider(name: str) -> ModuleType:
    """The module of provider ``name`` (``sendgrid``, ``mailgun``, ``postmark``, ``ses``)."""
    if name not in PROVIDERS:
        raise ConfigError(f"unknown feedback provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    return importlib.import_module(f"{__name__}.{PROVIDERS[name]}")


def read_export(path: str | Path, fmt: str) -> list[FeedbackEvent]:
    """The normalized events in export ``path`` of provider ``fmt``; nothing is written."""
    return provider(fmt).read_export(Path(path))


def import_file(engine: Engine, path: str | Path, fmt: str) -> ApplyResult:
    """Import an export file: every event or none (a bad record writes nothing).

    Events already in the store (from a webhook, or an earlier import of
    the same file) are counted as duplicates, not written twice.
    """
    events = read_export(path, fmt)
    return apply_events(engine, events, source="esp-import")
