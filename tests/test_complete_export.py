"""A complete customers export (``import customers --complete``): who the shop no longer lists is never mailed.

An account deleted or merged in the shop is missing from its next export.
The stored customers such an import does not name are kept and removed from
the shop (REMOVED_FROM_SHOP, a hard rule); any import naming them again lifts
it; a file that would remove more than the limit imports nothing. Every test
runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from relmail.cli import cli
from relmail.errors import ValidationError
from relmail.importers import import_file
from relmail.planning.run import plan
from relmail.planning.why import explain, format_explanations
from relmail.store.models import Customer
from test_plan import AS_OF, WINDOW

C = Customer.__table__

CAMPAIGN = """\
title: News
policy:
  min_relevance: 0
  holdout_share: 0
  contact_cost: 0
  max_messages_per_run: 1
  consent: opt-out
messages:
  - id: news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: promotion
    value: 1
"""


def customers_csv(path, ids) -> str:
    path.write_text("id,email,first_name\n" + "".join(f"{i},{i.lower()}@mail.example,{i}\n" for i in ids), encoding="utf-8")
    return str(path)


def removed(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(C.c.id).where(C.c.removed_at.isnot(None))).scalars())


@pytest.fixture
def news(project, monkeypatch):
    (project.campaigns_dir / "news.yml").write_text(CAMPAIGN, encoding="utf-8")
    # The imports happen just before the week's plan, as a scheduler runs them.
    monkeypatch.setenv("RELMAIL_NOW", (AS_OF - timedelta(hours=1)).isoformat())
    return project


def test_a_customer_the_complete_export_lacks_is_kept_but_never_mailed_until_listed_again(news, engine, tmp_path):
    ids = [f"C{i}" for i in range(1, 21)]
    import_file(engine, "customers", customers_csv(tmp_path / "all.csv", ids))
    sends = {r["customer_id"] for r in plan(news, engine, "news", WINDOW, as_of=AS_OF, dry_run=True).decisions.records()
             if r["action"] == "send"}
    assert sends == set(ids)

    result = import_file(engine, "customers", customers_csv(tmp_path / "week2.csv", ids[:-2]), complete=True)
    assert result.details["removed_from_shop"] == 2 and removed(engine) == {"C19", "C20"}
    with engine.connect() as conn:  # kept, with the address it had
        assert conn.execute(select(func.count()).select_from(C)).scalar_one() == 20

    plan(news, engine, "news", WINDOW, as_of=AS_OF)
    facts, explanations = explain(engine, "C20", f"news:{WINDOW}")
    (e,) = explanations
    assert e.action == "suppress" and "REMOVED_FROM_SHOP" in e.reasons
    assert "not in the shop's last complete customers export" in format_explanations(facts, explanations)
    facts, (kept,) = explain(engine, "C18", f"news:{WINDOW}")
    assert kept.action == "send" and "REMOVED_FROM_SHOP" not in kept.reasons

    # The shop lists C20 again (an ordinary import): mailed as before; C19 stays removed.
    again = import_file(engine, "customers", customers_csv(tmp_path / "c20.csv", ["C20"]))
    assert again.details["relisted"] == 1 and removed(engine) == {"C19"}
    decided = {r["customer_id"]: r for r in plan(news, engine, "news", "2026-W49", as_of=AS_OF + timedelta(days=7),
                                                 dry_run=True).decisions.records()}
    assert decided["C20"]["action"] == "send" and "REMOVED_FROM_SHOP" in decided["C19"]["reasons"]


def test_an_export_that_would_remove_more_than_the_limit_imports_nothing(news, engine, tmp_path):
    ids = [f"C{i}" for i in range(1, 21)]
    import_file(engine, "customers", customers_csv(tmp_path / "all.csv", ids))
    # A filtered export (a quarter of the shop) with a new customer and a changed name in it.
    path = tmp_path / "filtered.csv"
    path.write_text("id,email,first_name\nC1,c1@mail.example,Renamed\nC99,c99@mail.example,New\n"
                    + "".join(f"{i},{i.lower()}@mail.example,{i}\n" for i in ids[1:5]), encoding="utf-8")
    with pytest.raises(ValidationError, match=r"would remove 15 of the 20 customers the shop listed \(75%\), more than "
                                              r"--max-removed 10%; nothing imported"):
        import_file(engine, "customers", str(path), complete=True)
    with engine.connect() as conn:
        assert removed(engine) == set() and conn.execute(select(func.count()).select_from(C)).scalar_one() == 20
        assert conn.execute(select(C.c.first_name).where(C.c.id == "C1")).scalar_one() == "C1"
    # A count, and a share, that allow it.
    with pytest.raises(ValidationError, match="more than --max-removed 14"):
        import_file(engine, "customers", str(path), complete=True, max_removed="14")
    result = import_file(engine, "customers", str(path), complete=True, max_removed="75%")
    assert result.details["removed_from_shop"] == 15 and removed(engine) == set(ids[5:])
    with pytest.raises(ValidationError, match="give a number of customers"):
        import_file(engine, "customers", str(path), complete=True, max_removed="lots")


def test_the_cli_says_what_it_removed_and_refuses_to_skip_rows(news, engine, tmp_path, monkeypatch):
    monkeypatch.chdir(news.root)
    runner = CliRunner()
    out = runner.invoke(cli, ["import", "customers", customers_csv(tmp_path / "all.csv", ["A1", "A2", "A3", "A4"])])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["import", "customers", customers_csv(tmp_path / "less.csv", ["A1", "A2", "A3"]), "--complete"])
    assert out.exit_code == 4 and "would remove 1 of the 4 customers" in out.output
    assert "If the shop really lost them, import it again with --max-removed 1" in out.output
    out = runner.invoke(cli, ["import", "customers", str(tmp_path / "less.csv"), "--complete", "--max-removed", "1"])
    assert out.exit_code == 0, out.output
    assert "1 stored customer(s) not in this complete export: removed from the shop" in out.output
    out = runner.invoke(cli, ["customers", "show", "A4"])
    assert "removed from the shop: not in the complete customers export of" in out.output
    out = runner.invoke(cli, ["import", "customers", str(tmp_path / "less.csv"), "--complete", "--skip-invalid"])
    assert out.exit_code == 2 and "cannot --skip-invalid" in out.output
    out = runner.invoke(cli, ["import", "customers", str(tmp_path / "less.csv"), "--max-removed", "5"])
    assert out.exit_code == 2 and "give --complete" in out.output


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(exports=st.lists(st.sets(st.integers(0, 11), min_size=1), min_size=1, max_size=4))
def test_after_any_sequence_of_complete_exports_the_removed_are_exactly_those_the_last_did_not_list(project, engine, tmp_path_factory,
                                                                                                  exports):
    with engine.begin() as conn:
        conn.execute(C.delete())
    stored: set[str] = set()
    folder = tmp_path_factory.mktemp("exports")
    for k, listed in enumerate(exports):
        ids = {f"K{i:02d}" for i in listed}
        path = customers_csv(folder / f"{k}.csv", sorted(ids))
        before = stored - removed(engine)
        would = len(before - ids)
        if would > len(before) // 10:
            with pytest.raises(ValidationError):
                import_file(engine, "customers", str(path), complete=True)
            with pytest.raises(ValidationError):  # one fewer than would be removed: still refused
                import_file(engine, "customers", str(path), complete=True, max_removed=str(would - 1))
        import_file(engine, "customers", str(path), complete=True, max_removed="100%")
        stored |= ids
        assert removed(engine) == stored - ids


def test_an_e_mail_planned_before_the_removal_is_withheld_at_send(project, tmp_path):
    from tests.sendkit import AS_OF as SEND_AS_OF
    from tests.sendkit import build

    from relmail.sending.run import send
    from relmail.store.models import Delivery

    engine = build(project)
    send(project, engine, "sendtest", "2026-W48", limit=1, now=lambda: SEND_AS_OF)
    D = Delivery.__table__
    with engine.connect() as conn:
        victim = conn.execute(select(D.c.customer_id).where(D.c.status == "planned").order_by(D.c.id.desc()).limit(1)).scalar_one()
        shop = conn.execute(select(C.c.id, C.c.email).where(C.c.id != victim).order_by(C.c.id)).all()
    export = tmp_path / "customers.csv"
    export.write_text("id,email\n" + "".join(f"{cid},{email}\n" for cid, email in shop), encoding="utf-8")
    assert import_file(engine, "customers", str(export), complete=True).details["removed_from_shop"] == 1
    send(project, engine, "sendtest", "2026-W48", now=lambda: SEND_AS_OF + timedelta(hours=1))
    with engine.connect() as conn:
        mine = conn.execute(select(D.c.status, D.c.last_error).where(D.c.customer_id == victim)).all()
        others = dict(conn.execute(select(D.c.status, func.count()).where(D.c.customer_id != victim).group_by(D.c.status)).all())
    assert mine and all(row == ("withdrawn", "SUPPRESSED: removed from the shop after the plan (REMOVED_FROM_SHOP)") for row in mine)
    assert set(others) == {"accepted"}
