"""Every message about a misspelt name suggests the one meant in the same words: "; did you mean 'x'?".

A campaign key, a segment condition or key, a setting of relmail.toml and a
consent topic each reach a person through the CLI; one phrase for all of them
is one phrase to learn and to look for in a CI log.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from relmail.cli import cli
from relmail.errors import did_you_mean, likely
from relmail.store.models import Preference
from relmail.store.topics import CLOSE, unknown_topics

PLAN = ["plan", "weekly", "--window", "2026-W50", "--as-of", "2026-12-07T09:00:00Z", "--dry-run", "--render-sample", "0"]


def relmail(project, *args):
    return CliRunner().invoke(cli, ["--project", str(project.root), *args])


def test_the_likely_name_is_the_closest_one_close_enough():
    assert likely("frequncy_cap", ["topic_frequency_cap", "frequency_cap", "consent"]) == "frequency_cap"
    assert likely("zzz", ["frequency_cap"]) is None
    # A stricter cutoff leaves a name alone that the default would take for a misspelling.
    assert likely("promo", ["promotions"]) == "promotions" and likely("promo", ["promotions"], CLOSE) is None
    assert did_you_mean("frequency_cap") == "; did you mean 'frequency_cap'?" and did_you_mean(None) == ""


def test_a_misspelt_campaign_key_through_the_cli(project):
    weekly = project.campaigns_dir / "weekly.yml"
    weekly.write_text(weekly.read_text().replace("  frequency_cap:", "  frequncy_cap:"))
    result = relmail(project, *PLAN)
    assert result.exit_code == 4
    assert "unknown key 'frequncy_cap' (allowed: " in result.stderr
    assert "; did you mean 'frequency_cap'?" in result.stderr


def test_a_misspelt_segment_condition_through_the_cli(project):
    (project.segments_dir / "hikers.yml").write_text("name: hikers\npurchase: {within_days: 60}\n")
    result = relmail(project, "segments", "list")
    assert result.exit_code == 4
    assert "unknown condition 'purchase' (known: " in result.stderr and "; did you mean 'purchased'?" in result.stderr


def test_a_misspelt_setting_of_relmail_toml_through_the_cli(project):
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace('adapter = "file"', 'adapter = "smtp"')
                    + '\n[delivery.smtp]\nhost = "smtp.example"\nretry_dealy = 60\n')
    result = relmail(project, "adapters", "list")
    assert result.exit_code != 0
    assert "[delivery.smtp]: unknown key 'retry_dealy' (known: " in result.stderr
    assert "; did you mean 'retry_delay'?" in result.stderr


def test_a_misspelt_topic_through_the_cli_in_a_campaign_and_in_a_segment(project, engine):
    with engine.begin() as conn:
        conn.execute(insert(Preference.__table__), [{"customer_id": "A", "topic": "newsletters-weekly", "opted_in": True,
                                                     "updated_at": datetime(2026, 11, 1, tzinfo=UTC), "source": "test"}])
    weekly = project.campaigns_dir / "weekly.yml"
    weekly.write_text(weekly.read_text().replace("topic: newsletter\n", "topic: newsletters-weekyl\n"))
    planned = relmail(project, *PLAN, "--json")
    assert planned.exit_code == 4
    (problem,) = json.loads(planned.stdout)["problems"]
    assert "no consent record names it; did you mean 'newsletters-weekly'? " in problem["message"]
    (project.segments_dir / "readers.yml").write_text("name: readers\nconsent: {topic: newsletters-weekyl}\n")
    shown = json.loads(relmail(project, "segments", "show", "readers", "--json").stdout)
    assert shown["warnings"][0].endswith("no consent record or e-mail names it; did you mean 'newsletters-weekly'?")


@pytest.mark.parametrize("named, found", [
    ({"promotions", "*"}, {}),                     # declared under [topics] (and '*' is every topic)
    ({"promotion"}, {"promotion": "promotions"}),  # a letter dropped
    ({"gift-guide"}, {"gift-guide": None}),        # close to none: a new topic
])
def test_unknown_topics_asks_the_declarations_the_consent_records_and_the_emails(engine, named, found):
    assert unknown_topics(engine, named, {"promotions", "newsletter"}) == found
