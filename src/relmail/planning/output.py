"""A plan as files for CI: CSV, JSON Lines, Markdown; reading plan files back; the gates.

* ``.csv`` / ``.jsonl``: one row per decision (customer, message, action,
  score, expected value, reasons; JSON Lines also the run, its as-of time
  and the logged features, which is what ``relmail why --plan`` reads).
  Either can be read back as the baseline of ``--diff-against``.
* ``.md``: for a pull-request comment or a CI step summary: the counts, the
  reasons, the render gate's renders per template variant and its failures,
  what changed against the baseline (when there is one), what a replan kept,
  and the suppression list (capped, with a count of what was left out).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from ..errors import RelmailError, RenderGateFailed, SuppressionRateExceeded, TooFewSends, ValidationError
from ..rules import REASON_CODES
from ..store.private import open_private, write_private
from ..store.spreadsheet_cells import from_spreadsheet_text
from ..store.spreadsheet_cells import writer as spreadsheet_writer

if TYPE_CHECKING:
    from .run import PlanResult

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


def write_plan(result: PlanResult, path: str | Path, fmt: str | None = None, limit: int = 200, changes=None) -> str:
    """Write ``result`` to ``path``; returns the format used.

    ``changes`` (a :class:`~relmail.planning.diff.PlanDiff`) adds the diff to Markdown output.
    """
    fmt = format_for(path, fmt)
    path = Path(path)
    if fmt == "csv":
        with open_private(path, "w", newline="", encoding="utf-8") as fh:
            w = spreadsheet_writer(fh)
            w.writerow(CSV_FIELDS)
            for r in result.decisions.sorted().records(features=False):
                w.writerow([r["customer_id"], r["message_id"], r["action"], r["score"], r["expected_value"], " ".join(r["reasons"])])
    elif fmt == "jsonl":
        run = {"run": result.run_id, "as_of": result.as_of.isoformat()}
        if result.decided_at is not None:
            # What `relmail why --plan` asks the consent history as of, as `why` asks it as of a written decision's time.
            run["decided_at"] = result.decided_at.isoformat()
        with open_private(path, "wb") as fh:
            for r in result.decisions.sorted().records():
                fh.write(orjson.dumps({**run, **r}) + b"\n")
    else:
        write_private(path, markdown(result, limit, changes))
    return fmt


def summary_rows(result: PlanResult) -> tuple[list[str], list[list[Any]]]:
    headers = ["message", "audience", "send", "holdout", "suppress"]
    rows = [[m.message_id, m.audience, m.send, m.holdout, m.suppress] for m in result.messages]
    t = result.totals
    rows.append(["total", t["audience"], t["send"], t["holdout"], t["suppress"]])
    if result.kept:
        headers.append("kept")
        for row, m in zip(rows, result.messages):
            row.append(m.kept)
        rows[-1].append(result.kept)
    return headers, rows


def reason_rows(result: PlanResult) -> tuple[list[str], list[list[Any]]]:
    """Reason code × message counts, in the registry's order."""
    headers = ["reason"] + [m.message_id for m in result.messages] + ["total"]
    rows = []
    for code in REASON_CODES:
        counts = [m.reasons.get(code, 0) for m in result.messages]
        if any(counts):
            rows.append([code, *counts, sum(counts)])
    return headers, rows


def gate_rows(result: PlanResult) -> tuple[list[str], list[list[Any]]]:
    """The render gate's work per template variant."""
    headers = ["message", "variant", "recipients", "locales", "rendered", "failed"]
    return headers, [[c.variant.message_id, str(c.variant), c.recipients, c.locales, c.rendered, c.failed] for c in result.render_checks]


