"""The rejects file written by ``--skip-invalid``: every bad record, where it was, and why.

Same format as the input (CSV or JSON Lines), one entry per rejected record
with its first line number, the bad fields, the reasons and the record's
original text, so nothing is lost and a fixed file can be rebuilt from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from ..errors import ConfigError
from ..store.private import open_private
from ..store.spreadsheet_cells import writer as spreadsheet_writer
from .readers import Record


def default_rejects_path(source_name: str, fmt: str) -> Path:
    """``events.csv`` -> ``events.rejects.csv`` (next to the input)."""
    if source_name.startswith("<"):
        raise ConfigError(f"reading {source_name} with --skip-invalid needs --rejects PATH for the rejected rows")
    path = Path(source_name)
    stem = path.name
    for suffix in (".gz", ".csv", ".jsonl", ".ndjson", ".json"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    return path.with_name(f"{stem}.rejects.{fmt}")


class RejectsWriter:
    """Opens the file on the first reject, so a clean import leaves no empty file behind."""

    def __init__(self, path: Path, fmt: str):
        self.path = Path(path)
        self.fmt = fmt
        self.count = 0
        self._file: IO[str] | None = None
        self._csv = None

    def write(self, record: Record, problems: list[tuple[str | None, str]]) -> None:
        if self._file is None:
            self._open()
        fields = [p[0] for p in problems]
        reasons = [p[1] for p in problems]
        if self.fmt == "csv":
            self._csv.writerow([record.line, ",".join(f or "" for f in fields), "; ".join(reasons), record.original()])  # type: ignore[union-attr]
        else:
            entry = {
                "line": record.line,
                "problems": [{"field": f, "message": m} for f, m in problems],
                "original": record.original(),
            }
            self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")  # type: ignore[union-attr]
        self.count += 1

    def _open(self) -> None:
        try:
            self._file = open_private(self.path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise ConfigError(f"cannot write the rejects file {self.path}: {exc.strerror}") from None
        if self.fmt == "csv":
            self._csv = spreadsheet_writer(self._file)
            self._csv.writerow(["line", "fields", "reasons", "original"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
