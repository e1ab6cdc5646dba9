"""Scheduled runs: `--window auto` in the project's time zone, and the run lock in the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select
from tests.sendkit import AS_OF, CAMPAIGN, WINDOW, build

from relmail.campaigns import parse_campaign
from relmail.cli import cli
from relmail.errors import ConfigError, Conflict, LockHeld, ValidationError
from relmail.sending.run import send
from relmail.store import locks
from relmail.store.models import Delivery, RunLock
from relmail.windows import resolve_window

UTC = UTC
RUN = "sendtest:2026-W48"


# --- --window auto ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "now, tz, cadence, key",
    [
        # Sunday 23:30 in Amsterdam is still ISO week 48 there ...
        (datetime(2026, 11, 29, 22, 30, tzinfo=UTC), "Europe/Amsterdam", "weekly", "2026-W48"),
        # ... and Monday 00:30 in Amsterdam is week 49, while UTC is still on Sunday (week 48).
        (datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "Europe/Amsterdam", "weekly", "2026-W49"),
        (datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "UTC", "weekly", "2026-W48"),
        (datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "Europe/Amsterdam", "daily", "2026-11-30"),
        (datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "UTC", "daily", "2026-11-29"),
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "Europe/Amsterdam", "monthly", "2026-12"),
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "UTC", "monthly", "2026-11"),
        # ISO week 53 of 2026 reaches into January 2027.
        (datetime(2027, 1, 2, 12, 0, tzinfo=UTC), "Europe/Amsterdam", "weekly", "2026-W53"),
    ],
)
def test_auto_resolves_to_the_current_window_in_the_project_time_zone(now, tz, cadence, key):
    win = resolve_window("auto", tz, cadence=cadence, now=now)
    assert win.key == key
    assert win.contains(now)


def test_auto_uses_the_campaign_schedule_and_cadence_overrides_it():
    camp = parse_campaign(CAMPAIGN.replace("title: Send test", "title: Send test\nschedule: daily"), "c.yml")
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert camp.schedule == "daily"
    assert resolve_window("auto", "Europe/Amsterdam", campaign=camp, now=now).key == "2026-11-25"
    assert resolve_window("auto", "Europe/Amsterdam", campaign=camp, cadence="monthly", now=now).key == "2026-11"
    assert parse_campaign(CAMPAIGN, "c.yml").schedule == "weekly"


def test_an_unknown_schedule_names_the_file_line_and_key():
    with pytest.raises(ValidationError) as err:
        parse_campaign("title: x\nschedule: hourly\n" + CAMPAIGN.split("\n", 1)[1], "campaigns/x.yml")
    assert "campaigns/x.yml:2: field 'schedule'" in str(err.value)


def test_cadence_with_an_explicit_window_is_refused():
    with pytest.raises(ValidationError, match="--cadence applies to --window auto only"):
        resolve_window("2026-W48", "UTC", cadence="daily")


def test_send_window_auto_sends_the_current_week(project):
    engine = build(project)
    # Monday 00:30 in Amsterdam: the send belongs to the new week there.
    result = send(project, engine, "sendtest", "auto", now=lambda: datetime(2026, 11, 22, 23, 30, tzinfo=UTC))
    assert result.run_id == RUN and result.window.key == WINDOW
    assert result.done["accepted"] > 50


def test_cli_plan_window_auto_prints_the_resolved_window(project):
    build(project)
    out = CliRunner().invoke(cli, ["-p", str(project.root), "plan", "sendtest", "--window", "auto", "--cadence", "daily",
                                   "--dry-run", "--render-sample", "0"])
    assert out.exit_code == 0, out.output
    today = datetime.now(UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Amsterdam")).date().isoformat()
    assert f"Window auto -> {today} (" in out.output
    assert f"Run sendtest:{today}" in out.output


# --- the run lock -------------------------------------------------------------------------------

def _rows(engine):
    with engine.connect() as conn:
        return conn.execute(select(RunLock.__table__)).mappings().all()


def test_a_second_acquire_is_refused_naming_the_holder_and_since_when(engine):
    with locks.acquire(engine, RUN) as first:
        with pytest.raises(LockHeld) as err:
            locks.acquire(engine, RUN)
        assert first.holder in str(err.value) and " since " in str(err.value)
        assert [r["token"] for r in _rows(engine)] == [first.token]
        # Another run is not affected.
        locks.acquire(engine, "sendtest:2026-W49", heartbeat=False).release()
    assert _rows(engine) == []
    locks.acquire(engine, RUN, heartbeat=False).release()


def test_a_second_sender_is_refused_while_the_first_holds_the_lock(project):
    engine = build(project)
    holding, done = threading.Event(), threading.Event()

    def first_sender():
        with locks.acquire(engine, RUN):
            holding.set()
            done.wait(30)

    t = threading.Thread(target=first_sender)
    t.start()
    try:
        assert holding.wait(30)
        with pytest.raises(LockHeld, match=r"run sendtest:2026-W48 is being worked on by .+:\d+ since"):
            send(project, engine, "sendtest", WINDOW, now=lambda: AS_OF)
        out = CliRunner().invoke(cli, ["-p", str(project.root), "send", "sendtest", "--window", WINDOW])
        assert out.exit_code == 17 and f":{os.getpid()} since" in out.output
        out = CliRunner().invoke(cli, ["-p", str(project.root), "plan", "sendtest", "--window", WINDOW])
        assert out.exit_code == 17, out.output
        # Nothing was planned or sent by the refused commands; a dry run is not blocked.
        with engine.connect() as conn:
            assert conn.execute(select(Delivery.__table__.c.id)).first() is None
        assert send(project, engine, "sendtest", WINDOW, dry_run=True, now=lambda: AS_OF).done["rendered"] > 50
    finally:
        done.set()
        t.join()
    assert send(project, engine, "sendtest", WINDOW, now=lambda: AS_OF).done["accepted"] > 50
    assert _rows(engine) == []
    # With the lock free and the window planned, a second plan meets what is done already: exit 9, not 17.
    again = CliRunner().invoke(cli, ["-p", str(project.root), "plan", "sendtest", "--window", WINDOW])
    assert again.exit_code == 9 and "planned already" in again.output
    assert issubclass(LockHeld, Conflict)


def _stale_row(engine, *, host="another-host-id", expires=None, pid=1):
    t = datetime.now(UTC) - timedelta(hours=1)
    with engine.begin() as conn:
        conn.execute(insert(RunLock.__table__).values(
            key=RUN, holder=f"worker-7:{pid}", token="old", host_id=host, pid=pid, pid_start=None,
            acquired_at=t, heartbeat_at=t, expires_at=expires or t + timedelta(minutes=10)))


def test_an_expired_lock_from_another_host_is_taken_over(engine):
    _stale_row(engine)
    lock = locks.acquire(engine, RUN, heartbeat=False)
    assert "worker-7:1 stopped refreshing it" in lock.taken_over
    assert [r["token"] for r in _rows(engine)] == [lock.token]
    lock.release()


def test_a_live_lock_from_another_host_is_respected_until_it_expires(engine):
    _stale_row(engine, expires=datetime.now(UTC) + timedelta(minutes=5))
    with pytest.raises(LockHeld, match="worker-7:1 since"):
        locks.acquire(engine, RUN)
    later = lambda: datetime.now(UTC) + timedelta(minutes=6)  # noqa: E731
    assert locks.acquire(engine, RUN, heartbeat=False, now=later).taken_over


def test_a_holder_that_stalled_past_the_timeout_loses_the_lock_and_stops(engine):
    stalled = locks.acquire(engine, RUN, heartbeat=False, timeout=timedelta(seconds=1),
                            now=lambda: datetime.now(UTC) - timedelta(minutes=1))
    # Another host's view: the lock expired a minute ago. (Same host: the holder is alive, so wait.)
    other = locks.acquire(engine, RUN, heartbeat=False, now=lambda: datetime.now(UTC))
    assert other.taken_over
    with pytest.raises(LockHeld, match="taken over by another process"):
        stalled.refresh()
    stalled.release()  # must not delete the new holder's lock
    assert [r["token"] for r in _rows(engine)] == [other.token]
    other.refresh()
    other.release()


def test_check_in_writes_at_most_every_interval_and_still_notices_a_takeover(engine):
    lock = locks.acquire(engine, RUN, heartbeat=False, timeout=timedelta(minutes=10))
    written = _rows(engine)[0]["heartbeat_at"]
    lock.check_in(seconds=60)  # refreshed (acquired) just now: no write
    assert _rows(engine)[0]["heartbeat_at"] == written
    lock.check_in(seconds=0)
    assert _rows(engine)[0]["heartbeat_at"] > written
    # Another process took the lock over after this one stalled; the next due check-in stops it.
    with engine.begin() as conn:
        conn.execute(RunLock.__table__.update().values(token="theirs"))
    with pytest.raises(LockHeld, match="taken over by another process"):
        lock.check_in(seconds=0)
    with pytest.raises(LockHeld):
        lock.check_in(seconds=60)  # once lost, every check-in says so


def test_the_heartbeat_keeps_extending_the_lock(engine):
    with locks.acquire(engine, RUN, timeout=timedelta(seconds=0.4)) as lock:
        first = _rows(engine)[0]["expires_at"]
        threading.Event().wait(0.5)
        assert _rows(engine)[0]["expires_at"] > first
        lock.refresh()


def test_a_killed_holder_on_this_host_is_taken_over_at_once(db_url, engine):
    code = ("import sys, time; from relmail.store.db import make_engine; from relmail.store import locks; "
            "locks.acquire(make_engine(sys.argv[1]), sys.argv[2]); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, db_url, RUN], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f":{proc.pid} since"):
            locks.acquire(engine, RUN)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = locks.acquire(engine, RUN, heartbeat=False)
    assert lock.taken_over == f"its holder {_rows(engine)[0]['holder'].split(':')[0]}:{proc.pid} is no longer running on this host"
    lock.release()


def test_a_reused_pid_is_not_mistaken_for_the_holder(engine):
    # Our own PID, but a different start time: the holder that wrote it is gone.
    _stale_row(engine, host=locks.host_id(), pid=os.getpid(), expires=datetime.now(UTC) + timedelta(minutes=5))
    with engine.begin() as conn:
        conn.execute(RunLock.__table__.update().values(pid_start=(locks.process_start(os.getpid()) or 0) + 1))
    if locks.process_start(os.getpid()) is None:
        pytest.skip("no /proc: process start times are unknown here")
    assert "no longer running" in locks.acquire(engine, RUN, heartbeat=False).taken_over


def test_racing_takeovers_of_a_stale_lock_have_exactly_one_winner(engine):
    _stale_row(engine)
    results: list[object] = []
    barrier = threading.Barrier(4)

    def contender():
        barrier.wait()
        try:
            results.append(locks.acquire(engine, RUN, heartbeat=False))
        except LockHeld as exc:
            results.append(exc)

    threads = [threading.Thread(target=contender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, locks.HeldLock)]
    assert len(winners) == 1 and len(results) == 4
    assert [r["token"] for r in _rows(engine)] == [winners[0].token]


def test_lock_timeout_is_read_from_relmail_toml(project):
    assert locks.timeout_for(project) == timedelta(minutes=10)
    toml = Path(project.root, "relmail.toml")
    toml.write_text(toml.read_text() + "\n[schedule]\nlock_timeout_minutes = 2.5\n")
    from relmail.project import Project

    assert locks.timeout_for(Project.load(project.root)) == timedelta(minutes=2.5)
    toml.write_text(toml.read_text().replace("2.5", "0"))
    with pytest.raises(ConfigError, match="lock_timeout_minutes"):
        locks.timeout_for(Project.load(project.root))


@pytest.mark.parametrize("codes, exit_code, alert", [
    ([0], 0, False),
    ([17], 0, False),       # the previous hour's send still holds the lock
    ([9], 9, True),         # a conflict a send does not meet: a person looks
    ([130], 0, False),      # stopped: the next start sends the rest
    ([13, 13, 0], 0, False),
    ([13, 13, 13], 13, True),
    ([5], 5, True),
    ([14], 14, True),
])
def test_the_wrapper_in_scheduling_md_retries_13_stays_quiet_on_17_and_130_and_alerts_on_the_rest(tmp_path, codes, exit_code,
                                                                                                    alert):
    import re
    import subprocess
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "scheduling.md").read_text()
    (wrapper,) = [b for b in re.findall(r"```sh\n(.*?)```", guide, re.S) if "for attempt" in b]
    (tmp_path / "codes").write_text("".join(f"{c}\n" for c in codes))
    stubs = (f'relmail() {{ c=$(head -n1 {tmp_path}/codes); sed -i 1d {tmp_path}/codes; echo run >> {tmp_path}/runs; '
             'return "$c"; }\nsleep() { :; }\n')
    out = subprocess.run(["sh", "-c", stubs + wrapper], capture_output=True, text=True)
    assert out.returncode == exit_code, out.stderr
    assert ("failed with exit" in out.stderr) == alert
    assert (tmp_path / "runs").read_text().count("run") == len(codes)


@pytest.mark.parametrize("code, exit_code, alert", [(0, 0, False), (9, 0, False), (17, 0, False), (4, 4, True)])
def test_the_plan_job_in_scheduling_md_takes_9_as_done_and_17_as_another_start_at_work(tmp_path, code, exit_code, alert):
    import re

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "scheduling.md").read_text()
    (block,) = [b for b in re.findall(r"```sh\n(.*?)```", guide, re.S) if b.startswith("relmail plan weekly --window auto")]
    out = subprocess.run(["sh", "-c", f"relmail() {{ return {code}; }}\n" + block], capture_output=True, text=True)
    assert out.returncode == exit_code, out.stderr
    assert ("failed with exit" in out.stderr) == alert