def change_rows(changes, limit: int | None = None) -> tuple[list[str], list[list[Any]]]:
    """One row per changed decision, the customer named on their first row only (each customer once)."""
    headers = ["customer", "message", "before", "after"]
    rows: list[list[Any]] = []
    for entry in changes.customers:
        for k, c in enumerate(entry.changes):
            rows.append([entry.customer_id if k == 0 else "", c.message_id, _decision_text(c.before, c.reasons_before),
                         _decision_text(c.after, c.reasons_after)])
        if limit is not None and len(rows) >= limit:
            break
    return headers, rows


def counted(n: int, word: str, words: str | None = None) -> str:
    """``1 customer``, ``1,204 customers``; ``words`` where an s does not make the plural (``lift entries``)."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def _decision_text(action: str, reasons: tuple[str, ...]) -> str:
    return f"{action} ({' '.join(reasons)})" if reasons and action != "send" else action


def kept_sentence(result: PlanResult) -> str | None:
    """What a replan (or a dry run over a written window) kept, or None."""
    if not result.kept and not result.replaced:
        return None
    verb = "would keep" if result.dry_run else "kept"
    again = "would decide again" if result.dry_run else "decided again"
    return (f"Of the written run's decisions, this replan {verb} {result.kept:,} unchanged (the e-mail was delivered or is "
            f"being delivered) and {again} the other {result.replaced:,}.")


def rate_basis(result: PlanResult) -> str:
    """What a replan's suppression rate is of: the whole run, its kept sends included."""
    if not result.kept:
        return ""
    return f" of the run's {result.decided:,} decisions, the {result.kept:,} kept included"


def markdown(result: PlanResult, limit: int = 200, changes=None) -> str:
    """Counts, reasons, the render gate, changes and the suppression list, for a pull-request comment."""
    mode = "dry run, nothing written" if result.dry_run else "written to the ledger"
    lines = [f"### relmail plan `{result.run_id}` ({mode})", "",
             f"As of {result.as_of:%Y-%m-%d %H:%M} UTC; suppression rate {result.suppression_rate:.1%}{rate_basis(result)}; "
             f"render gate: {sum(c.rendered for c in result.render_checks):,} renders, {result.render_errors} failed."]
    kept = kept_sentence(result)
    if kept:
        lines += ["", kept]
    if result.render_errors:
        lines += ["", f"**{result.render_errors} render error(s):**", ""]
        lines += [f"- `{p}`" for p in result.render_problems[:limit]]
    lines += [f"**Warning:** {w}" for w in result.warnings]
    lines += [""] + md_table(*summary_rows(result)) + [""] + md_table(*reason_rows(result))
    if result.render_checks:
        lines += ["", "#### Render gate", ""] + md_table(*gate_rows(result))
    if changes is not None:
        lines += ["", *markdown_changes(changes, limit)]
    suppressed = [r for r in result.decisions.sorted().records(features=False) if r["action"] != "send"]
    lines += ["", f"#### Suppressed and held out ({len(suppressed):,})", ""]
    lines += md_table(["customer", "message", "action", "score", "reasons"],
                      ([r["customer_id"], r["message_id"], r["action"], r["score"], " ".join(r["reasons"])]
                       for r in suppressed[:limit]))
    if len(suppressed) > limit:
        lines += ["", f"... and {len(suppressed) - limit:,} more (see the CSV or JSON Lines artifact)."]
    return "\n".join(lines) + "\n"


def markdown_changes(changes, limit: int = 200) -> list[str]:
    """The diff section of ``plan.md``: counts per change and per reason, then each changed customer once."""
    lines = [f"#### Changes since {changes.against}", "",
             f"{counted(len(changes.customers), 'customer')}, {counted(changes.changed, 'decision')} changed; {changes.unchanged:,} unchanged"
             + (f"; {changes.kept:,} kept by the replan (not decided again)." if changes.kept else ".")]
    if not changes.customers:
        return lines
    lines += [""] + md_table(["change", "decisions"], [[t, n] for t, n in changes.transitions.items()])
    reasons = changes.reason_rows()
    if reasons:
        lines += [""] + md_table(["reason", "added", "removed"], [list(r) for r in reasons])
    headers, rows = change_rows(changes, limit)
    lines += [""] + md_table(headers, rows)
    if changes.changed > len(rows):
        lines += ["", f"... and {changes.changed - len(rows):,} more changed decisions (see the JSON output)."]
    return lines


