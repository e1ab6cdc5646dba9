"""The CI and scheduler examples in examples/ci, run for real against a demo project on a fixed clock.

GitHub Actions files pass actionlint. Then each workflow's shell steps (and the
cron lines, the systemd unit, the Kubernetes CronJob's command) run in a git
repository holding a demo project, with ``RELMAIL_NOW`` fixing the clock, in
the order a team lives through them:

1. a Friday on a fresh install (no run yet): the scheduled preview passes;
2. the Monday after: the weekly send sends; cron, systemd and Kubernetes
   starting the same command again in the same week send nothing twice;
3. that Friday: the scheduled preview plans next week and diffs it against
   Monday's run;
4. a pull request that breaks a template: the plan exits 22, the templates
   check 6, and the step summary is written all the same;
5. a pull request that fixes a campaign broken on the base branch: the base
   cannot be planned, the preview of the fix diffs against the last run and passes.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import func, select

from relmail.store.db import make_engine
from relmail.store.models import Delivery

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ci"
BIN = Path(sys.executable).parent
FRESH_FRIDAY = "2026-11-27T14:00:00+01:00"
MONDAY = "2026-11-30T07:00:00+01:00"
FRIDAY = "2026-12-04T14:00:00+01:00"
INSTALL = re.compile(r'pip install "relmail @ git\+https://github\.com/relmail/relmail@\$\{?RELMAIL_REF\}?"')

pytestmark = pytest.mark.slow


def test_the_github_actions_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint", path=str(BIN)) or shutil.which("actionlint")
    assert actionlint, "actionlint is installed with the test extra"
    files = sorted(str(p) for p in (EXAMPLES / "github").glob("*.yml"))
    assert len(files) == 2
    out = subprocess.run([actionlint, "-no-color", *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _systemd_retry_lines() -> str:
    """The ``[Service]`` lines scheduling.md gives for retrying exit 13."""
    text = (ROOT / "docs" / "guide" / "scheduling.md").read_text()
    blocks = [b for b in re.findall(r"```ini\n(.*?)```", text, re.S) if "RestartSec" in b]
    assert len(blocks) == 1, "scheduling.md gives one block of restart settings"
    return blocks[0]


def test_the_restart_settings_retry_exit_13_and_no_other_code_of_relmail():
    from relmail import errors

    codes = {c.exit_code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.RelmailError)}
    settings = dict(line.split("=", 1) for line in _systemd_retry_lines().splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Restart"] == "on-failure"
    assert set(map(int, settings["RestartPreventExitStatus"].split())) == (codes | {2}) - {13}


def test_the_sqlite_copy_ci_md_suggests_is_the_same_file_for_the_base_branch_plan(tmp_path, monkeypatch):
    """The preview plans the base branch with -p "$RUNNER_TEMP/base": a relative SQLite URL would name another file."""
    from relmail.project import init_project

    guide = (ROOT / "docs" / "guide" / "ci.md").read_text()
    (url,) = re.findall(r"`RELMAIL_DATABASE_URL=(sqlite:[^`]*)`", guide)
    workspace, runner_temp = tmp_path / "workspace", tmp_path / "runner"
    monkeypatch.setenv("RELMAIL_DATABASE_URL", url.replace("$GITHUB_WORKSPACE", str(workspace)))
    head, base = init_project(workspace), init_project(runner_temp / "base")
    assert head.database_url == base.database_url == f"sqlite:///{workspace / 'relmail.db'}"


def test_the_systemd_service_counts_a_stopped_send_as_no_failure():
    """`systemctl stop` or a shutdown stops a send with exit 130, for which scheduling.md says 'nothing' to do: a unit
    marked failed would set off OnFailure= alerts on every reboot during a send."""
    unit = (EXAMPLES / "systemd" / "relmail-weekly.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "oneshot" and "130" in settings.get("SuccessExitStatus", "").split()


def test_a_cancelled_github_send_step_passes_sigint_and_sigterm_on_to_relmail(tmp_path):
    """GitHub cancels a step by signalling its entry process, the step's bash running a script file: SIGINT, then
    SIGTERM 7.5 s later. Only a relmail the step started with exec gets them (and finishes the requests in flight);
    a bash that merely waits for it ends on the SIGTERM and leaves relmail to the SIGKILL."""
    import os
    import signal
    import time

    doc = yaml.safe_load((EXAMPLES / "github" / "relmail-send.yml").read_text())
    (job,) = doc["jobs"].values()
    step = next(s for s in job["steps"] if "relmail send" in s.get("run", ""))
    bin_dir, heard, ready = tmp_path / "bin", tmp_path / "heard.txt", tmp_path / "ready"
    bin_dir.mkdir()
    # A stand-in relmail that writes down the signals it gets, for a few seconds.
    (bin_dir / "relmail").write_text(f"""#!{sys.executable}
