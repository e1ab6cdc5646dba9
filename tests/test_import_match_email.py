"""``match: email``: one address, in any case, is one customer; a row that could be two is an error, never a guess.

The files are Shopify customers exports (the built-in mapping matches by
address); each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from relmail.errors import ValidationError
from relmail.importers import import_file
from relmail.store.models import Customer, Event, Preference, Suppression

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADER = ["Customer ID", "First Name", "Last Name", "Email", "Accepts Email Marketing"]
ADDRESS = "kim.dekker@mail.example"


def shopify(path, rows: list[tuple[str, str]]):
    """A Shopify customers export of (customer id, address) rows, everyone accepting marketing."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    # Shopify quotes its numeric ids for spreadsheets.
    writer.writerows([f"'{cid}" if cid[0].isdigit() else cid, "Kim", "Dekker", email, "yes"] for cid, email in rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def plain(path, rows: list[tuple[str, str]]):
    """relmail's own customers file: the ids are the key, addresses may repeat."""
    path.write_text("id,email\n" + "".join(f"{cid},{email}\n" for cid, email in rows), encoding="utf-8")
    return path


def customers(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Customer.__table__.c.id, Customer.__table__.c.email)).all())


def reset(engine) -> None:
    with engine.begin() as conn:
        for model in (Event, Preference, Suppression, Customer):
            conn.execute(model.__table__.delete())


def test_case_variants_of_a_stored_address_in_one_file_make_no_second_customer(engine, tmp_path):
    import_file(engine, "customers", shopify(tmp_path / "week1.csv", [("7001", ADDRESS)]), mapping="shopify")
    # Two rows of one chunk, each another spelling of Kim's address: both are Kim, so the file is ambiguous.
    week2 = shopify(tmp_path / "week2.csv", [("7002", "KIM.DEKKER@mail.example"), ("7003", "Kim.Dekker@Mail.Example")])
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", week2, mapping="shopify")
    assert [(p.file, p.line, p.field) for p in caught.value.problems] == [(str(week2), 3, "Email")]
    assert "also on line 2 (as 'KIM.DEKKER@mail.example')" in caught.value.problems[0].message
    assert customers(engine) == {"7001": ADDRESS}
    # Leaving the second row out, the first is Kim: no customer 7002.
    result = import_file(engine, "customers", week2, mapping="shopify", skip_invalid=True, rejects=tmp_path / "rejects.csv")
    assert (result.rows_imported, result.rows_rejected, result.details["matched_by_email"]) == (1, 1, 1)
    assert customers(engine) == {"7001": "KIM.DEKKER@mail.example"}


def test_one_row_in_another_case_is_the_stored_customer(engine, tmp_path):
    import_file(engine, "customers", shopify(tmp_path / "shop.csv", [("7001", ADDRESS)]), mapping="shopify")
    # Mailchimp spells the address its own way: the member is Kim, not a customer "mailchimp-...".
    path = tmp_path / "subscribed_email_audience_export_1.csv"
    path.write_text("Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,CONFIRM_TIME,LAST_CHANGED,LEID\n"
                    "Kim.Dekker@Mail.Example,Kim,Dekker,3,2026-01-02 10:00:00,2026-01-02 10:01:00,2026-01-02 10:01:00,9\n",
                    encoding="utf-8")
    assert import_file(engine, "customers", path, mapping="mailchimp").details["matched_by_email"] == 1
    assert list(customers(engine)) == ["7001"]
    # The customer's own id with the address in another case: the same customer, its address as written now.
    import_file(engine, "customers", shopify(tmp_path / "again.csv", [("7001", "KIM.dekker@mail.example")]), mapping="shopify")
    assert customers(engine) == {"7001": "KIM.dekker@mail.example"}


def test_two_rows_of_one_new_address_are_an_error_whatever_the_chunks(engine, tmp_path):
    path = shopify(tmp_path / "customers_export.csv", [("7001", ADDRESS), ("7009", "other@mail.example"),
                                                       ("7002", "Kim.Dekker@mail.example")])
    for chunk in (1, 2, 10_000):
        with pytest.raises(ValidationError) as caught:
            import_file(engine, "customers", path, mapping="shopify", chunk_size=chunk)
        assert [(p.line, p.field) for p in caught.value.problems] == [(4, "Email")]
        assert "also on line 2 (as 'kim.dekker@mail.example')" in caught.value.problems[0].message
        assert customers(engine) == {}


