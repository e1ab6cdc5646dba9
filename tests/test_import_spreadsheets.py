"""What a spreadsheet does to a CSV before it is imported: other separators, rows of empty cells."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from relmail.cli import cli
from relmail.importers.readers import CsvReader, open_source
from relmail.store.db import connect
from relmail.store.models import Customer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# Column names as exports write them: letters, digits, spaces, dots, slashes; never a separator.
names = st.text(st.characters(categories=["L", "N"], include_characters=" ./-_"), min_size=1, max_size=12).map(str.strip).filter(bool)
# Cell values may hold anything a person types, separators, quotes and line breaks included.
cells = st.text(st.characters(exclude_categories=["Cs", "Cc"], include_characters="\n\t"), max_size=15)


def read(data: bytes) -> tuple[CsvReader, list]:
    src = open_source(io.BytesIO(data), fmt="csv")
    reader = CsvReader(src)
    return reader, list(reader)


@settings(max_examples=150, deadline=None)
@given(
    header=st.lists(names, min_size=2, max_size=6, unique_by=str.casefold),
    data=st.data(),
    delimiter=st.sampled_from([",", ";", "\t"]),
    bom=st.booleans(),
    trailing=st.integers(0, 3),
)
def test_every_separator_reads_back_the_cells_written_and_rows_of_empty_cells_are_no_records(header, data, delimiter, bom, trailing):
    rows = data.draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header))
                              .filter(lambda r: any(c.strip() for c in r)), max_size=5))
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    for _ in range(trailing):  # what Excel and Google Sheets leave after the last row
        writer.writerow([""] * len(header))
    reader, records = read((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode())
    assert reader.delimiter == delimiter
    assert reader.header == header
    assert [r.error for r in records] == [None] * len(rows)
    assert [list(r.values.values()) for r in records] == rows


def test_a_semicolon_export_with_empty_trailing_rows_imports_like_the_comma_export(project, tmp_path):
    original = (EXAMPLES / "shopify" / "customers_export.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(original, newline="")))
    german = tmp_path / "kunden.csv"
    with german.open("w", encoding="utf-8-sig", newline="") as fh:  # Excel's "CSV UTF-8 (Trennzeichen-getrennt)"
        writer = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        writer.writerows(rows)
        writer.writerows([[""] * len(rows[0])] * 2)
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "customers", str(german), "--map", "shopify"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Imported {len(rows) - 1} customers from {len(rows) - 1} rows")
    engine = connect(project.database_url)
    try:
        with engine.connect() as conn:
            emails = set(conn.execute(select(Customer.email)).scalars())
    finally:
        engine.dispose()
    assert "anna.devries@mail.example" in emails and len(emails) == len(rows) - 1


def test_a_missing_file_is_one_error_line(project, tmp_path):
    missing = tmp_path / "kunden.csv"
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "customers", str(missing)])
    assert result.exit_code == 4
    assert result.stderr == f"Error: {missing}: no such file\n"


def test_customers_sharing_a_mailbox_are_counted_after_the_import(project, tmp_path):
    # A CRM with duplicate accounts: the same mailbox under two ids, once in capitals.
    crm = tmp_path / "crm.csv"
    crm.write_text("id,email\nK1,kim@mail.example\nK2,Kim@Mail.Example\nK3,lea@mail.example\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["--project", str(project.root), "import", "customers", str(crm)])
    assert result.exit_code == 0, result.output
    assert "1 address(es) that more than one customer has (another id, or another case)" in result.stdout
    later = tmp_path / "later.csv"  # a later file that brings a third account of the same person
    later.write_text("id,email\nK9,KIM@mail.example\nK8,max@mail.example\n")
    again = runner.invoke(cli, ["--project", str(project.root), "import", "customers", str(later), "--json"])
    assert json.loads(again.stdout)["details"]["shared_addresses"] == 1


def _workbook(path: Path) -> Path:
    """An Excel workbook as Excel saves it: a zip of XML parts (enough of one for the test)."""
    with zipfile.ZipFile(path, "w") as book:
        book.writestr("[Content_Types].xml", "<Types/>")
        book.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")
    return path


def _old_workbook(path: Path) -> Path:
    """An Excel 97-2003 workbook: an OLE2 compound file."""
    path.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504))
    return path


@pytest.mark.parametrize("map_args", [[], ["--map", "shopify"]])
@pytest.mark.parametrize("name,make", [
    ("kunden.xlsx", _workbook),
    ("audience_export_4f2a9c1e07.zip", _workbook),  # Mailchimp's audience export is a zip of CSV files
    ("kunden.xls", _old_workbook),
])
def test_a_workbook_or_zip_is_one_error_line_saying_what_to_save_it_as(project, tmp_path, name, make, map_args):
    # Found with `relmail import customers kunden.xlsx --map shopify`: 27 header problems
    # about columns named 'PK ...', and never a word that the file is no CSV.
    path = make(tmp_path / name)
    result = CliRunner().invoke(cli, ["--project", str(project.root), "import", "customers", str(path), *map_args])
    assert result.exit_code == 4
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {path}: is ") and "not a CSV or JSON Lines file" in line and "nothing imported" in line


def test_a_callers_stream_that_is_a_workbook_is_refused_and_left_open(engine, tmp_path):
    import io

    from relmail.errors import ValidationError
    from relmail.importers import import_file

    stream = io.BytesIO(_workbook(tmp_path / "k.xlsx").read_bytes())
    with pytest.raises(ValidationError, match="is a zip archive"):
        import_file(engine, "customers", stream)
    assert not stream.closed  # the caller opened it: the caller closes it
