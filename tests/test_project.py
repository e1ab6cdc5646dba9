"""A project is a folder with relmail.toml; settings are validated, secrets come from the environment."""

import pytest
from click.testing import CliRunner

from relmail.cli import cli
from relmail.errors import ConfigError
from relmail.project import Project, init_project


def test_init_creates_settings_and_example_folders(tmp_path):
    project = init_project(tmp_path / "shop")
    assert (project.root / "relmail.toml").is_file()
    for folder in ("campaigns", "segments", "templates"):
        assert (project.root / folder).is_dir()
    assert project.settings.sender.domain == "fietsenwinkel.example"
    assert project.settings.unsubscribe_url == "https://fietsenwinkel.example/relmail"


def test_init_refuses_to_overwrite_without_force(tmp_path):
    init_project(tmp_path / "shop")
    with pytest.raises(ConfigError, match="exists already"):
        init_project(tmp_path / "shop")
    init_project(tmp_path / "shop", force=True)


def test_relative_sqlite_url_is_inside_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("RELMAIL_DATABASE_URL", raising=False)
    project = init_project(tmp_path / "shop")
    assert project.database_url == f"sqlite:///{(tmp_path / 'shop' / 'relmail.db').resolve()}"


def test_environment_database_url_wins(tmp_path, monkeypatch):
    project = init_project(tmp_path / "shop")
    monkeypatch.setenv("RELMAIL_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert project.database_url == "postgresql+psycopg://u@h/db"


def test_an_empty_environment_database_url_is_an_error_not_the_project_sqlite_file(tmp_path, monkeypatch):
    """A CI job whose secret is not available gets RELMAIL_DATABASE_URL="": say so (exit 3), do not plan an empty file."""
    from click.testing import CliRunner

    from relmail.cli import cli

    project = init_project(tmp_path / "shop")
    monkeypatch.setenv("RELMAIL_DATABASE_URL", "")
    with pytest.raises(ConfigError, match="RELMAIL_DATABASE_URL is set but empty"):
        assert project.database_url is None
    out = CliRunner().invoke(cli, ["-p", str(project.root), "plan", "weekly", "--window", "next-week", "--dry-run"])
    assert out.exit_code == 3, out.output
    assert out.stderr.startswith("Error: RELMAIL_DATABASE_URL is set but empty")
    assert not (project.root / "relmail.db").exists()


def test_project_is_found_from_a_subfolder(tmp_path, monkeypatch):
    init_project(tmp_path / "shop")
    monkeypatch.chdir(tmp_path / "shop" / "campaigns")
    monkeypatch.delenv("RELMAIL_PROJECT", raising=False)
    assert Project.load().root == (tmp_path / "shop").resolve()


def test_secrets_come_from_the_named_environment_variable(tmp_path, monkeypatch):
    project = init_project(tmp_path / "shop")
    monkeypatch.delenv("RELMAIL_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigError, match="export RELMAIL_SIGNING_KEY"):
        project.secret("signing_key")
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "k")
    assert project.secret("signing_key") == "k"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[project]\nname = 'x'\n[sender]\n", "missing key 'from_email'"),
        ("[project\n", "invalid TOML"),
        ("[project]\nname = 3\n[sender]\nfrom_email='a@b.c'\n", "key 'name' must be a str"),
        ("[project]\nname='x'\n[sender]\nfrom_email='a@b.c'\n[secrets]\nsigning_key='hunter2 is my key'\n",
         "must name an environment variable"),
    ],
)
def test_bad_settings_name_the_file_and_key(tmp_path, text, message):
    (tmp_path / "relmail.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        Project.load(tmp_path)
    assert "relmail.toml" in str(info.value)


def test_cli_user_errors_are_one_line_with_exit_code(tmp_path):
    result = CliRunner().invoke(cli, ["--project", str(tmp_path), "db", "status"])
    assert result.exit_code == ConfigError.exit_code
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: ") and "no relmail.toml" in result.output
    assert "Traceback" not in result.output


def test_cli_init_then_upgrade(tmp_path, monkeypatch):
    monkeypatch.delenv("RELMAIL_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path / "shop")]).exit_code == 0
    result = runner.invoke(cli, ["-p", str(tmp_path / "shop"), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    from relmail.store.db import head_revision

    assert f"empty -> {head_revision()}" in result.output
    status = runner.invoke(cli, ["-p", str(tmp_path / "shop"), "db", "status", "--json"])
    assert '"current": true' in status.output


def test_every_command_has_help_with_an_example():
    import click

    def walk(command, path):
        yield path, command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, path + [name])

    for path, command in walk(cli, []):
        if isinstance(command, click.Group) and path:
            continue
        result = CliRunner().invoke(cli, path + ["--help"])
        assert result.exit_code == 0, path
        if path:
            assert "Example" in result.output, f"relmail {' '.join(path)} --help has no example"
