"""A campaign topic that looks like a misspelling of a known one is refused before a plan decides anything.

'promotion' for 'promotions' otherwise mails every customer who opted out of
'promotions' but opted in globally: each decision looks right on its own.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from relmail.cli import cli
from relmail.store.models import Event

SHOPIFY = Path(__file__).resolve().parent.parent / "examples" / "shopify"
CAMPAIGN = """title: Spring
policy: {consent: opt-in, min_relevance: 0}
messages:
  - id: sale
    template: newsletter
    topic: TOPIC
    segments: [everyone]
    offer: promotion
"""


@pytest.fixture
def shop(tmp_path, db_url, monkeypatch):
    """A Shopify shop whose customers opted in globally; Anna then opted out of 'promotions'."""
    monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url)
    runner = CliRunner()
    root = tmp_path / "shop"
    assert runner.invoke(cli, ["init", str(root), "--blank", "--name", "Shop", "--domain", "shop.example"]).exit_code == 0
    for kind in ("customers", "products"):
        result = runner.invoke(cli, ["-p", str(root), "import", kind, str(SHOPIFY / f"{kind}_export.csv"), "--map", "shopify"])
        assert result.exit_code == 0, result.output
    prefs = tmp_path / "prefs.csv"
    prefs.write_text("customer_id,topic,opted_in,updated_at\n7302117000001,promotions,false,2026-10-01T00:00:00Z\n")
    assert runner.invoke(cli, ["-p", str(root), "import", "preferences", str(prefs)]).exit_code == 0
    return root


def plan(root: Path, topic: str):
    (root / "campaigns" / "spring.yml").write_text(CAMPAIGN.replace("TOPIC", topic))
    return CliRunner().invoke(cli, ["-p", str(root), "plan", "spring", "--window", "2026-W50", "--as-of",
                                    "2026-12-07T09:00:00Z", "--dry-run", "--render-sample", "0", "--json"])


def test_a_misspelt_topic_is_refused_with_file_line_and_field(shop):
    result = plan(shop, "promotion")
    assert result.exit_code == 4, result.output
    error = json.loads(result.stdout)
    assert error["error"] == "campaign 'spring' names topics that look misspelt"
    (problem,) = error["problems"]
    assert (Path(problem["file"]).name, problem["line"], problem["field"]) == ("spring.yml", 6, "messages.0.topic")
    assert problem["message"] == ("topic 'promotion' is not declared under [topics] in relmail.toml and no consent record "
                                  "names it; did you mean 'promotions'? The opt-outs of 'promotions' would not "
                                  "apply to this message: write 'promotions', or declare 'promotion' under [topics] in relmail.toml")
    # The preview of one customer's decisions refuses it the same way.
    why = CliRunner().invoke(cli, ["-p", str(shop), "why", "7302117000001", "--campaign", "spring", "--window", "2026-W50"])
    assert why.exit_code == 4 and "messages.0.topic" in why.output


@pytest.mark.parametrize("topic", ["promotions", "gift-guide"])
def test_a_known_topic_or_one_close_to_none_is_planned(shop, topic):
    # 'promotions' has a consent record; 'gift-guide' is a new topic, like no known one.
    result = plan(shop, topic)
    assert result.exit_code == 0, result.output
    decided = json.loads(result.stdout)
    assert decided["totals"]["audience"] > 0


def test_a_topic_declared_in_relmail_toml_is_known(shop):
    toml = shop / "relmail.toml"
    toml.write_text(toml.read_text() + '\n[topics.promotion]\nlabel = {en = "Single offers"}\n'
                    'description = {en = "One offer at a time."}\n')
    assert plan(shop, "promotion").exit_code == 0


def test_a_misspelt_topic_is_refused_even_when_earlier_e_mails_carry_it(shop, engine):
    # An events import (or an earlier send) with the typo must not let it pass: the opt-outs of 'promotions'
    # would still not apply. Declaring 'promotion' under [topics] is how a shop says it is a topic of its own.
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__), [{"customer_id": "7302117000001", "type": "email_sent", "topic": "promotion",
                                                "occurred_at": datetime(2026, 11, 2, tzinfo=UTC), "message_id": "sale", "run_id": "r"}])
    assert plan(shop, "promotion").exit_code == 4


def test_the_plan_never_reads_the_e_mails_topics(shop, monkeypatch):
    # The events table has no index on topic: neither a new topic nor a misspelt one makes the plan read it.
    from relmail.store.mailed import MailedNames

    looked: list[set[str]] = []

    def spy(self, conditions):
        looked.append(set(conditions))
        return set()

    monkeypatch.setattr(MailedNames, "which", spy)
    assert plan(shop, "gift-guide").exit_code == 0 and looked == []
    assert plan(shop, "promotion").exit_code == 4 and looked == []