import signal, time
heard = []
def note(signum, frame):
    heard.append(signum)
    open({str(heard)!r}, "a").write(f"{{signum}}\\n")
signal.signal(signal.SIGINT, note)
signal.signal(signal.SIGTERM, note)
open({str(ready)!r}, "w").close()
end = time.monotonic() + 5
while len(heard) < 2 and time.monotonic() < end:
    time.sleep(0.02)
""")
    (bin_dir / "relmail").chmod(0o755)
    script = tmp_path / "step.sh"  # the runner writes a step's run: to a file and runs bash on it
    script.write_text(step["run"] + "\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    shell = subprocess.Popen(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=tmp_path, env=env)
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    shell.send_signal(signal.SIGINT)
    time.sleep(0.3)
    shell.send_signal(signal.SIGTERM)
    shell.wait(timeout=15)
    time.sleep(0.2)
    assert heard.exists() and heard.read_text().split() == [str(int(signal.SIGINT)), str(int(signal.SIGTERM))], \
        "the step's shell kept the signals from relmail: start it with exec"


def test_the_systemd_units_with_the_documented_restart_settings_pass_systemd_analyze(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (EXAMPLES / "systemd" / "relmail-weekly.service").read_text()
    unit = unit.replace("/srv/relmail/venv/bin/relmail", str(BIN / "relmail")) + _systemd_retry_lines()
    (tmp_path / "relmail-weekly.service").write_text(unit)
    shutil.copy(EXAMPLES / "systemd" / "relmail-weekly.timer", tmp_path)
    out = subprocess.run([analyze, "verify", "relmail-weekly.service", "relmail-weekly.timer"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# --- a tiny runner for the examples -----------------------------------------------------------


class DemoRepo:
    """A git repository holding a relmail project, its SQLite database outside the repository."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.repo = tmp / "shop"
        self.db = f"sqlite:///{tmp / 'relmail.db'}"
        self.secrets = {"RELMAIL_DATABASE_URL": self.db, "RELMAIL_READONLY_DATABASE_URL": self.db,
                        "RELMAIL_SEND_DATABASE_URL": self.db, "RELMAIL_SIGNING_KEY": "ci-test-key",
                        "RELMAIL_PREVIEW_SIGNING_KEY": "ci-preview-key", "RELMAIL_ESP_API_KEY": ""}
        # Low gates for a 1,500-customer demo shop (repository variables in a real project).
        self.vars = {"RELMAIL_MIN_SENDS": "10", "RELMAIL_MAX_SUPPRESSION_RATE": "0.99"}

    def base_env(self, now: str) -> dict[str, str]:
        return {"PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.tmp), "RELMAIL_NOW": now,
                "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.org", "GIT_COMMITTER_NAME": "ci",
                "GIT_COMMITTER_EMAIL": "ci@example.org", "LANG": "C.UTF-8"}

    def sh(self, command: str, now: str, **extra: str) -> subprocess.CompletedProcess:
        env = {**self.base_env(now), **self.secrets, **extra}
        return subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=self.repo, env=env, capture_output=True, text=True)

    def deliveries(self) -> int:
        engine = make_engine(self.db)
        try:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(Delivery.__table__)).scalar_one()
        finally:
            engine.dispose()


