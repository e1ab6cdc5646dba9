"""docs/getting-started/your-shop.md, run: every command on the page, against its shown output.

The page is the test's script. Console blocks (``$ command`` then its
output) run in order through the CLI, in a folder holding the repository's
sample exports; blocks titled with a file name (``yaml title="..."``) are
written into the project first. Outputs must match the page except for
what differs per run: timings, the database URL, the folder, the signature
of a link. So the walkthrough cannot go stale, and it proves what the page
claims: a project made only with ``init --blank``, the built-in mappings and
the sample exports plans an opt-in campaign with sends, and the customers
who accepted marketing pass the consent rules.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from relmail.cli import cli

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "getting-started" / "your-shop.md"
FENCE = re.compile(r"^```(\w+)(?: title=\"([^\"]+)\")?\n(.*?)^```\n", re.MULTILINE | re.DOTALL)


def steps(text: str) -> list[tuple[str, str, str | None]]:
    """(kind, body, file) in page order: console blocks, files to write, other blocks."""
    return [(lang, body, title) for lang, title, body in FENCE.findall(text)]


def commands(block: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of one console block."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        else:
            out[-1][1].append(line)
    return [(cmd, "\n".join(lines).rstrip("\n")) for cmd, lines in out]


def normalized(text: str, folder: Path) -> str:
    text = text.replace(str(folder), "/path/to").replace("\u00a0", " ").replace("\u202f", " ")  # Babel spaces money
    text = re.sub(r"in \d+\.\d s \([\d,]+ rows/s\)", "in <t>", text)
    text = re.sub(r"Upgraded \S+: ", "Upgraded <database>: ", text)
    text = re.sub(r"(/unsubscribe/[\w-]+\.)[\w-]+", r"\1<signature>", text)
    return "\n".join(line.rstrip() for line in text.rstrip("\n").splitlines())


@pytest.fixture
def workspace(tmp_path, empty_db_url, monkeypatch):
    """A folder with the repository's sample exports, the database on the backend under test."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.setenv("RELMAIL_DATABASE_URL", empty_db_url)
    monkeypatch.delenv("RELMAIL_SIGNING_KEY", raising=False)
    monkeypatch.delenv("RELMAIL_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(command: str, monkeypatch) -> str:
    """One shell line of the page: cd and export change this process, relmail runs the CLI."""
    words = shlex.split(command)
    if words[0] == "cd":
        monkeypatch.chdir(words[1])
        return ""
    if words[0] == "export":
        name, _, value = words[1].partition("=")
        monkeypatch.setenv(name, value)
        return ""
    assert words[0] == "relmail", command
    result = CliRunner().invoke(cli, words[1:], catch_exceptions=False)
    assert result.exit_code == 0, f"{command}\n{result.output}"
    return result.output


def test_the_walkthrough_runs_as_the_page_shows(workspace, monkeypatch):
    ran = 0
    for lang, body, title in steps(PAGE.read_text(encoding="utf-8")):
        if title:
            path = Path.cwd() / title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body, encoding="utf-8")
        elif lang == "console":
            for command, expected in commands(body):
                got = run(command, monkeypatch)
                assert normalized(got, workspace) == normalized(expected, workspace), f"$ {command}"
                ran += 1
    assert ran == 14  # init, cd, upgrade, 6 imports, segments show, templates check, plan, export, preview

    # What the page claims, from the plan's own data.
    result = CliRunner().invoke(cli, ["plan", "autumn", "--window", "2026-W50", "--as-of", "2026-12-07T09:00:00+01:00",
                                      "--dry-run", "--out", "plan.jsonl", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["totals"]["send"] == 4 and summary["warnings"] == []
    decisions = {row["customer_id"]: row for row in map(json.loads, Path("plan.jsonl").read_text().splitlines())}
    accepted = {"7302117000001", "7302117000004", "7302117000006", "7302117000008", "7302117000009", "7302117000011",
                "7302117000012"}  # Shopify's "yes" or a Mailchimp subscription, among the readers
    for cid in accepted:
        assert "NO_CONSENT" not in decisions[cid]["reasons"], (cid, decisions[cid]["reasons"])
    assert decisions["7302117000002"]["reasons"] == ["NO_CONSENT"]  # Bram said no
    assert {cid for cid, d in decisions.items() if d["action"] == "send"} == {"7302117000004", "7302117000008", "7302117000009",
                                                                                "7302117000011"}


def test_the_warning_on_the_page_is_what_an_explicit_topic_gives(workspace, monkeypatch):
    page = PAGE.read_text(encoding="utf-8")
    for lang, body, title in steps(page):
        if title:
            (Path.cwd() / title).write_text(body, encoding="utf-8")
        elif lang == "console":
            for command, _ in commands(body):
                if command.startswith("relmail plan"):
                    break
                run(command, monkeypatch)
            else:
                continue
            break
    toml = Path("relmail.toml")
    toml.write_text(toml.read_text().replace("explicit_topics = []", 'explicit_topics = ["book-tips"]'))
    result = CliRunner().invoke(cli, ["plan", "autumn", "--window", "2026-W50", "--as-of", "2026-12-07T09:00:00+01:00", "--dry-run"])
    assert result.exit_code == 0, result.output
    (shown,) = [body for lang, body, _ in steps(page) if lang == "text" and body.startswith("Warning:")]
    assert shown.strip() in result.output
