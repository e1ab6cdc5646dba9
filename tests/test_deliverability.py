"""What a mailbox provider checks on a bulk sender's e-mails: working unsubscribe targets, DKIM that holds."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from relmail.cli import cli
from relmail.errors import ConfigError
from relmail.project import Project, init_project
from relmail.render import Renderer


def _unsubscribe_settings(root, base_url: str, mailto: str = "unsubscribe@fietsenwinkel.example") -> Project:
    toml = root / "relmail.toml"
    text = toml.read_text().replace('base_url = "https://fietsenwinkel.example/relmail"', f'base_url = "{base_url}"')
    toml.write_text(text.replace('mailto = "unsubscribe@fietsenwinkel.example"', f'mailto = "{mailto}"'))
    return Project.load(root)


@pytest.mark.parametrize("base_url", ["", "/relmail", "fietsenwinkel.example/relmail", "http://fietsenwinkel.example/relmail"])
def test_an_unsubscribe_base_url_that_is_not_https_stops_before_any_e_mail_is_rendered(tmp_path, monkeypatch, base_url):
    # Every e-mail's unsubscribe link and List-Unsubscribe header are built on it: a relative URL reaches
    # nobody, and Gmail and Yahoo offer one-click unsubscribe only for an HTTPS one.
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "k")
    project = _unsubscribe_settings(init_project(tmp_path / "shop").root, base_url)
    with pytest.raises(ConfigError, match=r"\[unsubscribe\]: (no base_url|base_url '.*' is not an https:// URL); every e-mail's"):
        Renderer(project)
    assert CliRunner().invoke(cli, ["-p", str(project.root), "db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(cli, ["-p", str(project.root), "templates", "check"])
    assert result.exit_code == 3
    assert result.output.count("\n") == 1 and "base_url" in result.output and "Traceback" not in result.output


def test_an_unsubscribe_mailto_written_as_a_url_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "k")
    bad = init_project(tmp_path / "bad").root
    with pytest.raises(ConfigError, match="mailto 'mailto:unsubscribe@fietsenwinkel.example' is not an e-mail address"):
        Renderer(_unsubscribe_settings(bad, "https://fietsenwinkel.example/relmail", "mailto:unsubscribe@fietsenwinkel.example"))
    good = Renderer(_unsubscribe_settings(init_project(tmp_path / "good").root, "HTTPS://fietsenwinkel.example/relmail/"))
    assert good.links.unsubscribe_url("T") == "HTTPS://fietsenwinkel.example/relmail/unsubscribe/T"
