"""relmail init --blank: a project for your own shop on your own domain, with a .gitignore for personal data."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from relmail.cli import cli
from relmail.errors import ConfigError
from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer


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
    hint = result.output.splitlines()[-2:]
    assert hint[0] == "Next: cd 'my shop' && relmail db upgrade && relmail import customers FILE --map NAME"
    # Every built-in mapping, whichever system the shop runs on, not one shop system's for all.
    assert "(klaviyo, magento, mailchimp, prestashop, shopify, shopware, woocommerce) or a mapping YAML file" in hint[1]
    assert runner.invoke(cli, ["init", "bikes"]).output.splitlines()[-1] == "Next: cd bikes && relmail db upgrade && relmail demo"
    assert runner.invoke(cli, ["init", "x", "--blank"]).exit_code == 2  # --domain is needed
    assert runner.invoke(cli, ["init", "y", "--domain", "y.example"]).exit_code == 2  # only with --blank


@pytest.mark.parametrize("locale, subject, words", [
    ("de", "Mein Laden: Neues in dieser Woche, Jörg", ["Hallo Jörg,", "Das gibt es diese Woche Neues bei Mein Laden.",
                                                      "Sie erhalten diese E-Mail", ">abmelden</a>", "2.499,00\xa0€"]),
    ("pl_PL", "Mein Laden: nowości tego tygodnia, Jörg", ["Dzień dobry, Jörg!", "w sklepie Mein Laden", ">wypisz się</a>",
                                                        "2499,00\xa0zł"]),
    ("fr_FR", "Mein Laden\u00a0: les nouveautés de la semaine, Jörg", ["Bonjour Jörg,", "chez Mein Laden.", ">vous désabonner</a>",
                                                                 "2\u202f499,00\xa0€"]),
    ("es_ES", "Mein Laden: novedades de esta semana, Jörg", ["Hola, Jörg:", "Recibes este correo", ">date de baja</a>",
                                                            "2499,00\xa0€"]),
    ("it_IT", "Mein Laden: le novità della settimana, Jörg", ["Ciao Jörg,", "Ecco le novità di questa settimana da Mein Laden.",
                                                              ">annulla l’iscrizione</a>", "2499,00\xa0€"]),
    ("nl_BE", "Mein Laden: nieuw deze week, Jörg", ["Hallo Jörg,", "Je ontvangt deze e-mail", ">afmelden</a>"]),
    ("en_US", "Mein Laden: new this week, Jörg", ["Hello Jörg,", "Here is what is new at Mein Laden", ">unsubscribe</a>",
                                                  "$2,499.00"]),
    # Right to left: the e-mail says so on <html> and on its outermost table (Gmail keeps no attribute of <html>).
    ("he_IL", "Mein Laden: חדש השבוע, Jörg", ["שלום Jörg,", "אלה החידושים של Mein Laden השבוע.", ">הסרה מרשימת התפוצה</a>",
                                             "\u200f2,499.00\xa0\u200f₪", '<table class="container" role="presentation" width="600" dir="rtl"']),
    ("ar_AE", "Mein Laden: الجديد هذا الأسبوع، Jörg", ["مرحبًا Jörg،", ">إلغاء الاشتراك</a>", "د.إ.", 'width="600" dir="rtl"']),
])
def test_the_blank_newsletter_is_written_in_the_language_of_locale_and_passes_the_templates_check(tmp_path, monkeypatch, locale,
                                                                                                    subject, words):
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    runner = CliRunner()
    args = ["init", str(tmp_path / "shop"), "--blank", "--name", "Mein Laden", "--domain", "laden.example", "--locale", locale]
    created = runner.invoke(cli, args)
    assert created.exit_code == 0 and "Note:" not in created.output, created.output
    project = Project.load(tmp_path / "shop")
    email = Renderer(project).render(
        MessageSpec(id="newsletter", template="newsletter", topic="newsletter", campaign_id="newsletter", run_id="newsletter:check"),
        CustomerContext(id="C1", email="joerg@example.org", first_name="Jörg", locale=locale,
                        recommended_products=[{"id": "B-1", "name": "Buch", "price": 2499.0, "url": "https://laden.example/b-1"}]),
    )
    assert email.subject == subject
    for text in words:
        assert text in email.html, (text, email.html)
    direction = "rtl" if locale[:2] in ("he", "ar") else "ltr"
    assert f'<html lang="{locale.split("_")[0]}" dir="{direction}">' in email.html
    checked = runner.invoke(cli, ["-p", str(project.root), "templates", "check", "--generated"])
    assert checked.exit_code == 0, checked.output
    assert "0 errors, 0 warnings" in checked.output


def test_a_locale_relmail_has_no_newsletter_wording_for_gets_the_english_one_and_a_note_saying_so(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "shop"), "--blank", "--domain", "shop.example", "--locale", "pt_PT"])
    assert result.exit_code == 0, result.output
    assert "Hello {{ customer.first_name|default('there', true) }}," in (tmp_path / "shop" / "templates" / "newsletter.html").read_text()
    assert ("Note: templates/newsletter.html is in English: relmail has its wording in ar, de, en, es, fr, he, it, nl, pl only. Translate it: "
            "e-mails from it say they are in 'pt' (the language of --locale pt_PT).") in result.output
    as_json = CliRunner().invoke(cli, ["init", str(tmp_path / "other"), "--blank", "--domain", "shop.example", "--locale", "pt_PT",
                                       "--json"])
    assert '"newsletter_language": "en"' in as_json.output


def test_the_blank_newsletter_goes_out_again_a_week_later_at_the_same_hour(tmp_path, monkeypatch):
    """A weekly newsletter from the blank project: next week's run, planned at the hour of this week's
    plan (a few minutes before this week's issue went out), sends the next issue to everyone."""
    from datetime import UTC, timedelta

    from relmail.planning.run import plan
    from relmail.sending import send
    from relmail.store.db import make_engine
    from relmail.windows import current_time

    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    monkeypatch.delenv("RELMAIL_DATABASE_URL", raising=False)
    # A Monday morning: plan and send on one calendar day (a send that crosses midnight counts on the next day).
    monkeypatch.setenv("RELMAIL_NOW", "2026-11-23T09:05:00+00:00")
    root = tmp_path / "shop"
    assert CliRunner().invoke(cli, ["init", str(root), "--blank", "--domain", "shop.example"]).exit_code == 0
    (root / "customers.csv").write_text("id,email\n" + "".join(f"C{i},c{i}@example.org\n" for i in range(5)))
    (root / "prefs.csv").write_text("customer_id,topic,opted_in,updated_at\n" +
                                    "".join(f"C{i},*,true,2026-01-01T00:00:00Z\n" for i in range(5)))
    for args in (["db", "upgrade"], ["import", "customers", str(root / "customers.csv")],
                 ["import", "preferences", str(root / "prefs.csv")]):
        assert CliRunner().invoke(cli, ["-p", str(root), *args]).exit_code == 0
    project = Project.load(root)
    engine = make_engine(project.database_url)
    planned = current_time() - timedelta(minutes=5)  # this week's plan, a few minutes before its send
    week = planned.astimezone(UTC).isocalendar()
    window = f"{week.year}-W{week.week:02d}"
    plan(project, engine, "newsletter", window, as_of=planned)
    assert send(project, engine, "newsletter", window).outcomes["accepted"] == 5
    later = planned + timedelta(days=7)
    week = later.astimezone(UTC).isocalendar()
    second = plan(project, engine, "newsletter", f"{week.year}-W{week.week:02d}", as_of=later, dry_run=True)
    assert second.decisions.action.tolist() == ["send"] * 5, second.decisions.reasons.tolist()
    # Twice in one week is still refused, by the topic's weekly cap too.
    again = plan(project, engine, "newsletter", f"{week.year}-W{week.week:02d}", as_of=planned + timedelta(days=3), dry_run=True)
    assert set(again.decisions.reasons.tolist()) == {"TOPIC_FREQUENCY_CAP ALREADY_SENT"}
    engine.dispose()


def test_a_blank_shop_whose_customers_read_three_languages_passes_the_strict_check_once_each_has_its_newsletter(
        tmp_path, db_url, monkeypatch):
    # The templates check warns about a topic without a label in a language the customers read their pages in:
    # the newsletter topic init writes is named in every language the blank newsletter has wording in. And about
    # customers who would get the newsletter in another language than theirs, until it has a variant for them.
    monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    runner = CliRunner()
    root = tmp_path / "shop"
    assert runner.invoke(cli, ["init", str(root), "--blank", "--name", "Rad", "--domain", "rad.example", "--locale", "de_DE"]).exit_code == 0
    (root / "customers.csv").write_text("id,email,locale\nC1,c1@example.org,de_DE\nC2,c2@example.org,en_GB\nC3,c3@example.org,fr_FR\n")
    for args in (["db", "upgrade"], ["import", "customers", str(root / "customers.csv")]):
        assert runner.invoke(cli, ["-p", str(root), *args]).exit_code == 0
    checked = runner.invoke(cli, ["-p", str(root), "templates", "check", "--strict"])
    assert checked.exit_code == 6 and "0 errors, 1 warning" in checked.output, checked.output
    assert ("warning: newsletter.html: newsletter/newsletter: 2 recipient(s) get newsletter.html, written in 'de', not in "
            "their language (1 en_GB, 1 fr_FR); add newsletter.en.html, newsletter.fr.html for them") in checked.output
    base = (root / "templates" / "newsletter.html").read_text(encoding="utf-8")
    for lang in ("en", "fr"):
        (root / "templates" / f"newsletter.{lang}.html").write_text(base, encoding="utf-8")
    checked = runner.invoke(cli, ["-p", str(root), "templates", "check", "--strict"])
    assert checked.exit_code == 0 and "0 errors, 0 warnings" in checked.output, checked.output
    labels = Project.load(root).settings.section("topics")["newsletter"]["label"]
    assert (labels["de"], labels["en"], labels["fr"]) == ("Newsletter", "Newsletter", "Lettre d’information")
