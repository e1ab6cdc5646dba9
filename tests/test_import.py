"""Importers: validated, streamed, all-or-nothing upserts of customers, products, preferences, events."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from relmail.errors import ValidationError
from relmail.importers import import_file
from relmail.store.addresses import address_hash, salt
from relmail.store.models import Customer, Event, Preference, Product, Suppression

CUSTOMERS = """id,email,first_name,last_name,locale,timezone,created_at,loyalty_tier,birth_year,zip
C0000001,Anna@Example.NL,Anna,de Vries,nl-NL,Europe/Amsterdam,2023-05-01T10:00:00+02:00,loyal,1985,01234
C0000002,bob@example.co.uk,Bob,,en_GB,Europe/London,2024-11-23T09:30:00Z,new,,
"""

PRODUCTS = """id,name,category,price,url,features
EB-200,E-bike Stad 200,e-bikes,2499.00,https://shop.example/eb-200,app|gps-tracking|battery-saver
LOCK-S1,SlimSlot S1 smart lock,accessories,129,,auto-unlock|share-access
"""

EVENTS_HEADER = "event_id,customer_id,type,occurred_at,product_id,feature,value,message_id,run_id,topic\n"
EVENTS = EVENTS_HEADER + (
    "E1,C0000001,purchase,2025-03-01T10:00:00+01:00,EB-200,,2499.00,,,\n"
    "E2,C0000001,usage,2025-03-02T10:00:00+01:00,LOCK-S1,share-access,3,,,\n"
    ",C0000002,email_sent,2025-03-03T08:00:00Z,,,,newsletter,weekly-2025-W10,newsletter\n"
)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def rows(engine, model) -> list[dict]:
    table = model.__table__
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]


def snapshot(engine) -> dict:
    return {m.__tablename__: rows(engine, m) for m in (Customer, Product, Preference, Event)}


@pytest.fixture
def imported_store(engine, tmp_path):
    """A store holding the two customers and two products above."""
    import_file(engine, "customers", write(tmp_path, "customers.csv", CUSTOMERS))
    import_file(engine, "products", write(tmp_path, "products.csv", PRODUCTS))
    return engine


def test_customers_csv_fields_are_validated_normalized_and_extras_become_attributes(imported_store):
    anna, bob = rows(imported_store, Customer)
    assert anna["email"] == "Anna@example.nl"  # domain lower-cased by email-validator, local part kept
    assert anna["locale"] == "nl_NL"
    assert anna["created_at"] == datetime(2023, 5, 1, 8, 0, tzinfo=UTC)
    # numbers become numbers, a zero-padded code stays text, empty cells are left out
    assert anna["attributes"] == {"loyalty_tier": "loyal", "birth_year": 1985, "zip": "01234"}
    assert bob["last_name"] is None
    assert bob["attributes"] == {"loyalty_tier": "new"}


def test_customers_jsonl_merges_attributes_object_and_extra_keys_and_uses_defaults(engine, tmp_path):
    line = {"id": "C9", "email": "c@example.com", "created_at": "2024-01-01T00:00:00Z", "attributes": {"city": "Delft"}, "birth_year": 1990}
    result = import_file(engine, "customers", write(tmp_path, "c.jsonl", json.dumps(line) + "\n\n"), defaults={"locale": "nl_NL", "timezone": "Europe/Amsterdam"})
    assert (result.rows_read, result.rows_imported, result.format) == (1, 1, "jsonl")
    (c,) = rows(engine, Customer)
    assert c["attributes"] == {"city": "Delft", "birth_year": 1990}
    assert (c["locale"], c["timezone"]) == ("nl_NL", "Europe/Amsterdam")


def test_a_blank_locale_or_time_zone_keeps_the_stored_one_and_only_a_new_customer_gets_the_default(engine, tmp_path):
    """A mailing list's blank language cell, or a JSON record without the key, must not reset a customer's language
    to the project's: every later e-mail would be in the wrong one. As a blank name does not erase a stored one."""
    project = {"locale": "de_DE", "timezone": "Europe/Berlin"}
    import_file(engine, "customers", write(tmp_path, "crm.csv", "id,email,locale,timezone\n"
                                           "C1,c1@example.com,fr_FR,Europe/Paris\nC2,c2@example.com,fr_FR,Europe/Paris\n"),
                defaults=project)
    import_file(engine, "customers", write(tmp_path, "blank.csv", "id,email,locale,timezone\n"
                                           "C1,c1@example.com,,\nC3,c3@example.com,,\n"), defaults=project)
    import_file(engine, "customers", write(tmp_path, "c.jsonl", json.dumps({"id": "C2", "email": "c2@example.com"}) + "\n"),
                defaults=project)
    mapping = write(tmp_path, "list.yml", "kind: customers\nmatch: email\ncolumns:\n  Email: email\n"
                    "  Sprache: {to: locale, parse: lookup, values: {Deutsch: de_DE, Italiano: it_CH}}\n"
                    "fields:\n  id: 'list-{Email}'\n")
    import_file(engine, "customers", write(tmp_path, "list.csv", "Email,Sprache\nC1@example.com,\nc2@example.com,Italiano\n"
                                           "c4@example.com,\n"), mapping=str(mapping), defaults=project)
    stored = {c["id"]: (c["locale"], c["timezone"]) for c in rows(engine, Customer)}
    assert stored == {"C1": ("fr_FR", "Europe/Paris"), "C2": ("it_CH", "Europe/Paris"), "C3": ("de_DE", "Europe/Berlin"),
                      "list-c4@example.com": ("de_DE", "Europe/Berlin")}


