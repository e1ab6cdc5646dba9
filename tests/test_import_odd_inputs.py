"""What files really hold: broken compression, huge fields, impossible times. One clear error, nothing imported."""

from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from relmail.cli import cli
from relmail.store.db import connect
from relmail.store.models import Customer, Event

HEADER = b"id,email,created_at\n"
ROWS = b"".join(b"C%d,c%d@example.com,2024-01-01T00:00:00Z\n" % (i, i) for i in range(3000))


def invoke(project, *args):
    return CliRunner().invoke(cli, ["--project", str(project.root), *args])


def count(project, model) -> int:
    engine = connect(project.database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(model.__table__)).scalar_one()
    finally:
        engine.dispose()


def corrupt(data: bytes) -> bytes:
    bad = bytearray(data)
    for i in range(40, 90):
        bad[i] ^= 0xFF
    return bytes(bad)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
@pytest.mark.parametrize("suffix", ["customers.csv.gz", "customers.jsonl.gz"])
def test_a_broken_gzip_import_is_one_error_line_naming_the_file_exit_4_nothing_imported(project, tmp_path, damage, suffix):
    rows = HEADER + ROWS if suffix.startswith("customers.csv") else b"".join(
        json.dumps({"id": f"C{i}", "email": f"c{i}@example.com", "created_at": "2024-01-01T00:00:00Z"}).encode() + b"\n"
        for i in range(3000))
    packed = gzip.compress(rows)
    path = tmp_path / suffix
    path.write_bytes(packed[: len(packed) // 2] if damage == "truncated" else corrupt(packed))
    result = invoke(project, "import", "customers", str(path))
    assert result.exit_code == 4, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}: is not a readable gzip file (corrupt or truncated")
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert count(project, Customer) == 0


def test_a_csv_field_over_the_limit_names_its_column_and_the_limit(project, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("id,email,created_at,note\nC1,a@example.com,2024-01-01T00:00:00Z," + "x" * 140_000 + "\n")
    result = invoke(project, "import", "customers", str(path))
    assert result.exit_code == 4
    assert f"{path}:2: field 'note': the value is longer than the limit of 131,072 characters (128 KiB)" in result.stderr
    assert count(project, Customer) == 0


@pytest.mark.parametrize("value", ["9999-12-31T00:00:00Z", "3026-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z"])
def test_implausible_times_are_refused_naming_file_line_and_field(project, tmp_path, value):
    customers = tmp_path / "customers.csv"
    customers.write_text(f"id,email,created_at\nC1,a@example.com,2024-01-01T00:00:00Z\nC2,b@example.com,{value}\n")
    result = invoke(project, "import", "customers", str(customers))
    assert result.exit_code == 4
    assert f"{customers}:3: field 'created_at': implausible time: " in result.stderr
    assert count(project, Customer) == 0
    good = tmp_path / "good.csv"
    good.write_text("id,email,created_at\nC1,a@example.com,2024-01-01T00:00:00Z\n")
    assert invoke(project, "import", "customers", str(good)).exit_code == 0
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"customer_id": "C1", "type": "view", "occurred_at": value}) + "\n")
    result = invoke(project, "import", "events", str(events))
    assert result.exit_code == 4 and f"{events}:1: field 'occurred_at': implausible time: " in result.stderr
    assert count(project, Event) == 0


def test_a_time_just_ahead_of_now_is_accepted(project, tmp_path):
    from datetime import UTC, datetime, timedelta

    soon = (datetime.now(UTC) + timedelta(hours=3)).isoformat()  # another clock, a little ahead
    path = tmp_path / "customers.csv"
    path.write_text(f"id,email,created_at\nC1,a@example.com,{soon}\n")
    assert invoke(project, "import", "customers", str(path)).exit_code == 0


