"""The fault suite (bench/faults.py) in CI: SIGKILLs, database faults and SMTP faults, then a clean run.

Each backend's figures line (faults injected, received once, received twice,
flagged uncertain, lost) is printed in pytest's terminal summary, also under
pytest-xdist and with ``-q``. No e-mail
may arrive twice and none may be lost; uncertain ones (handed over, no
reply) are counted and must be explained by the ledger.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
faults = importlib.import_module("faults")

def _run(backend: str, request, **kw) -> None:
    if backend == "postgresql":
        request.getfixturevalue("pg_databases")  # skipped (or failed in CI) without a server
    report = faults.run(backend, log=lambda line: None, **kw)
    # Reports carry user properties from pytest-xdist's workers to the
    # terminal summary (conftest.py), so CI output shows the figures.
    request.node.user_properties.append(("fault suite", report.line()))
    t = report.tally
    assert report.faults >= 3, report.line()
    assert t.twice == 0 and t.lost == 0, report.line()
    assert t.once + t.uncertain - t.uncertain_received + t.rejected == t.sends, report.line()
    assert all(seconds < 60 for _, _, seconds in report.rounds)


#: Faults that stop a send come first, so that every round still has e-mails left to break.
SCHEDULES = {
    "sqlite": ["kill", "kill", "writer-lock"],
    "postgresql": ["kill", "read-only", "lock-timeout"],
}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fault_suite_sends_nothing_twice_and_loses_nothing(backend, request):
    _run(backend, request, customers=150, seed=22, schedule=SCHEDULES[backend])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fault_suite_longer_run(backend, request):
    _run(backend, request, customers=400, rounds=12, seed=7)