def test_products_features_split_on_pipes_and_upsert_on_id(imported_store, tmp_path):
    eb, lock = sorted(rows(imported_store, Product), key=lambda r: r["id"])
    assert eb["features"] == ["app", "gps-tracking", "battery-saver"] and eb["price"] == 2499.0
    assert lock["url"] is None
    changed = '{"id": "LOCK-S1", "name": "SlimSlot S2", "category": "accessories", "price": 139.5, "features": ["auto-unlock"]}\n'
    import_file(imported_store, "products", write(tmp_path, "p.jsonl", changed))
    lock = {r["id"]: r for r in rows(imported_store, Product)}["LOCK-S1"]
    assert (lock["name"], lock["price"], lock["features"]) == ("SlimSlot S2", 139.5, ["auto-unlock"])
    assert len(rows(imported_store, Product)) == 2


def test_events_upsert_on_event_id_and_append_without_one(imported_store, tmp_path):
    path = write(tmp_path, "events.csv", EVENTS)
    first = import_file(imported_store, "events", path)
    assert (first.rows_read, first.rows_imported, first.rows_rejected) == (3, 3, 0)
    second = import_file(imported_store, "events", write(tmp_path, "again.csv", EVENTS.replace(",2499.00,", ",1999.00,")))
    assert second.rows_imported == 3
    events = rows(imported_store, Event)
    # E1 and E2 were updated in place, the id-less e-mail event was appended again
    assert sorted(e["event_id"] or "-" for e in events) == ["-", "-", "E1", "E2"]
    assert {e["event_id"]: e["value"] for e in events}["E1"] == 1999.0
    sent = [e for e in events if e["type"] == "email_sent"][0]
    assert (sent["message_id"], sent["run_id"], sent["topic"]) == ("newsletter", "weekly-2025-W10", "newsletter")


def test_preferences_import_booleans_frequency_and_global_topic(imported_store, tmp_path):
    prefs = (
        "customer_id,topic,opted_in,max_per_week,updated_at,source\n"
        "C0000001,*,yes,2,2025-01-01T00:00:00Z,signup-form\n"
        "C0000001,promotions,false,,2025-01-01T00:00:00Z,\n"
    )
    import_file(imported_store, "preferences", write(tmp_path, "prefs.csv", prefs))
    promo, star = sorted(rows(imported_store, Preference), key=lambda r: r["topic"], reverse=True)
    assert (star["topic"], star["opted_in"], star["max_per_week"], star["source"]) == ("*", True, 2, "signup-form")
    assert (promo["opted_in"], promo["max_per_week"], promo["source"]) == (False, None, "import")