def _expression(text: str, ctx: dict) -> str:
    """The ``${{ }}`` expressions these workflows use, evaluated; any other is an error (the test must learn it)."""
    def one(m: re.Match) -> str:
        expr = m.group(1).strip()
        if e := re.fullmatch(r"secrets\.(\w+)", expr):
            return ctx["secrets"].get(e.group(1), "")
        if e := re.fullmatch(r"vars\.(\w+) \|\| '([^']*)'", expr):
            return ctx["vars"].get(e.group(1), e.group(2))
        if expr == "github.event.pull_request.base.sha":
            return ctx.get("base_sha", "")
        if expr == "github.ref":
            return "refs/heads/test"
        raise AssertionError(f"the test runner does not know the expression {expr!r}")
    return re.sub(r"\$\{\{(.*?)\}\}", one, str(text))


def _should_run(condition, failed: bool, event: str) -> bool:
    if condition is None:
        return not failed
    cond = str(condition).strip()
    if cond.startswith("${{") and cond.endswith("}}"):
        cond = cond[3:-2].strip()
    if cond in ("!cancelled()", "always()"):
        return True
    if m := re.fullmatch(r"github\.event_name == '(\w+)'", cond):
        return not failed and event == m.group(1)  # a condition without a status function means success() && ...
    raise AssertionError(f"the test runner does not know the condition {condition!r}")


def run_github(demo_repo: DemoRepo, workflow: str, now: str, event: str, base_sha: str = "") -> dict[str, int | None]:
    """Run a workflow's ``run`` steps as the runner would; the step name → its exit code (None: skipped)."""
    doc = yaml.safe_load((EXAMPLES / "github" / workflow).read_text())
    assert doc["defaults"]["run"]["shell"] == "bash"
    (job,) = doc["jobs"].values()
    ctx = {"secrets": demo_repo.secrets, "vars": demo_repo.vars, "base_sha": base_sha}
    env = {**demo_repo.base_env(now), **{k: _expression(v, ctx) for k, v in {**doc.get("env", {}), **job.get("env", {})}.items()}}
    runner_temp = Path(tempfile.mkdtemp(prefix=f"runner-{workflow}-{event}-", dir=demo_repo.tmp))  # new for each job
    summary = runner_temp / "step_summary.md"
    env.update(RUNNER_TEMP=str(runner_temp), GITHUB_STEP_SUMMARY=str(summary), GITHUB_EVENT_NAME=event, CI="true")
    codes: dict[str, int | None] = {}
    failed = False
    for step in job["steps"]:
        if "uses" in step:
            continue
        name = step["name"]
        if name == "Install relmail":
            assert INSTALL.search(step["run"]), "relmail is installed from its repository, at a pinned ref"
            continue
        if not _should_run(step.get("if"), failed, event):
            codes[name] = None
            continue
        out = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], cwd=demo_repo.repo,
                             env={**env, **{k: _expression(v, ctx) for k, v in step.get("env", {}).items()}},
                             capture_output=True, text=True)
        codes[name] = out.returncode
        codes[f"{name} (output)"] = out.stdout + out.stderr  # type: ignore[assignment]
        failed = failed or (out.returncode != 0 and not step.get("continue-on-error", False))
    codes["summary"] = summary.read_text() if summary.exists() else None  # type: ignore[assignment]
    return codes


def gitlab_project_variables() -> list[str]:
    """The CI/CD variables the file's header asks to define in the project's settings."""
    text = (EXAMPLES / "gitlab" / ".gitlab-ci.yml").read_text()
    header = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    listed = re.search(r"Variables \(Settings > CI/CD > Variables, masked\):(.*?)\.(?:\s|$)", header)
    assert listed, "the header says which variables to define"
    return sorted(set(re.findall(r"\bRELMAIL_[A-Z_]+\b", listed.group(1))))


def gitlab_env(demo_repo: DemoRepo, job_name: str, now: str, project: dict[str, str], **pipeline: str) -> dict[str, str]:
    """A job's environment in GitLab's order of precedence: the pipeline's variables (a schedule's, the predefined
    ones), then the project's CI/CD variables, then the job's ``variables:``, then the file's."""
    doc = yaml.safe_load((EXAMPLES / "gitlab" / ".gitlab-ci.yml").read_text())
    env = {**demo_repo.base_env(now), **{k: str(v) for k, v in doc["variables"].items()}}
    for key, value in doc[job_name].get("variables", {}).items():
        known = {**env, **project, **pipeline}
        env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m, known=known: known.get(m.group(1), ""), str(value))
    return {**env, **project, **pipeline}


