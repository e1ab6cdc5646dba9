"""The delivery interface, registry, rate limits and warm-up, and the file adapter."""

from __future__ import annotations

import json
import mailbox
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from delivery_messages import NOW, FakeTime, message
from relmail.cli import cli
from relmail.delivery import ADAPTERS, Result, adapter_class, adapter_from_project, get_adapter
from relmail.delivery.file import FileAdapter, safe_name
from relmail.delivery.ratelimit import RateLimiter
from relmail.errors import ConfigError, DeliveryError


def limiter(ft: FakeTime, **kw) -> RateLimiter:
    return RateLimiter(clock=ft.clock, sleep=ft.sleep, **kw)


def test_every_registered_adapter_imports_and_names_itself():
    for name in ADAPTERS:
        assert adapter_class(name).name == name
    with pytest.raises(DeliveryError, match="known: brevo, file, mailgun, mailjet, mandrill, postmark, sendgrid, ses, smtp"):
        get_adapter("pigeon")


def test_result_rules():
    with pytest.raises(ValueError, match="timezone-aware"):
        Result("k", "deferred", retry_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="status"):
        Result("k", "sent")
    r = Result("k", "deferred", retry_at=NOW, reason="later", smtp_code=451)
    assert r.as_dict()["retry_at"] == "2026-11-23T09:00:00+00:00" and not r.accepted


def test_per_second_limit_paces_by_sleeping():
    ft = FakeTime()
    rl = limiter(ft, per_second=10)
    granted = [rl.acquire(25)[0] for _ in range(4)]
    assert granted == [10, 10, 10, 10]
    # The first second's burst is free; every further 10 waits one second.
    assert ft.sleeps == pytest.approx([1.0, 1.0, 1.0])


def test_hourly_cap_defers_the_rest_until_a_slot_frees(tmp_path):
    ft = FakeTime()
    a = FileAdapter({"outbox": str(tmp_path / "out"), "rate_per_hour": 5}, clock=ft.clock, sleep=ft.sleep)
    results = a.send([message(i, raw=False) for i in range(8)])
    assert [r.status for r in results] == ["accepted"] * 5 + ["deferred"] * 3
    assert {r.retry_at for r in results[5:]} == {NOW + timedelta(hours=1)}
    assert "5 messages per hour" in results[5].reason
    assert ft.sleeps == []  # an hour is not slept through
    ft.now += timedelta(minutes=59)
    assert a.send([message(9, raw=False)])[0].status == "deferred"
    ft.now += timedelta(minutes=1)
    assert a.send([message(9, raw=False)])[0].status == "accepted"


def test_warmup_schedule_caps_each_day_and_ends():
    ft = FakeTime()
    start = NOW - timedelta(hours=2)  # day 1 began two hours ago
    rl = limiter(ft, warmup=[(1, 3), (2, 5), (4, 8)], warmup_start=start)
    assert rl.acquire(10)[:2] == (3, start + timedelta(days=1))
    assert rl.acquire(1)[0] == 0
    ft.now = start + timedelta(days=1, hours=1)  # day 2
    assert rl.acquire(10)[0] == 5
    ft.now = start + timedelta(days=2, hours=1)  # day 3 keeps day 2's cap
    assert rl.acquire(10)[0] == 5
    ft.now = start + timedelta(days=3, hours=1)  # day 4
    granted, resume, reason = rl.acquire(10)
    assert granted == 8 and "day 4" in reason
    ft.now = start + timedelta(days=4, hours=1)  # schedule over: no cap
    assert rl.acquire(10_000) == (10_000, None, "")


def test_warmup_counts_what_the_ledger_says_was_sent_today():
    ft = FakeTime()
    seen = []

    def sent_since(day_start):
        seen.append(day_start)
        return 480

    rl = limiter(ft, warmup=[(1, 500)], warmup_start=NOW, sent_since=sent_since)
    assert rl.acquire(100)[0] == 20
    assert seen == [NOW]


@pytest.mark.parametrize(
    "cfg,match",
    [
        ({"warmup": [[1, 500]]}, "warmup_start"),
        ({"warmup": [[2, 500], [1, 100]], "warmup_start": "2026-11-01"}, "must increase"),
        ({"warmup": "fast", "warmup_start": "2026-11-01"}, r"\[day, daily_cap\]"),
        ({"warmup": [[1, 5]], "warmup_start": "2026-11-01T08:00:00"}, "time zone"),
        ({"rate_per_second": "ten"}, "'rate_per_second' must be a number"),
        ({"rate_per_hour": 0}, "at least 1"),
    ],
)
def test_rate_settings_are_validated(tmp_path, cfg, match):
    with pytest.raises(ConfigError, match=match):
        get_adapter("file", {"outbox": str(tmp_path), **cfg})