BAD_INPUTS = [
    # (kind, file name, content, expected (line, field, message fragment))
    ("customers", "c.csv", CUSTOMERS.replace("bob@example.co.uk", "bob.example.co.uk"), (3, "email", "invalid e-mail address")),
    ("events", "e.csv", EVENTS.replace("usage,", "used,"), (3, "type", "unknown event type 'used'")),
    ("events", "e.csv", EVENTS.replace("2025-03-01T10:00:00+01:00", "2025-03-01T10:00:00"), (2, "occurred_at", "has no time zone")),
    ("events", "e.csv", EVENTS.replace("E2,C0000001", "E2,C0000404"), (3, "customer_id", "unknown customer 'C0000404'")),
    ("events", "e.csv", EVENTS.replace("EB-200", "EB-999"), (2, "product_id", "unknown product 'EB-999'")),
    ("events", "e.csv", EVENTS.replace("EB-200", "eb-200"), (2, "product_id", "unknown product 'eb-200': the catalogue has 'EB-200'")),
    ("events", "e.csv", EVENTS[: EVENTS.rindex(",newsletter,")], (4, "message_id", "has 7 of 10 fields (truncated line?)")),
    ("events", "e.jsonl", '{"customer_id": "C0000001", "type": "view", "occurred_at": "2025-01-01T00:00:00Z"}\n{"customer_id": "C00', (2, None, "invalid JSON (truncated line?)")),
    ("events", "e.csv", EVENTS.encode().replace(b"share-access", b"share-acc\xe8s"), (3, "feature", "not valid UTF-8 (byte 0xe8 at byte 62 of the line, 'è' in Windows-1252")),
    ("events", "e.csv", "", (None, None, "the file is empty")),
    ("events", "e.jsonl", "\n\n", (None, None, "the file is empty")),
    ("events", "e.csv", EVENTS_HEADER, (None, None, "has a header but no rows")),
    ("events", "e.csv", EVENTS.replace("E2,", "E1,"), (3, "event_id", "duplicate event_id 'E1': also on line 2")),
    ("customers", "c.csv", CUSTOMERS.replace("C0000002", "C0000001"), (3, "id", "also on line 2")),
    ("events", "e.csv", EVENTS.replace("occurred_at", "when"), (1, "occurred_at", "missing required column 'occurred_at'")),
    ("events", "e.jsonl", '{"customer_id": "C0000001", "type": "view", "occurred_at": "2025-01-01T00:00:00Z", "colour": "red"}\n', (1, "colour", "unknown field 'colour'")),
    ("preferences", "p.csv", "customer_id,topic,opted_in,updated_at\nC0000001,*,maybe,2025-01-01T00:00:00Z\n", (2, "opted_in", "is not a boolean")),
    ("customers", "c.csv", CUSTOMERS.replace("Europe/London", "Europe/Londen"), (3, "timezone", "unknown time zone")),
    ("events", "e.csv", EVENTS.replace("share-access", "share\x00access"), (3, "feature", "contains a NUL character")),
    ("events", "e.csv", EVENTS.replace("2499.00", "NaN"), (2, "value", "is not a finite number")),
]


@pytest.mark.parametrize("kind,name,content,expected", BAD_INPUTS, ids=[f"{k}-{e[2][:24]}" for k, _, _, e in BAD_INPUTS])
def test_bad_input_names_file_line_and_field_and_leaves_the_database_unchanged(imported_store, tmp_path, kind, name, content, expected):
    import_file(imported_store, "events", write(tmp_path, "before.csv", EVENTS))
    before = snapshot(imported_store)
    path = write(tmp_path, name, content)
    with pytest.raises(ValidationError) as caught:
        # strict: an invalid address is an error (by default it is imported and flagged, tested below)
        import_file(imported_store, kind, path, strict_addresses=True)
    line, field, fragment = expected
    problem = caught.value.problems[0]
    assert problem.file == str(path)
    assert (problem.line, problem.field) == (line, field), problem
    assert fragment in problem.message
    assert str(path) in str(caught.value)
    assert snapshot(imported_store) == before


def test_every_bad_row_is_reported_up_to_the_limit(imported_store, tmp_path):
    lines = [EVENTS_HEADER] + [f"X{i},C0000001,nope,2025-01-01T00:00:00,,,,,,\n" for i in range(30)]
    path = write(tmp_path, "e.csv", "".join(lines))
    with pytest.raises(ValidationError) as caught:
        import_file(imported_store, "events", path, max_errors=0)
    assert len(caught.value.problems) == 60  # two bad fields on each of 30 rows
    assert {p.field for p in caught.value.problems} == {"type", "occurred_at"}
    with pytest.raises(ValidationError) as capped:
        import_file(imported_store, "events", path)
    assert len(capped.value.problems) == 20
    assert "30 bad row(s) of 30" in str(capped.value)


def test_bad_rows_after_a_written_chunk_still_roll_everything_back(imported_store, tmp_path):
    good = [f"G{i},C0000001,view,2025-01-01T00:00:00Z,,,,,,\n" for i in range(25)]
    path = write(tmp_path, "e.csv", EVENTS_HEADER + "".join(good) + "B1,C0000001,view,yesterday,,,,,,\n")
    with pytest.raises(ValidationError, match="1 bad row"):
        import_file(imported_store, "events", path, chunk_size=10)
    assert rows(imported_store, Event) == []