def md_table(headers: list[str], rows: Iterable[list[Any]]) -> list[str]:
    """A Markdown table: numeric columns right-aligned, text columns left-aligned."""
    rows = [list(r) for r in rows]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows)
               for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_md_cell(v) for v in r) + " |")
    return out


def _md_cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value).replace("|", "\\|")


def plan_file_rows(path: str | Path, features: bool = False) -> Iterator[dict[str, Any]]:
    """The rows of a plan file written by :func:`write_plan` (CSV or JSON Lines), one dict each.

    ``features=True`` needs JSON Lines (CSV holds no logged features).
    """
    path = Path(path)
    fmt = format_for(path)
    if fmt == "md" or (features and fmt != "jsonl"):
        raise ValidationError(f"{path}: needs a JSON Lines plan file (relmail plan --out plan.jsonl)"
                              + ("" if fmt == "md" else ", which holds the logged features"))
    try:
        if fmt == "csv":
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                missing = set(CSV_FIELDS) - set(reader.fieldnames or [])
                if missing:
                    raise ValidationError(f"{path}: not a relmail plan file (missing columns {', '.join(sorted(missing))})")
                for row in reader:
                    yield {k: v if v is None else from_spreadsheet_text(v) for k, v in row.items()}
            return
        with path.open("rb") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                    for key in ("customer_id", "message_id", "action"):
                        row[key]  # noqa: B018 - present, or the file is not a plan
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ValidationError(f"{path}:{i}: not a relmail plan row ({exc})") from None
                row["reasons"] = " ".join(row.get("reasons") or ())
                if features and "run" not in row:
                    raise ValidationError(f"{path}:{i}: no run id in the row: write the file with this relmail's plan --out")
                yield row
    except FileNotFoundError:
        raise ValidationError(f"{path}: not found") from None


def read_plan_columns(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(customer, message, action, reasons) columns of a plan file, reasons space-separated."""
    cols: list[list[str]] = [[], [], [], []]
    for row in plan_file_rows(path):
        for col, key in zip(cols, ("customer_id", "message_id", "action", "reasons")):
            col.append(row[key])
    return tuple(np.array(c, dtype=object) for c in cols)


@dataclass(frozen=True)
class GateFailure:
    """A gate the plan fails: its name (``render``, ``max_suppression_rate``, ``min_sends``), why, and its error."""

    gate: str
    message: str
    error: type[RelmailError]

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "message": self.message, "exit_code": self.error.exit_code}


def failed_gates(result: PlanResult, max_suppression_rate: float | None, min_sends: int | None) -> list[GateFailure]:
    """Every gate the plan fails, in order: render, suppression rate, minimum sends."""
    failures: list[GateFailure] = []
    if result.render_errors:
        failures.append(GateFailure("render", f"{result.render_errors} template render error(s)", RenderGateFailed))
    if max_suppression_rate is not None and result.suppression_rate > max_suppression_rate:
        failures.append(GateFailure("max_suppression_rate", f"suppression rate {result.suppression_rate:.1%} is above "
                                    f"--max-suppression-rate {max_suppression_rate:.1%}", SuppressionRateExceeded))
    sends = result.sends
    if min_sends is not None and sends < min_sends:
        failures.append(GateFailure("min_sends", f"{sends:,} sends is below --min-sends {min_sends:,}", TooFewSends))
    return failures


def check_gates(result: PlanResult, max_suppression_rate: float | None, min_sends: int | None) -> None:
    """Raise the first failing gate (render, suppression rate, minimum sends); the message lists all."""
    failures = failed_gates(result, max_suppression_rate, min_sends)
    if failures:
        raise failures[0].error("gate failed: " + "; ".join(f.message for f in failures))
