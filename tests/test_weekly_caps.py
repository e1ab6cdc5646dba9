"""A weekly schedule under the frequency caps: their windows are calendar days in the project's time zone.

A run planned every Monday at 06:00 (Amsterdam, the example project's zone)
whose e-mails left at 06:02 finds last Monday's e-mail on day D-7: outside
a ``7d`` window (D-6..D), whatever the hour, and across a clock change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from relmail.planning.run import plan
from relmail.sending import send
from relmail.store.models import Decision, Event, Run
from relmail.windows import ENV_NOW
from test_plan import insert_shop

AMSTERDAM = ZoneInfo("Europe/Amsterdam")

#: A weekly newsletter with the default caps (``frequency_cap`` {7d: 3, 30d: 10}, ``topic_frequency_cap`` {7d: 1, 30d: 5}).
NEWSLETTER = """\
title: Weekly newsletter
policy:
  min_relevance: 0
messages:
  - id: news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: loyalty
    repeat_after_days: 7
"""

#: The same kind of e-mail from another campaign: its sends count against the newsletter's topic cap.
OTHER = NEWSLETTER.replace("Weekly newsletter", "Extra issue").replace("id: news", "id: extra")


def _local(*args) -> datetime:
    return datetime(*args, tzinfo=AMSTERDAM)


@pytest.fixture
def shop(project, engine):
    (project.campaigns_dir / "news.yml").write_text(NEWSLETTER, encoding="utf-8")
    (project.campaigns_dir / "extra.yml").write_text(OTHER, encoding="utf-8")
    customer = {"id": "C1", "email": "c1@example.org", "first_name": "Anna", "last_name": None, "locale": "en_GB",
                "timezone": "Europe/Amsterdam", "created_at": _local(2025, 1, 1), "attributes": {}}
    prefs = [{"customer_id": "C1", "topic": "newsletter", "opted_in": True, "max_per_week": None,
              "updated_at": _local(2025, 1, 1), "source": "import"}]
    looked = {"event_id": None, "customer_id": "C1", "type": "view", "occurred_at": _local(2025, 6, 1), "product_id": "EB-200",
              "feature": None, "value": None, "message_id": None, "run_id": None, "topic": None}
    insert_shop(engine, [customer], prefs, [looked])
    return project


def _window(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def test_weekly_issues_planned_at_the_same_hour_all_go_out(shop, engine, monkeypatch):
    """Mondays 06:00, each issue sent at 06:02: every plan finds last week's issue on day D-7, even across the spring
    clock change (30 March 2026, when the gap is 6 days, 22 hours and 58 minutes), and the fifth and sixth find
    four issues in their 30 days (D-28 to D-7), under the default 30-day cap."""
    mondays = [_local(2026, 3, 16, 6, 0) + timedelta(weeks=k) for k in range(6)]
    for monday in mondays:
        result = plan(shop, engine, "news", _window(monday), as_of=monday)
        assert result.decisions.action.tolist() == ["send"], (monday, result.decisions.reasons.tolist())
        monkeypatch.setenv(ENV_NOW, (monday + timedelta(minutes=2)).isoformat())
        assert send(shop, engine, "news", _window(monday)).outcomes["accepted"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Event.__table__).where(Event.__table__.c.type == "email_sent")).scalar_one() == 6


@pytest.mark.parametrize("sent, action", [(_local(2026, 3, 24, 23, 30), "send"), (_local(2026, 3, 25, 0, 30), "suppress")])
def test_an_e_mail_of_the_day_before_the_window_does_not_count_and_one_of_its_first_day_does(shop, engine, monkeypatch, sent,
                                                                                           action):
    """Sent at 23:30 on D-7 it is outside the ``7d`` window of a plan at 00:30 on D; at 00:30 on D-6, inside."""
    monkeypatch.setenv(ENV_NOW, sent.isoformat())
    assert plan(shop, engine, "extra", _window(sent), as_of=sent - timedelta(minutes=1)).decisions.action.tolist() == ["send"]
    assert send(shop, engine, "extra", _window(sent)).outcomes["accepted"] == 1
    as_of = _local(2026, 3, 31, 0, 30)
    result = plan(shop, engine, "news", _window(as_of), as_of=as_of, dry_run=True)
    assert result.decisions.action.tolist() == [action], result.decisions.reasons.tolist()
    if action == "suppress":
        assert result.decisions.reasons.tolist() == ["TOPIC_FREQUENCY_CAP"]


@pytest.mark.parametrize("planned, action", [
    (_local(2026, 3, 23, 23, 59), "send"),  # D-7
    (_local(2026, 3, 24, 0, 0), "suppress"),  # D-6
    (_local(2026, 3, 30, 22, 0), "suppress"),  # later on the plan's own day
    (_local(2026, 4, 5, 23, 59), "suppress"),  # D+6: planned ahead, delivered after this plan's e-mails
    (_local(2026, 4, 6, 0, 0), "send"),  # D+7
])
def test_pending_sends_of_other_runs_count_by_the_day_their_run_was_planned(shop, engine, planned, action):
    """Written but not sent yet, another run's e-mail counts in the ``7d`` window of a plan on day D when that run's
    as-of day is less than 7 days from D, either side, at any hour."""
    plan(shop, engine, "extra", _window(planned), as_of=planned)
    as_of = _local(2026, 3, 30, 6, 0)
    result = plan(shop, engine, "news", _window(as_of), as_of=as_of, dry_run=True)
    assert result.decisions.action.tolist() == [action], result.decisions.reasons.tolist()


@pytest.mark.parametrize("ahead, action", [(44, "suppress"), (45, "send")])
def test_a_recurring_messages_pending_issue_counts_as_far_as_its_repeat_after_days_reaches(shop, engine, ahead, action):
    """``repeat_after_days: 45``: an issue another run planned 44 days ahead (not sent yet) counts as already sent,
    though it lies beyond the caps' 30 days; 45 days ahead it no longer does."""
    monthly = NEWSLETTER.replace("repeat_after_days: 7", "repeat_after_days: 45").replace(
        "min_relevance: 0", "min_relevance: 0\n  topic_frequency_cap: {}")
    (shop.campaigns_dir / "news.yml").write_text(monthly, encoding="utf-8")
    as_of = _local(2026, 3, 2, 6, 0)
    later = as_of + timedelta(days=ahead)
    plan(shop, engine, "news", _window(later), as_of=later)
    result = plan(shop, engine, "news", _window(as_of), as_of=as_of, dry_run=True)
    assert result.decisions.action.tolist() == [action], result.decisions.reasons.tolist()
    if action == "suppress":
        assert result.decisions.reasons.tolist() == ["ALREADY_SENT"]


