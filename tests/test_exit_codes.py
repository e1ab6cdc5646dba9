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


def test_with_json_an_error_is_one_json_object_on_stdout_as_well(project):
    import json

    runner = CliRunner()
    base = ["--project", str(project.root)]
    unknown = runner.invoke(cli, [*base, "customers", "show", "nobody", "--json"])
    assert unknown.exit_code == 8
    assert json.loads(unknown.stdout) == {"ok": False, "error": "no customer 'nobody' in the store (never imported, or erased)",
                                          "exit_code": 8, "problems": []}
    assert unknown.stderr.startswith("Error: no customer 'nobody'")  # the log line stays
    campaign = project.root / "campaigns" / "broken.yml"
    campaign.write_text("title: x\nmessages:\n  - id: Bad\n    template: t\n    topic: t\n    offer: promotion\n    segments: [everyone]\n")
    broken = runner.invoke(cli, [*base, "plan", "broken", "--window", "2026-W50", "--dry-run", "--json"])
    assert broken.exit_code == 4
    data = json.loads(broken.stdout)
    assert data["ok"] is False and data["error"].endswith("broken.yml: invalid campaign")
    assert [(p["line"], p["field"]) for p in data["problems"]] == [(3, "messages.0.id")]
    # A command that answered in JSON before failing a gate prints that answer only.
    gate = runner.invoke(cli, [*base, "plan", "weekly", "--window", "2026-W50", "--dry-run", "--json", "--min-sends", "1000000"])
    assert gate.exit_code == 21
    assert json.loads(gate.stdout)["run"] == "weekly:2026-W50"


def test_a_command_interrupted_before_sending_exits_130_with_one_json_object(project, monkeypatch):
    """`relmail send --json > send.json` stopped while planning (SIGTERM, Ctrl-C) still leaves an object to read."""
    import json

    import relmail.sending.run

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what the signal handler raises outside the sending loop

    monkeypatch.setattr(relmail.sending.run, "send", interrupted)
    out = CliRunner().invoke(cli, ["--project", str(project.root), "send", "weekly", "--window", "2026-W50", "--json"])
    assert out.exit_code == 130, out.output
    assert json.loads(out.stdout) == {"ok": False, "error": "interrupted (Ctrl-C or SIGTERM); run the same command again",
                                      "exit_code": 130, "problems": []}
    assert out.stderr.splitlines() == ["Error: interrupted (Ctrl-C or SIGTERM); run the same command again"]
    assert _codes()[130] == ["Interrupted", "SendStopped"]


def test_with_json_a_usage_error_is_one_json_object_on_stdout_as_well(project):
    import json

    out = CliRunner().invoke(cli, ["--project", str(project.root), "send", "weekly", "--window", "auto", "--json",
                                   "--workers", "0"])
    assert out.exit_code == 2
    assert json.loads(out.stdout) == {"ok": False, "error": "Invalid value for '--workers': 0 is not in the range x>=1.",
                                      "exit_code": 2, "problems": []}
    assert "Usage: " in out.stderr
    typo = CliRunner().invoke(cli, ["--project", str(project.root), "send", "weekly", "--json", "--windw", "auto"])
    assert typo.exit_code == 2 and "--windw" in json.loads(typo.stdout)["error"]


def test_a_campaign_naming_a_missing_template_is_the_same_error_for_plan_and_templates_check(project):
    # The campaign's error (exit 4, its file, line and field), whichever command finds it first:
    # a CI job running 'templates check' before 'plan' must not see another code for the same typo.
    import json

    from relmail.campaigns import load_campaign

    for variant in project.templates_dir.glob("usage_tip*.html"):  # the message's template in every language
        variant.unlink()
    path = load_campaign(project, "weekly").path
    runner = CliRunner()
    base = ["--project", str(project.root)]
    plan = runner.invoke(cli, [*base, "plan", "weekly", "--window", "2026-W50", "--dry-run"])
    check = runner.invoke(cli, [*base, "templates", "check"])
    generated = runner.invoke(cli, [*base, "templates", "check", "--generated"])
    assert plan.exit_code == check.exit_code == generated.exit_code == 4, (plan.output, check.output)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), start=1) if "template: usage_tip" in text)
    error = (f"Error: campaign 'weekly' names templates that do not exist: {path}:{line}: field 'messages.1.template': "
             f"no template 'usage_tip.html' in {project.templates_dir}")
    for out in (plan, check, generated):
        assert out.stderr.splitlines()[-1].startswith(error), out.stderr
        assert isinstance(out.exception, SystemExit)
    # The check names it among its findings, and renders the other messages all the same.
    assert f"error: {path}:{line}: field 'messages.1.template': no template 'usage_tip.html'" in check.stdout
    assert "usage_tip.html: weekly/lock-tip for" not in check.stdout  # not once more per locale
    data = json.loads(runner.invoke(cli, [*base, "templates", "check", "--json"]).stdout)
    assert data["ok"] is False and {r["message"] for r in data["rendered"]} >= {"ebike-launch", "newsletter"}
    assert [(f["file"], f["line"]) for f in data["findings"] if "usage_tip" in f["message"]] == [(str(path), line)]
    planned = json.loads(runner.invoke(cli, [*base, "plan", "weekly", "--window", "2026-W50", "--dry-run", "--json"]).stdout)
    assert (planned["exit_code"], [(p["file"], p["line"], p["field"]) for p in planned["problems"]]) == (
        4, [(str(path), line, "messages.1.template")])
