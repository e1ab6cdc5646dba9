"""The language of a locale, the one way every part of relmail reads it."""

from __future__ import annotations


def language_of(locale: str | None) -> str:
    """``nl_NL`` / ``nl-NL`` / ``NL`` / ``nl`` → ``nl``; ``''`` for no locale."""
    return (locale or "").replace("-", "_").split("_", 1)[0].lower()
