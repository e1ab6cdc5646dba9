"""Campaign files and windows: validation errors name file, line and key; the demo campaign."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.campaigns import load_campaign, parse_campaign
from relmail.errors import NotFound, ValidationError
from relmail.windows import parse_time, parse_window

GOOD = """\
title: Weekly
policy:
  min_relevance: 0.3
  frequency_cap: {7d: 2}
  holdout_share: 0.1
  rules: {FATIGUE: false}
messages:
  - id: launch
    template: ebike_launch
    topic: promotions
    segment: cyclists
    products: [EB-200]
    offer: promotion
    value: 40
    policy: {min_relevance: 0.5, rules: {OWNS_PRODUCT: false}}
  - id: tip
    template: usage_tip
    topic: product-tips
    segments: [lock-owners]
    products: [LOCK-S1]
    feature: share-access
    offer: usage-tip
"""


def test_a_campaign_parses_and_messages_inherit_and_override_the_policy():
    c = parse_campaign(GOOD, "campaigns/weekly.yml")
    assert c.name == "weekly" and c.title == "Weekly" and c.message_ids == ("launch", "tip")
    launch, tip = c.messages
    assert launch.segments == ("cyclists",) and launch.value == 40
    assert launch.policy.min_relevance == 0.5 and tip.policy.min_relevance == 0.3
    assert launch.policy.holdout_share == tip.policy.holdout_share == 0.1
    assert launch.policy.frequency_cap == {"7d": 2}
    assert launch.policy.rules == {"FATIGUE": False, "OWNS_PRODUCT": False} and tip.policy.rules == {"FATIGUE": False}
    assert c.run_seed("2026-W48") == c.run_seed("2026-W48") != c.run_seed("2026-W49")


@pytest.mark.parametrize("change, where", [
    (("offer: promotion", "offer: promo"), "campaigns/weekly.yml:13: field 'messages.0.offer'"),
    (("holdout_share: 0.1", "holdout_share: 1.5"), "campaigns/weekly.yml:5: field 'policy.holdout_share'"),
    (("frequency_cap: {7d: 2}", "frequency_cap: {14d: 2}"), "campaigns/weekly.yml:4: field 'policy.frequency_cap.14d'"),
    (("    value: 40\n", "    value: 40\n    colour: red\n"), "campaigns/weekly.yml:15: field 'messages.0.colour'"),
    (("rules: {FATIGUE: false}", "rules: {HARD_BOUNCE: false}"), "campaigns/weekly.yml:6: field 'policy.rules.HARD_BOUNCE': 'HARD_BOUNCE' is a hard rule"),
    (("rules: {FATIGUE: false}", "rules: {NOPE: true}"), "campaigns/weekly.yml:6: field 'policy.rules.NOPE': unknown rule 'NOPE'"),
    (("  - id: tip", "  - id: launch"), "campaigns/weekly.yml:16: field 'messages.1.id': duplicate message id 'launch'"),
    (("    feature: share-access\n", ""), "campaigns/weekly.yml:16: field 'messages.1'"),
    (("  - id: launch", "  - id: Launch!"), "campaigns/weekly.yml:8: field 'messages.0.id'"),
    (("frequency_cap: {7d: 2}", "frequency_cap: {7d: 5, 30d: 2}"),
     "campaigns/weekly.yml:4: field 'policy.frequency_cap': the 7d cap (5) is above the 30d cap (2)"),
    (("rules: {OWNS_PRODUCT: false}}", "topic_frequency_cap: {7d: 3, 30d: 1}}"),
     "campaigns/weekly.yml:15: field 'messages.0.policy.topic_frequency_cap': the 7d cap (3) is above the 30d cap (1)"),
])
def test_errors_name_the_file_line_and_key(change, where):
    with pytest.raises(ValidationError) as err:
        parse_campaign(GOOD.replace(*change), "campaigns/weekly.yml")
    assert where in str(err.value)


@pytest.mark.parametrize("change, said", [
    (("offer: promotion", "offer: promo"),
     "field 'messages.0.offer': Input should be 'promotion', 'new-customers-only', 'loyalty', 'service' or 'usage-tip' (got 'promo')"),
    (("min_relevance: 0.3", "min_relevance: 0,3"), "(got '0,3')"),  # a decimal comma, typed by a German or Dutch hand
    (("  - id: launch", "  - id: Launch"), "field 'messages.0.id': use lower-case letters, digits, '-' and '_' "
                                            "(it names feature columns and links) (got 'Launch')"),
])
def test_a_bad_value_is_quoted_in_its_error_without_the_validators_jargon(change, said):
    with pytest.raises(ValidationError) as err:
        parse_campaign(GOOD.replace(*change), "campaigns/weekly.yml")
    assert said in str(err.value) and "Value error" not in str(err.value)


@pytest.mark.parametrize("change, said", [
    (("  frequency_cap: {7d: 2}", "  frequncy_cap: {7d: 2}"),
     "campaigns/weekly.yml:4: field 'policy.frequncy_cap': unknown key 'frequncy_cap' (allowed: consent, contact_cost, "),
    (("  frequency_cap: {7d: 2}", "  frequncy_cap: {7d: 2}"), "; did you mean 'frequency_cap'?"),
    (("policy: {min_relevance: 0.5, rules: {OWNS_PRODUCT: false}}", "policy: {min_relevance: 0.5, frequency_cap: {7d: 1}}"),
     "field 'messages.0.policy.frequency_cap': unknown key 'frequency_cap' (allowed: consent, contact_cost, fatigue_threshold, "
     "holdout_share, irritation_cost, min_relevance, model, model_outcome, recent_complaint_days, rules, topic_frequency_cap); "
     "'frequency_cap' applies to the whole campaign: set it in the campaign's policy"),
    (("    value: 40\n", "    valeu: 40\n"), "field 'messages.0.valeu': unknown key 'valeu' (allowed: categories, data, feature, "),
])
def test_a_misspelt_or_misplaced_key_names_the_keys_allowed_there(change, said):
    with pytest.raises(ValidationError) as err:
        parse_campaign(GOOD.replace(*change), "campaigns/weekly.yml")
    text = "; ".join(str(p) for p in err.value.problems)
    assert said in text and "Extra inputs" not in text


def test_broken_yaml_and_non_mappings_are_clear_errors():
    with pytest.raises(ValidationError, match=r"c.yml:2.*invalid YAML|invalid YAML"):
        parse_campaign("messages:\n  - id: [unclosed\n", "c.yml")
    with pytest.raises(ValidationError, match="a campaign file is a mapping"):
        parse_campaign("- just a list", "c.yml")


def test_load_campaign_finds_files_and_names_the_known_ones(project):
    assert load_campaign(project, "weekly").message_ids == ("ebike-launch", "lock-tip", "welcome-offer", "service-reminder", "newsletter")
    with pytest.raises(NotFound, match="have: weekly"):
        load_campaign(project, "monthly")


def test_windows_are_midnights_in_the_project_time_zone():
    w = parse_window("2026-W48", "Europe/Amsterdam")
    assert w.start == datetime(2026, 11, 22, 23, tzinfo=UTC) and w.end == datetime(2026, 11, 29, 23, tzinfo=UTC)
    assert parse_window("2026-11", "UTC").end == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_window("2026-12-31", "UTC").end == datetime(2027, 1, 1, tzinfo=UTC)
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    assert parse_window("this-week", "Europe/Amsterdam", now=now).key == "2026-W48"
    assert w.default_as_of(now) == now and w.default_as_of(datetime(2027, 1, 1, tzinfo=UTC)) == w.end
    assert w.default_as_of(datetime(2026, 11, 20, 13, tzinfo=UTC)) == w.start  # the Friday before: its Monday
    for bad in ("2026-W54", "2026-13", "2026-02-30", "next week"):
        with pytest.raises(ValidationError, match="window"):
            parse_window(bad)
    with pytest.raises(ValidationError, match="no time zone"):
        parse_time("2026-11-23T09:00:00")


@settings(max_examples=100, deadline=None)
@given(st.dates(min_value=datetime(2000, 1, 1).date(), max_value=datetime(2090, 12, 31).date()),
       st.sampled_from(["UTC", "Europe/Amsterdam", "Europe/London", "America/New_York"]))
def test_property_every_moment_lies_in_its_own_week_window(day, tz):
    year, week, _ = day.isocalendar()
    w = parse_window(f"{year}-W{week:02d}", tz)
    from zoneinfo import ZoneInfo

    noon = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(tz))
    assert w.contains(noon.astimezone(UTC))
    assert 167 <= (w.end - w.start).total_seconds() / 3600 <= 169  # a week, give or take a DST hour


def test_a_per_locale_subject_keyed_by_something_that_is_no_locale_is_refused_with_file_line_and_field():
    ok = GOOD.replace("    template: usage_tip\n", '    template: usage_tip\n    subject: {de: "Tipp", pl-PL: "Porada", default: "Tip"}\n')
    assert parse_campaign(ok, "campaigns/weekly.yml").message("tip").subject == {"de": "Tipp", "pl-PL": "Porada", "default": "Tip"}
    # 'po' for Polish: no customer's locale would ever pick it, so every Polish customer would silently get the default.
    bad = GOOD.replace("    template: usage_tip\n", '    template: usage_tip\n    subject:\n      de: "Tipp"\n      po: "Porada"\n')
    with pytest.raises(ValidationError, match=r"campaigns/weekly.yml:20: field 'messages.1.subject.po': 'po' is not a locale"):
        parse_campaign(bad, "campaigns/weekly.yml")


@settings(max_examples=60, deadline=None)
@given(week=st.integers(0, 50), month=st.integers(0, 50), key=st.sampled_from(["frequency_cap", "topic_frequency_cap"]))
def test_a_7_day_cap_above_the_30_day_cap_is_refused(week, month, key):
    """Any 7 days lie within 30: a 7d cap above the 30d cap would never apply, so it is a mistake, not a policy."""
    text = GOOD.replace("frequency_cap: {7d: 2}", f"{key}: {{7d: {week}, 30d: {month}}}")
    if week <= month:
        assert getattr(parse_campaign(text, "c.yml").policy, key) == {"7d": week, "30d": month}
        return
    with pytest.raises(ValidationError) as err:
        parse_campaign(text, "c.yml")
    assert f"c.yml:4: field 'policy.{key}': the 7d cap ({week}) is above the 30d cap ({month})" in str(err.value)


_LINES = GOOD.splitlines()


@settings(max_examples=60, deadline=None)
@given(at=st.sampled_from([i for i, line in enumerate(_LINES) if ":" in line and not line.endswith(":")]))
def test_a_key_written_twice_is_refused_at_its_second_line(at):
    """A block copied and half edited keeps a key twice; YAML keeps the last silently, a campaign file refuses it."""
    line = _LINES[at]
    key = line.strip().removeprefix("- ").split(":")[0]
    indent = line[: len(line) - len(line.lstrip())] + ("  " if line.lstrip().startswith("- ") else "")
    text = "\n".join([*_LINES[: at + 1], f"{indent}{key}: {line.split(':', 1)[1].strip()}", *_LINES[at + 1:]]) + "\n"
    with pytest.raises(ValidationError) as err:
        parse_campaign(text, "c.yml")
    (problem,) = err.value.problems
    assert (problem.line, problem.message) == (at + 2, f"'{key}' appears twice (also on line {at + 1}): only the last would count")
    assert problem.field.endswith(key)


def test_a_campaign_whose_aliases_expand_past_reason_is_refused():
    bomb = "".join(f"x{i}: &x{i} [*x{i - 1}, *x{i - 1}]\n" for i in range(1, 19)).replace("[*x0, *x0]", "[a, b]")
    with pytest.raises(ValidationError) as err:
        parse_campaign(GOOD + bomb, "c.yml")
    assert [p.message for p in err.value.problems] == ["its aliases (*name) expand it to more than 100,000 values; write the values out"]


def test_a_message_built_on_another_with_a_yaml_merge_key_is_no_repeated_key():
    # "<<: *launch" then "id: reminder": YAML's own way to share a block, not a key written twice.
    text = GOOD.replace("  - id: launch\n", "  - &launch\n    id: launch\n") + (
        "  - <<: *launch\n"
        "    id: reminder\n"
        "    value: 20\n"
        "    bad: key\n")
    with pytest.raises(ValidationError) as err:
        parse_campaign(text, "c.yml")
    # The only problem is the unknown key, on its line: the merge neither repeats keys nor moves lines.
    assert [(p.line, p.field) for p in err.value.problems] == [(len(text.splitlines()), "messages.2.bad")]
    campaign = parse_campaign(text.replace("    bad: key\n", ""), "c.yml")
    reminder = campaign.messages[2]
    assert (reminder.id, reminder.template, reminder.topic, reminder.value) == ("reminder", "ebike_launch", "promotions", 20)


def test_a_per_locale_subject_in_any_spelling_of_a_locale_reaches_that_locales_customers():
    """``pl_pl``, ``DE`` or ``de-AT`` as a subject key mean the locale, as a customer's locale is read."""
    from relmail.render import MessageSpec

    spec = MessageSpec(id="tip", template="tip", topic="tips", subject={"pl_pl": "Porada", "DE": "Tipp", "de-AT": "Tipp (AT)", "default": "Tip"})
    assert spec.subject_for(("pl_PL", "pl"), "en_GB") == "Porada"
    assert spec.subject_for(("de_DE", "de"), "en_GB") == "Tipp"
    assert spec.subject_for(("de_AT", "de"), "en_GB") == "Tipp (AT)"
    assert spec.subject_for(("fr_FR", "fr"), "en_GB") == "Tip"
