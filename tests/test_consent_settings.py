"""[consent]: what a global opt-in means for a topic; the plan warning when a consent rule takes a whole audience."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from relmail.campaigns import parse_campaign
from relmail.errors import ConfigError
from relmail.planning.consent_warning import consent_warnings
from relmail.planning.partition import MessageSummary
from relmail.project import ConsentSettings, Project, init_project
from relmail.rules import RULES
from relmail.store.models import Event, Preference

CAMPAIGN = parse_campaign("""
messages:
  - {id: tips, template: t, topic: book-tips, segments: [everyone], offer: promotion}
  - {id: partner, template: t, topic: partner-offers, segments: [everyone], offer: promotion}
""", "c.yml")
T = datetime(2026, 11, 1, tzinfo=UTC)


def test_consent_settings_say_which_topics_a_global_opt_in_covers(tmp_path):
    project = init_project(tmp_path / "shop")
    assert project.settings.consent == ConsentSettings(True, ())  # the example shop: the defaults
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text() + '\n[consent]\nexplicit_topics = ["partner-offers"]\n')
    consent = Project.load(project.root).settings.consent
    assert consent.global_counts_for("book-tips") and not consent.global_counts_for("partner-offers")
    assert not consent.global_counts_for("*") and not ConsentSettings(False).global_counts_for("book-tips")


@pytest.mark.parametrize("section, message", [
    ("global_opt_in_covers_topics = 'yes'", "key 'global_opt_in_covers_topics' must be a bool"),
    ("explicit_topics = 'partners'", "key 'explicit_topics' must be a list"),
    ('explicit_topics = ["*"]', "explicit_topics must be a list of topic names"),
    ("global_opt_in = true", "unknown key 'global_opt_in'"),
])
def test_a_bad_consent_section_names_the_file_and_key(tmp_path, section, message):
    project = init_project(tmp_path / "shop")
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text() + f"\n[consent]\n{section}\n")
    with pytest.raises(ConfigError, match=r"relmail.toml \[consent\]") as caught:
        Project.load(project.root)
    assert message in str(caught.value)


def test_no_consent_explains_whether_the_global_opt_in_counted():
    rule = RULES["NO_CONSENT"]
    base = {"topic": "partner-offers", "consent_topic": None, "opt_in_required": 1.0}
    assert "needs its own opt-in (a global opt-in does not count for it: [consent]" in rule.explain({**base, "global_opt_in_counts": 0.0})
    assert rule.explain({**base, "global_opt_in_counts": 1.0}) == (
        "no consent on record for topic 'partner-offers' and no global opt-in; this campaign needs an opt-in")


def summaries(*rows: tuple[int, dict[str, int]]) -> list[MessageSummary]:
    return [MessageSummary(m.id, m.topic, m.offer, audience=n, reasons=reasons) for m, (n, reasons) in zip(CAMPAIGN.messages, rows)]


def prefs(engine, rows):
    with engine.begin() as conn:
        conn.execute(insert(Preference.__table__), [
            {"customer_id": c, "topic": t, "opted_in": o, "max_per_week": None, "updated_at": T, "source": "test"} for c, t, o in rows])


def test_a_warning_names_the_likely_cause_and_only_when_almost_everyone_is_suppressed(engine):
    prefs(engine, [(f"C{i}", "*", True) for i in range(226)])
    # No consent at all for the topic: 226 opted in globally, and [consent] does not let that count.
    (warning,) = consent_warnings(engine, CAMPAIGN, summaries((226, {"NO_CONSENT": 226}), (226, {"NO_CONSENT": 20})),
                                  ConsentSettings(False), ())
    assert warning.text == ("tips: 226 of 226 customers suppressed by NO_CONSENT: no customer has consent for topic "
                            "'book-tips'; 226 opted in globally: see [consent]")
    assert warning.as_dict()["rule"] == "NO_CONSENT"
    explicit = consent_warnings(engine, CAMPAIGN, summaries((10, {}), (226, {"NO_CONSENT": 210})),
                                ConsentSettings(True, ("partner-offers",)), ())
    assert [w.text.split(": ", 2)[2] for w in explicit] == [
        "no customer has consent for topic 'partner-offers'; 226 opted in globally, but [consent] explicit_topics asks an "
        "opt-in of its own for 'partner-offers'"]
    # Below the threshold: no warning.
    assert consent_warnings(engine, CAMPAIGN, summaries((226, {"NO_CONSENT": 200}), (226, {})), ConsentSettings(False), ()) == []


def test_an_audience_opted_out_of_everything_or_without_any_record_gets_its_cause(engine):
    assert consent_warnings(engine, CAMPAIGN, summaries((5, {"NO_CONSENT": 5}), (5, {})), ConsentSettings(), ())[0].text.endswith(
        "no consent is on record at all: import preferences, or the customers' consent column (--map shopify)")
    prefs(engine, [(f"C{i}", "*", False) for i in range(12)])
    (warning,) = consent_warnings(engine, CAMPAIGN, summaries((12, {"UNSUBSCRIBED": 12, "NO_CONSENT": 3}), (0, {})),
                                  ConsentSettings(), ())
    assert warning.text == ("tips: 12 of 12 customers suppressed by UNSUBSCRIBED: 12 customers are opted out of all e-mail "
                            "(topic '*'): check that the consent column was imported the right way round")


def test_a_topic_no_consent_record_names_is_called_a_likely_typo(engine):
    # relmail plan spring --dry-run with 'topic: promotion' where customers opted in to 'promotions'.
    prefs(engine, [(f"C{i}", "*", True) for i in range(96)] + [(f"D{i}", "promotions", True) for i in range(300)]
          + [(f"E{i}", "newsletter", False) for i in range(5)])
    camp = parse_campaign("messages:\n  - {id: sale, template: t, topic: promotion, segments: [everyone], offer: promotion}\n", "c.yml")
    (warning,) = consent_warnings(engine, camp, summaries((615, {"NO_CONSENT": 590})), ConsentSettings(), ())
    assert warning.text == ("sale: 590 of 615 customers suppressed by NO_CONSENT: no consent record names topic 'promotion' "
                            "(the store's topics: newsletter, promotions); did you mean 'promotions'?")


def test_a_declared_topic_without_consent_records_is_not_called_a_misspelling_and_a_mailed_one_still_is(engine):
    # Declared under [topics], 'promotion' is a topic of its own. An e-mail sent with it does not make it one: the plan
    # refuses it all the same, and the warning says what the refusal says.
    prefs(engine, [(f"C{i}", "*", True) for i in range(96)] + [(f"D{i}", "promotions", True) for i in range(300)])
    camp = parse_campaign("messages:\n  - {id: sale, template: t, topic: promotion, segments: [everyone], offer: promotion}\n", "c.yml")
    said = "no consent record names topic 'promotion' (the store's topics: promotions)"
    (declared,) = consent_warnings(engine, camp, summaries((615, {"NO_CONSENT": 590})), ConsentSettings(), {"promotion"})
    assert declared.text.endswith(said)
    with engine.begin() as conn:
        conn.execute(insert(Event.__table__), [{"customer_id": "C1", "type": "email_sent", "occurred_at": T,
                                                "message_id": "sale", "run_id": "r", "topic": "promotion"}])
    (mailed,) = consent_warnings(engine, camp, summaries((615, {"NO_CONSENT": 590})), ConsentSettings(), ())
    assert mailed.text.endswith(said + "; did you mean 'promotions'?")
