"""Window names against a fixed clock: which week ``auto`` and ``next-week`` mean on each weekday."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from relmail.cli import cli
from relmail.errors import ConfigError, ValidationError
from relmail.windows import current_time, days_start, local_day, parse_window, resolve_window

TZ = "Europe/Amsterdam"
#: Monday 2026-11-30 09:00 in Amsterdam (ISO week 2026-W49).
MONDAY = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize("days", range(7))
def test_auto_is_the_week_containing_now_and_next_week_the_one_after_on_every_weekday(days):
    now = MONDAY + timedelta(days=days)
    assert resolve_window("auto", TZ, now=now).key == "2026-W49"
    assert parse_window("this-week", TZ, now=now).key == "2026-W49"
    nxt = parse_window("next-week", TZ, now=now)
    assert nxt.key == "2026-W50" and nxt.start == datetime(2026, 12, 6, 23, 0, tzinfo=UTC)


def test_the_week_turns_at_midnight_in_the_project_zone_not_utc():
    sunday_late = datetime(2026, 12, 6, 22, 59, tzinfo=UTC)  # 23:59 Sunday in Amsterdam
    assert parse_window("next-week", TZ, now=sunday_late).key == "2026-W50"
    assert parse_window("next-week", TZ, now=sunday_late + timedelta(minutes=1)).key == "2026-W51"


def test_relative_days_and_months_cross_year_ends():
    new_years_eve = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    assert parse_window("tomorrow", TZ, now=new_years_eve).key == "2027-01-01"
    assert parse_window("next-month", TZ, now=new_years_eve).key == "2027-01"
    assert parse_window("this-month", TZ, now=new_years_eve).key == "2026-12"
    assert parse_window("next-week", TZ, now=new_years_eve).key == "2027-W01"
    assert resolve_window("auto", TZ, cadence="monthly", now=new_years_eve).key == "2026-12"


def test_relmail_now_fixes_the_clock_and_a_bad_value_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("RELMAIL_NOW", "2026-12-04T07:00:00+01:00")
    assert current_time() == datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    assert parse_window("next-week", TZ).key == "2026-W50"
    assert parse_window("2026-W49", TZ).default_as_of() == datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
    monkeypatch.setenv("RELMAIL_NOW", "2026-12-04 07:00")
    with pytest.raises(ConfigError, match=r"\$RELMAIL_NOW: '2026-12-04 07:00' has no time zone"):
        current_time()


def test_an_unknown_window_name_lists_the_relative_names():
    with pytest.raises(ValidationError, match="next-week / today / tomorrow / this-month / next-month"):
        parse_window("last-week", TZ)


def test_cli_plan_next_week_on_a_fixed_friday(project, monkeypatch):
    monkeypatch.setenv("RELMAIL_NOW", "2026-12-04T15:00:00Z")  # a Friday
    out = CliRunner().invoke(cli, ["-p", str(project.root), "plan", "weekly", "--window", "next-week", "--dry-run", "--json"])
    assert out.exit_code == 0, out.output
    # Decided as of the window's start (Monday 00:00 in Amsterdam), when its e-mails can go out at the earliest.
    assert '"run": "weekly:2026-W50"' in out.output and '"as_of": "2026-12-06T23:00:00+00:00"' in out.output


@pytest.mark.parametrize("as_of, days, tz, start", [
    # Monday 06:00 in Amsterdam: the 7 days are last Tuesday to this Monday, whatever the hour.
    (datetime(2026, 11, 30, 5, 0, tzinfo=UTC), 7, TZ, datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
    (datetime(2026, 11, 30, 22, 59, tzinfo=UTC), 7, TZ, datetime(2026, 11, 23, 23, 0, tzinfo=UTC)),
    (datetime(2026, 11, 30, 23, 0, tzinfo=UTC), 7, TZ, datetime(2026, 11, 24, 23, 0, tzinfo=UTC)),  # Tuesday has begun
    (datetime(2026, 11, 30, 5, 0, tzinfo=UTC), 1, TZ, datetime(2026, 11, 29, 23, 0, tzinfo=UTC)),
    # A week over the spring clock change: its first midnight is in winter time, an hour further from UTC's.
    (datetime(2026, 3, 30, 4, 0, tzinfo=UTC), 7, TZ, datetime(2026, 3, 23, 23, 0, tzinfo=UTC)),
    (datetime(2026, 3, 30, 4, 0, tzinfo=UTC), 30, TZ, datetime(2026, 2, 28, 23, 0, tzinfo=UTC)),
    # Santiago skips its midnight on 6 September 2026 (00:00 becomes 01:00): that day starts at 01:00.
    (datetime(2026, 9, 12, 15, 0, tzinfo=UTC), 7, "America/Santiago", datetime(2026, 9, 6, 4, 0, tzinfo=UTC)),
    (datetime(2026, 11, 30, 5, 0, tzinfo=UTC), 7, "UTC", datetime(2026, 11, 24, 0, 0, tzinfo=UTC)),
])
def test_days_start_is_the_first_local_midnight_of_the_calendar_days(as_of, days, tz, start):
    assert days_start(as_of, days, tz) == start
    assert local_day(start, tz) == local_day(as_of, tz) - timedelta(days=days - 1)
    assert local_day(start - timedelta(microseconds=1), tz) == local_day(as_of, tz) - timedelta(days=days)


def test_days_start_refuses_an_empty_span_and_an_unknown_zone():
    with pytest.raises(ValueError):
        days_start(MONDAY, 0, TZ)
    with pytest.raises(ConfigError, match="unknown time zone"):
        days_start(MONDAY, 7, "Europe/Amsterdm")
