"""A plan as files for CI: CSV, JSON Lines, Markdown; the diff against a previous plan; the gates.

* ``.csv`` / ``.jsonl``: one row per decision (customer, message, action,
  score, expected value, reasons; JSON Lines also the logged features).
  Either can be read back by :func:`read_plan` for ``--diff-against``.
* ``.md``: the summary table and the suppression list (capped, with a
  count of what was left out) for a pull-request comment.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import RenderGateFailed, SuppressionRateExceeded, TooFewSends, ValidationError
from ..rules import REASON_CODES

FORMATS = ("csv", "jsonl", "md")
CSV_FIELDS = ["customer_id", "message_id", "action", "score", "expected_value", "reasons"]


def format_for(path: str | Path, explicit: str | None = None) -> str:
    """The output format: ``explicit`` or from the file's extension."""
    if explicit:
        return explicit
    ext = Path(path).suffix.lower().lstrip(".")
    ext = {"json": "jsonl", "ndjson": "jsonl", "markdown": "md"}.get(ext, ext)
    if ext not in FORMATS:
        raise ValidationError(f"{path}: cannot tell the format from the extension; use .csv, .jsonl or .md, or --format")
    return ext


def write_plan(result, path: str | Path, fmt: str | None = None, limit: int = 200) -> str:
    """Write ``result`` to ``path``; returns the format used."""
    fmt = format_for(path, fmt)
    decisions = result.decisions.sorted()
    path = Path(path)
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_FIELDS)
            for r in decisions.records(features=False):
                w.writerow([r["customer_id"], r["message_id"], r["action"], r["score"], r["expected_value"], " ".join(r["reasons"])])
    elif fmt == "jsonl":
        with path.open("wb") as fh:
            for r in decisions.records():
                fh.write(orjson.dumps(r) + b"\n")
    else:
        path.write_text(markdown(result, limit), encoding="utf-8")
    return fmt


def summary_rows(result) -> tuple[list[str], list[list[Any]]]:
    headers = ["message", "audience", "send", "holdout", "suppress"]
    rows = [[m.message_id, m.audience, m.send, m.holdout, m.suppress] for m in result.messages]
    t = result.totals
    rows.append(["total", t["audience"], t["send"], t["holdout"], t["suppress"]])
    return headers, rows


def reason_rows(result) -> tuple[list[str], list[list[Any]]]:
    """Reason code × message counts, in the registry's order."""
    headers = ["reason"] + [m.message_id for m in result.messages] + ["total"]
    rows = []
    for code in REASON_CODES:
        counts = [m.reasons.get(code, 0) for m in result.messages]
        if any(counts):
            rows.append([code, *counts, sum(counts)])
    return headers, rows


def _md_table(headers: list[str], rows: Iterable[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(f"{v:,}" if isinstance(v, int) else str(v) for v in r) + " |")
    return out


def markdown(result, limit: int = 200) -> str:
    """Summary, reasons and the suppression list, for a pull-request comment."""
    mode = "dry run, nothing written" if result.dry_run else "written to the ledger"
    lines = [f"### relmail plan `{result.run_id}` ({mode})", "",
             f"As of {result.as_of:%Y-%m-%d %H:%M} UTC; suppression rate {result.suppression_rate:.1%}."]
    if result.render_errors:
        lines.append(f"**{result.render_errors} render error(s):**")
        lines += [f"- `{p}`" for p in result.render_problems[:limit]]
    lines += [f"**Warning:** {w}" for w in result.warnings]
    lines += [""] + _md_table(*summary_rows(result)) + [""] + _md_table(*reason_rows(result))
    suppressed = [r for r in result.decisions.sorted().records(features=False) if r["action"] != "send"]
    lines += ["", f"#### Suppressed and held out ({len(suppressed):,})", ""]
    lines += _md_table(["customer", "message", "action", "score", "reasons"],
                       ([r["customer_id"], r["message_id"], r["action"], f"{r['score']:.2f}", " ".join(r["reasons"])]
                        for r in suppressed[:limit]))
    if len(suppressed) > limit:
        lines += ["", f"... and {len(suppressed) - limit:,} more (see the CSV or JSON Lines artifact)."]
    return "\n".join(lines) + "\n"


def read_plan(path: str | Path) -> dict[tuple[str, str], dict[str, Any]]:
    """A plan file written by :func:`write_plan` (CSV or JSON Lines) → {(customer, message): row}."""
    path = Path(path)
    fmt = format_for(path)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                missing = set(CSV_FIELDS) - set(reader.fieldnames or [])
                if missing:
                    raise ValidationError(f"{path}: not a relmail plan file (missing columns {', '.join(sorted(missing))})")
                for row in reader:
                    out[(row["customer_id"], row["message_id"])] = {"action": row["action"], "reasons": row["reasons"].split()}
        elif fmt == "jsonl":
            with path.open("rb") as fh:
                for _i, line in enumerate(fh, start=1):
                    if line.strip():
                        row = orjson.loads(line)
                        out[(row["customer_id"], row["message_id"])] = {"action": row["action"], "reasons": list(row.get("reasons", []))}
        else:
            raise ValidationError(f"{path}: --diff-against needs a .csv or .jsonl plan file")
    except FileNotFoundError:
        raise ValidationError(f"{path}: not found") from None
    except (orjson.JSONDecodeError, KeyError) as exc:
        raise ValidationError(f"{path}: not a relmail plan file ({exc})") from None
    return out


@dataclass
class Move:
    customer_id: str
    message_id: str
    before: str  # action, or "absent"
    after: str
    reasons_before: list[str]
    reasons_after: list[str]


def diff(old: dict[tuple[str, str], dict[str, Any]], result) -> list[Move]:
    """Who moved between send and not-send (or into / out of an audience) since ``old``."""
    moves = []
    seen = set()
    for r in result.decisions.sorted().records(features=False):
        key = (r["customer_id"], r["message_id"])
        seen.add(key)
        before = old.get(key)
        b_action = before["action"] if before else "absent"
        if (b_action == "send") != (r["action"] == "send") or (before is None and r["action"] == "send"):
            moves.append(Move(*key, b_action, r["action"], before["reasons"] if before else [], r["reasons"]))
    for key, before in sorted(old.items()):
        if key not in seen and before["action"] == "send":
            moves.append(Move(*key, "send", "absent", before["reasons"], []))
    return moves


def check_gates(result, max_suppression_rate: float | None, min_sends: int | None) -> None:
    """Raise the first failing gate (render, suppression rate, minimum sends); the message lists all."""
    failures: list[tuple[type, str]] = []
    if result.render_errors:
        failures.append((RenderGateFailed, f"{result.render_errors} template render error(s)"))
    if max_suppression_rate is not None and result.suppression_rate > max_suppression_rate:
        failures.append((SuppressionRateExceeded,
                         f"suppression rate {result.suppression_rate:.1%} is above --max-suppression-rate {max_suppression_rate:.1%}"))
    sends = result.totals["send"]
    if min_sends is not None and sends < min_sends:
        failures.append((TooFewSends, f"{sends:,} sends is below --min-sends {min_sends:,}"))
    if failures:
        cls = failures[0][0]
        raise cls("gate failed: " + "; ".join(text for _, text in failures))
