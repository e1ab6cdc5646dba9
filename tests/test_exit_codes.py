"""Each exit code means one thing: the codes the CI loop relies on, checked through the command line."""

from __future__ import annotations

from click.testing import CliRunner

from relmail.cli import cli
from relmail.errors import RelmailError


def _codes() -> dict[int, list[str]]:
    seen: dict[int, list[str]] = {}
    stack = [RelmailError]
    while stack:
        cls = stack.pop()
        seen.setdefault(cls.exit_code, []).append(cls.__name__)
        stack.extend(cls.__subclasses__())
    return seen


def test_model_train_with_nothing_to_train_on_exits_15_not_the_tampered_model_code(project):
    out = CliRunner().invoke(cli, ["-p", str(project.root), "model", "train"])
    assert out.exit_code == 15, out.output
    assert out.output.startswith("Error: no decisions with closed outcome windows to train on")


def test_nothing_to_do_and_a_bad_model_file_have_a_code_each():
    codes = _codes()
    assert codes[15] == ["NothingToDo"] and codes[12] == ["ModelError"]


def test_database_trouble_and_a_mostly_deferred_send_have_a_code_each():
    codes = _codes()
    assert codes[13] == ["DatabaseUnavailable"] and codes[14] == ["DeferredShareExceeded"]
