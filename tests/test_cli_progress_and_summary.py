"""What the CLI prints while and after it works: progress bars on a terminal only (never in CI), the send summary."""

from __future__ import annotations

import io

import pytest

from relmail.cli import _common


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("ci", "shown"), [(None, True), ("", True), ("false", True), ("0", True),
                                           ("true", False), ("1", False), ("yes", False)])
def test_a_progress_bar_on_a_terminal_unless_ci_is_set(monkeypatch, ci, shown):
    monkeypatch.setattr(_common.sys, "stderr", _Terminal())
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    assert _common.show_progress() is shown


def test_no_progress_bar_in_a_pipe(monkeypatch):
    monkeypatch.setattr(_common.sys, "stderr", io.StringIO())
    monkeypatch.delenv("CI", raising=False)
    assert _common.show_progress() is False


def test_the_send_summary_says_when_a_dead_senders_emails_were_settled(capsys):
    from relmail.cli.send import _print_counts
    from relmail.sending.loop import SendResult

    result = SendResult("weekly:2026-W48", planned_now=False, dry_run=False, test_to=None)
    result.done = {"rendered": 10, "accepted": 10, "handed_over": 10}
    result.states = {"accepted": 10}
    _print_counts(result, real=True)
    assert "Settled" not in capsys.readouterr().out
    result.recovered = {"requeued": 500, "answered": 7, "assumed_delivered": 1}
    _print_counts(result, real=True)
    assert ("Settled the e-mails of a sender that died: 500 back to planned and sent again by this run, 7 by the "
            "provider's answer it had written, 1 at their point of no return with no answer recorded as delivered"
            ) in capsys.readouterr().out
