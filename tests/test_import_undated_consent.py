"""A consent flag without a date (Shopify's) never undoes an opt-out: only an opt-in dated after it does.

A shop's customers export carries "Accepts Email Marketing" without a date,
so last week's export imported again looks like this week's. The customer
here is a Shopify customer only (no mailing tool's dated records); each test
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.webkit import token
from werkzeug.test import Client

from relmail.cli.imports import summary_lines
from relmail.feedback import apply_events
from relmail.feedback.consent import unsubscribe
from relmail.feedback.events import FeedbackEvent
from relmail.importers import import_file
from relmail.importers.history import UNDATED
from relmail.project import Project
from relmail.store.models import Customer, Event, Preference, Suppression
from relmail.tokens import Claims
from relmail.web.app import make_app

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ANNA = "7302117000001"
OLD = datetime(2020, 1, 1, tzinfo=UTC)


def export(tmp_path, flag: str):
    """Anna's row of a Shopify customers export, her consent flag ``flag``."""
    path = tmp_path / f"customers_export_{flag}.csv"
    path.write_text("Customer ID,First Name,Last Name,Email,Accepts Email Marketing\n"
                    f"'{ANNA},Anna,de Vries,anna.devries@mail.example,{flag}\n", encoding="utf-8")
    return path


def dated(engine, tmp_path, opted_in: bool, when: datetime, source: str = "signup-form"):
    path = tmp_path / "consent.csv"
    path.write_text(f"customer_id,topic,opted_in,updated_at,source\n{ANNA},*,{'yes' if opted_in else 'no'},{when.isoformat()},{source}\n")
    return import_file(engine, "preferences", path)


def global_consent(engine) -> tuple[bool, datetime, str] | None:
    table = Preference.__table__
    with engine.connect() as conn:
        row = conn.execute(select(table.c.opted_in, table.c.updated_at, table.c.source)
                           .where(table.c.customer_id == ANNA, table.c.topic == "*")).first()
    return None if row is None else (row.opted_in, row.updated_at.astimezone(UTC), row.source)


def test_last_weeks_export_imported_again_never_undoes_the_opt_out_this_weeks_recorded(engine, tmp_path):
    import_file(engine, "customers", export(tmp_path, "yes"), mapping="shopify")  # last week
    this_week = import_file(engine, "customers", export(tmp_path, "no"), mapping="shopify")
    assert this_week.details["withdrawn_since_last_export"] == 1  # unsubscribed in the shop: an opt-out as of now
    opted_out = global_consent(engine)
    assert opted_out[0] is False
    # Last week's export again, by mistake: its yes has no date, so it cannot say it is newer.
    again = import_file(engine, "customers", export(tmp_path, "yes"), mapping="shopify")
    assert global_consent(engine) == opted_out
    assert (again.details["given_since_last_export"], again.details["kept_opted_out"]) == (0, 1)
    assert any(line.startswith("1 customer(s) whose consent flag turned from no to yes since the last export, but who "
                               "opted out: kept opted out") for line in summary_lines(again))
    # An opt-in dated before the opt-out changes nothing either; one dated after it does.
    dated(engine, tmp_path, True, OLD)
    assert global_consent(engine) == opted_out
    later = datetime.now(UTC)
    dated(engine, tmp_path, True, later)
    assert global_consent(engine) == (True, later, "signup-form")


def test_an_unsubscribe_by_relmails_link_survives_every_shop_export(engine, tmp_path):
    import_file(engine, "customers", export(tmp_path, "yes"), mapping="shopify")
    assert global_consent(engine) == (True, UNDATED, "shopify")
    unsubscribe(engine, Claims(ANNA, "newsletter", "weekly-2026-W48"), everything=True)
    opted_out = global_consent(engine)
    assert opted_out[0] is False and opted_out[2] == "unsubscribe-link"
    for flag in ("yes", "no", "yes", "yes"):  # the shop never hears of it: its flag goes on saying yes
        import_file(engine, "customers", export(tmp_path, flag), mapping="shopify")
        assert global_consent(engine) == opted_out