def test_file_adapter_writes_one_eml_per_key_and_a_retry_overwrites(tmp_path):
    a = get_adapter("file", {"outbox": "out"}, root=tmp_path)
    m = message(1)
    [r] = a.send([m])
    path = tmp_path / "out" / f"{safe_name(m.key)}.eml"
    assert r.status == "accepted" and r.provider_id == str(path)
    assert path.read_bytes() == m.as_bytes()
    a.send([m, message(2)])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{safe_name(x.key)}.eml" for x in (m, message(2))
    )
    assert safe_name("a:b") != safe_name("a_b")  # no collisions between similar keys
    with pytest.raises(DeliveryError, match="twice"):
        a.send([m, m])


def test_file_adapter_mbox_never_appends_a_key_twice(tmp_path):
    a = get_adapter("file", {"outbox": str(tmp_path), "format": "mbox"})
    a.send([message(1), message(2)])
    a.send([message(2), message(3)])
    box = mailbox.mbox(tmp_path / "outbox.mbox")
    keys = [m["X-Relmail-Key"] for m in box]
    assert keys == [message(i).key for i in (1, 2, 3)]
    assert box[0]["Subject"] == message(1).subject
    box.close()


def test_adapter_from_project_uses_relmail_toml(project):
    a = adapter_from_project(project)
    assert a.name == "file" and a.outbox == project.root / "outbox"
    [r] = a.send([message(5)])
    assert r.status == "accepted" and (project.root / "outbox").is_dir()
    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + '\n[delivery.smtp]\nhost = "smtp.example"\nport = 2525\nsecurity = "none"\n')
    from relmail.project import Project

    smtp = adapter_from_project(Project.load(project.root), name="smtp")
    assert (smtp.host, smtp.port, smtp.security) == ("smtp.example", 2525, "none")


@pytest.mark.parametrize("name, table", [
    ("sendgrid", 'base_ulr = "http://127.0.0.1:9"'),
    ("postmark", 'message_steam = "broadcast"'),
    ("brevo", 'concurrancy = 2'),
    ("smtp", 'host = "smtp.example"\nretry_dealy = 60'),
])
def test_a_misspelt_key_of_an_adapters_table_is_refused_naming_the_one_meant(project, name, table):
    from relmail.errors import ConfigError
    from relmail.project import Project

    config = project.root / "relmail.toml"
    config.write_text(config.read_text() + f"\n[delivery.{name}]\n{table}\n")
    wrong = table.splitlines()[-1].split(" = ")[0]
    with pytest.raises(ConfigError, match=f"\\[delivery.{name}\\]: unknown key '{wrong}' .*did you mean"):
        adapter_from_project(Project.load(project.root), name=name)


def test_every_adapter_setting_the_docs_show_is_accepted():
    """Each [delivery.<adapter>] table of the guides' TOML examples passes the key check unchanged."""
    import re
    import tomllib
    from pathlib import Path

    from relmail.delivery import check_keys

    docs = Path(__file__).resolve().parents[1] / "docs"
    seen = set()
    for page in [*docs.glob("guide/*.md"), *docs.glob("operations/*.md")]:
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            for name, table in tomllib.loads(block).get("delivery", {}).items():
                if name in ADAPTERS and isinstance(table, dict):
                    check_keys(name, table)
                    seen.add(name)
    assert {"smtp", "sendgrid", "postmark", "mailgun", "ses", "brevo"} <= seen


def test_cli_adapters_list_json(project, monkeypatch):
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(cli, ["adapters", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["selected"] == "file"
    rows = {r["name"]: r for r in data["adapters"]}
    assert set(rows) == set(ADAPTERS)
    assert rows["postmark"]["max_batch"] == 500 and rows["sendgrid"]["max_batch"] == 1000
    assert rows["file"]["selected"] and not rows["smtp"]["selected"]
    table = CliRunner().invoke(cli, ["adapters", "list"]).output
    assert "SendGrid v3 POST /v3/mail/send." in table and "``" not in table
    assert "retry_delay" in rows["postmark"]["settings"] and "concurrency" in rows["postmark"]["settings"]


@pytest.mark.parametrize("adapter, table, said", [
    ("sendgird", "", "adapter 'sendgird' is unknown; known:"),
    ("sendgrid", '[delivery.sendgrid]\nbase_ulr = "http://127.0.0.1:9"\n', "[delivery.sendgrid]: unknown key 'base_ulr'"),
])
def test_adapters_list_says_what_send_would_refuse(project, monkeypatch, adapter, table, said):
    config = project.root / "relmail.toml"
    text = config.read_text()
    assert 'adapter = "file"' in text
    config.write_text(text.replace('adapter = "file"', f'adapter = "{adapter}"', 1) + "\n" + table)
    monkeypatch.chdir(project.root)
    out = CliRunner().invoke(cli, ["adapters", "list"])
    assert out.exit_code == 3 and said in out.stderr
    assert "SendGrid v3 POST /v3/mail/send." in out.stdout  # the list is still shown
