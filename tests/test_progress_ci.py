"""Progress bars: on a terminal only, and never in CI, even where the CI job has a terminal."""

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