def test_an_undated_opt_out_is_not_undone_by_an_undated_yes(engine, tmp_path):
    # Consent recorded without a date and without the shop's memory of its last flag (an older
    # relmail's import, or another tool's): the shop's no is an undated opt-out, and its yes after
    # that may be an older export's.
    (tmp_path / "c.csv").write_text(f"id,email\n{ANNA},anna.devries@mail.example\n")
    import_file(engine, "customers", tmp_path / "c.csv")
    dated(engine, tmp_path, True, UNDATED, source="shopify")
    import_file(engine, "customers", export(tmp_path, "no"), mapping="shopify")
    assert global_consent(engine) == (False, UNDATED, "shopify")
    import_file(engine, "customers", export(tmp_path, "yes"), mapping="shopify")
    assert global_consent(engine) == (False, UNDATED, "shopify")


def opt_out_by_import(engine, tmp_path, project):
    dated(engine, tmp_path, False, datetime.now(UTC))


def opt_out_by_feedback(engine, tmp_path, project):
    # The mailing tool's complaint webhook or export: stop everything.
    complaint = FeedbackEvent(type="complained", occurred_at=datetime.now(UTC), recipient="anna.devries@mail.example",
                              provider="sendgrid", provider_event_id="complaint-1", customer_id=ANNA)
    assert apply_events(engine, [complaint]).opt_outs == 1


def opt_out_by_preference_page(engine, tmp_path, project):
    client = Client(make_app(Project.load(project.root), engine))
    page = client.post(f"/preferences/{token(ANNA)}", data={"form": "preferences", "unsubscribe_all": "1"})
    assert page.status_code == 200


@pytest.mark.parametrize("opt_out", [opt_out_by_import, opt_out_by_feedback, opt_out_by_preference_page])
def test_an_opt_out_recorded_by_any_path_survives_the_shops_flag_turning_yes(project, engine, tmp_path, opt_out):
    # Anna said no at the checkout; then opted out through an import, her mailing tool or relmail's preference
    # page. The shop never hears of it: its next export's flag turns yes (a new checkout, or an old export).
    import_file(engine, "customers", export(tmp_path, "no"), mapping="shopify")
    opt_out(engine, tmp_path, project)
    opted_out = global_consent(engine)
    assert opted_out[0] is False
    turned = import_file(engine, "customers", export(tmp_path, "yes"), mapping="shopify")
    assert (turned.details["given_since_last_export"], turned.details["kept_opted_out"]) == (0, 1)
    assert global_consent(engine) == opted_out
    again = import_file(engine, "customers", export(tmp_path, "yes"), mapping="shopify")
    assert (again.details["given_since_last_export"], again.details["kept_opted_out"]) == (0, 0)
    assert global_consent(engine) == opted_out


def reset(engine) -> None:
    with engine.begin() as conn:
        for model in (Event, Preference, Suppression, Customer):
            conn.execute(model.__table__.delete())


steps = st.lists(
    st.one_of(
        st.tuples(st.just("export"), st.sampled_from(["yes", "no"])),
        st.tuples(st.just("link"), st.sampled_from([True, False])),  # everything, or the message's topic only
        st.tuples(st.just("dated"), st.booleans(), st.sampled_from(["now", "old"])),
    ),
    min_size=1, max_size=8,
)


@SETTINGS
@given(steps=steps)
def test_an_opt_out_ends_only_with_an_opt_in_dated_after_it_whatever_the_order_of_imports(engine, tmp_path, steps):
    reset(engine)
    import_file(engine, "customers", export(tmp_path, "yes"), mapping="shopify")
    for n, step in enumerate(steps):
        before = global_consent(engine)
        if step[0] == "export":
            import_file(engine, "customers", export(tmp_path, step[1]), mapping="shopify")
        elif step[0] == "link":
            unsubscribe(engine, Claims(ANNA, "newsletter", "weekly-2026-W48"), everything=step[1])
        else:
            when = datetime.now(UTC) if step[2] == "now" else OLD + timedelta(minutes=n)  # long before every opt-out of today
            dated(engine, tmp_path, step[1], when)
        after = global_consent(engine)
        if before is not None and before[0] is False and after is not None and after[0] is True:
            # Opted back in: only by an opt-in dated after the opt-out.
            assert step[0] == "dated" and step[1] and after[1] > before[1], (step, before, after)
        if step[0] == "link" and step[1] or step[0] == "dated" and step[2] == "now":
            # Relmail's link and a record dated now always take effect.
            assert after is not None and after[0] is (step[0] == "dated" and step[1]), (step, before, after)