def test_skip_invalid_imports_good_rows_and_writes_rejects_with_original_lines(imported_store, tmp_path):
    content = EVENTS.replace("usage,", "used,").replace("E1,C0000001", "E1,C0000404")
    path = write(tmp_path, "events.csv", content)
    result = import_file(imported_store, "events", path, skip_invalid=True)
    assert (result.rows_read, result.rows_imported, result.rows_rejected) == (3, 1, 2)
    assert result.rejects_path == str(tmp_path / "events.rejects.csv")
    rejects = (tmp_path / "events.rejects.csv").read_text().splitlines()
    assert rejects[0] == "line,fields,reasons,original"
    assert rejects[1].startswith("2,customer_id,unknown customer 'C0000404'")
    assert rejects[1].endswith('"E1,C0000404,purchase,2025-03-01T10:00:00+01:00,EB-200,,2499.00,,,"')
    assert rejects[2].startswith("3,type,\"unknown event type 'used' (known: purchase, view,")
    assert [e["type"] for e in rows(imported_store, Event)] == ["email_sent"]


def test_skip_invalid_jsonl_rejects_keep_unparseable_lines(imported_store, tmp_path):
    path = write(tmp_path, "e.jsonl", '{"customer_id": "C0000001", "type": "view", "occurred_at": "2025-01-01T00:00:00Z"}\n{"customer_id": "C0\n')
    rejects = tmp_path / "out" / "bad.jsonl"
    rejects.parent.mkdir()
    result = import_file(imported_store, "events", path, skip_invalid=True, rejects=rejects)
    assert result.rows_imported == 1
    (entry,) = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert entry["line"] == 2 and entry["original"] == '{"customer_id": "C0'
    assert "invalid JSON" in entry["problems"][0]["message"]


def test_gzip_and_binary_streams_are_read_like_files(imported_store, tmp_path):
    path = write(tmp_path, "events.csv.gz", gzip.compress(EVENTS.encode()))
    assert import_file(imported_store, "events", path).rows_imported == 3
    stream = io.BytesIO(b'{"event_id": "J1", "customer_id": "C0000002", "type": "view", "occurred_at": "2025-01-01T00:00:00Z"}\n')
    result = import_file(imported_store, "events", stream)
    assert (result.format, result.rows_imported) == ("jsonl", 1)
    assert not stream.closed  # the caller's stream is left open


def test_a_reimported_erased_address_gets_a_global_opt_out_until_fresh_consent(engine, tmp_path):
    erased_at = datetime(2025, 6, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(Suppression.__table__).values(email_hash=address_hash(" anna@example.nl ", salt(conn)), reason="erasure", created_at=erased_at))
    customers = write(tmp_path, "c.csv", CUSTOMERS)
    result = import_file(engine, "customers", customers)
    assert result.suppressed_opt_outs == 1
    (pref,) = rows(engine, Preference)
    assert (pref["customer_id"], pref["topic"], pref["opted_in"], pref["source"]) == ("C0000001", "*", False, "suppression-list")

    # Fresh consent after the erasure wins, also over later customer syncs.
    consent = "customer_id,topic,opted_in,updated_at,source\nC0000001,*,true,2025-07-01T00:00:00Z,signup-form\n"
    import_file(engine, "preferences", write(tmp_path, "p.csv", consent))
    assert import_file(engine, "customers", customers).suppressed_opt_outs == 0
    (pref,) = rows(engine, Preference)
    assert (pref["opted_in"], pref["source"]) == (True, "signup-form")

    # Consent dated before the erasure is not fresh: the next sync opts the address out again.
    with engine.begin() as conn:
        conn.execute(Preference.__table__.delete())
    stale = consent.replace("2025-07-01", "2025-05-01")
    import_file(engine, "preferences", write(tmp_path, "p2.csv", stale))
    assert import_file(engine, "customers", customers).suppressed_opt_outs == 1
    (pref,) = rows(engine, Preference)
    assert (pref["opted_in"], pref["source"]) == (False, "suppression-list")


