"""``relmail import``: counts and speed on success, every problem on its own line and exit 4 on bad input."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner
from sqlalchemy import func, select

from relmail.cli import cli
from relmail.store.db import connect
from relmail.store.models import Customer, Event

CUSTOMERS = "id,email,created_at\nC1,a@example.com,2024-01-01T00:00:00Z\nC2,b@example.com,2024-01-01T00:00:00+01:00\n"
EVENTS = (
    "customer_id,type,occurred_at\n"
    "C1,view,2025-01-01T00:00:00Z\n"
    "C9,view,2025-01-01T00:00:00Z\n"
    "C1,wave,2025-01-01T00:00:00\n"
)


def invoke(project, *args, input=None):
    return CliRunner().invoke(cli, ["--project", str(project.root), *args], input=input)


def count(project, model) -> int:
    with connect(project.database_url).connect() as conn:
        return conn.execute(select(func.count()).select_from(model.__table__)).scalar_one()


def test_import_prints_rows_and_rows_per_second(project, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS)
    result = invoke(project, "import", "customers", str(path))
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"Imported 2 customers in \d+\.\d s \([\d,]+ rows/s\)\n", result.stdout)
    assert count(project, Customer) == 2


def test_bad_rows_are_listed_one_per_line_and_exit_4_with_nothing_imported(project, tmp_path):
    invoke(project, "import", "customers", "-", input=CUSTOMERS)
    path = tmp_path / "events.csv"
    path.write_text(EVENTS)
    result = invoke(project, "import", "events", str(path))
    assert result.exit_code == 4
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: {path}: 2 bad row(s) of 3; nothing imported"
    assert lines[1] == f"  {path}:3: field 'customer_id': unknown customer 'C9' (import customers first)"
    assert lines[2].startswith(f"  {path}:4: field 'type': unknown event type 'wave'")
    assert lines[3].startswith(f"  {path}:4: field 'occurred_at': '2025-01-01T00:00:00' has no time zone")
    assert count(project, Event) == 0


def test_max_errors_limits_the_listing_and_says_so(project, tmp_path):
    invoke(project, "import", "customers", "-", input=CUSTOMERS)
    result = invoke(project, "import", "events", "-", "--max-errors", "1", input=EVENTS)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[1:] == [
        "  <stdin>:3: field 'customer_id': unknown customer 'C9' (import customers first)",
        "  (showing the first 1 problems of 2 bad row(s); --max-errors 0 lists all)",
    ]


def test_json_output_on_success_and_on_failure(project, tmp_path):
    ok = invoke(project, "import", "customers", "-", "--json", input=CUSTOMERS)
    assert ok.exit_code == 0
    data = json.loads(ok.stdout)
    assert (data["rows_read"], data["rows_imported"], data["rows_rejected"], data["file"]) == (2, 2, 0, "<stdin>")
    bad = invoke(project, "import", "events", "-", "--json", input=EVENTS)
    assert bad.exit_code == 4
    failure = json.loads(bad.stdout)
    assert failure["ok"] is False and failure["bad_rows"] == 2
    assert [(p["line"], p["field"]) for p in failure["problems"]] == [(3, "customer_id"), (4, "type"), (4, "occurred_at")]


def test_skip_invalid_imports_the_rest_and_reports_the_rejects_file(project, tmp_path):
    invoke(project, "import", "customers", "-", input=CUSTOMERS)
    path = tmp_path / "events.csv"
    path.write_text(EVENTS)
    result = invoke(project, "import", "events", str(path), "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Imported 1 events in ")
    assert f"Skipped 2 invalid row(s) of 3; rejects in {tmp_path / 'events.rejects.csv'}" in result.stderr
    assert len((tmp_path / "events.rejects.csv").read_text().splitlines()) == 3
    assert count(project, Event) == 1


def test_stdin_with_skip_invalid_needs_a_rejects_path(project):
    result = invoke(project, "import", "events", "-", "--skip-invalid", input=EVENTS)
    assert result.exit_code == 2
    assert "--rejects" in result.stderr


def test_each_import_command_documents_an_example():
    for kind in ("customers", "products", "preferences", "events"):
        result = CliRunner().invoke(cli, ["import", kind, "--help"])
        assert result.exit_code == 0
        assert f"Example:\n    relmail import {kind}" in result.output
