"""Sends while the SMTP server is down: on a fixed clock ($RELMAIL_NOW) ahead of the system clock the deferred
e-mails wait for the next run instead of being claimed again at once, forever; behind it (a rehearsal of past weeks)
they are due after the adapter's delay on the rehearsal's clock; a proof that did not arrive says why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from tests.smtp_server import free_port

from relmail.cli import cli

SHOPIFY = Path(__file__).resolve().parent.parent / "examples" / "shopify"


def shop_with_smtp_down(tmp_path, db_url, monkeypatch) -> Path:
    monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url)
    runner = CliRunner()
    root = tmp_path / "shop"
    assert runner.invoke(cli, ["init", str(root), "--blank", "--name", "Shop", "--domain", "shop.example"]).exit_code == 0
    imported = runner.invoke(cli, ["--project", str(root), "import", "customers", str(SHOPIFY / "customers_export.csv"),
                                   "--map", "shopify"])
    assert imported.exit_code == 0, imported.output
    toml = root / "relmail.toml"
    # Nothing listens on the port: every connection is refused, every e-mail deferred.
    toml.write_text(toml.read_text().replace('adapter = "file"', 'adapter = "smtp"')
                    + f'\n[delivery.smtp]\nhost = "127.0.0.1"\nport = {free_port()}\nsecurity = "none"\n')
    return root


def test_a_deferral_is_not_due_again_within_the_same_send_on_a_clock_ahead_of_the_system(tmp_path, db_url, monkeypatch):
    root = shop_with_smtp_down(tmp_path, db_url, monkeypatch)
    ahead = (datetime.now(UTC) + timedelta(days=3)).isoformat()  # a preview of Monday's send, say
    env = {**os.environ, "RELMAIL_NOW": ahead, "RELMAIL_SIGNING_KEY": "test-signing-key-not-secret"}
    done = subprocess.run([sys.executable, "-c", "from relmail.cli import main; main()", "--project", str(root),
                           "send", "newsletter", "--window", "auto", "--workers", "1", "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    summary = json.loads(done.stdout)
    assert summary["outcomes"]["deferred"] > 0 and summary["outcomes"]["accepted"] == 0, done.stdout + done.stderr
    assert summary["next_retry_at"] > ahead  # due on the send's own clock, not the system's


def test_a_deferral_on_a_clock_behind_the_system_is_due_after_the_adapters_delay_on_that_clock(tmp_path, db_url, monkeypatch):
    root = shop_with_smtp_down(tmp_path, db_url, monkeypatch)
    behind = datetime.now(UTC) - timedelta(days=30)  # rehearsing last month's weeks
    env = {**os.environ, "RELMAIL_NOW": behind.isoformat(), "RELMAIL_SIGNING_KEY": "test-signing-key-not-secret"}
    done = subprocess.run([sys.executable, "-c", "from relmail.cli import main; main()", "--project", str(root),
                           "send", "newsletter", "--window", "auto", "--workers", "1", "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    summary = json.loads(done.stdout)
    assert summary["outcomes"]["deferred"] > 0, done.stdout + done.stderr
    # The SMTP adapter's retry delay (minutes) from the rehearsal's now, not a real date a month later.
    due = datetime.fromisoformat(summary["next_retry_at"])
    assert behind < due < behind + timedelta(hours=2), summary["next_retry_at"]


def test_a_proof_that_was_not_delivered_fails_with_the_reason(tmp_path, db_url, monkeypatch):
    root = shop_with_smtp_down(tmp_path, db_url, monkeypatch)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    result = CliRunner().invoke(cli, ["--project", str(root), "send", "newsletter", "--window", "this-week",
                                      "--test-to", "owner@shop.example", "--only-customer", "7302117000001"])
    assert result.exit_code == 7, result.output
    assert result.stderr.startswith("Error: 1 proof e-mail(s) to owner@shop.example not delivered (1 x server unavailable: ")
    assert "Connection refused" in result.stderr and "nothing is retried" in result.stderr