def run_gitlab(demo_repo: DemoRepo, job_name: str, now: str, **variables: str) -> tuple[int, str]:
    """Run a GitLab job's script lines (stopping at the first failure) and its after_script; (exit code, output)."""
    doc = yaml.safe_load((EXAMPLES / "gitlab" / ".gitlab-ci.yml").read_text())
    assert any(INSTALL.search(line) for line in doc["default"]["before_script"])
    job = doc[job_name]
    project = {name: demo_repo.secrets[name] for name in gitlab_project_variables()}
    env = gitlab_env(demo_repo, job_name, now, project, **variables)
    env["CI_BUILDS_DIR"] = str(demo_repo.tmp / "builds")  # a runner keeps it from one job to the next
    output, code = "", 0
    for line in job["script"]:
        out = subprocess.run(["bash", "-eo", "pipefail", "-c", line], cwd=demo_repo.repo, env=env, capture_output=True, text=True)
        output += out.stdout + out.stderr
        if out.returncode:
            code = out.returncode
            break
    for line in job.get("after_script", []):
        out = subprocess.run(["bash", "-c", line], cwd=demo_repo.repo, env=env, capture_output=True, text=True)
        output += out.stdout + out.stderr
    return code, output


def test_each_gitlab_job_gets_the_database_url_meant_for_it(tmp_path):
    """The preview reads through the read-only role, the send writes through its own: with the variables the
    header asks for, whatever GitLab's precedence does with them."""
    names = gitlab_project_variables()
    assert {"RELMAIL_SIGNING_KEY", "RELMAIL_ESP_API_KEY"} <= set(names)
    project = {name: f"<{name}>" for name in names}
    send = gitlab_env(DemoRepo(tmp_path), "relmail-send", MONDAY, project, CI_PIPELINE_SOURCE="schedule", RELMAIL_JOB="send")
    preview = gitlab_env(DemoRepo(tmp_path), "relmail-preview", FRIDAY, project, CI_PIPELINE_SOURCE="merge_request_event")
    assert send["RELMAIL_DATABASE_URL"] == "<RELMAIL_SEND_DATABASE_URL>"
    assert preview["RELMAIL_DATABASE_URL"] == "<RELMAIL_READONLY_DATABASE_URL>"


def _paths(demo_repo: DemoRepo, text: str) -> str:
    """The examples' server paths, pointed at the test's project, virtualenv and files."""
    for a, b in (("/srv/relmail/venv/bin/relmail", str(BIN / "relmail")), ("/srv/relmail/shop", str(demo_repo.repo)),
                 ("/etc/relmail/relmail.env", str(demo_repo.tmp / "relmail.env")), ("/var/log/relmail", str(demo_repo.tmp / "log"))):
        text = text.replace(a, b)
    return text


def _cron_matches(expression: str, at: datetime) -> bool:
    """Whether a five-field cron expression (numbers, ranges, lists and ``*`` only) fires at ``at``'s wall-clock minute."""
    minute, hour, dom, month, dow = expression.split()
    assert dom == month == "*", "the test's cron matcher knows minute, hour and weekday fields only"

    def field(spec: str, value: int) -> bool:
        for part in spec.split(","):
            low, _, high = part.partition("-")
            if part == "*" or (high and int(low) <= value <= int(high)) or (not high and int(low) == value):
                return True
        return False

    return field(minute, at.minute) and field(hour, at.hour) and field(dow, at.isoweekday() % 7)


