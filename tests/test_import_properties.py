"""Properties: valid files round-trip exactly (CSV and JSON Lines); one corrupted row changes nothing."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from relmail.errors import ValidationError
from relmail.importers import import_file
from relmail.store.models import EVENT_TYPES, Customer, Event, Preference, Product

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

ZONES = [UTC, timezone(timedelta(hours=-3, minutes=-30)), ZoneInfo("Europe/Amsterdam"), ZoneInfo("Asia/Kathmandu")]
# Instants shown in a zone (a local time in a DST gap names no instant, so
# times are made in UTC and then expressed in the zone).
times = st.builds(
    lambda naive, zone: naive.replace(tzinfo=UTC).astimezone(zone),
    # Valid times lie in the past: a time far ahead of now is refused as implausible.
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2025, 12, 31)),
    st.sampled_from(ZONES),
)
# Text as people type it: any letters, punctuation, quotes, commas, inner line breaks.
names = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")) | st.just("\n"), min_size=1, max_size=20).map(str.strip).filter(bool)
ids = st.from_regex(r"[A-Z][A-Z0-9-]{0,11}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False) | names,
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)

customers = st.lists(
    st.fixed_dictionaries(
        {
            "id": ids,
            "email": st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z0-9]{1,5})?@[a-z]{1,10}\.(nl|com)", fullmatch=True),
            "first_name": st.none() | names,
            "last_name": st.none() | names,
            "locale": st.sampled_from(["nl_NL", "en_GB", "de_DE"]),
            "timezone": st.sampled_from(["Europe/Amsterdam", "Europe/London", "UTC"]),
            "created_at": times,
            "attributes": st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), json_values, max_size=3),
        }
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda c: c["id"],
)


@st.composite
def events_for(draw, customer_ids: list[str]):
    count = draw(st.integers(1, 12))
    event_ids = draw(st.lists(ids, min_size=count, max_size=count, unique=True))
    return [
        {
            "event_id": draw(st.sampled_from([event_id, None])),
            "customer_id": draw(st.sampled_from(customer_ids)),
            "type": draw(st.sampled_from(EVENT_TYPES)),
            "occurred_at": draw(times),
            "product_id": draw(st.sampled_from([None, "EB-200"])),
            "feature": draw(st.none() | names.filter(lambda s: len(s) <= 100)),
            "value": draw(st.none() | st.floats(-1e9, 1e9, allow_nan=False)),
            "message_id": None,
            "run_id": draw(st.sampled_from([None, "weekly-2025-W48"])),
            "topic": draw(st.sampled_from([None, "newsletter", "promotions"])),
        }
        for event_id in event_ids
    ]


def as_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    header = list(rows[0])
    writer.writerow(header)
    for row in rows:
        values = (row[k] for k in header)
        writer.writerow(["" if v is None else json.dumps(v) if isinstance(v, dict) else v.isoformat() if isinstance(v, datetime) else v for v in values])
    return out.getvalue().encode()


def as_jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}) + "\n" for row in rows).encode()


def reset(engine) -> None:
    with engine.begin() as conn:
        for model in (Event, Preference, Product, Customer):
            conn.execute(model.__table__.delete())
        conn.execute(Product.__table__.insert().values(id="EB-200", name="E-bike", category="e-bikes", price=2499.0, features=[]))


def in_utc(rows: list[dict]) -> list[dict]:
    """The rows with every time as a UTC instant.

    Python's == between times of different zones is False whenever one lies
    in a repeated hour (PEP 495), even for the same instant: 02:00 in
    Amsterdam on the night clocks go back is compared as the instant it is.
    """
    return [{k: v.astimezone(UTC) if isinstance(v, datetime) else v for k, v in row.items()} for row in rows]


def stored(engine, model, order) -> list[dict]:
    table = model.__table__
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c[order]))]


@pytest.mark.slow
@pytest.mark.parametrize("encode", [as_csv, as_jsonl], ids=["csv", "jsonl"])
@SETTINGS
@given(data=st.data(), people=customers)
def test_valid_files_round_trip_exactly(engine, tmp_path, encode, data, people):
    reset(engine)
    events = data.draw(events_for([c["id"] for c in people]))
    ext = "csv" if encode is as_csv else "jsonl"
    (tmp_path / f"c.{ext}").write_bytes(encode(people))
    (tmp_path / f"e.{ext}").write_bytes(encode(events))
    assert import_file(engine, "customers", tmp_path / f"c.{ext}").rows_imported == len(people)
    assert import_file(engine, "events", tmp_path / f"e.{ext}").rows_imported == len(events)

    got = stored(engine, Customer, "id")
    assert in_utc([{k: row[k] for k in people[0]} for row in got]) == in_utc(sorted(people, key=lambda c: c["id"]))
    got_events = stored(engine, Event, "id")
    assert in_utc([{k: row[k] for k in events[0]} for row in got_events]) == in_utc(events)


def test_the_repeated_hour_of_a_dst_change_keeps_both_instants(engine, tmp_path):
    # Amsterdam, 29 October 2000: 02:00-03:00 happened twice (+02:00, then +01:00). Found by the property above.
    reset(engine)
    (tmp_path / "c.csv").write_text("id,email,created_at\nC1,a@example.com,2000-01-01T00:00:00Z\n")
    import_file(engine, "customers", tmp_path / "c.csv")
    (tmp_path / "e.csv").write_text("event_id,customer_id,type,occurred_at\n"
                                    "E1,C1,view,2000-10-29T02:30:00+02:00\nE2,C1,view,2000-10-29T02:30:00+01:00\n")
    import_file(engine, "events", tmp_path / "e.csv")
    got = [row["occurred_at"] for row in stored(engine, Event, "id")]
    assert got == [datetime(2000, 10, 29, 0, 30, tzinfo=UTC), datetime(2000, 10, 29, 1, 30, tzinfo=UTC)]


CORRUPTIONS = {
    "unknown type": lambda line: line.replace(b",view,", b",viewed,"),
    "naive time": lambda line: line.replace(b"+01:00", b""),
    "unknown customer": lambda line: line.replace(b"C1,", b"C404,", 1),
    "truncated": lambda line: line[: line.index(b",view,") + 3] + b"\n",
    "latin-1 byte": lambda line: line.replace(b"note", "noté".encode("latin-1")),
    "extra field": lambda line: line.rstrip(b"\n") + b",surplus\n",
}


@SETTINGS
@given(
    size=st.integers(1, 40),
    data=st.data(),
    corruption=st.sampled_from(sorted(CORRUPTIONS)),
    chunk=st.integers(1, 15),
)
def test_one_corrupted_row_imports_nothing_and_names_its_line(engine, tmp_path, size, data, corruption, chunk):
    reset(engine)
    (tmp_path / "c.csv").write_text("id,email,created_at\nC1,a@example.com,2024-01-01T00:00:00Z\n")
    import_file(engine, "customers", tmp_path / "c.csv")
    lines = [b"event_id,customer_id,type,occurred_at,feature\n"] + [
        f"E{i},C1,view,2025-01-01T{i % 24:02d}:00:00+01:00,note {i}\n".encode() for i in range(size)
    ]
    bad = data.draw(st.integers(1, size))
    lines[bad] = CORRUPTIONS[corruption](lines[bad])
    (tmp_path / "e.csv").write_bytes(b"".join(lines))
    before = stored(engine, Event, "id")
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "events", tmp_path / "e.csv", chunk_size=chunk)
    assert [p.line for p in caught.value.problems] == [bad + 1]
    assert stored(engine, Event, "id") == before == []


@SETTINGS
@given(orders=st.lists(st.tuples(st.integers(1, 5), st.booleans(), st.booleans()), min_size=1, max_size=8),
       chunk=st.integers(1, 7), bad_quantity=st.data())
def test_an_orders_unknown_customer_is_one_problem_naming_its_lines(engine, tmp_path, orders, chunk, bad_quantity):
    # orders: (lines, customer known, named by address rather than id). A line elsewhere with a bad
    # quantity keeps its own problem, in line order among the orders' ones.
    reset(engine)
    (tmp_path / "c.csv").write_text("id,email\nC1,known@mail.example\n")
    import_file(engine, "customers", tmp_path / "c.csv")
    rows, expected, line = ["order_id,customer_id,email,ordered_at,quantity"], [], 1
    for n, (count, known, by_address) in enumerate(orders):
        who = ("," + ("known" if known else "nobody") + "@mail.example") if by_address else ("C1," if known else "C9,")
        first = line + 1
        for _ in range(count):
            line += 1
            rows.append(f"O{n},{who},2025-01-01T10:00:00Z,1")
        if not known:
            field, message = (("email", "no customer has this e-mail address (import customers first)") if by_address
                              else ("customer_id", "unknown customer 'C9' (import customers first)"))
            spans = f"{first}-{line}" if count > 1 else None
            expected.append((first, field, f"{message}: order 'O{n}', lines {spans}" if spans else message))
    if bad_quantity.draw(st.booleans()):
        line += 1
        rows.append("X,C1,,2025-01-01T10:00:00Z,lots")
        expected.append((line, "quantity", "'lots' is not a number"))
    (tmp_path / "o.csv").write_text("\n".join(rows) + "\n")
    if not expected:
        assert import_file(engine, "orders", tmp_path / "o.csv", chunk_size=chunk).rows_imported == line - 1
        return
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "orders", tmp_path / "o.csv", chunk_size=chunk)
    assert [(p.line, p.field, p.message) for p in caught.value.problems] == expected
    bad = sum(count for count, known, _ in orders if not known) + (rows[-1].startswith("X,"))
    assert caught.value.bad_rows == bad
    result = import_file(engine, "orders", tmp_path / "o.csv", chunk_size=chunk, skip_invalid=True, rejects=tmp_path / "r.csv")
    assert result.rows_rejected == bad
    assert len((tmp_path / "r.csv").read_text().splitlines()) == bad + 1  # every line of the order is in the rejects file


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_every_invalid_address_gets_a_reason_that_never_quotes_it(text):
    from relmail.store.addresses import address_problem

    why = address_problem(text)
    if why is not None:
        assert why and (len(text.strip()) < 4 or text.strip() not in why)