def test_on_a_fixed_clock_ahead_the_future_is_judged_from_relmail_now(project, tmp_path, monkeypatch):
    """A rehearsal of a later week ($RELMAIL_NOW ahead of the system clock) imports that week's exports:
    plain files, a shop's export through a mapping, and provider events alike. Past $RELMAIL_NOW's day of
    tolerance a time is still refused."""
    from datetime import UTC, datetime, timedelta

    from relmail.feedback import read_export

    clock = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    monkeypatch.setenv("RELMAIL_NOW", clock.isoformat())
    ordered = clock - timedelta(days=2)  # eight days after the system clock: the rehearsed week's order
    customers = tmp_path / "customers.csv"
    customers.write_text(f"id,email,created_at\nC1,a@example.com,{ordered.isoformat()}\n")
    result = invoke(project, "import", "customers", str(customers))
    assert result.exit_code == 0, result.output
    orders = tmp_path / "orders_export.csv"
    orders.write_text("Name,Email,Financial Status,Created at,Lineitem quantity,Lineitem price,Lineitem sku,Id,"
                      "Cancelled at,Refunded Amount,Total\n"
                      f"#1001,a@example.com,paid,{ordered:%Y-%m-%d %H:%M:%S +0000},1,12.50,SKU-1,5810000001,,0.00,12.50\n")
    result = invoke(project, "import", "orders", str(orders), "--map", "shopify")
    assert result.exit_code == 0, result.output
    assert "Imported 1 purchases" in result.output
    sendgrid = tmp_path / "events.json"
    sendgrid.write_text(json.dumps([{"email": "a@example.com", "timestamp": int(ordered.timestamp()), "event": "open",
                                     "sg_event_id": "e1", "relmail_customer": "C1"}]))
    assert read_export(str(sendgrid), "sendgrid").invalid == []
    later = clock + timedelta(days=2)
    customers.write_text(f"id,email,created_at\nC2,b@example.com,{later.isoformat()}\n")
    result = invoke(project, "import", "customers", str(customers))
    assert result.exit_code == 4 and f"{customers}:2: field 'created_at': implausible time: " in result.stderr


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=0, max_size=400))
def test_any_bytes_after_a_gzip_header_give_a_clean_error_or_rows(tmp_path_factory, data):
    from relmail.errors import ValidationError
    from relmail.importers.readers import open_source, reader_for

    path = tmp_path_factory.mktemp("gz") / "x.csv.gz"
    path.write_bytes(gzip.compress(HEADER)[:10] + data)
    try:
        src = open_source(path)
        try:
            list(reader_for(src))
        finally:
            src.close()
    except ValidationError as exc:
        assert str(path) in str(exc)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "jsonl-escaped"])
def test_windows_1252_characters_stored_as_control_characters_are_read_as_what_they_stood_for(project, tmp_path, fmt):
    # A Latin-1 column that held Windows-1252 text, exported as UTF-8: ’ became U+0092, € U+0080, – U+0096.
    # U+0081 is a byte Windows-1252 leaves undefined: it stays what it is.
    names = [("C1", "O\x92Brien", "Caf\xe9 \x80 \x96 shop"), ("C2", "Zo\xeb", "plain"), ("C3", "Bad\x81", "x")]
    if fmt == "csv":
        body = "id,email,first_name,last_name\n" + "".join(f"{i},{i.lower()}@example.com,{f},{la}\n" for i, f, la in names)
    else:
        # Written as characters, or escaped (\u0092) as json.dumps writes them by default.
        body = "".join(json.dumps({"id": i, "email": f"{i.lower()}@example.com", "first_name": f, "last_name": la},
                                  ensure_ascii=fmt == "jsonl-escaped") + "\n" for i, f, la in names)
    path = tmp_path / f"customers.{fmt.split('-')[0]}"
    path.write_bytes(body.encode("utf-8"))
    result = invoke(project, "import", "customers", str(path))
    assert result.exit_code == 0, result.output
    engine = connect(project.database_url)
    try:
        with engine.connect() as conn:
            stored = {r.id: (r.first_name, r.last_name) for r in conn.execute(select(Customer.id, Customer.first_name, Customer.last_name))}
    finally:
        engine.dispose()
    assert stored == {"C1": ("O’Brien", "Café € – shop"), "C2": ("Zoë", "plain"), "C3": ("Bad\x81", "x")}
