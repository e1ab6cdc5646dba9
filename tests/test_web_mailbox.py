"""Consent is the mailbox's: a link or the preference page of one customer id changes, and shows, every id with the
address (a guest checkout and an account); imports naming one id reach the others; the plan never mails an
opted-out mailbox under any id (both backends, through the real WSGI app)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from tests.webkit import ONE_CLICK, RUN, T0, feedback_events, prefs, token
from werkzeug.test import Client

from relmail.importers import import_file
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import ConsentChange, Customer, Decision, Event, Preference, Product, Run
from relmail.web.app import make_app
from test_plan import AS_OF, DAY, PRODUCTS, WINDOW, _ev
from test_shared_address import CAMPAIGN

#: One person as a guest checkout (G) and a registered account (A, the address in another case), and a stranger.
GUEST, ACCOUNT, OTHER = "C0000001", "C0000002", "C0000003"


def ticked(page: str) -> dict[str, bool]:
    """topic slug -> checked, and ``*`` -> the 'no e-mail at all' box, as the preference page shows them."""
    out = {m.group(1): bool(m.group(2)) for m in re.finditer(r'name="topic" value="([^"]+)"( checked)?', page)}
    out["*"] = bool(re.search(r'name="unsubscribe_all" value="1"[^>]* checked', page))
    return out


def _customers(rows):
    return [{"id": cid, "email": email, "locale": "en_GB", "timezone": "UTC", "created_at": T0 - timedelta(days=400),
             "attributes": {}} for cid, email in rows]


@pytest.fixture
def mailbox(project, engine):
    """(client, engine): a guest and an account of one mailbox, both opted in to everything, and a stranger."""
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), _customers(
            [(GUEST, "kim@example.org"), (ACCOUNT, " Kim@Example.ORG "), (OTHER, "lea@example.org")]))
        conn.execute(Event.__table__.insert(), [{
            "event_id": "sent:1", "customer_id": GUEST, "type": "email_sent", "occurred_at": T0,
            "message_id": "ebike-launch", "run_id": RUN, "topic": "promotions"}])
        conn.execute(Preference.__table__.insert(), [
            {"customer_id": cid, "topic": t, "opted_in": True, "max_per_week": None, "updated_at": T0, "source": "import"}
            for cid in (GUEST, ACCOUNT, OTHER) for t in ("*", "promotions", "newsletter")])
    return Client(make_app(project, engine)), engine


def page_of(client, cid: str) -> dict[str, bool]:
    response = client.get(f"/preferences/{token(cid)}")
    assert response.status_code == 200
    return ticked(response.text)


@pytest.mark.parametrize("how", ["one-click", "confirmation page"])
def test_the_guests_unsubscribe_link_opts_the_whole_mailbox_out_and_the_accounts_page_says_so(mailbox, how):
    client, engine = mailbox
    form = ONE_CLICK if how == "one-click" else {"data": {"confirm": "unsubscribe", "scope": "all"}}
    assert client.post(f"/unsubscribe/{token(GUEST)}", **form).status_code == 200
    state = prefs(engine)
    if how == "one-click":  # the token's topic
        assert state[(GUEST, "promotions")][:2] == state[(ACCOUNT, "promotions")][:2] == (False, "unsubscribe-link")
        assert state[(ACCOUNT, "*")][0] is True and page_of(client, ACCOUNT)["promotions"] is False
    else:  # everything
        assert state[(GUEST, "*")][:2] == state[(ACCOUNT, "*")][:2] == (False, "unsubscribe-link")
        assert page_of(client, ACCOUNT)["*"] is True
    assert page_of(client, ACCOUNT) == page_of(client, GUEST)
    # The stranger is untouched; the event is the guest's, the opt-out the mailbox's.
    assert all(state[(OTHER, t)][0] for t in ("*", "promotions", "newsletter"))
    assert [c for c, *_ in feedback_events(engine)] == [GUEST]
    # The account's consent history says through whom.
    c = ConsentChange.__table__
    with engine.connect() as conn:
        detail = conn.execute(select(c.c.detail).where(c.c.customer_id == ACCOUNT)).scalar_one()
    assert detail.endswith(f"the unsubscribe link of customer '{GUEST}', which has the same address")


def test_a_change_on_either_ids_page_is_the_mailboxs_and_both_pages_show_it(mailbox):
    client, engine = mailbox
    # The account's page: promotions off and a weekly limit.
    form = {"form": "preferences", "topic": ["newsletter", "service"], "max_per_week": "2"}
    assert client.post(f"/preferences/{token(ACCOUNT)}", data=form).status_code == 200
    assert page_of(client, GUEST) == page_of(client, ACCOUNT) and page_of(client, GUEST)["promotions"] is False
    assert prefs(engine)[(GUEST, "*")] == (True, "preference-page", 2)
    # Then the guest's page (opened from an old guest e-mail): everything off, then back on again.
    assert client.post(f"/preferences/{token(GUEST)}", data={**form, "unsubscribe_all": "1"}).status_code == 200
    assert page_of(client, ACCOUNT)["*"] is True and prefs(engine)[(ACCOUNT, "*")][0] is False
    assert client.post(f"/preferences/{token(GUEST)}", data={**form, "topic": ["promotions", "newsletter"]}).status_code == 200
    assert page_of(client, ACCOUNT) == page_of(client, GUEST) == {
        "promotions": True, "newsletter": True, "product-tips": False, "service": False, "*": False}
    assert {(cid, t): v[0] for (cid, t), v in prefs(engine).items() if cid != OTHER} == {
        (cid, t): on for cid in (GUEST, ACCOUNT)
        for t, on in (("*", True), ("promotions", True), ("newsletter", True), ("product-tips", False), ("service", False))}


def test_the_page_shows_the_mailboxs_latest_word_whichever_id_recorded_it(mailbox):
    client, engine = mailbox
    P = Preference.__table__
    with engine.begin() as conn:
        # An ESP's unsubscribe under the account, later than the guest's opt-in (not copied: read across the ids).
        conn.execute(P.update().where(P.c.customer_id == ACCOUNT, P.c.topic == "newsletter")
                     .values(opted_in=False, updated_at=T0 + timedelta(days=1), source="esp-webhook"))
    assert page_of(client, GUEST)["newsletter"] is False and page_of(client, ACCOUNT)["newsletter"] is False
    with engine.begin() as conn:
        # The guest's opt-in at the very same time: a tie goes to the opt-out, as in the plan.
        conn.execute(P.update().where(P.c.customer_id == GUEST, P.c.topic == "newsletter").values(updated_at=T0 + timedelta(days=1)))
    assert page_of(client, GUEST)["newsletter"] is False


def test_an_opt_in_imported_for_the_account_reaches_the_guest_but_an_old_guest_no_never_undoes_it(mailbox, tmp_path):
    client, engine = mailbox
    P = Preference.__table__
    with engine.begin() as conn:
        conn.execute(P.update().where(P.c.topic == "newsletter").values(opted_in=False))
    path = tmp_path / "prefs.csv"
    # The account opts in (December); a guest's "no" from an old checkout (June) comes in the same file.
    path.write_text("customer_id,topic,opted_in,updated_at\n"
                    f"{ACCOUNT},newsletter,true,2026-12-01T00:00:00Z\n{GUEST},newsletter,false,2026-06-01T00:00:00Z\n",
                    encoding="utf-8")
    result = import_file(engine, "preferences", path)
    assert result.rows_rejected == 0
    state = prefs(engine)
    # The guest's own row says what it says; the mailbox's latest word is the account's opt-in.
    assert state[(GUEST, "newsletter")][0] is False and state[(ACCOUNT, "newsletter")][0] is True
    assert page_of(client, GUEST)["newsletter"] is True and page_of(client, ACCOUNT)["newsletter"] is True
    # An opt-in naming the guest alone reaches the account; a later opt-out naming the account reaches the guest.
    path.write_text(f"customer_id,topic,opted_in,updated_at\n{GUEST},promotions,false,2026-12-02T00:00:00Z\n", encoding="utf-8")
    import_file(engine, "preferences", path)
    assert prefs(engine)[(ACCOUNT, "promotions")][0] is False
    path.write_text(f"customer_id,topic,opted_in,updated_at\n{ACCOUNT},promotions,true,2026-12-03T00:00:00Z\n", encoding="utf-8")
    import_file(engine, "preferences", path)
    assert prefs(engine)[(GUEST, "promotions")][0] is True
    assert page_of(client, GUEST) == page_of(client, ACCOUNT)


def test_why_says_the_opt_out_came_through_the_other_ids_link(mailbox, project):
    client, engine = mailbox
    (project.campaigns_dir / "shared.yml").write_text(CAMPAIGN, encoding="utf-8")
    with engine.begin() as conn:
        conn.execute(Product.__table__.insert(), PRODUCTS)
        conn.execute(Event.__table__.insert(), [_ev(cid, "purchase", 300, product_id="EB-100", value=1799.0)
                                                for cid in (GUEST, ACCOUNT, OTHER)])
    assert client.post(f"/unsubscribe/{token(GUEST)}", data={"confirm": "unsubscribe", "scope": "all"}).status_code == 200
    plan(project, engine, "shared", WINDOW, as_of=AS_OF)
    facts, answers = explain(engine, ACCOUNT)
    assert answers and all(a.action == "suppress" for a in answers)
    text = format_explanations(facts, answers)
    assert f"source: unsubscribe link (confirmation page; the unsubscribe link of customer '{GUEST}', which has the same address)" in text


# -- the property --------------------------------------------------------------------------------------------------

#: A mailbox's ids spell its address in several ways (trimmed, in any case: one mailbox).
SPELLINGS = ["{0}@example.org", " {0}@Example.org", "{0}@EXAMPLE.ORG "]

step = st.one_of(
    st.tuples(st.just("link"), st.integers(0, 8), st.sampled_from(["promotions", "newsletter", "*"])),
    st.tuples(st.just("page"), st.integers(0, 8), st.sets(st.sampled_from(["promotions", "newsletter", "service"])), st.booleans()),
    st.tuples(st.just("import"), st.integers(0, 8), st.sampled_from(["promotions", "newsletter", "*"]), st.booleans()),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3), steps=st.lists(step, min_size=1, max_size=6))
def test_property_after_any_sequence_every_ids_page_shows_the_mailboxs_state_and_no_opted_out_mailbox_is_mailed(
        project, engine, tmp_path, monkeypatch, sizes, steps):
    (project.campaigns_dir / "shared.yml").write_text(CAMPAIGN, encoding="utf-8")
    with engine.begin() as conn:
        for table in (ConsentChange, Decision, Run, Event, Preference, Customer, Product):
            conn.execute(delete(table.__table__))
    boxes = [[f"C{b}{i}" for i in range(n)] for b, n in enumerate(sizes)]
    ids = [cid for box in boxes for cid in box]
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), _customers(
            [(cid, SPELLINGS[i].format(f"box{b}")) for b, box in enumerate(boxes) for i, cid in enumerate(box)]))
        conn.execute(Product.__table__.insert(), PRODUCTS)
        conn.execute(Event.__table__.insert(), [_ev(cid, "purchase", 300, product_id="EB-100", value=1799.0) for cid in ids])
        conn.execute(Preference.__table__.insert(), [
            {"customer_id": cid, "topic": t, "opted_in": True, "max_per_week": None, "updated_at": AS_OF - 300 * DAY,
             "source": "import"} for cid in ids for t in ("*", "promotions", "newsletter")])
    client = Client(make_app(project, engine))
    for k, (kind, who, *args) in enumerate(steps):
        cid = ids[who % len(ids)]
        # Each step an hour after the one before, all before the plan: the latest word is the last step's.
        when = AS_OF - timedelta(days=1) + k * timedelta(hours=1)
        monkeypatch.setenv("RELMAIL_NOW", when.isoformat())
        if kind == "link":
            assert client.post(f"/unsubscribe/{token(cid, args[0])}", **ONE_CLICK).status_code == 200
        elif kind == "page":
            subscribed, nothing = args
            form = {"form": "preferences", "topic": sorted(subscribed), "max_per_week": ""}
            if nothing:
                form["unsubscribe_all"] = "1"
            assert client.post(f"/preferences/{token(cid)}", data=form).status_code == 200
        else:
            topic, yes = args
            path = tmp_path / "prefs.csv"
            path.write_text(f"customer_id,topic,opted_in,updated_at\n{cid},{topic},{str(yes).lower()},"
                            f"{when.isoformat()}\n", encoding="utf-8")
            assert import_file(engine, "preferences", path).rows_rejected == 0
    monkeypatch.delenv("RELMAIL_NOW")
    pages = {cid: page_of(client, cid) for cid in ids}
    for box in boxes:
        assert all(pages[cid] == pages[box[0]] for cid in box), {cid: pages[cid] for cid in box}
    decided = plan(project, engine, "shared", WINDOW, as_of=AS_OF, dry_run=True).decisions.records(False)
    topic_of = {"promo": "promotions", "news": "newsletter"}
    for r in decided:
        shown = pages[r["customer_id"]]
        if shown["*"] or not shown[topic_of[r["message_id"]]]:
            assert r["action"] != "send", (r, shown)