def test_next_weeks_issue_planned_on_friday_is_decided_as_of_its_monday(shop, engine, monkeypatch):
    """Friday's preview (and a plan written ahead) of next week: this Monday's issue lies outside next Monday's
    7 days, so next week's issue is a send, as Monday's own plan will decide. Planned as of the Friday, the caps and
    repeat_after_days counted this Monday's issue and held next week's back from everyone."""
    monday = _local(2026, 3, 23, 6, 0)
    plan(shop, engine, "news", _window(monday), as_of=monday)
    monkeypatch.setenv(ENV_NOW, (monday + timedelta(minutes=2)).isoformat())
    assert send(shop, engine, "news", _window(monday)).outcomes["accepted"] == 1

    monkeypatch.setenv(ENV_NOW, _local(2026, 3, 27, 14, 0).isoformat())
    preview = plan(shop, engine, "news", "next-week", dry_run=True)
    assert preview.as_of == _local(2026, 3, 30, 0, 0)
    assert preview.decisions.action.tolist() == ["send"], preview.decisions.reasons.tolist()
    plan(shop, engine, "news", "next-week")  # written ahead, sent by Monday's scheduled start
    monkeypatch.setenv(ENV_NOW, _local(2026, 3, 30, 7, 0).isoformat())
    assert send(shop, engine, "news", "auto").outcomes["accepted"] == 1


def test_next_weeks_window_sent_on_friday_is_planned_as_of_the_moment_it_goes_out(shop, engine, monkeypatch):
    """Sending a window before it starts sends now: the caps count this Monday's issue, four days before."""
    monday = _local(2026, 3, 23, 6, 0)
    plan(shop, engine, "news", _window(monday), as_of=monday)
    monkeypatch.setenv(ENV_NOW, (monday + timedelta(minutes=2)).isoformat())
    assert send(shop, engine, "news", _window(monday)).outcomes["accepted"] == 1
    monkeypatch.setenv(ENV_NOW, _local(2026, 3, 27, 14, 0).isoformat())
    assert send(shop, engine, "news", "next-week").outcomes["accepted"] == 0
    with engine.connect() as conn:
        as_of, reasons = conn.execute(select(Run.__table__.c.as_of, Decision.__table__.c.reasons).where(
            Run.__table__.c.id == "news:2026-W14", Decision.__table__.c.run_id == Run.__table__.c.id)).one()
    as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)  # SQLite gives back naive UTC
    assert as_of == _local(2026, 3, 27, 14, 0) and "TOPIC_FREQUENCY_CAP" in reasons