def run_cron(demo_repo: DemoRepo, now: str) -> list[int]:
    """Each crontab line that fires at ``now`` (the server's clock), run by /bin/sh with cron's bare environment."""
    codes = []
    for line in (EXAMPLES / "cron" / "relmail.crontab").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(None, 5)
        if not _cron_matches(" ".join(fields[:5]), datetime.fromisoformat(now)):
            continue
        env = {"PATH": "/usr/bin:/bin", "HOME": str(demo_repo.tmp), "RELMAIL_NOW": now, "LANG": "C.UTF-8"}
        codes.append(subprocess.run(["/bin/sh", "-c", _paths(demo_repo, fields[5])], env=env).returncode)
    return codes


def _starts(expression: str, zone: str, week_start: datetime) -> list[datetime]:
    """When a cron expression evaluated in ``zone`` starts a job during the week from ``week_start``."""
    t, starts = week_start, []
    while t < week_start + timedelta(days=7):
        if _cron_matches(expression, t.astimezone(ZoneInfo(zone))):
            starts.append(t)
        t += timedelta(minutes=1)
    return starts


def _systemd_starts(calendar: str, week_start: datetime) -> list[datetime]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    base = (week_start - timedelta(seconds=1)).astimezone(UTC)
    out = subprocess.run([analyze, "calendar", "--iterations=200", f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC", calendar],
                         capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", out.stdout)
    starts = [datetime.fromisoformat(f"{t}+00:00") for t in found]
    return [t for t in starts if t < week_start + timedelta(days=7)]


def _schedules() -> dict[str, tuple[str, str]]:
    """Each example's schedule of the send: (cron expression or systemd calendar, its time zone)."""
    crontab = [line.split(None, 5) for line in (EXAMPLES / "cron" / "relmail.crontab").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    (cron,) = [" ".join(f[:5]) for f in crontab if " send " in f[5]]
    cronjob = yaml.safe_load((EXAMPLES / "kubernetes" / "relmail-weekly-cronjob.yaml").read_text())["spec"]
    (github,) = yaml.safe_load((EXAMPLES / "github" / "relmail-send.yml").read_text())[True]["schedule"]
    timer = (EXAMPLES / "systemd" / "relmail-weekly.timer").read_text()
    (calendar,) = re.findall(r"^OnCalendar=(.*)$", timer, re.M)
    return {"cron": (cron, "Europe/Amsterdam"), "kubernetes": (cronjob["schedule"], cronjob["timeZone"]),
            "github": (github["cron"], "UTC"), "systemd": (calendar, "")}


@pytest.mark.parametrize("scheduler", ["cron", "kubernetes", "github", "systemd"])
@pytest.mark.parametrize("monday", ["2026-11-30", "2027-06-07"])  # winter and summer time in Amsterdam
def test_every_schedule_starts_the_week_monday_morning_and_again_while_deferrals_are_retried(scheduler, monday):
    """The first start of a week plans and sends it, not at night; later starts the same week retry the e-mails
    a provider deferred (for 48 hours): a send started once a week would leave them unsent."""
    expression, zone = _schedules()[scheduler]
    if scheduler == "cron":
        # The crontab's times are the server's: the same schedule must hold on a server whose clock is UTC.
        utc = _starts(expression, "UTC", datetime.fromisoformat(f"{monday}T00:00:00").replace(tzinfo=ZoneInfo("Europe/Amsterdam")))
        assert utc[0].astimezone(ZoneInfo("Europe/Amsterdam")).weekday() == 0 and utc[0].astimezone(ZoneInfo("Europe/Amsterdam")).hour >= 7
    week_start = datetime.fromisoformat(f"{monday}T00:00:00").replace(tzinfo=ZoneInfo("Europe/Amsterdam"))
    starts = _systemd_starts(expression, week_start) if scheduler == "systemd" else _starts(expression, zone, week_start)
    local = [t.astimezone(ZoneInfo("Europe/Amsterdam")) for t in starts]
    assert local and local[0].weekday() == 0 and 7 <= local[0].hour <= 8, local[:1]
    first_two_days = [t for t in starts if t < starts[0] + timedelta(hours=48)]
    gaps = [b - a for a, b in zip(first_two_days, first_two_days[1:], strict=False)]
    assert gaps and max(gaps) <= timedelta(hours=10), f"{scheduler}: starts {local[:3]}..."


def run_systemd(demo_repo: DemoRepo, now: str) -> int:
    unit = (EXAMPLES / "systemd" / "relmail-weekly.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    env = {"PATH": "/usr/bin:/bin", "RELMAIL_NOW": now, "LANG": "C.UTF-8"}
    for line in Path(_paths(demo_repo, settings["EnvironmentFile"])).read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    return subprocess.run(shlex.split(_paths(demo_repo, settings["ExecStart"])), cwd=_paths(demo_repo, settings["WorkingDirectory"]),
                          env=env).returncode


def run_kubernetes(demo_repo: DemoRepo, now: str) -> int:
    doc = yaml.safe_load((EXAMPLES / "kubernetes" / "relmail-weekly-cronjob.yaml").read_text())
    (container,) = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["workingDir"] == "/shop" and doc["spec"]["concurrencyPolicy"] == "Forbid"
    command = [str(BIN / container["command"][0]), *container["args"]]
    return subprocess.run(command, cwd=demo_repo.repo, env={**demo_repo.base_env(now), **demo_repo.secrets}).returncode


@pytest.fixture(scope="module")
def demo_repo(tmp_path_factory) -> DemoRepo:
    demo_repo = DemoRepo(tmp_path_factory.mktemp("ci-workflows"))
    for command in ("relmail init shop", "cd shop && relmail db upgrade && relmail demo --customers 1500 --seed 7",
                    "cd shop && git init -q -b main && git add -A && git commit -qm 'the shop'"):
        out = subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=demo_repo.tmp, capture_output=True, text=True,
                             env={**demo_repo.base_env("2026-11-27T09:00:00+01:00"), **demo_repo.secrets})
        assert out.returncode == 0, out.stdout + out.stderr
    (demo_repo.tmp / "log").mkdir()
    (demo_repo.tmp / "relmail.env").write_text(f"RELMAIL_DATABASE_URL={demo_repo.db}\nRELMAIL_SIGNING_KEY=ci-test-key\n")
    return demo_repo


def test_a_team_week_with_the_example_workflows_on_a_fixed_clock(demo_repo):
    # 1. A Friday on a fresh install: no run to diff against, nothing to fail on.
    fresh = run_github(demo_repo, "relmail-preview.yml", FRESH_FRIDAY, "schedule")
    assert fresh["Plan next week (dry run, with gates)"] == 0, fresh["Plan next week (dry run, with gates) (output)"]
    assert fresh["Plan the base branch (the baseline of the diff)"] is None
    assert fresh["Check the templates"] == 0, fresh["Check the templates (output)"]
    assert "### relmail plan `weekly:2026-W49` (dry run, nothing written)" in fresh["summary"]
    assert "Changes since" not in fresh["summary"]

    # 2. Monday: the scheduled send sends this week; every other scheduler starting it again sends nothing twice.
    sent = run_github(demo_repo, "relmail-send.yml", MONDAY, "schedule")
    assert sent["Send this week"] == 0, sent["Send this week (output)"]
    assert sent["Step summary"] == 0 and "Run weekly:2026-W49 (done): window 2026-W49, as of 2026-11-30 06:00 UTC" in sent["summary"]
    delivered = demo_repo.deliveries()
    assert delivered > 50
    assert run_cron(demo_repo, MONDAY) == [0]
    assert run_systemd(demo_repo, MONDAY) == 0
    assert run_kubernetes(demo_repo, MONDAY) == 0
    assert run_gitlab(demo_repo, "relmail-send", MONDAY)[0] == 0
    assert demo_repo.deliveries() == delivered
    assert "Run weekly:2026-W49" in (demo_repo.tmp / "log" / "weekly.log").read_text()

    # 3. Friday: the preview plans next week (not the week sent on Monday) and diffs it against Monday's run.
    friday = run_github(demo_repo, "relmail-preview.yml", FRIDAY, "schedule")
    assert friday["Plan next week (dry run, with gates)"] == 0, friday["Plan next week (dry run, with gates) (output)"]
    assert "### relmail plan `weekly:2026-W50` (dry run, nothing written)" in friday["summary"]
    assert "#### Changes since run weekly:2026-W49" in friday["summary"]
    assert run_cron(demo_repo, FRIDAY) == [0, 0]  # the hourly send (nothing left to send) and the preview
    assert "#### Changes since run weekly:2026-W49" in (demo_repo.tmp / "log" / "preview.md").read_text()
    code, output = run_gitlab(demo_repo, "relmail-preview", FRIDAY, CI_PIPELINE_SOURCE="schedule", RELMAIL_JOB="preview",
                              RELMAIL_MIN_SENDS="10", RELMAIL_MAX_SUPPRESSION_RATE="0.99")
    assert code == 0, output

    # 4. A pull request breaks the Dutch launch template: the gate fails, and the reviewer still gets the summary.
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=demo_repo.repo, capture_output=True, text=True).stdout.strip()
    template = demo_repo.repo / "templates" / "ebike_launch.nl.html"
    template.write_text(template.read_text().replace("{% block content %}\n", "{% block content %}\n{{ data.vip_code }}\n", 1))
    segment = demo_repo.repo / "segments" / "cyclists.yml"
    segment.write_text(segment.read_text() + "  - purchased: {category: [accessories], within_days: 365}\n")
    git = demo_repo.sh("git checkout -qb widen-and-break && git commit -qam 'Widen cyclists, reword the launch'", FRIDAY)
    assert git.returncode == 0, git.stderr
    pr = run_github(demo_repo, "relmail-preview.yml", FRIDAY, "pull_request", base_sha=base)
    assert pr["Plan the base branch (the baseline of the diff)"] == 0, pr["Plan the base branch (the baseline of the diff) (output)"]
    assert pr["Plan next week (dry run, with gates)"] == 22, pr["Plan next week (dry run, with gates) (output)"]
    assert pr["Check the templates"] == 6 and pr["Step summary"] == 0
    summary = pr["summary"]
    assert "render error(s):**" in summary and "ebike_launch.nl.html:" in summary and "vip_code" in summary
    assert "#### Changes since base.jsonl" in summary and "absent -> " in summary
    code, output = run_gitlab(demo_repo, "relmail-preview", FRIDAY, CI_PIPELINE_SOURCE="merge_request_event",
                              CI_MERGE_REQUEST_DIFF_BASE_SHA=base, RELMAIL_MIN_SENDS="10", RELMAIL_MAX_SUPPRESSION_RATE="0.99")
    assert code == 22, output
    assert "Changes since base.jsonl" in (demo_repo.repo / "plan.md").read_text()  # the artifact, kept on failure (when: always)

    # 5. The base branch's campaign is broken (a typo merged) and a pull request fixes it: the base cannot be planned,
    #    the preview of the fix still runs, diffs against the last run sent, and passes.
    git = demo_repo.sh("rm -f base.jsonl plan.md && git checkout -q -f main && sed -i 's/^title:/titel:/' campaigns/weekly.yml "
                       "&& git commit -qam 'Typo in weekly' && git checkout -qb fix-weekly "
                       "&& sed -i 's/^titel:/title:/' campaigns/weekly.yml && git commit -qam 'Fix the typo'", FRIDAY)
    assert git.returncode == 0, git.stderr
    broken_base = demo_repo.sh("git rev-parse main", FRIDAY).stdout.strip()
    fix = run_github(demo_repo, "relmail-preview.yml", FRIDAY, "pull_request", base_sha=broken_base)
    assert fix["Plan the base branch (the baseline of the diff)"] == 4
    assert fix["Plan next week (dry run, with gates)"] == 0, fix["Plan next week (dry run, with gates) (output)"]
    assert fix["Check the templates"] == 0 and "#### Changes since run weekly:2026-W49" in fix["summary"]
    code, output = run_gitlab(demo_repo, "relmail-preview", FRIDAY, CI_PIPELINE_SOURCE="merge_request_event",
                              CI_MERGE_REQUEST_DIFF_BASE_SHA=broken_base, RELMAIL_MIN_SENDS="10", RELMAIL_MAX_SUPPRESSION_RATE="0.99")
    assert code == 0, output
    assert "Changes since run weekly:2026-W49" in (demo_repo.repo / "plan.md").read_text()
