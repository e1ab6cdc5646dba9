"""Segments: every condition against hand-built customers, combinations, validation, the CLI."""

from __future__ import annotations

import json
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from relmail.cli import cli
from relmail.errors import DatabaseUnavailable, ValidationError
from relmail.project import example_dir
from relmail.segments import Segment, audience, load_segments
from relmail.store.models import Customer, Event, Preference, Product, Run

T = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
EVENT_KEYS = dict(product_id=None, feature=None, value=None, message_id=None, run_id=None, topic=None, event_id=None)


def ago(days: float) -> datetime:
    return T - timedelta(days=days)


def ev(c, t, d, **kw):
    return {**EVENT_KEYS, "customer_id": c, "type": t, "occurred_at": ago(d), **kw}


def mailed(c, message, run, *, sent, opened=None, clicked=None, topic="promotions"):
    """The events of one e-mail: sent, and opened and clicked when those are given (days before T)."""
    return [ev(c, typ, d, message_id=message, run_id=run, topic=topic)
            for typ, d in (("email_sent", sent), ("email_opened", opened), ("email_clicked", clicked)) if d is not None]


@pytest.fixture
def store(engine):
    """Four customers whose membership in every condition is known by construction."""
    with engine.begin() as conn:
        conn.execute(insert(Product.__table__), [
            dict(id="EB-200", name="E-bike", category="e-bikes", price=2499.0, url=None, features=["app"]),
            dict(id="CB-1", name="City bike", category="city-bikes", price=799.0, url=None, features=[]),
            dict(id="LOCK-S1", name="Lock", category="accessories", price=129.0, url=None, features=["share-access"]),
        ])
        conn.execute(insert(Customer.__table__), [
            dict(id="A", email="a@example.com", first_name=None, last_name=None, locale="nl_NL", timezone="UTC",
                 created_at=ago(800), attributes={"loyalty_tier": "loyal", "birth_year": 1980, "vip": True}),
            dict(id="B", email="b@example.com", first_name=None, last_name=None, locale="en_GB", timezone="UTC",
                 created_at=ago(30), attributes={"loyalty_tier": "new", "birth_year": "1990"}),
            dict(id="C", email="c@example.com", first_name=None, last_name=None, locale="en_GB", timezone="UTC",
                 created_at=ago(400), attributes={}),
            # Created after T: never a member of anything as of T.
            dict(id="D", email="d@example.com", first_name=None, last_name=None, locale="nl_NL", timezone="UTC",
                 created_at=ago(-5), attributes={"loyalty_tier": "loyal"}),
        ])
        conn.execute(insert(Event.__table__), [
            ev("A", "purchase", 10, product_id="EB-200", value=2499.0),
            ev("A", "purchase", 400, product_id="LOCK-S1", value=129.0),
            ev("A", "view", 5, product_id="CB-1"),
            *[ev("A", "usage", d, product_id="LOCK-S1", feature="share-access") for d in (2, 3, 4)],
            ev("A", "usage", 3, product_id="LOCK-S1", feature="share-access", value=0.5),
            # E-mails of two campaigns: spring (spring-launch, spring-reminder), newsletter (weekly-news), and
            # spring-sale, whose runs' ids begin with "spring" but not with "spring:".
            *mailed("A", "spring-launch", "spring:2026-W22", sent=12, opened=10, clicked=9),
            *mailed("A", "weekly-news", "newsletter:2026-W09", sent=101, clicked=100),
            *mailed("B", "weekly-news", "newsletter:2026-W15", sent=71, opened=70, topic="newsletter"),
            *mailed("B", "spring-launch", "spring:2026-W21", sent=20),
            *mailed("B", "spring-reminder", "spring:2026-W23", sent=3, clicked=-1),  # clicked after T
            *mailed("C", "spring-launch", "spring:2026-W18", sent=40),
            *mailed("C", "spring-launch", "spring:2026-W23", sent=5),
            *mailed("C", "flash", "spring-sale:2026-W24", sent=2),
            *mailed("D", "spring-launch", "spring:2026-W23", sent=-1),
            ev("A", "ticket_opened", 5, feature="T1"),
            ev("B", "purchase", 200, product_id="CB-1", value=799.0),
            ev("B", "purchase", -1, product_id="EB-200", value=2499.0),  # after T
            ev("B", "email_opened", 70, topic="newsletter"),
            ev("B", "usage", 50, product_id="LOCK-S1", feature="share-access", value=10.0),
            ev("C", "view", 400, product_id="EB-200"),
            ev("C", "ticket_opened", 20, feature="T2"), ev("C", "ticket_closed", 10, feature="T2"),
            ev("C", "ticket_opened", 3, feature="T3"), ev("C", "ticket_closed", -2, feature="T3"),  # closed after T
            ev("D", "purchase", -1, product_id="EB-200", value=2499.0),
        ])
        conn.execute(insert(Preference.__table__), [
            dict(customer_id="B", topic="promotions", opted_in=False, max_per_week=None, updated_at=ago(1), source="import"),
            dict(customer_id="C", topic="*", opted_in=False, max_per_week=None, updated_at=ago(1), source="import"),
            dict(customer_id="A", topic="newsletter", opted_in=True, max_per_week=None, updated_at=ago(1), source="import"),
        ])
    return engine


