"""Streaming, validated, all-or-nothing import of customers, products, preferences and events.

>>> from relmail.importers import import_file
>>> result = import_file(engine, "events", "events.csv")      # doctest: +SKIP
>>> result.rows_imported, round(result.rows_per_second)       # doctest: +SKIP

Files are CSV (header line) or JSON Lines, optionally gzip-compressed, or
``-`` for stdin. Every field is validated; a bad file raises
:class:`relmail.errors.ValidationError` whose ``problems`` name file, line
and field, and nothing is imported unless ``skip_invalid`` is set.
"""

from .pipeline import DEFAULTS, ImportResult, import_file
from .schemas import KINDS, Schema, schema_for

__all__ = ["DEFAULTS", "KINDS", "ImportResult", "Schema", "import_file", "schema_for"]