@pytest.mark.parametrize("chunk", [1, 10_000])
def test_two_profiles_of_one_address_in_a_klaviyo_export_name_the_email_column_and_the_first_line(engine, tmp_path, chunk):
    # Klaviyo's ids are made from the address (klaviyo-<hash>), so a second row of one address repeated the id too,
    # and the error was "field 'fields.id': duplicate id 'klaviyo-...'": no column of the file, no address.
    path = tmp_path / "Newsletter_list_export.csv"
    path.write_text("Email,First Name,Email Marketing Consent\n"
                    "Familia.Ruiz@correo.example,Carlos,SUBSCRIBED\nother@mail.example,Ana,SUBSCRIBED\n"
                    "familia.ruiz@correo.example,Marta,NEVER_SUBSCRIBED\n", encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", path, mapping="klaviyo", chunk_size=chunk)
    assert [(p.line, p.field) for p in caught.value.problems] == [(4, "Email")]
    assert caught.value.problems[0].message.startswith("the same address is also on line 2 (as 'Familia.Ruiz@correo.example')")
    assert customers(engine) == {}


def test_a_row_naming_one_stored_customer_by_id_and_another_by_address_is_an_error(engine, tmp_path):
    import_file(engine, "customers", shopify(tmp_path / "shop.csv", [("7001", "kim@old.example")]), mapping="shopify")
    import_file(engine, "customers", plain(tmp_path / "crm.csv", [("CRM-9", "Kim.Dekker@mail.example")]))
    before = customers(engine)
    # Customer 7001's address changed in the shop to the one CRM-9 has: which of the two is the row?
    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", shopify(tmp_path / "week2.csv", [("7001", ADDRESS)]), mapping="shopify")
    [problem] = caught.value.problems
    assert (problem.line, problem.field) == (2, "Email")
    assert "stored customer 'CRM-9' has this address (stored as 'Kim.Dekker@mail.example')" in problem.message
    assert "the row's id '7001' is another stored customer" in problem.message
    assert customers(engine) == before


def test_of_several_customers_with_one_mailbox_a_row_is_its_own_else_the_same_spelling_else_the_lowest_id(engine, tmp_path):
    # A CRM with duplicate accounts (ids are its key, so they stay two customers) ...
    import_file(engine, "customers", plain(tmp_path / "crm.csv", [("C2", "Kim.Dekker@mail.example"), ("C3", ADDRESS),
                                                                  ("C4", "KIM.DEKKER@mail.example")]))
    # ... then a shop's export: its own id wins, then the address as written, then the lowest id.
    import_file(engine, "customers", shopify(tmp_path / "own.csv", [("C4", "kim.DEKKER@mail.example")]), mapping="shopify")
    assert customers(engine)["C4"] == "kim.DEKKER@mail.example"
    result = import_file(engine, "customers", shopify(tmp_path / "same.csv", [("7001", ADDRESS)]), mapping="shopify")
    assert result.details["matched_by_email"] == 1 and "7001" not in customers(engine)
    with engine.connect() as conn:
        consent = dict(conn.execute(select(Preference.customer_id, Preference.opted_in)).all())
    # The export's consent is the mailbox's: every id with the address has it, whichever one the row was.
    assert consent == {"C2": True, "C3": True, "C4": True}
    import_file(engine, "customers", shopify(tmp_path / "other.csv", [("7002", "KIM.Dekker@mail.example")]), mapping="shopify")
    assert customers(engine)["C2"] == "KIM.Dekker@mail.example" and "7002" not in customers(engine)


def test_without_match_by_address_ids_are_the_key_and_shared_mailboxes_are_counted(engine, tmp_path):
    # relmail's own file: two ids are two customers (a couple's mailbox, duplicate accounts), said after the import.
    result = import_file(engine, "customers", plain(tmp_path / "crm.csv", [("C1", ADDRESS), ("C2", "Kim.Dekker@mail.example")]))
    assert result.details["shared_addresses"] == 1
    assert customers(engine) == {"C1": ADDRESS, "C2": "Kim.Dekker@mail.example"}


spellings = st.lists(st.booleans(), min_size=len(ADDRESS), max_size=len(ADDRESS)).map(
    lambda upper: "".join(c.upper() if u else c for c, u in zip(ADDRESS, upper)))


def as_stored(email: str) -> str:
    """An address as relmail stores it: the domain lower-cased, the local part as written."""
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}"


@SETTINGS
@given(stored=st.none() | spellings, rows=st.lists(spellings, min_size=1, max_size=4),
       others=st.integers(0, 3), data=st.data(), chunk=st.sampled_from([1, 2, 10_000]))
def test_one_mailbox_is_one_customer_whatever_the_spellings_order_and_chunks(engine, tmp_path, stored, rows, others,
                                                                              data, chunk):
    reset(engine)
    if stored is not None:
        import_file(engine, "customers", shopify(tmp_path / "before.csv", [("7000", stored)]), mapping="shopify")
    file_rows = [(f"71{i:02d}", email) for i, email in enumerate(rows)]
    file_rows += [(f"72{i:02d}", f"other{i}@mail.example") for i in range(others)]
    file_rows = data.draw(st.permutations(file_rows))
    path = shopify(tmp_path / "customers_export.csv", file_rows)
    before = customers(engine)
    kim = [line for line, (_, email) in enumerate(file_rows, start=2) if email.lower() == ADDRESS]
    if len(kim) > 1:
        # More than one row for Kim: nothing imported, every row after the first named.
        with pytest.raises(ValidationError) as caught:
            import_file(engine, "customers", path, mapping="shopify", chunk_size=chunk)
        assert [(p.line, p.field) for p in caught.value.problems] == [(line, "Email") for line in kim[1:]]
        assert customers(engine) == before
        return
    import_file(engine, "customers", path, mapping="shopify", chunk_size=chunk)
    after = customers(engine)
    kims = [cid for cid, email in after.items() if email.lower() == ADDRESS]
    assert kims == ["7000" if stored is not None else file_rows[kim[0] - 2][0]]
    assert after[kims[0]] == as_stored(file_rows[kim[0] - 2][1])  # the address as this export spells it
    assert len(after) == len(before) + others + (stored is None)