def write(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yml"
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return path


def members(engine, tmp_path: Path, condition: str) -> set[str]:
    folder = tmp_path / "segs"
    write(folder, "probe", "name: probe\n" + textwrap.dedent(condition))
    seg = load_segments(folder)["probe"]
    return set(audience(engine, [seg], T).tolist())


CASES = [
    ("", {"A", "B", "C"}),
    ("purchased: {category: e-bikes, within_days: 30}", {"A"}),
    ("purchased: {product: CB-1}", {"B"}),
    ("purchased: {within_days: 180}", {"A"}),
    ("purchased: {not_within_days: 180}", {"B"}),
    ("purchased: {at_least: 2}", {"A"}),
    ("purchased: {category: [city-bikes, accessories], product: EB-200, within_days: 500, at_least: 2}", {"A"}),
    ("viewed: {category: [city-bikes], within_days: 7}", {"A"}),
    ("viewed: {product: EB-200}", {"C"}),
    ("viewed: {product: EB-200, within_days: 399}", set()),
    ("owns: LOCK-S1", {"A"}),
    ("owns: [EB-200, CB-1]", {"A", "B"}),
    ("owns: {product: EB-200}", {"A"}),
    # A used share-access 3 + 0.5 = 3.5 times in 30 days; B only 50 days ago.
    ("uses: {feature: share-access, within_days: 30, at_least: 3.5}", {"A"}),
    ("uses: {feature: share-access, within_days: 30, fewer_than: 3.5}", {"B", "C"}),
    ("uses: {feature: share-access, product: LOCK-S1, within_days: 60, at_least: 10}", {"B"}),
    ("uses: {feature: share-access, fewer_than: 1}", {"B", "C"}),
    ("opened_email: {within_days: 60}", {"A"}),
    ("opened_email: {within_days: 90}", {"A", "B"}),
    ("opened_email: {not_within_days: 60}", {"B"}),
    ("opened_email: {within_days: 90, topic: newsletter}", {"B"}),
    ("clicked_email: {within_days: 365}", {"A"}),
    ("tenure_days: {gt: 365}", {"A", "C"}),
    ("tenure_days: {lt: 90}", {"B"}),
    ("tenure_days: {gte: 30, lte: 30}", {"B"}),
    ("tenure_days: {gt: 30, lt: 500}", {"C"}),
    ("attribute: {key: loyalty_tier, equals: loyal}", {"A"}),
    ("attribute: {key: loyalty_tier, in: [loyal, new]}", {"A", "B"}),
    # B's birth_year is the text "1990": never compared as a number.
    ("attribute: {key: birth_year, gt: 1970}", {"A"}),
    ("attribute: {key: birth_year, equals: '1990'}", {"B"}),
    ("attribute: {key: birth_year, in: [1980, 1981]}", {"A"}),
    ("attribute: {key: birth_year, exists: true}", {"A", "B"}),
    ("attribute: {key: birth_year, exists: false}", {"C"}),
    ("attribute: {key: vip, equals: true}", {"A"}),
    ("locale: nl_NL", {"A"}),
    ("locale: {in: [en_GB]}", {"B", "C"}),
    # A language alone is every country's variant of it, as template variants fall back.
    ("locale: en", {"B", "C"}),
    ("locale: [nl, en_US]", {"A"}),
    # As a CRM or a browser writes them: the store keeps Babel's form, on either database.
    ("locale: en-GB", {"B", "C"}),
    ("locale: [NL, en-us]", {"A"}),
    ("consent: {topic: promotions}", {"A"}),
    ("consent: {topic: promotions, opted_in: false}", {"B"}),
    ("consent: {topic: newsletter, opted_in: true}", {"A"}),
    ("consent: {topic: newsletter}", {"A", "B"}),
    ("open_ticket: true", {"A", "C"}),
    ("all: [{owns: EB-200}, {locale: nl_NL}]", {"A"}),
    ("any: [{owns: CB-1}, {viewed: {product: EB-200}}]", {"B", "C"}),
    ("not: {owns: EB-200}", {"B", "C"}),
    ("all: []", {"A", "B", "C"}),
    ("any: []", set()),
    ("all:\n  - any: [{locale: en_GB}, {tenure_days: {gt: 700}}]\n  - not: {consent: {topic: '*', opted_in: false}}", {"A", "B"}),
    ("sql: \"SELECT customer_id FROM events WHERE type = 'purchase' AND occurred_at <= :as_of\"", {"A", "B"}),
    ("sql: SELECT id AS customer_id FROM customers WHERE locale = 'nl_NL'", {"A"}),
    ("all: [{sql: \"SELECT customer_id FROM events WHERE type = 'view'\"}, {not: {owns: EB-200}}]", {"C"}),
    # No window is ever, as for purchases: opened lately but never clicked.
    ("clicked_email: {}", {"A"}),
    ("all: [{opened_email: {within_days: 90}}, {not: {clicked_email: {}}}]", {"B"}),
    ("received_email: {}", {"A", "B", "C"}),
    ("received_email: {message: spring-launch, within_days: 14}", {"A", "C"}),
    ("received_email: {message: spring-launch}", {"A", "B", "C"}),
    ("received_email: {message: spring-launch, at_least: 2}", {"C"}),
    ("received_email: {message: [spring-reminder, weekly-news], within_days: 80}", {"B"}),
    ("received_email: {message: spring-launch, not_within_days: 14}", {"B"}),
    ("received_email: {message: sping-launch}", set()),
    ("received_email: {campaign: spring, within_days: 10}", {"B", "C"}),
    ("received_email: {campaign: spring-sale}", {"C"}),
    ("received_email: {campaign: newsletter, not_within_days: 90}", {"A"}),
    ("received_email: {campaign: [newsletter, spring-sale], within_days: 80}", {"B", "C"}),
    # Every key holds: e-mails of that message in that campaign's runs.
    ("received_email: {message: spring-launch, campaign: newsletter}", set()),
    ("received_email: {campaign: spring, topic: newsletter}", set()),
    ("received_email: {topic: newsletter}", {"B"}),
    ("opened_email: {message: spring-launch}", {"A"}),
    ("opened_email: {campaign: newsletter, within_days: 60}", set()),
    ("opened_email: {campaign: newsletter, within_days: 90}", {"B"}),
    ("clicked_email: {message: spring-launch, within_days: 14}", {"A"}),
    ("clicked_email: {campaign: newsletter}", {"A"}),
    ("clicked_email: {message: spring-reminder}", set()),  # after T
    ("clicked_email: {campaign: spring, at_least: 1, not_within_days: 5}", {"A"}),
    # The follow-up: sent spring-launch in the last 14 days and did not click it.
    ("all: [{received_email: {message: spring-launch, within_days: 14}}, {not: {clicked_email: {message: spring-launch}}}]",
     {"C"}),
]


@pytest.mark.parametrize("condition,expected", CASES, ids=[c or "everyone" for c, _ in CASES])
def test_condition_membership(store, tmp_path, condition, expected):
    assert members(store, tmp_path, condition) == expected


def test_segment_references_and_union(store, tmp_path):
    folder = tmp_path / "segs"
    write(folder, "owners", "owns: EB-200")
    write(folder, "dutch-owners", "all: [{segment: owners}, {locale: nl_NL}]")
    write(folder, "others", "not: {segment: owners}")
    segs = load_segments(folder)
    assert segs["dutch-owners"].references == {"owners"}
    assert audience(store, [segs["dutch-owners"]], T).tolist() == ["A"]
    assert audience(store, [segs["others"]], T).tolist() == ["B", "C"]
    assert audience(store, [segs["owners"], segs["others"]], T).tolist() == ["A", "B", "C"]
    assert audience(store, [], T).tolist() == []
    # Later, D exists and owns an e-bike.
    assert audience(store, [segs["owners"]], T + timedelta(days=10)).tolist() == ["A", "B", "D"]
    with store.connect() as conn:
        assert segs["others"].count(conn, T) == 2
        assert segs["owners"].ids(conn, T).tolist() == ["A"]


def test_example_segments_load_and_run(store):
    segs = load_segments(example_dir() / "segments")
    assert {"everyone", "cyclists", "bike-owners", "lock-owners", "lapsed", "new-customers", "engaged"} <= set(segs)
    got = {name: audience(store, [seg], T).tolist() for name, seg in segs.items()}
    assert got["everyone"] == ["A", "B", "C"]
    assert got["cyclists"] == ["A", "B"]  # C viewed an e-bike 400 days ago: too long
    assert got["bike-owners"] == ["A", "B"]
    assert got["lock-owners"] == ["A"]
    assert got["lapsed"] == ["B", "C"]
    assert got["new-customers"] == ["B"]
    assert got["engaged"] == ["A"]


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(ValidationError) as info:
        load_segments(folder)
    return [str(p) for p in info.value.problems]


def test_validation_names_file_line_and_key(tmp_path):
    folder = tmp_path / "segs"
    path = write(folder, "bad", """
        name: bad
        description: broken on purpose
        all:
          - owns: LOCK-S1
          - purchased: {category: e-bikes, within_dayz: 30}
          - bought: {product: X}
          - uses: {feature: app, within_days: 30}
          - tenure_days: {gt: -1}
          - attribute: {key: "a b", equals: x}
          - purchased: {within_days: 3, not_within_days: 4}
          - sql: "SELECT customer_id FROM events WHERE type = :kind"
        """)
    got = problems_of(folder)
    f = str(path)
    assert got == [
        f"{f}:5: field 'all[1].purchased.within_dayz': unknown key 'within_dayz' for 'purchased' "
        "(allowed: at_least, category, not_within_days, product, within_days); did you mean 'within_days'?",
        f"{f}:6: field 'all[2].bought': unknown condition 'bought' (known: all, any, not, segment, sql, attribute, "
        "clicked_email, consent, locale, open_ticket, opened_email, owns, purchased, received_email, tenure_days, uses, viewed)",
        f"{f}:7: field 'all[3].uses': 'uses' needs exactly one of fewer_than or at_least",
        f"{f}:8: field 'all[4].tenure_days.gt': must be a non-negative number (got -1)",
        f"{f}:9: field 'all[5].attribute.key': must be letters, digits, '_', '-' or '.'",
        f"{f}:10: field 'all[6].purchased': use either within_days or not_within_days, not both",
        f"{f}:11: field 'all[7].sql': only :as_of can be bound in sql, found :kind",
    ]


def test_a_locale_babel_does_not_know_is_a_located_problem(tmp_path):
    # 'e' and 'en_G' would compare as text and match nobody; 'deutsch' is a language's own name.
    folder = tmp_path / "segs"
    short = write(folder, "short", "locale: deutsch\n")
    listed = write(folder, "listed", "any:\n  - locale: {in: [en, en_G]}\n  - locale: [nl, e]\n")
    expected = "(expected a language like de, or a locale like de_DE or de-DE)"
    assert problems_of(folder) == [
        f"{listed}:2: field 'any[0].locale.in': unknown locale 'en_G' {expected}",
        f"{listed}:3: field 'any[1].locale': unknown locale 'e' {expected}",
        f"{short}:1: field 'locale': unknown locale 'deutsch' {expected}",
    ]


def test_a_misspelt_condition_or_key_names_the_likely_one(tmp_path):
    # As campaign files do: 'purchase' for 'purchased', 'categroy' for 'category'.
    path = write(tmp_path / "segs", "hikers", "any:\n  - purchase: {within_days: 60}\n  - viewed: {categroy: hiking}\n")
    assert problems_of(tmp_path / "segs") == [
        f"{path}:2: field 'any[0].purchase': unknown condition 'purchase' (known: all, any, not, segment, sql, attribute, "
        "clicked_email, consent, locale, open_ticket, opened_email, owns, purchased, received_email, tenure_days, uses, viewed); "
        "did you mean 'purchased'?",
        f"{path}:3: field 'any[1].viewed.categroy': unknown key 'categroy' for 'viewed' (allowed: at_least, category, "
        "not_within_days, product, within_days); did you mean 'category'?",
    ]


@pytest.mark.parametrize("body, said", [
    ("purchased: {within_days: 90d}", "field 'purchased.within_days': must be a non-negative number (got '90d'): "
                                      "days are a plain number here, write 90"),
    ("tenure_days: {lt: 30 days}", "field 'tenure_days.lt': must be a non-negative number (got '30 days'): "
                                   "days are a plain number here, write 30"),
    # A count is no number of days: no hint about days.
    ("purchased: {at_least: 2d}", "field 'purchased.at_least': must be a non-negative number (got '2d')"),
])
def test_a_number_with_a_unit_says_what_it_got_and_what_to_write(tmp_path, body, said):
    # Campaign caps spell their windows 7d and 30d; a segment's days are numbers.
    path = write(tmp_path / "segs", "units", f"description: lapsed\n{body}\n")
    assert problems_of(tmp_path / "segs") == [f"{path}:2: {said}"]


def test_a_segment_name_that_is_not_lower_case_ascii_says_what_it_got_and_where_it_comes_from(tmp_path):
    folder = tmp_path / "segs"
    own = write(folder, "größe", "description: sizes\nlocale: de\n")
    named = write(folder, "dach", "name: DACH\nlocale: de\n")
    assert problems_of(folder) == [
        f"{named}:1: field 'name': 'DACH' must be lower-case letters (a-z), digits, '-' or '_'",
        f"{own}: field 'name': the file name 'größe' is the segment's name and must be lower-case letters (a-z), "
        "digits, '-' or '_': rename the file",
    ]


def test_a_key_written_twice_is_refused_where_it_repeats(tmp_path):
    # PyYAML keeps the last of two equal keys without a word: the 30 days the author reads first would not count.
    folder = tmp_path / "segs"
    inner = write(folder, "lapsed", "all:\n  - purchased: {within_days: 30, within_days: 60}\n  - locale: de\n")
    top = write(folder, "dach", "description: German speakers\nlocale: de\ndescription: DACH\n")
    assert problems_of(folder) == [
        f"{top}:3: field 'description': 'description' appears twice (also on line 1): only the last would count",
        f"{inner}:2: field 'all[0].purchased.within_days': 'within_days' appears twice (also on line 2): only the last would count",
    ]


def alias_bomb(levels: int = 18) -> str:
    """A YAML file of ``levels`` lines whose aliases double at each line: 2 ** levels conditions."""
    lines = ["any:", "  - &a1 {any: [{locale: {in: [nl]}}, {locale: {in: [de]}}]}"]
    lines += [f"  - &a{i} {{any: [*a{i - 1}, *a{i - 1}]}}" for i in range(2, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("body, said", [
    (alias_bomb(), "its aliases (*name) expand it to more than 100,000 values; write the values out"),
    ("any: &loop\n  - locale: nl\n  - any: *loop\n", "an alias (*name) refers to a value it is part of"),
])
def test_a_file_whose_aliases_expand_past_reason_is_refused_before_anything_walks_it(tmp_path, body, said):
    # Twenty lines of a pull request would otherwise hold a million conditions: minutes and gigabytes for CI.
    path = write(tmp_path / "segs", "bomb", body)
    started = time.perf_counter()
    assert problems_of(tmp_path / "segs") == [f"{path}: invalid YAML: {said}"]
    assert time.perf_counter() - started < 2


def test_file_level_problems_are_collected_over_files(tmp_path):
    folder = tmp_path / "segs"
    write(folder, "one", "name: two\nowns: X\n")
    write(folder, "many", "owns: X\nlocale: nl_NL\n")
    write(folder, "yaml", "owns: [X\n")
    write(folder, "list", "- owns: X\n")
    write(folder, "consent", "consent: {topic: promotions, opted_in: maybe}\n")
    write(folder, "empty", "# to do: who gets the spring sale\n")
    got = problems_of(folder)
    assert got == [
        f"{folder / 'consent.yml'}:1: field 'consent.opted_in': must be true or false",
        f"{folder / 'empty.yml'}:1: the file is empty: a segment file is a mapping with name, description and a condition",
        f"{folder / 'list.yml'}:1: a segment file must be a mapping with name, description and a condition",
        f"{folder / 'many.yml'}:2: one top-level condition expected, found owns, locale (wrap them in 'all:')",
        f"{folder / 'one.yml'}:1: field 'name': 'two' must match the file name 'one'",
        f"{folder / 'yaml.yml'}:2: invalid YAML: expected ',' or ']', but got '<stream end>'",
    ]


def test_unknown_reference_and_cycles(tmp_path):
    folder = tmp_path / "segs"
    write(folder, "a", "segment: b\n")
    write(folder, "b", "not: {segment: c}\n")
    write(folder, "c", "any: [{owns: X}, {segment: a}]\n")
    # Named at the reference that closes the loop, with its line, like any other problem.
    assert problems_of(folder) == [f"{folder / 'c.yml'}:1: field 'any[1].segment': segment references loop: a -> b -> c -> a"]
    write(folder, "c", "segment: nowhere\n")
    assert problems_of(folder) == [
        f"{folder / 'c.yml'}:1: field 'segment': unknown segment 'nowhere' (known: a, b, c)"]
    write(folder, "c", "segment: c\n")
    assert problems_of(folder) == [f"{folder / 'c.yml'}:1: field 'segment': segment references loop: c -> c"]
    # Every loop at once, not one per run.
    write(folder, "c", "segment: a\n")
    write(folder, "d", "description: self\nall:\n  - owns: X\n  - not: {segment: d}\n")
    assert problems_of(folder) == [
        f"{folder / 'c.yml'}:1: field 'segment': segment references loop: a -> b -> c -> a",
        f"{folder / 'd.yml'}:4: field 'all[1].not.segment': segment references loop: d -> d"]
    # A loop is reported with the other files' problems; a reference to a file that is itself
    # invalid is not also an unknown segment (the file exists: its own problem says what is wrong).
    write(folder, "d", "purchased: {within_days: 90d}\n")
    write(folder, "e", "any: [{segment: d}, {segment: f}]\n")
    assert problems_of(folder) == [
        f"{folder / 'd.yml'}:1: field 'purchased.within_days': must be a non-negative number (got '90d'): "
        "days are a plain number here, write 90",
        f"{folder / 'e.yml'}:1: field 'any[1].segment': unknown segment 'f' (known: a, b, c, e)",
        f"{folder / 'c.yml'}:1: field 'segment': segment references loop: a -> b -> c -> a"]


def test_broken_sql_names_the_file(store, tmp_path):
    folder = tmp_path / "segs"
    path = write(folder, "raw", "sql: SELECT nope FROM nowhere\n")
    seg = load_segments(folder)["raw"]
    with pytest.raises(ValidationError, match=f"segment query failed \\({path}\\)"):
        audience(store, [seg], T)


def test_sql_without_a_customer_id_column_says_the_column_it_needs(store, tmp_path):
    path = write(tmp_path / "segs", "ids", "sql: SELECT id FROM customers\n")
    with pytest.raises(ValidationError, match=f"segment query failed \\({path}\\)") as caught:
        audience(store, [load_segments(tmp_path / "segs")["ids"]], T)
    assert "a sql: condition must return a column named customer_id (e.g. SELECT id AS customer_id" in str(caught.value)


@pytest.mark.parametrize("statement,first", [("DELETE FROM customers", "DELETE"), ("drop table events", "DROP"),
                                             ("UPDATE customers SET email = 'x'", "UPDATE"),
                                             ("-- a comment first\nINSERT INTO customers (id) VALUES ('x')", "INSERT")])
def test_a_sql_condition_that_is_no_query_is_a_located_problem(tmp_path, statement, first):
    path = write(tmp_path / "segs", "evil", "sql: |\n" + textwrap.indent(statement, "  ") + "\n")
    assert problems_of(tmp_path / "segs") == [
        f"{path}:1: field 'sql': 'sql' takes a query (SELECT ... returning customer_id), not {first}: a segment only reads"]


#: What a SELECT can write through: a function of the database (PostgreSQL), or one the application gave SQLite.
_WRITES = {"delete": "DELETE FROM customers", "drop": "DROP TABLE events", "update": "UPDATE customers SET email = 'x@evil.example'"}


@pytest.fixture
def writing_functions(engine):
    """``evil_delete()``, ``evil_drop()`` and ``evil_update()``: functions a sql: condition can call, each writing."""
    from sqlalchemy import event, text
    from sqlalchemy.engine import Engine

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for name, statement in _WRITES.items():
                conn.execute(text(f"CREATE FUNCTION evil_{name}() RETURNS int LANGUAGE plpgsql VOLATILE "
                                  f"AS $$ BEGIN {statement}; RETURN 1; END $$"))
        yield
        with engine.begin() as conn:
            for name in _WRITES:
                conn.execute(text(f"DROP FUNCTION evil_{name}()"))
        return

    def register(dbapi_conn, _record):
        if hasattr(dbapi_conn, "create_function"):  # SQLite's
            for name, statement in _WRITES.items():
                dbapi_conn.create_function(f"evil_{name}", 0, lambda s=statement, c=dbapi_conn: c.execute(s).rowcount or 1)

    event.listen(Engine, "connect", register)  # every engine, the CLI's too
    engine.dispose()
    yield
    event.remove(Engine, "connect", register)


def _untouched(engine) -> tuple:
    from sqlalchemy import func, select

    with engine.connect() as conn:
        return (conn.execute(select(Customer.__table__.c.id, Customer.__table__.c.email).order_by("id")).all(),
                conn.execute(select(func.count()).select_from(Event.__table__)).scalar_one())


@pytest.mark.parametrize("write", sorted(_WRITES))
def test_a_sql_condition_that_writes_changes_nothing(store, writing_functions, project, tmp_path, write):
    """The database refuses the write (a read-only transaction, SQLite's query_only): a located error, exit 4."""
    before = _untouched(store)
    path = project.segments_dir / "evil.yml"
    path.write_text(f"sql: SELECT id AS customer_id FROM customers WHERE evil_{write}() = 1\n", encoding="utf-8")
    with pytest.raises(ValidationError, match=f"segment query failed \\({path}\\): ") as caught:
        audience(store, [load_segments(project)["evil"]], T)
    if store.dialect.name == "postgresql":
        assert "a sql: condition may only read, and the database refused a write (cannot execute" in str(caught.value)
    # Through the columnar copy too (a plan's way, when the segment has a behaviour condition).
    buyers = project.segments_dir / "evil-buyers.yml"
    buyers.write_text(f"all: [{{purchased: {{}}}}, {{sql: 'SELECT id AS customer_id FROM customers WHERE evil_{write}() = 1'}}]\n")
    conn, over = _over(store, tmp_path, T)
    try:
        with pytest.raises(ValidationError, match=f"segment query failed \\({buyers}\\): "):
            audience(conn, [load_segments(project)["evil-buyers"]], T, over)
    finally:
        conn.close()
    buyers.unlink()
    result = run(project, "show", "evil", "--as-of", "2026-06-15T12:00:00Z")
    assert result.exit_code == 4 and f"segment query failed ({path})" in result.output, result.output
    assert _untouched(store) == before
    # The same connection goes on writing where the caller writes (the read-only part was the segment's only).
    with store.begin() as conn:
        assert audience(conn, [load_segments(project)["bike-owners"]], T).tolist() == ["A", "B"]
        conn.execute(insert(Customer.__table__), [dict(id="E", email="e@example.com", first_name=None, last_name=None,
                                                       locale="en_GB", timezone="UTC", created_at=ago(1), attributes={})])


def test_a_sql_condition_can_write_nothing_that_a_select_locks_or_counts(store, tmp_path):
    """PostgreSQL: FOR UPDATE (row locks) and setval() (a sequence) are writes too; SQLite has neither."""
    if store.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's")
    from sqlalchemy import text

    folder = tmp_path / "segs"
    write(folder, "lock", "sql: SELECT id AS customer_id FROM customers FOR UPDATE\n")
    write(folder, "seq", "sql: SELECT id AS customer_id FROM customers WHERE setval('events_id_seq', 1) > 0\n")
    with store.connect() as conn:
        last = conn.execute(text("SELECT last_value FROM events_id_seq")).scalar_one()
    for name in ("lock", "seq"):
        with pytest.raises(ValidationError, match="may only read, and the database refused a write"):
            audience(store, [load_segments(folder)[name]], T)
    with store.connect() as conn:
        assert conn.execute(text("SELECT last_value FROM events_id_seq")).scalar_one() == last


def test_a_sql_condition_runs_within_a_time_limit_where_the_role_sets_none(store, tmp_path, monkeypatch):
    """PostgreSQL: relmail's own statement_timeout for a sql: condition (10 minutes), the role's where it sets one."""
    if store.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's")
    from relmail.segments import sql_guard

    monkeypatch.setattr(sql_guard, "SQL_TIMEOUT", timedelta(milliseconds=300))
    write(tmp_path / "segs", "slow", "sql: SELECT id AS customer_id FROM customers WHERE pg_sleep(5) IS NOT NULL\n")
    started = time.monotonic()
    # A timeout is the database's trouble, as for every statement (exit 13), never the file's.
    with pytest.raises(DatabaseUnavailable, match="a statement ran past the database's statement_timeout"):
        audience(store, [load_segments(tmp_path / "segs")["slow"]], T)
    assert time.monotonic() - started < 3


def test_audience_is_in_code_point_order_on_every_backend(engine):
    """PostgreSQL's locale collation would put 'a' before 'B'; NumPy's searchsorted needs code points."""
    odd = ["b", "B", "a", "\u00e9", "Z", "a-1", "A"]
    with engine.begin() as conn:
        conn.execute(insert(Customer.__table__), [
            dict(id=i, email=f"x{n}@example.com", first_name=None, last_name=None, locale="en_GB", timezone="UTC",
                 created_at=ago(10), attributes={}) for n, i in enumerate(odd)])
    everyone = Segment(name="everyone", description="", file=Path("everyone.yml"), root=None)
    assert audience(engine, [everyone], T).tolist() == sorted(odd) == ["A", "B", "Z", "a", "a-1", "b", "\u00e9"]


def test_naive_as_of_is_refused():
    seg = Segment(name="x", description="", file=Path("x.yml"), root=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        seg.select(datetime(2026, 1, 1))


# --------------------------------------------------------------------------- CLI


def run(project, *args):
    result = CliRunner().invoke(cli, ["--project", str(project.root), "segments", *args])
    return result


def test_cli_show_prints_size_and_sample(project, store):
    result = run(project, "show", "bike-owners", "--as-of", "2026-06-15T14:00:00+02:00", "--sample", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout == textwrap.dedent("""\
        Segment:  bike-owners (segments/bike-owners.yml)
                  Bought a city bike, e-bike or kids bike, ever
        As of:    2026-06-15T12:00:00Z
        Size:     2 of 3 customers (66.7%)
        Sample:   A B
        """)
    # The segment names a category this catalogue has no product of: it matches nobody, and show says so.
    assert result.stderr == ("Warning: segments/bike-owners.yml:3: field 'purchased.category': no product in the catalogue has "
                             "category 'kids-bikes' (a typo, or products not imported yet?)\n")
    out = json.loads(run(project, "show", "lapsed", "--as-of", "2026-06-15T12:00:00Z", "--sample", "1", "--json").output)
    assert out == {"name": "lapsed", "description": "No purchase in the last 180 days (customers who never bought included)",
                   "file": "segments/lapsed.yml", "as_of": "2026-06-15T12:00:00Z", "size": 2, "customers": 3,
                   "share": 0.6667, "sample": out["sample"], "warnings": []}
    assert len(out["sample"]) == 1 and out["sample"][0] in {"B", "C"}
    again = json.loads(run(project, "show", "lapsed", "--as-of", "2026-06-15T12:00:00Z", "--sample", "1", "--json").output)
    assert again["sample"] == out["sample"]  # same seed, same sample


def test_cli_show_sql_and_errors(project, store):
    result = run(project, "show", "lock-owners", "--as-of", "2026-06-15T12:00:00Z", "--sample", "0", "--sql")
    assert result.exit_code == 0, result.output
    assert "Sample:   (none)" in result.output
    assert "events.type = 'purchase' AND events.product_id IN ('LOCK-S1')" in result.output
    missing = run(project, "show", "nope")
    assert missing.exit_code == 8 and "no segment 'nope' (have: bike-owners, cyclists," in missing.output
    naive = run(project, "show", "everyone", "--as-of", "2026-06-15T12:00:00")
    assert naive.exit_code == 2 and "has no time zone" in naive.output
    (project.segments_dir / "broken.yml").write_text("owns: {}\n")
    broken = run(project, "list")
    assert broken.exit_code == 4 and "broken.yml:1: field 'owns': 'owns' needs 'product'" in broken.output


def test_cli_show_warns_of_each_category_and_product_no_catalogue_product_has(project, store):
    (project.segments_dir / "typo.yml").write_text(
        "name: typo\nany:\n  - purchased: {category: [e-bikes, e-bikez]}\n  - owns: [LOCK-S1, LOCK-S2]\n  - uses: {feature: app, product: EB-200, at_least: 1}\n")
    out = json.loads(run(project, "show", "typo", "--as-of", "2026-06-15T12:00:00Z", "--json").stdout)
    assert out["warnings"] == [
        "segments/typo.yml:3: field 'any[0].purchased.category': no product in the catalogue has category 'e-bikez' (a typo, or products not imported yet?)",
        "segments/typo.yml:4: field 'any[1].owns.product': no product in the catalogue has product 'LOCK-S2' (a typo, or products not imported yet?)",
    ]
    assert run(project, "show", "lock-owners", "--as-of", "2026-06-15T12:00:00Z").stderr == ""


def test_cli_show_warns_of_an_attribute_key_no_customer_has(project, store):
    # 'Land' is the CRM's column name; the import stored the attribute as 'loyalty_tier', 'birth_year', 'vip'.
    (project.segments_dir / "typo.yml").write_text(
        "name: typo\nany:\n  - attribute: {key: vip, equals: true}\n  - attribute: {key: Land, in: [DE, AT]}\n"
        "  - attribute: {key: loyalty_tier, exists: false}\n")
    out = json.loads(run(project, "show", "typo", "--as-of", "2026-06-15T12:00:00Z", "--json").stdout)
    assert out["size"] == 2 and out["warnings"] == [
        "segments/typo.yml:4: field 'any[1].attribute.key': no customer has attribute 'Land' (a typo, or customers "
        "not imported with it? relmail customers show ID lists a customer's attributes)"]


def test_cli_show_warns_of_a_topic_no_consent_record_or_email_event_names(project, store):
    # 'promotion' for 'promotions' tests nobody's consent; a topic only e-mail events name is known.
    with store.begin() as conn:
        conn.execute(insert(Event.__table__), [ev("A", "email_opened", 3, topic="product-tips")])
    (project.segments_dir / "typo.yml").write_text(
        "name: typo\nany:\n  - consent: {topic: promotion}\n  - opened_email: {within_days: 30, topic: product-tips}\n"
        "  - not: {clicked_email: {within_days: 30, topic: gift-guide}}\n  - consent: {topic: '*', opted_in: true}\n")
    out = json.loads(run(project, "show", "typo", "--as-of", "2026-06-15T12:00:00Z", "--json").stdout)
    assert out["warnings"] == [
        "segments/typo.yml:3: field 'any[0].consent.topic': topic 'promotion' is not declared under [topics] in "
        "relmail.toml and no consent record or e-mail names it; did you mean 'promotions'?",
        "segments/typo.yml:5: field 'any[2].not.clicked_email.topic': topic 'gift-guide' is not declared under [topics] "
        "in relmail.toml and no consent record or e-mail names it (a topic not used yet?)",
    ]


def test_cli_show_warns_of_a_message_or_campaign_no_campaign_file_or_email_event_names(project, store):
    # spring-launch and weekly-news are of campaigns deleted since: their e-mails name them. The example campaign
    # 'weekly' declares ebike-launch and lock-tip; a campaign file that does not load does not stop the look.
    (project.campaigns_dir / "broken.yml").write_text("messages: [{id: Broken!}]\n")
    (project.segments_dir / "followup.yml").write_text(textwrap.dedent("""\
        name: followup
        description: Sent spring-launch in the last 14 days, did not click it
        all:
          - received_email: {message: spring-launch, within_days: 14}
          - not: {clicked_email: {message: [ebike-lanch, weekly-news]}}
          - any:
              - opened_email: {campaign: weekly}
              - received_email: {campaign: [sping, spring-sale, autumn]}
              - received_email: {message: lock-tip, topic: promotion}
        """))
    result = run(project, "show", "followup", "--as-of", "2026-06-15T12:00:00Z")
    assert result.exit_code == 0, result.output
    assert result.stdout == textwrap.dedent("""\
        Segment:  followup (segments/followup.yml)
                  Sent spring-launch in the last 14 days, did not click it
        As of:    2026-06-15T12:00:00Z
        Size:     1 of 3 customers (33.3%)
        Sample:   C
        """)
    assert result.stderr.splitlines() == [
        "Warning: segments/followup.yml:5: field 'all[1].not.clicked_email.message': no campaign file declares message "
        "'ebike-lanch' and no e-mail event names it; did you mean 'ebike-launch'?",
        "Warning: segments/followup.yml:8: field 'all[2].any[1].received_email.campaign': no campaign file is named 'sping' "
        "and no e-mail event is of a run of it (a typo, or a campaign not sent yet?)",
        "Warning: segments/followup.yml:8: field 'all[2].any[1].received_email.campaign': no campaign file is named 'autumn' "
        "and no e-mail event is of a run of it (a typo, or a campaign not sent yet?)",
        "Warning: segments/followup.yml:9: field 'all[2].any[2].received_email.topic': topic 'promotion' is not declared "
        "under [topics] in relmail.toml and no consent record or e-mail names it; did you mean 'promotions'?",
    ]
    shown = run(project, "show", "followup", "--as-of", "2026-06-15T12:00:00Z", "--sql").stdout
    assert "events.type = 'email_sent'" in shown and "events.message_id IN ('spring-launch')" in shown
    # A campaign is its runs' ids' beginning, compared as text (no LIKE: '_' is no wildcard, and case counts).
    assert "substr(events.run_id, 1, 12) = 'spring-sale:'" in shown


def test_cli_show_looks_for_a_name_only_among_the_newest_events_and_knows_a_campaign_by_its_runs(project, store, monkeypatch):
    # The events table has no index on topic, message or run: a name that the campaign files, the runs and the
    # consent records do not know is looked for among the newest events (by id) only, never in all of them.
    monkeypatch.setattr("relmail.store.mailed.LATEST", 3)
    with store.begin() as conn:
        conn.execute(insert(Run.__table__), [dict(id="autumn:2026-W40", campaign="autumn", window="2026-W40", as_of=ago(250),
                                                  seed=0, status="planned", config_hash="", created_at=ago(250), updated_at=ago(250))])
        conn.execute(insert(Event.__table__), [ev("A", "email_opened", 1, message_id="recent-promo", run_id="recent:2026-W24",
                                                  topic="gift-guide"), ev("A", "view", 1, product_id="CB-1")])
    (project.segments_dir / "named.yml").write_text(textwrap.dedent("""\
        name: named
        any:
          - received_email: {message: spring-launch}
          - opened_email: {message: recent-promo, topic: gift-guide}
          - received_email: {campaign: [autumn, recent, newsletter]}
        """))
    out = json.loads(run(project, "show", "named", "--as-of", "2026-06-15T12:00:00Z", "--json").stdout)
    # spring-launch and newsletter's runs are in the store's first events only; 'autumn' has a run and no e-mail yet.
    assert out["warnings"] == [
        "segments/named.yml:3: field 'any[0].received_email.message': no campaign file declares message 'spring-launch' "
        "and no e-mail event among the newest 3 events names it; did you mean 'ebike-launch'?",
        "segments/named.yml:5: field 'any[2].received_email.campaign': no campaign file is named 'newsletter' "
        "and no e-mail event among the newest 3 events is of a run of it (a typo, or a campaign not sent yet?)",
    ]


def test_cli_show_knows_the_topics_relmail_toml_declares(project, store):
    # A topic declared under [topics] is known before any customer records consent for it or any e-mail of it
    # is sent, as the campaign check knows it: 'gift-guide' is new, 'promotion' a topic of its own.
    (project.segments_dir / "new.yml").write_text(
        "name: new\nany:\n  - consent: {topic: gift-guide}\n  - opened_email: {within_days: 30, topic: promotion}\n"
        "  - consent: {topic: promotoins}\n")
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text() + "".join(f'\n[topics.{t}]\nlabel = {{en = "{t}"}}\ndescription = {{en = "{t}"}}\n'
                                               for t in ("gift-guide", "promotion")))
    out = json.loads(run(project, "show", "new", "--as-of", "2026-06-15T12:00:00Z", "--json").stdout)
    # A misspelling of a declared topic is named as one.
    assert out["warnings"] == [
        "segments/new.yml:5: field 'any[2].consent.topic': topic 'promotoins' is not declared under [topics] in "
        "relmail.toml and no consent record or e-mail names it; did you mean 'promotions'?"]


def test_a_category_written_as_the_shop_names_it_is_shown_its_stored_id(project, store):
    # The Shopify mapping stores the type "E-Bikes" as the id "e-bikes"; a segment written with the shop's name finds nothing.
    (project.segments_dir / "named.yml").write_text("name: named\npurchased: {category: [E-Bikes, City Bikes]}\n")
    out = json.loads(run(project, "show", "named", "--as-of", "2026-06-15T12:00:00Z", "--json").stdout)
    assert out["warnings"] == [
        "segments/named.yml:2: field 'purchased.category': no product in the catalogue has category 'E-Bikes'; "
        "it has 'e-bikes' (categories are stored as ids)",
        "segments/named.yml:2: field 'purchased.category': no product in the catalogue has category 'City Bikes'; "
        "it has 'city-bikes' (categories are stored as ids)",
    ]


def test_cli_lists_every_problem_not_only_those_its_error_line_names(project):
    lines = "\n".join(f"  - purchased: {{within_days: {n}d}}" for n in range(1, 6))
    (project.segments_dir / "typos.yml").write_text(f"name: typos\nall:\n{lines}\n")
    result = run(project, "list")
    assert result.exit_code == 4
    error, *below = result.stderr.splitlines()
    assert error.startswith("Error: 5 problem(s) in segment files: ") and error.endswith(" (and 2 more)")
    assert below == [f"  {project.segments_dir / 'typos.yml'}:{n + 2}: field 'all[{n - 1}].purchased.within_days': must be a non-negative number "
                     f"(got '{n}d'): days are a plain number here, write {n}" for n in (4, 5)]


def test_cli_list_with_sizes(project, store):
    result = run(project, "list", "--sizes", "--as-of", "2026-06-15T12:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    sizes = {s["name"]: s["size"] for s in json.loads(result.output)["segments"]}
    assert sizes["everyone"] == 3 and sizes["engaged"] == 1 and sizes["cyclists"] == 2
    text = run(project, "list").output.splitlines()
    assert text[0].split() == ["name", "description"]
    assert any(line.startswith("lock-owners ") and "Own the SlimSlot S1 smart lock" in line for line in text)


# --------------------------------------------------------------------------- the parser never crashes

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from relmail.segments import COMBINATORS, CONDITIONS, SPECIAL  # noqa: E402

KEYS = sorted({k.rstrip("*") for keys in CONDITIONS.values() for k in keys}) + ["bogus"]
NAMES = list(COMBINATORS) + list(SPECIAL) + sorted(CONDITIONS) + ["bogus"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 400), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from(["EB-200", "e-bikes", "promotions", "x y", "", "*", "SELECT 1 AS customer_id"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS + NAMES), inner, max_size=3)),
    max_leaves=8,
)
conditions = st.recursive(
    st.dictionaries(st.sampled_from(NAMES), values, min_size=1, max_size=1),
    lambda inner: st.one_of(
        st.fixed_dictionaries({"all": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"any": st.lists(inner, max_size=3)}),
        st.fixed_dictionaries({"not": inner}),
    ),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(conditions, values))
# Found by CI: a day bound given to 'attribute' (an unknown key there) was still compared with the century limit.
@example(body={"attribute": {"at_least": None, "within_days": None}})
def test_any_structure_loads_or_fails_with_located_problems(tmp_path, body):
    import yaml

    folder = tmp_path / "segs"
    folder.mkdir(exist_ok=True)
    path = folder / "probe.yml"
    path.write_text(yaml.safe_dump(body if not isinstance(body, dict) else {"name": "probe", **body}), encoding="utf-8")
    try:
        segs = load_segments(folder)
    except ValidationError as exc:
        assert exc.problems and all(p.file == str(path) for p in exc.problems)
        return
    from sqlalchemy.dialects import postgresql, sqlite

    stmt = segs["probe"].select(T)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        assert "SELECT customers.id" in str(stmt.compile(dialect=dialect))


@pytest.mark.parametrize("body", [{"clicked_email": {"within_days": 739782}}, {"tenure_days": {"gt": 10 ** 9}}])
def test_a_look_back_beyond_any_date_is_a_located_problem(tmp_path, body):
    path = tmp_path / "far.yml"
    import yaml

    path.write_text(yaml.safe_dump({"name": "far", **body}), encoding="utf-8")
    with pytest.raises(ValidationError) as exc:
        load_segments(tmp_path)
    (problem,) = exc.value.problems
    assert problem.file == str(path) and "at most 36,525 days" in problem.message


def _over(engine, tmp_path, as_of):
    """A segment evaluator over the store's columnar copy (built here) as of ``as_of``."""
    from relmail.segments import evaluator
    from relmail.store import columnar

    root = columnar.location(engine, tmp_path)
    assert columnar.update(engine, root).action in ("built", "current", "appended", "patched")
    conn = engine.connect()
    copy = columnar.open_copy(root, conn)
    assert copy is not None
    return conn, evaluator(conn, copy, as_of)


@pytest.mark.parametrize("when", [0, 45, 390])
def test_the_columnar_copy_gives_every_condition_the_members_sql_gives(store, tmp_path, when):
    """Behaviour leaves from NumPy, the rest from SQL (both polarities under ``not``): the same members."""
    folder = tmp_path / "segs"
    for i, (condition, _) in enumerate(CASES):
        write(folder, f"c{i}", f"name: c{i}\n" + textwrap.dedent(condition))
        write(folder, f"n{i}", f"name: n{i}\nnot: {{segment: c{i}}}")
    write(folder, "mixed", "name: mixed\nany:\n  - all: [{segment: c22}, {not: {viewed: {within_days: 30}}}]\n"
                           "  - not: {any: [{segment: c30}, {owns: LOCK-S1}]}")
    registry = load_segments(folder)
    as_of = ago(when)
    conn, over = _over(store, tmp_path, as_of)
    try:
        for name, seg in sorted(registry.items()):
            want = audience(store, [seg], as_of).tolist()
            assert audience(conn, [seg], as_of, over).tolist() == want, (name, seg.root)
        if when == 0:
            # The expected members of the hand-built cases, through the copy.
            for i, (_, expected) in enumerate(CASES):
                got = set(audience(conn, [registry[f"c{i}"]], as_of, over).tolist())
                assert got == expected, (CASES[i][0], set(audience(store, [registry[f"c{i}"]], as_of).tolist()))
    finally:
        conn.close()
def test_attribute_conditions_on_different_keys_in_one_process_each_read_their_own_key(store, tmp_path):
    """One engine compiles both (SQLAlchemy caches the statement of the first): each still reads its own key."""
    folder = tmp_path / "segs"
    write(folder, "tier", "name: tier\nattribute: {key: loyalty_tier, equals: new}")
    write(folder, "born", "name: born\nattribute: {key: birth_year, equals: '1990'}")
    write(folder, "not-born", "name: not-born\nnot: {attribute: {key: birth_year, equals: '1990'}}")
    registry = load_segments(folder)
    for _ in range(2):
        assert audience(store, [registry["tier"]], T).tolist() == ["B"]
        assert audience(store, [registry["born"]], T).tolist() == ["B"]
        # A's birth year is a number, C has none: neither is the text '1990', so both are in the negation.
        assert audience(store, [registry["not-born"]], T).tolist() == ["A", "C"]


_LEAVES = [c for c, _ in CASES if c and "\n" not in c and not c.startswith(("all", "any", "not", "sql"))]


def _tree(draw, depth: int) -> str:
    """A condition in YAML flow style: a leaf, or all/any/not of smaller ones."""
    if depth == 0 or draw(st.booleans()):
        return "{" + draw(st.sampled_from(_LEAVES)) + "}"
    kind = draw(st.sampled_from(["all", "any", "not"]))
    if kind == "not":
        return "{not: " + _tree(draw, depth - 1) + "}"
    return "{" + kind + ": [" + ", ".join(_tree(draw, depth - 1) for _ in range(draw(st.integers(0, 3)))) + "]}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_combination_has_the_same_members_through_the_columnar_copy(store, tmp_path, data):
    """Random trees of every leaf kind under all/any/not, at a random time: NumPy and SQL give the same members."""
    tree = _tree(data.draw, 3)
    as_of = ago(data.draw(st.sampled_from([0, 4, 45, 200, 500])))
    folder = tmp_path / f"segs-{abs(hash(tree))}"
    # "or a purchase of a product nobody bought" changes no membership, and has the copy answer the tree.
    write(folder, "probe", "name: probe\nany: [" + tree + ", {purchased: {product: NONE}}]\n")
    seg = load_segments(folder)["probe"]
    conn, over = _over(store, tmp_path, as_of)
    try:
        assert audience(conn, [seg], as_of, over).tolist() == audience(store, [seg], as_of).tolist(), tree
    finally:
        conn.close()


def _spellings(identifier: str) -> list[str]:
    dashed = identifier.replace("_", "-")
    return [identifier, identifier.lower(), identifier.upper(), dashed, dashed.lower()]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_locale_in_any_spelling_is_the_locale_the_store_keeps(tmp_path, data):
    """de-DE, DE_de and de_DE are one locale: the condition compares the stored form, so each matches the same customers."""
    from babel import Locale
    from babel.localedata import locale_identifiers

    identifier = data.draw(st.sampled_from(sorted(locale_identifiers())))
    spelling = data.draw(st.sampled_from(_spellings(identifier)))
    folder = tmp_path / "segs"
    write(folder, "speakers", f"locale: ['{spelling}']\n")
    assert load_segments(folder)["speakers"].root.args == {"in": [str(Locale.parse(identifier))]}


def test_a_copy_without_the_runs_is_built_anew_before_a_campaign_is_read_from_it(store, tmp_path):
    """A copy an older relmail wrote (layout 1: no run column) is not read; the next update writes it with the runs."""
    from relmail.store import columnar

    root = columnar.location(store, tmp_path)
    assert columnar.update(store, root).action == "built"
    current = json.loads((root / "current.json").read_text())
    assert current["format"] == columnar.FORMAT
    for seg in current["segments"]:
        (root / seg / "run.npy").unlink()
        (root / seg / "run.words.npy").unlink()
    (root / "current.json").write_text(json.dumps({**current, "format": 1}))
    with store.connect() as conn:
        assert columnar.open_copy(root, conn) is None
    assert columnar.update(store, root).action == "built"
    # A layout this relmail does not know, even with every file of its own in place, is not read either.
    current = json.loads((root / "current.json").read_text())
    (root / "current.json").write_text(json.dumps({**current, "format": columnar.FORMAT + 1}))
    with store.connect() as conn:
        assert columnar.open_copy(root, conn) is None
    assert columnar.update(store, root).action == "built"
    conn, over = _over(store, tmp_path, T)
    try:
        write(tmp_path / "segs", "spring", "name: spring\nreceived_email: {campaign: spring, within_days: 10}\n")
        assert audience(conn, [load_segments(tmp_path / "segs")["spring"]], T, over).tolist() == ["B", "C"]
    finally:
        conn.close()


def test_a_campaign_is_the_runs_whose_ids_run_id_for_gives():
    from relmail.planning import run_id_for
    from relmail.segments.compile import run_prefix

    assert run_id_for("spring", "2026-W22").startswith(run_prefix("spring"))
    assert not run_id_for("spring-sale", "2026-W22").startswith(run_prefix("spring"))


@pytest.mark.parametrize("condition", ["received_email: {message: []}", "opened_email: {campaign: 3}",
                                       "clicked_email: {message: [spring-launch, {id: x}]}"])
def test_a_message_or_campaign_is_a_name_or_a_list_of_names(tmp_path, condition):
    folder = tmp_path / "segs"
    write(folder, "bad", condition + "\n")
    (problem,) = problems_of(folder)
    key = "message" if "message" in condition else "campaign"
    assert problem.endswith(f"bad.yml:1: field '{condition.split(':')[0]}.{key}': must be a name or a non-empty list of names")


# --------------------------------------------------------------------------- not: is everyone else

#: Leaves whose answer SQL's three-valued logic would leave unknown for some customers: an attribute
#: missing, JSON null or of another type, no sign-up date, a sql: query returning NULL among its ids.
_UNKNOWN_PRONE = [
    "attribute: {key: country, equals: DE}", "attribute: {key: country, in: [DE, NL]}",
    "attribute: {key: age, gt: 40}", "attribute: {key: age, lte: 40}", "attribute: {key: age, in: [30, 49]}",
    "attribute: {key: age, equals: 30}", "attribute: {key: vip, equals: true}", "attribute: {key: vip, equals: false}",
    "attribute: {key: country, exists: true}", "attribute: {key: age, gt: 20, lt: 60}",
    "tenure_days: {gt: 100}", "tenure_days: {lt: 100}", "locale: de", "consent: {topic: promotions}",
    "sql: SELECT NULL AS customer_id UNION ALL SELECT id FROM customers WHERE locale = 'de_DE'",
    "purchased: {within_days: 30}", "owns: EB-200",
]
_VALUES = st.one_of(st.sampled_from(["DE", "NL", "", "de"]), st.sampled_from([30, 49, 30.5, -1]), st.booleans(), st.none())


def _customers(draw) -> list[dict]:
    """1-6 customers with random attributes (keys missing, JSON null, texts, numbers, booleans) and sign-up dates."""
    out = []
    for i in range(draw(st.integers(1, 6))):
        attributes = draw(st.dictionaries(st.sampled_from(["country", "age", "vip"]), _VALUES, max_size=3))
        created = draw(st.sampled_from([None, 400, 50, 5, -3]))  # days before T; -3 is after T: nobody's member
        out.append(dict(id=f"K{i}", email=f"k{i}@example.com", first_name=None, last_name=None,
                        locale=draw(st.sampled_from(["de_DE", "de", "nl_NL", "en_GB"])), timezone="UTC",
                        created_at=None if created is None else ago(created), attributes=attributes))
    return out


def _two_valued_tree(draw, depth: int) -> str:
    if depth == 0 or draw(st.booleans()):
        return "{" + draw(st.sampled_from(_UNKNOWN_PRONE)) + "}"
    kind = draw(st.sampled_from(["all", "any", "not"]))
    if kind == "not":
        return "{not: " + _two_valued_tree(draw, depth - 1) + "}"
    return "{" + kind + ": [" + ", ".join(_two_valued_tree(draw, depth - 1) for _ in range(draw(st.integers(0, 3)))) + "]}"


@pytest.fixture
def both_backends(tmp_path, request, sqlite_template):
    """An engine per backend run here (SQLite; PostgreSQL unless unreachable or left out), each an empty store."""
    import shutil

    from tests.conftest import BACKENDS, _truncate

    from relmail.store.db import make_engine

    path = tmp_path / "two.db"
    shutil.copy(sqlite_template, path)
    urls = [f"sqlite:///{path}"]
    if "postgresql" in BACKENDS:
        try:
            urls.append(request.getfixturevalue("pg_template_url"))
            _truncate(urls[-1])
        except pytest.skip.Exception:
            pass  # PostgreSQL not reachable (a failure instead under RELMAIL_TEST_REQUIRE_POSTGRES=1)
    engines = [make_engine(url) for url in urls]
    yield engines
    for engine in engines:
        engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@example(data=None)  # the marketer's case, drawn below when data is None
def test_a_condition_and_its_not_split_every_customer_on_every_backend(both_backends, tmp_path, data):
    """X and not X: disjoint, together every customer who exists as of T; SQL on each backend and the copy agree.

    A customer without the attribute, with another type of value, without a sign-up date or among a
    sql: query's NULLs does not match X, so she is in not X: "everyone else", as a marketer reads it.
    """
    from sqlalchemy import delete

    from relmail.segments import evaluator
    from relmail.store import columnar

    if data is None:
        people = [dict(id=i, email=f"{i}@example.com", first_name=None, last_name=None, locale="de_DE", timezone="UTC",
                       created_at=ago(10), attributes=attributes)
                  for i, attributes in (("DE", {"country": "DE"}), ("NL", {"country": "NL"}), ("NONE", {}),
                                        ("NULL", {"country": None}), ("NUMBER", {"country": 49}))]
        tree, bought = "{attribute: {key: country, equals: DE}}", set()
    else:
        people = _customers(data.draw)
        tree = _two_valued_tree(data.draw, 3)
        bought = data.draw(st.sets(st.sampled_from([p["id"] for p in people])))
    folder = tmp_path / f"segs-{abs(hash((tree, str(people))))}"
    write(folder, "x", f"name: x\nall: [{tree}]\n")
    write(folder, "not-x", f"name: not-x\nnot: {tree}\n")
    registry = load_segments(folder)
    exists = sorted(p["id"] for p in people if p["created_at"] is None or p["created_at"] <= T)
    answers = []
    for n, engine in enumerate(both_backends):
        with engine.begin() as conn:
            for table in (Event, Preference, Customer, Product):
                conn.execute(delete(table.__table__))
            conn.execute(insert(Product.__table__), [dict(id="EB-200", name="E-bike", category="e-bikes", price=1.0,
                                                          url=None, features=[])])
            conn.execute(insert(Customer.__table__), people)
            if bought:
                conn.execute(insert(Event.__table__), [ev(c, "purchase", 10, product_id="EB-200") for c in sorted(bought)])
            conn.execute(insert(Preference.__table__), [
                dict(customer_id=p["id"], topic="promotions", opted_in=False, max_per_week=None, updated_at=ago(1),
                     source="import") for p in people[::2]])
        x, not_x = (set(audience(engine, [registry[name]], T).tolist()) for name in ("x", "not-x"))
        assert not x & not_x, (tree, people)
        assert sorted(x | not_x) == exists, (tree, people)
        answers.append(x)
        # The columnar copy (NumPy for the behaviour leaves, SQL for the rest) gives the same split.
        root = tmp_path / f"copy-{n}-{abs(hash(folder))}"
        columnar.update(engine, root)
        with engine.connect() as conn:
            copy = columnar.open_copy(root, conn)
            if copy is None:  # no events: a plan reads SQL only
                continue
            over = evaluator(conn, copy, T)
            assert set(audience(conn, [registry["x"]], T, over).tolist()) == x, tree
            assert set(audience(conn, [registry["not-x"]], T, over).tolist()) == not_x, tree
    assert all(a == answers[0] for a in answers), (tree, people)
    if data is None:
        assert answers[0] == {"DE"}
