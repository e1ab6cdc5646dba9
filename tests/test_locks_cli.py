"""relmail locks: list who holds which run, and release a stuck lock only with --force."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from tests.test_schedule import RUN, _stale_row

from relmail.errors import NotFound
from relmail.store import locks


def _cli(project, *args):
    from relmail.cli import cli

    return CliRunner().invoke(cli, ["-p", str(project.root), "locks", *args])


def test_locks_lists_a_live_holder_and_a_stale_one(project, engine):
    assert _cli(project).output.strip() == "No run is locked."
    _stale_row(engine)  # expired an hour ago, on another host
    live = locks.acquire(engine, "other:2026-W48", heartbeat=False)
    try:
        out = _cli(project)
        assert out.exit_code == 0, out.output
        rows = {line.split()[0]: line for line in out.output.splitlines()[2:]}
        assert "worker-7:1" in rows[RUN] and "stopped refreshing it" in rows[RUN]
        assert rows["other:2026-W48"].rstrip().endswith("alive")
        data = json.loads(_cli(project, "--json").output)
        assert [d["key"] for d in data] == [RUN, "other:2026-W48"]
        assert data[1]["stale"] is None and "stopped refreshing" in data[0]["stale"]
    finally:
        live.release()


def test_release_needs_force_and_then_deletes_the_lock(project, engine):
    _stale_row(engine, expires=datetime.now(UTC) + timedelta(minutes=5))  # live, on another host
    refused = _cli(project, "release", RUN)
    assert refused.exit_code == 2 and "--force" in refused.output
    assert locks.holder_of(engine, RUN) is not None
    done = _cli(project, "release", RUN, "--force")
    assert done.exit_code == 0 and "held by worker-7:1" in done.output
    assert locks.holder_of(engine, RUN) is None
    again = _cli(project, "release", RUN, "--force")
    assert again.exit_code == NotFound.exit_code and f"run {RUN} is not locked" in again.output
