"""An export that names people by address only (``match: email``): its consent is the mailbox's.

A guest checkout and a registered account with one address are one person.
Whatever id the row is matched to, the consent the export gives the address
is recorded for every customer id with it, each id's own history deciding as
for a row of its own: an opt-out suppresses every id in plan and send, an
opt-in makes the account mailable where a message needs one (and ``why`` and
the preference page say so), and an address with a single id is imported as
it always was. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select
from tests.webkit import token
from werkzeug.test import Client

from relmail.importers import import_file
from relmail.importers.history import UNDATED
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import ConsentChange, Customer, Delivery, Event, Preference, Product
from relmail.web.app import make_app
from test_plan import AS_OF, DAY, PRODUCTS, WINDOW, _customer
from test_web_pages import ticked

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
P, C = Preference.__table__, Customer.__table__

#: One message on 'newsletter' that needs an opt-in, sent to everyone who may get it.
CAMPAIGN = """\
title: Opt-in news
policy:
  min_relevance: 0
  holdout_share: 0
  contact_cost: 0
  max_messages_per_run: 1
  consent: opt-in
messages:
  - id: news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: promotion
    value: 1
"""

#: When the exports below say their word (Klaviyo's and Mailchimp's times are UTC without a zone).
SAID = AS_OF - 30 * DAY
GUEST, ACCOUNT = "1001", "2002"
DORA = "dora@mail.example"


def klaviyo(path, rows: list[tuple[str, bool, object]]):
    """A Klaviyo list export: (address, subscribed, consent time) per profile."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Email", "First Name", "Email Marketing Consent", "Email Marketing Consent Timestamp"])
    writer.writerows([email, "Dora", "SUBSCRIBED" if yes else "UNSUBSCRIBED", f"{at:%Y-%m-%d %H:%M:%S}"] for email, yes, at in rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def shopify(path, cid: str, email: str, accepts: bool):
    """A shop's own customers export: one account and its undated marketing flag."""
    path.write_text("Customer ID,First Name,Last Name,Email,Accepts Email Marketing\n"
                    f"'{cid},Dora,Account,{email},{'yes' if accepts else 'no'}\n", encoding="utf-8")
    return path


def mailchimp_unsubscribed(path, email: str, at):
    path.write_text("Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,CONFIRM_TIME,UNSUB_TIME,LEID\n"
                    f"{email},Dora,A,2,,2025-03-02 10:11:12,{at:%Y-%m-%d %H:%M:%S},5\n", encoding="utf-8")
    return path


def consent(engine) -> dict[str, tuple[bool, object]]:
    """Customer -> (opted in, when) of the global consent ('*')."""
    with engine.connect() as conn:
        return {cid: (bool(yes), at) for cid, yes, at in conn.execute(select(P.c.customer_id, P.c.opted_in, P.c.updated_at)
                                                                      .where(P.c.topic == "*"))}


def reset(engine) -> None:
    with engine.begin() as conn:
        for model in (ConsentChange, Event, Preference, Product, Customer):
            conn.execute(model.__table__.delete())


def shop(engine, customers: list[dict], prefs: list[dict] = ()) -> None:
    with engine.begin() as conn:
        conn.execute(insert(C), customers)
        conn.execute(insert(Product.__table__), PRODUCTS)
        if prefs:
            conn.execute(insert(P), list(prefs))


@pytest.fixture
def optin_project(project):
    (project.campaigns_dir / "optin.yml").write_text(CAMPAIGN, encoding="utf-8")
    return project


def decided(project, engine) -> dict[str, dict]:
    result = plan(project, engine, "optin", WINDOW, as_of=AS_OF, dry_run=True)
    return {r["customer_id"]: r for r in result.decisions.records()}


def guest_and_account(engine) -> None:
    """Dora as a guest checkout (the lower id) and as her account, her address spelled two ways, and a lone customer."""
    shop(engine, [_customer(GUEST, 400, DORA), _customer(ACCOUNT, 400, "Dora@Mail.Example"), _customer("3003", 400, "solo@mail.example")])


# -- the property: random mailboxes, random consent on record, a random address-only export ----------------------------

#: Per customer id: no record, an undated opt-in or opt-out (a shop's flag), or a dated one some days before or after
#: the export's word (never at the same time: that is a conflict, refused).
stored_consent = st.one_of(st.none(), st.tuples(st.none(), st.booleans()),
                           st.tuples(st.integers(-10, 10).filter(bool), st.booleans()))
#: Mailboxes of one to three ids; which id is lowest varies (guest ids G.., accounts R..).
mailboxes = st.lists(st.lists(st.tuples(st.sampled_from("GR"), st.integers(0, 99), stored_consent), min_size=1, max_size=3,
                              unique_by=lambda t: (t[0], t[1])),
                     min_size=1, max_size=4)


def _model(stored, said):
    """The record an id ends with: the export's dated word wins over an undated record and an earlier dated one."""
    if said is None or (stored is not None and stored[0] is not None and stored[0] > said[0]):
        return stored
    return said


@SETTINGS
@given(boxes=mailboxes, words=st.lists(st.none() | st.booleans(), min_size=4, max_size=4), data=st.data())
def test_property_an_address_only_export_gives_its_word_to_every_id_of_the_mailbox(optin_project, engine, tmp_path, boxes,
                                                                                   words, data):
    reset(engine)
    customers, prefs, owners, file_rows, stored = [], [], {}, [], {}
    used = set()
    for i, ids in enumerate(boxes):
        address = f"box{i}@mail.example"
        for kind, n, record in ids:
            cid = f"{kind}{n:02d}"
            if cid in used:
                continue
            used.add(cid)
            # Each id spells the address its own way: one mailbox all the same.
            spelled = data.draw(st.sampled_from([address, address.upper(), address.capitalize()]))
            customers.append(_customer(cid, 400, spelled))
            owners.setdefault(address, []).append(cid)
            if record is not None:
                at = UNDATED if record[0] is None else SAID + record[0] * DAY
                stored[cid] = (None if record[0] is None else at, record[1])
                prefs.append({"customer_id": cid, "topic": "*", "opted_in": record[1], "max_per_week": None,
                              "updated_at": at, "source": "import"})
        if words[i] is not None and address in owners:
            file_rows.append((data.draw(st.sampled_from([address, address.title()])), words[i], SAID))
    shop(engine, customers, prefs)
    if not file_rows:
        return
    result = import_file(engine, "customers", klaviyo(tmp_path / "Newsletter_list_export.csv", file_rows), mapping="klaviyo")
    said = {email.lower(): (SAID, yes) for email, yes, _ in file_rows}
    shared = [a for a in said if len(owners[a]) > 1]
    assert result.details["consent_shared_addresses"] == len(shared)
    assert result.details["matched_by_email"] == len(file_rows)

    # Every id of an address in the file, one id or several, ends with what its own history makes of the export's word.
    expected = {cid: _model(stored.get(cid), said.get(address)) for address, ids in owners.items() for cid in ids}
    got = consent(engine)
    for cid, want in expected.items():
        if want is None:
            assert cid not in got
        else:
            assert got[cid] == (want[1], UNDATED if want[0] is None else want[0]), cid

    by = decided(optin_project, engine)
    for address, ids in owners.items():
        records = [expected[cid] for cid in ids if expected[cid] is not None]
        # The mailbox's latest word, an undated record the oldest; at the same time the opt-out.
        latest = max(((UNDATED if at is None else at, not yes) for at, yes in records), default=None)
        sends = [cid for cid in ids if by[cid]["action"] == "send"]
        assert len(sends) == (1 if latest is not None and not latest[1] else 0), (address, ids, records)
        word = said.get(address)
        if word is not None and latest == (SAID, not word[1]):
            if not word[1]:
                # An address-only opt-out that is the mailbox's latest word: no id of it is mailed.
                assert not sends
            else:
                # An address-only opt-in that is the mailbox's latest word: every id has consent of its own.
                assert all(not {"NO_CONSENT", "UNSUBSCRIBED"} & set(by[cid]["reasons"]) for cid in ids
                           if expected[cid] == word)
                assert all("NO_CONSENT" not in by[cid]["reasons"] for cid in ids)


# -- the guest and the account, step by step -------------------------------------------------------------------------


def test_an_address_only_opt_in_makes_the_account_mailable_and_why_says_where_it_came_from(optin_project, engine, tmp_path,
                                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)  # the file's name as given, in the consent history
    guest_and_account(engine)
    klaviyo(tmp_path / "Newsletter_list_export.csv", [("DORA@mail.example", True, SAID), ("solo@mail.example", True, SAID)])
    result = import_file(engine, "customers", "Newsletter_list_export.csv", mapping="klaviyo")
    assert (result.details["consent_shared_addresses"], result.details["consent_shared_records"]) == (1, 1)
    assert consent(engine) == {GUEST: (True, SAID), ACCOUNT: (True, SAID), "3003": (True, SAID)}
    with engine.connect() as conn:
        details = dict(conn.execute(select(ConsentChange.customer_id, ConsentChange.detail)).all())
    # The id the row was matched to and the lone customer: the file, as ever; the account: the file, and why.
    assert details == {GUEST: "Newsletter_list_export.csv", "3003": "Newsletter_list_export.csv",
                       ACCOUNT: "Newsletter_list_export.csv: the address's consent, for every customer id with it"}

    by = decided(optin_project, engine)
    # One e-mail to the mailbox (the tie goes to the lower id), the account has consent of its own.
    assert [by[c]["action"] for c in (GUEST, ACCOUNT, "3003")] == ["send", "suppress", "send"]
    assert by[ACCOUNT]["reasons"] == ["SHARED_ADDRESS"]
    plan(optin_project, engine, "optin", WINDOW, as_of=AS_OF)
    facts, answers = explain(engine, ACCOUNT)
    text = format_explanations(facts, answers)
    assert ("  consent: opted in to all e-mail on " + f"{SAID:%Y-%m-%d %H:%M} UTC; source: import, source 'klaviyo' "
            "(Newsletter_list_export.csv: the address's consent, for every customer id with it)") in text.splitlines()
    assert answers[0].as_dict()["consent"]["topic"] == "*"
    # A customer who shares no address: why is as it was.
    assert "consent:" not in format_explanations(*explain(engine, "3003"))


def test_the_preference_page_shows_the_account_the_consent_its_address_gave(optin_project, engine, tmp_path):
    guest_and_account(engine)
    import_file(engine, "customers", klaviyo(tmp_path / "Newsletter_list_export.csv", [(DORA, True, SAID)]), mapping="klaviyo")
    client = Client(make_app(optin_project, engine))
    page = client.get(f"/preferences/{token(ACCOUNT, 'newsletter')}").text
    assert ticked(page)["newsletter"] is True


def test_a_later_yes_of_the_shop_for_the_account_does_not_undo_the_addresss_opt_out(optin_project, engine, tmp_path):
    guest_and_account(engine)
    import_file(engine, "customers", shopify(tmp_path / "week1.csv", ACCOUNT, "Dora@Mail.Example", accepts=False), mapping="shopify")
    # Mailchimp says the address unsubscribed: recorded under the guest (the lower id) and the account alike.
    unsubscribed = mailchimp_unsubscribed(tmp_path / "unsubscribed_members_export_1.csv", DORA, SAID)
    result = import_file(engine, "customers", unsubscribed, mapping="mailchimp/customers-unsubscribed")
    assert result.details["consent_shared_records"] == 1
    assert consent(engine) == {GUEST: (False, SAID), ACCOUNT: (False, SAID)}
    # The shop's flag for the account turns yes: without a date it never undoes an opt-out, on either id.
    again = import_file(engine, "customers", shopify(tmp_path / "week2.csv", ACCOUNT, "Dora@Mail.Example", accepts=True),
                        mapping="shopify")
    assert again.details["kept_opted_out"] == 1 and again.details["consent_shared_kept_out"] == 1
    assert consent(engine) == {GUEST: (False, SAID), ACCOUNT: (False, SAID)}
    by = decided(optin_project, engine)
    assert by[GUEST]["action"] == by[ACCOUNT]["action"] == "suppress"
    assert "UNSUBSCRIBED" in by[ACCOUNT]["reasons"]


def test_the_shops_flag_turning_no_for_the_account_opts_out_every_id_with_the_address(optin_project, engine, tmp_path):
    guest_and_account(engine)
    import_file(engine, "customers", shopify(tmp_path / "week1.csv", ACCOUNT, "Dora@Mail.Example", accepts=True), mapping="shopify")
    assert consent(engine) == {GUEST: (True, UNDATED), ACCOUNT: (True, UNDATED)}
    result = import_file(engine, "customers", shopify(tmp_path / "week2.csv", ACCOUNT, "Dora@Mail.Example", accepts=False),
                         mapping="shopify")
    assert result.details["withdrawn_since_last_export"] == 1 and result.details["consent_shared_records"] == 1
    assert {cid: yes for cid, (yes, _) in consent(engine).items()} == {GUEST: False, ACCOUNT: False}
    assert all(r["action"] == "suppress" for r in decided(optin_project, engine).values())


def test_a_same_time_conflict_with_another_ids_record_refuses_the_file(engine, tmp_path):
    guest_and_account(engine)
    with engine.begin() as conn:
        conn.execute(insert(P).values(customer_id=ACCOUNT, topic="*", opted_in=False, updated_at=SAID, source="crm"))
    path = klaviyo(tmp_path / "Newsletter_list_export.csv", [(DORA, True, SAID)])
    from relmail.errors import ValidationError

    with pytest.raises(ValidationError) as caught:
        import_file(engine, "customers", path, mapping="klaviyo")
    [problem] = caught.value.problems
    assert problem.line == 2 and problem.message == (
        f"same time ({SAID.isoformat()}) as the stored preference for topic '*' (source crm), with a different value: customer "
        "'2002', which has this address too (the file's consent is the address's, for every customer id with it)")
    assert consent(engine) == {ACCOUNT: (False, SAID)}


def test_an_address_with_one_id_is_imported_as_ever(engine, tmp_path):
    shop(engine, [_customer("3003", 400, "solo@mail.example"), _customer("4004", 400, "other@mail.example")])
    result = import_file(engine, "customers", klaviyo(tmp_path / "Newsletter_list_export.csv",
                                                      [("Solo@Mail.Example", False, SAID), ("new@mail.example", True, SAID)]),
                         mapping="klaviyo")
    assert (result.details["consent_shared_addresses"], result.details["consent_shared_records"]) == (0, 0)
    assert {cid: v for cid, v in consent(engine).items() if not cid.startswith("klaviyo-")} == {"3003": (False, SAID)}
    assert len(consent(engine)) == 2  # and the new profile's own
    from relmail.cli.imports import summary_lines

    assert not any("several customer ids" in line for line in summary_lines(result))


def test_an_address_only_opt_out_after_the_plan_withdraws_the_send_to_every_id(project, tmp_path):
    from tests.sendkit import AS_OF as SEND_AS_OF
    from tests.sendkit import build

    from relmail.sending.run import send

    engine = build(project)
    send(project, engine, "sendtest", WINDOW, limit=1, now=lambda: SEND_AS_OF)
    D = Delivery.__table__
    with engine.connect() as conn:
        victim = conn.execute(select(D.c.customer_id).where(D.c.status == "planned").order_by(D.c.id.desc()).limit(1)).scalar_one()
        address = conn.execute(select(C.c.email).where(C.c.id == victim)).scalar_one()
    with engine.begin() as conn:
        # A guest checkout with the address, the lower id: the export's row is matched to it, not to the victim.
        conn.execute(insert(C).values(id="A-GUEST", email=address.upper(), locale="en_GB", timezone="UTC", attributes={}))
    later = SEND_AS_OF + timedelta(hours=1)
    export = mailchimp_unsubscribed(tmp_path / "unsubscribed_members_export_2.csv", address.upper(), later)
    assert import_file(engine, "customers", export, mapping="mailchimp/customers-unsubscribed").details["consent_shared_records"] == 1
    send(project, engine, "sendtest", WINDOW, now=lambda: later + timedelta(minutes=5))
    with engine.connect() as conn:
        status, error = conn.execute(select(D.c.status, D.c.last_error).where(D.c.customer_id == victim)).one()
    assert (status, error) == ("withdrawn", "OPTED_OUT: the customer opted out after the plan")
