"""Import a historical run into the ledger: how outside experiments teach relmail.

A campaign sent by another tool, or a randomized test like the Hillstrom
e-mail experiment, enters relmail as one ``runs`` row per run and one
``decisions`` row per (customer, message) with action ``send`` or
``holdout`` and the features the customer had at the time. Its outcomes
are ordinary events (``relmail import events``); training then treats the
run like one relmail planned itself (run status ``imported``: every send
counts as delivered).

File format (CSV with a header, or JSON Lines), one row per decision:

========== ==========================================================
run_id      run identifier (same run: same campaign, window, as_of)
campaign    campaign name
window      the run's window label, e.g. ``2008-W10``
as_of       the send time, ISO 8601 with offset or ``Z``
customer_id an existing customer
message_id  the message sent or held out
action      ``send`` or ``holdout``
any other   a feature: plain decimals become numbers, empty cells are left out;
            in JSON Lines also a ``features`` object
========== ==========================================================

Columns named in ``categorical`` keep their values as text (a JSON number
becomes its text too): a zip code or a store number looks like a number but
is a code, and a model must treat each value as a category of its own
rather than as a quantity with an order.

A customer held out of a whole experiment (Hillstrom's "no e-mail" third)
gets one ``holdout`` row per message, so each message has its own control.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from ..errors import Conflict, Problem, ValidationError
from ..importers.fields import csv_scalar
from ..store.models import Customer, Decision, Run

REQUIRED = ("run_id", "campaign", "window", "as_of", "customer_id", "message_id", "action")
ACTIONS = ("send", "holdout")
CHUNK = 5000
MAX_PROBLEMS = 100


@dataclass
class ImportResult:
    runs: list[str]
    decisions: int
    sends: int
    holdouts: int


def _number(text: str) -> Any:
    """Plain decimals become numbers, exactly as customer attributes do on import."""
    return csv_scalar(text)


def _records(path: Path, categorical: frozenset[str] = frozenset()) -> Iterator[tuple[int, dict]]:
    name = str(path)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            with open(path, encoding="utf-8") as fh:
                for line_no, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValidationError("invalid history file", [Problem(name, line_no, None, f"invalid JSON: {exc.msg}")]) from None
                    if not isinstance(obj, dict):
                        raise ValidationError("invalid history file", [Problem(name, line_no, None, "each line must be a JSON object")])
                    if categorical:
                        obj = _as_text(obj, categorical)
                    yield line_no, obj
        else:
            with open(path, encoding="utf-8-sig", newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
                if missing:
                    raise ValidationError("invalid history file", [Problem(name, 1, c, "missing column") for c in missing])
                absent = sorted(categorical - set(reader.fieldnames or []))
                if absent:
                    raise ValidationError("invalid history file", [Problem(name, 1, c, "no such column (named by --categorical)") for c in absent])
                keep = set(REQUIRED) | categorical
                for row in reader:
                    yield reader.line_num, {k: _number(v) if k not in keep and v is not None else v for k, v in row.items() if v != ""}
    except FileNotFoundError:
        raise ValidationError(f"{name}: file not found") from None
    except UnicodeDecodeError:
        raise ValidationError(f"{name}: not UTF-8 text") from None


def _as_text(obj: dict, categorical: frozenset[str]) -> dict:
    """The JSON record with the categorical features (top level or in ``features``) as text."""

    def text(d: dict) -> dict:
        return {k: (str(v) if k in categorical and isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in d.items()}

    obj = text(obj)
    if isinstance(obj.get("features"), dict):
        obj["features"] = text(obj["features"])
    return obj


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def import_history(engine: Engine, source: str | Path, categorical: Iterable[str] = ()) -> ImportResult:
    """Validate the whole file, then write its runs and decisions in one transaction.

    ``categorical`` names feature columns kept as text (see the module
    docstring). Raises :class:`ValidationError` listing every bad field
    (file, line, field), or :class:`Conflict` when a run id or (campaign,
    window) is in the ledger already. Nothing is written unless everything
    is valid.
    """
    path = Path(source)
    name = str(path)
    categorical = frozenset(categorical)
    clash = sorted(categorical & set(REQUIRED))
    if clash:
        raise ValidationError(f"{name}: {', '.join(clash)} is a required column, not a feature; it cannot be --categorical")
    problems: list[Problem] = []
    runs: dict[str, dict] = {}
    decisions: list[dict] = []
    seen: dict[tuple, int] = {}
    for line_no, rec in _records(path, categorical):
        if len(problems) >= MAX_PROBLEMS:
            break
        bad = False
        for key in REQUIRED:
            if rec.get(key) in (None, ""):
                problems.append(Problem(name, line_no, key, "required"))
                bad = True
        if bad:
            continue
        values = {k: str(rec[k]) for k in REQUIRED if k != "as_of"}
        as_of = _parse_time(rec["as_of"])
        if as_of is None:
            problems.append(Problem(name, line_no, "as_of", f"'{rec['as_of']}' is not an ISO 8601 time with an offset or Z"))
            continue
        if values["action"] not in ACTIONS:
            problems.append(Problem(name, line_no, "action", f"'{values['action']}' is not one of {', '.join(ACTIONS)}"))
            continue
        run = runs.setdefault(values["run_id"], {"campaign": values["campaign"], "window": values["window"], "as_of": as_of, "line": line_no})
        for key, have in (("campaign", values["campaign"]), ("window", values["window"]), ("as_of", as_of)):
            if run[key] != have:
                problems.append(Problem(name, line_no, key, f"run '{values['run_id']}' has {key} {run[key]} on line {run['line']}, not {have}"))
                bad = True
        ident = (values["run_id"], values["customer_id"], values["message_id"])
        if ident in seen:
            problems.append(Problem(name, line_no, "customer_id", f"duplicate decision (same run, customer and message as line {seen[ident]})"))
            bad = True
        if bad:
            continue
        seen[ident] = line_no
        features = {k: v for k, v in rec.items() if k not in REQUIRED and k != "features"}
        extra = rec.get("features")
        if extra is not None:
            if not isinstance(extra, dict):
                problems.append(Problem(name, line_no, "features", "must be a JSON object"))
                continue
            features.update(extra)
        decisions.append(
            {"run_id": values["run_id"], "customer_id": values["customer_id"], "message_id": values["message_id"],
             "action": values["action"], "score": 0.0, "expected_value": 0.0, "reasons": "IMPORTED",
             "features": features, "created_at": as_of, "_line": line_no}
        )
    if not problems and not decisions:
        problems.append(Problem(name, None, None, "no decisions in file"))
    if not problems:
        problems.extend(_mixed_columns(name, decisions, categorical))
    if not problems and categorical:
        present = {k for d in decisions for k in d["features"]}
        problems.extend(Problem(name, None, c, "no decision has this feature (named by --categorical)") for c in sorted(categorical - present))
    if not problems:
        problems.extend(_unknown_customers(engine, name, decisions))
    if problems:
        raise ValidationError(f"{name}: {len(problems)} problem(s), nothing imported", problems)
    return _write(engine, runs, decisions)


def _mixed_columns(name: str, decisions: list[dict], categorical: frozenset[str]) -> list[Problem]:
    """A feature column of numbers with some text in it (``NA``, ``n/a``, a zip code with a leading zero).

    A model treats a column as a number only when every value is one: a
    single ``NA`` would make a spend column a list of categories, silently.
    Each such column is one problem, on the line of its first text value.
    """
    numbers: dict[str, int] = {}
    texts: dict[str, list[tuple[int, Any]]] = {}
    for d in decisions:
        for key, value in d["features"].items():
            if key in categorical or value is None or isinstance(value, (list, dict)):
                continue
            if isinstance(value, (int, float)):
                numbers[key] = numbers.get(key, 0) + 1
            else:
                texts.setdefault(key, []).append((d["_line"], value))
    out = []
    for key in sorted(texts):
        found, n = texts[key], numbers.get(key, 0)
        if n <= len(found):
            continue
        line, value = found[0]
        more = f" (and {len(found) - 1:,} more text value(s) on other lines)" if len(found) > 1 else ""
        out.append(Problem(name, line, key, f"{value!r}{more} is not a number, but {n:,} other values of this column are: "
                                            f"leave the cell empty for a missing value, or name the column with "
                                            f"--categorical if its values are codes (zip codes, store numbers)"))
    return out


def _unknown_customers(engine: Engine, name: str, decisions: list[dict]) -> list[Problem]:
    ids = sorted({d["customer_id"] for d in decisions})
    known: set[str] = set()
    col = Customer.__table__.c.id
    with engine.connect() as conn:
        for i in range(0, len(ids), CHUNK):
            known.update(r[0] for r in conn.execute(select(col).where(col.in_(ids[i : i + CHUNK]))))
    return [
        Problem(name, d["_line"], "customer_id", f"unknown customer '{d['customer_id']}' (import customers first)")
        for d in decisions
        if d["customer_id"] not in known
    ][:MAX_PROBLEMS]


def _write(engine: Engine, runs: dict[str, dict], decisions: list[dict]) -> ImportResult:
    r = Run.__table__
    now = datetime.now(UTC)
    with engine.begin() as conn:
        clash = conn.execute(select(r.c.id, r.c.campaign, r.c.window).where(r.c.id.in_(list(runs)))).first()
        if clash is None:
            for _run_id, run in runs.items():
                clash = conn.execute(select(r.c.id, r.c.campaign, r.c.window)
                                     .where(r.c.campaign == run["campaign"], r.c.window == run["window"])).first()
                if clash is not None:
                    break
        if clash is not None:
            raise Conflict(f"run '{clash.id}' (campaign {clash.campaign}, window {clash.window}) is in the ledger already; history is imported once. "
                           f"To import a corrected file in its place: relmail runs discard {clash.id} --yes (its outcome events stay)")
        conn.execute(
            r.insert(),
            [{"id": run_id, "campaign": run["campaign"], "window": run["window"], "as_of": run["as_of"], "seed": 0,
              "status": "imported", "config_hash": "", "created_at": now, "updated_at": now} for run_id, run in runs.items()],
        )
        table = Decision.__table__
        rows = [{k: v for k, v in d.items() if k != "_line"} for d in decisions]
        for i in range(0, len(rows), CHUNK):
            conn.execute(table.insert(), rows[i : i + CHUNK])
    sends = sum(d["action"] == "send" for d in decisions)
    return ImportResult(runs=sorted(runs), decisions=len(decisions), sends=sends, holdouts=len(decisions) - sends)
