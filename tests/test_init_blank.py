"""relmail init --blank: a project for your own shop on your own domain, with a .gitignore for personal data."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from relmail.cli import cli
from relmail.errors import ConfigError
from relmail.project import init_project


def test_a_blank_project_is_on_the_shops_domain_with_one_neutral_segment_campaign_and_template(tmp_path):
    project = init_project(tmp_path / "leesteken", name="Boekhandel Het Leesteken", blank=True, domain="Leesteken.example",
                           locale="nl_NL", timezone="Europe/Amsterdam")
    s = project.settings
    assert (s.sender.from_email, s.sender.reply_to, s.sender.from_name) == (
        "news@leesteken.example", "service@leesteken.example", "Boekhandel Het Leesteken")
    assert (s.brand.name, s.brand.url) == ("Boekhandel Het Leesteken", "https://leesteken.example")
    assert (s.unsubscribe_url, s.unsubscribe_mailto) == ("https://leesteken.example/relmail", "unsubscribe@leesteken.example")
    assert (s.default_locale, s.timezone, s.consent.global_opt_in_covers_topics) == ("nl_NL", "Europe/Amsterdam", True)
    assert "fietsenwinkel" not in (project.root / "relmail.toml").read_text()
    files = sorted(str(p.relative_to(project.root)) for p in project.root.rglob("*") if p.is_file())
    assert files == [".gitignore", "campaigns/newsletter.yml", "relmail.toml", "segments/everyone.yml", "templates/newsletter.html"]
    ignored = (project.root / ".gitignore").read_text().split()
    for entry in ("relmail.db", "relmail.db-wal", "relmail.db.columns/", ".relmail/", "*.rejects.csv", "*.rejects.jsonl", "outbox/",
                  "models/"):
        assert entry in ignored


def test_the_example_project_stays_the_bike_shop_without_a_gitignore(tmp_path):
    project = init_project(tmp_path / "shop")
    assert project.settings.sender.domain == "fietsenwinkel.example"
    assert (project.root / "campaigns" / "weekly.yml").is_file() and not (project.root / ".gitignore").exists()


@pytest.mark.parametrize("kw, message", [
    ({"domain": "not a domain"}, "is not a domain name"),
    ({"domain": "shop.example", "locale": "xx_YY"}, "--locale: unknown locale"),
    ({"domain": "shop.example", "timezone": "Europe/Amsterdm"}, "--timezone: unknown time zone"),
    ({"domain": "shop.example", "name": 'Say "hi"'}, "without quotes"),
])
def test_bad_blank_options_are_refused_before_anything_is_written(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        init_project(tmp_path / "p", blank=True, **kw)
    assert not (tmp_path / "p").exists()


def test_the_next_hint_includes_the_cd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["init", "my shop", "--blank", "--name", "Mijn winkel", "--domain", "mijnwinkel.example"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == ("Next: cd 'my shop' && relmail db upgrade && "
                                              "relmail import customers customers_export.csv --map shopify")
    assert runner.invoke(cli, ["init", "bikes"]).output.splitlines()[-1] == "Next: cd bikes && relmail db upgrade && relmail demo"
    assert runner.invoke(cli, ["init", "x", "--blank"]).exit_code == 2  # --domain is needed
    assert runner.invoke(cli, ["init", "y", "--domain", "y.example"]).exit_code == 2  # only with --blank