def test_same_counts_on_every_backend(imported_store, tmp_path):
    """The same files give the same counts on SQLite and PostgreSQL (this test runs on both)."""
    many = EVENTS_HEADER + "".join(
        f"{'' if i % 3 == 0 else f'M{i}'},C000000{1 + i % 2},{('view', 'email_opened', 'purchase')[i % 3]},"
        f"{(datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=1))) + timedelta(minutes=i)).isoformat()},"
        f"{'EB-200' if i % 3 != 1 else ''},,{i}.5,,,\n"
        for i in range(2500)
    )
    result = import_file(imported_store, "events", write(tmp_path, "many.csv", many), chunk_size=700)
    again = import_file(imported_store, "events", write(tmp_path, "many.csv", many), chunk_size=700)
    assert (result.rows_read, result.rows_imported, again.rows_imported) == (2500, 2500, 2500)
    events = rows(imported_store, Event)
    assert len(events) == 2500 + 834  # rows without event_id (every third) are appended again
    assert sum(e["value"] for e in events if e["event_id"]) == sum(i + 0.5 for i in range(2500) if i % 3)
    assert len(rows(imported_store, Customer)) == 2 and len(rows(imported_store, Product)) == 2


def test_line_numbers_count_physical_lines_through_quoted_line_breaks_bom_and_crlf(imported_store, tmp_path):
    content = (
        "\ufeffevent_id,customer_id,type,occurred_at,feature\r\n"
        'Q1,C0000001,ticket_opened,2025-01-01T00:00:00Z,"broken\r\nchain"\r\n'
        "\r\n"
        "Q2,C0000001,ticket_closed,2025-01-02T00:00:00,\r\n"
    )
    with pytest.raises(ValidationError) as caught:
        import_file(imported_store, "events", write(tmp_path, "e.csv", content))
    assert [(p.line, p.field) for p in caught.value.problems] == [(5, "occurred_at")]
    fixed = content.replace("2025-01-02T00:00:00,", "2025-01-02T00:00:00Z,")
    assert import_file(imported_store, "events", write(tmp_path, "e.csv", fixed)).rows_imported == 2
    assert [e["feature"] for e in rows(imported_store, Event)] == ["broken\r\nchain", None]


def test_a_header_that_is_not_utf8_or_names_a_column_twice_is_refused(imported_store, tmp_path):
    with pytest.raises(ValidationError, match="not valid UTF-8") as caught:
        import_file(imported_store, "events", write(tmp_path, "e.csv", "customer_id,type,occurred_at,caf\xe9\n".encode("latin-1")))
    assert caught.value.problems[0].line == 1
    with pytest.raises(ValidationError, match="appears twice") as caught:
        import_file(imported_store, "events", write(tmp_path, "e.csv", "customer_id,type,type,occurred_at\n"))
    assert (caught.value.problems[0].line, caught.value.problems[0].field) == (1, "type")


def _planner_view(engine) -> tuple[float, int]:
    """(rows PostgreSQL's planner believes events holds, event types it has a frequency for)."""
    with engine.connect() as conn:
        rows_known = conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass").scalar()
        types = conn.exec_driver_sql(
            "SELECT coalesce(array_length(most_common_vals::text::text[], 1), 0) FROM pg_stats "
            "WHERE tablename = 'events' AND attname = 'type'").scalar()
    return rows_known, types or 0


def test_a_large_import_leaves_postgresql_planning_from_current_statistics(imported_store, tmp_path):
    """A plan run straight after a bulk import must not be planned for empty tables (3.4x slower on the
    100k demo shop); an import of a few rows into a big table does not pay for an ANALYZE."""
    if imported_store.dialect.name != "postgresql":
        from relmail.store.db import refresh_statistics

        with imported_store.begin() as conn:
            assert refresh_statistics(conn, "events", 10**6) is False  # SQLite plans alike without statistics
        return
    assert _planner_view(imported_store) == (-1, 0)  # never analyzed
    many = EVENTS_HEADER + "".join(
        f"M{i},C0000001,{('view', 'email_opened', 'purchase')[i % 3]},2025-01-01T10:00:00Z,,,,,,\n" for i in range(600)
    )
    import_file(imported_store, "events", write(tmp_path, "many.csv", many))
    assert _planner_view(imported_store) == (600, 3)
    few = EVENTS_HEADER + "".join(f"F{i},C0000001,purchase,2025-01-02T10:00:00Z,,,,,,\n" for i in range(100))
    import_file(imported_store, "events", write(tmp_path, "few.csv", few))  # fewer than 50 + 10% of 600
    assert _planner_view(imported_store) == (600, 3)
