"""The documentation: the site builds without a warning, the README stays a front door, and the
reference pages name everything the code defines (reason codes, exit codes, packages, settings)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from relmail import errors
from relmail.delivery import ADAPTERS, adapter_class
from relmail.rules import REASON_CODES

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README_LIMIT = 200

#: Sentences about how the code came to be belong in commit messages, not in user documentation.
HISTORY = re.compile(
    r"this session|previous session|last session|a session earlier|\bsession \d+|session's machine"
    r"|earlier version|previous version|was measured before|before the fix|fixed since",
    re.IGNORECASE,
)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _text(relative: str) -> str:
    return (DOCS / relative).read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_site_builds_with_strict_and_no_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    # The command reference is generated from the click commands: every command is on the page.
    for command in ("plan", "send", "why", "import", "feedback", "model", "report", "serve", "locks"):
        assert f'id="{command}"' in cli, command


def test_readme_is_a_front_door_of_at_most_200_lines():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_LIMIT, f"README.md has {len(lines)} lines; move detail into docs/ (limit {README_LIMIT})"


def test_no_development_history_in_readme_or_docs():
    found = [
        f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
        for page in _pages()
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert not found, "development history in user documentation:\n" + "\n".join(found)


def test_every_reason_code_is_documented():
    page = _text("concepts/decisions.md")
    missing = [code for code in REASON_CODES if f"`{code}`" not in page]
    assert not missing, f"docs/concepts/decisions.md does not explain {missing}"


def test_every_exit_code_is_documented():
    page = _text("reference/exit-codes.md")
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.RelmailError)]
    missing = sorted({c.exit_code for c in classes if not re.search(rf"^\| {c.exit_code} \|", page, re.MULTILINE)})
    assert not missing, f"docs/reference/exit-codes.md has no row for exit code(s) {missing}"


def test_architecture_names_every_package_and_top_level_module():
    page = _text("contributing/architecture.md")
    package = ROOT / "src" / "relmail"
    names = [p.name if p.is_dir() else p.stem for p in package.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")]
    missing = [n for n in sorted(names) if not re.search(rf"\b{re.escape(n)}(/|\.py)", page)]
    assert not missing, f"docs/contributing/architecture.md does not describe {missing}"


def test_settings_reference_lists_every_adapter_key():
    page = _text("reference/settings.md")
    missing = []
    for name in ADAPTERS:
        heading = f"### [delivery.{name}]"
        section = page.split(heading, 1)[1].split("\n#", 1)[0] if heading in page else ""
        missing += [f"{name}.{key}" for key in adapter_class(name).config_keys if f"`{key}`" not in section]
    assert not missing, f"docs/reference/settings.md does not list {missing}"



#: A fenced block: its language, its title (``yaml title="maps/opens.yml"``) and its text.
FENCE = re.compile(r'^```(\w+)(?: title="([^"]+)")?\n(.*?)^```$', re.MULTILINE | re.DOTALL)
#: A block that shows lines to add to a copy of a built-in mapping: ``title="maps/NAME.yml (the added line)"``.
ADDED = re.compile(r"^maps/(?P<name>[\w-]+)\.yml \(the added lines?\)$")


def _builtin_mapping(name: str) -> Path:
    found = sorted((ROOT / "src" / "relmail" / "importers" / "mappings").glob(f"*/{name}.yml"))
    assert len(found) == 1, f"no single built-in mapping {name}.yml to add the documented lines to: {found}"
    return found[0]


@pytest.mark.parametrize("page", ["guide/mappings.md", "guide/importing.md", "getting-started/your-shop.md"])
def test_every_column_mapping_the_docs_show_is_a_valid_mapping(page):
    """A mapping file shown in full (a YAML block with ``kind:``) parses as it is; lines shown to add to a copy of a
    built-in mapping parse once added under its ``columns``. A reader copies them: an error there is theirs to debug."""
    from relmail.importers.mapping import parse_mapping

    checked = 0
    for lang, title, body in FENCE.findall(_text(page)):
        if lang != "yaml":
            continue
        added = ADDED.match(title or "")
        if added:
            builtin = _builtin_mapping(added["name"]).read_text(encoding="utf-8")
            assert "\ncolumns:\n" in builtin
            text = builtin.replace("\ncolumns:\n", "\ncolumns:\n" + body, 1)
            parse_mapping(text, title)
        elif re.search(r"^kind: ", body, re.MULTILINE):
            parse_mapping(body, title or page)
        else:
            continue
        checked += 1
    assert checked or page != "guide/mappings.md", "docs/guide/mappings.md shows no mapping any more"
