"""relmail templates check: lint every file, render what the campaigns send with the store's customers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from relmail.campaigns import load_campaigns
from relmail.cli import cli
from relmail.project import Project
from relmail.render import Renderer
from relmail.render.check import GMAIL_CLIP_BYTES, check_templates
from relmail.render.inputs import CustomerContext, MessageSpec
from relmail.render.mime import transfer_size

AS_OF = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

BAD = """{% extends "layouts/base.html" %}
{% block subject %}Bad{% endblock %}
{% block content %}
<tr><td><img src="https://fietsenwinkel.example/x.png"></td></tr>
<tr><td><a href="http://insecure.example/">insecure</a> {{ customer.attributes.missing_field }}</td></tr>
{% endblock %}
"""

#: Uses message.data without a fallback: fine with the campaign's data, an error with an empty one.
OFFER = """{% extends "layouts/base.html" %}
{% block subject %}{{ message.data.offer.code }} for you{% endblock %}
{% block content %}
<tr><td>Code {{ message.data.offer.code }}: {{ message.data.offer.discount|percent }} off.
{% if customer.attributes.cityy is defined %}In {{ customer.attributes.cityy }}.{% endif %}</td></tr>
{% include "partials/product_rows.html" %}
{% endblock %}
"""

CAMPAIGN = """\
title: Offers
messages:
  - id: offer
    template: offer
    topic: promotions
    segments: [everyone]
    offer: promotion
    data:
      offer: {code: AUTUMN, discount: 0.15}
"""


def write(project: Project, name: str, text: str) -> None:
    path = project.templates_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def check(project: Project, engine=None, **kw):
    return check_templates(Renderer(project), load_campaigns(project).values(), engine, as_of=AS_OF, **kw)


def run(project: Project, *args):
    return CliRunner().invoke(cli, ["-p", str(project.root), "templates", "check", *args])


@pytest.fixture
def demo(project, engine):
    from relmail.demo import generate

    generate(engine, customers=600, seed=7, as_of=AS_OF)
    return project


@pytest.mark.parametrize("blank", [False, True], ids=["example", "blank"])
def test_a_new_project_passes_the_strict_check_with_no_findings(tmp_path, db_url, monkeypatch, blank):
    monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    folder = tmp_path / "shop"
    extra = ["--blank", "--name", "Boekhandel Test", "--domain", "boekhandel.example"] if blank else []
    assert CliRunner().invoke(cli, ["init", str(folder), *extra]).exit_code == 0
    # An upgraded, empty store (generated samples), and a job without the database: no finding at all.
    for args in ([], ["--generated"]):
        out = CliRunner().invoke(cli, ["-p", str(folder), "templates", "check", "--strict", "--json", *args])
        assert out.exit_code == 0, out.output
        data = json.loads(out.stdout)
        assert data["findings"] == [] and data["ok"] is True and data["rendered"]


def test_the_example_and_demo_projects_have_no_findings(project, demo, engine):
    report = check(demo, engine)
    # Warnings too: every name the example templates test or default is one the campaign or the store defines.
    assert report.findings == [] and report.samples == "store"
    # Every message of the demo campaign, in both of its locales' variants, rendered for store customers.
    assert {(c, m) for c, m, _, _ in report.rendered} == {("weekly", m) for m in
                                                          ("ebike-launch", "lock-tip", "welcome-offer", "service-reminder", "newsletter")}
    assert {v for _, m, v, _ in report.rendered if m == "ebike-launch"} == {
        "ebike_launch.html + text from the HTML", "ebike_launch.nl.html + text from the HTML with partials/footer.nl.html"}
    out = run(demo, "--strict")
    assert out.exit_code == 0, out.output
    assert "0 errors, 0 warnings" in out.stderr and "store sample customers" in out.stderr


def test_message_data_of_the_campaign_is_used_so_a_template_that_needs_it_has_no_false_error(demo, engine):
    write(demo, "offer.html", OFFER)
    (demo.campaigns_dir / "offers.yml").write_text(CAMPAIGN, encoding="utf-8")
    report = check(demo, engine)
    assert [f for f in report.errors if f.file == "offer.html"] == []
    # The misspelt attribute is tested, never printed: no customer has it, so it is a warning, with its line.
    warnings = [f for f in report.findings if f.file == "offer.html" and f.severity == "warning"
                and "not in their language" not in f.message]  # the demo's Dutch customers get the English base
    assert [(f.line, f.message.split(" is not")[0]) for f in warnings] == [(5, "'customer.attributes.cityy'")]
    assert "offers/offer" in warnings[0].message
    out = run(demo, "--campaign", "offers")
    assert out.exit_code == 0 and "2 message variants rendered for" in out.stderr and "0 errors, 2 warnings." in out.stderr
    # The same template rendered with an empty message.data (what the check used to do) fails.
    (demo.campaigns_dir / "offers.yml").write_text(CAMPAIGN.replace("    data:\n      offer: {code: AUTUMN, discount: 0.15}\n", ""))
    errors = [f for f in check(demo, engine).errors if f.file == "offer.html"]
    assert errors and "message.data.offer.code is missing" in errors[0].message  # printed: the optional-data policy's error


def test_a_broken_base_template_is_found_when_the_default_locale_has_its_own_variant(project, engine):
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace('default_locale = "en_GB"', 'default_locale = "nl_NL"'))
    project = Project.load(project.root)
    source = (project.templates_dir / "ebike_launch.html").read_text()
    write(project, "ebike_launch.html", source.replace("{% block content %}\n", "{% block content %}\n{{ data.vip_code }}\n", 1))
    line = source.split("{% block content %}")[0].count("\n") + 2
    report = check(project, engine)  # an empty store: generated samples
    assert report.samples == "generated"
    errors = [f for f in report.errors if f.file == "ebike_launch.html"]
    assert errors and errors[0].line == line and "'dict object' has no attribute 'vip_code'" in errors[0].message
    assert "weekly/ebike-launch [ebike_launch.html + text from the HTML]" in errors[0].message
    assert not [f for f in report.errors if f.file != "ebike_launch.html"]


def test_a_variant_no_customer_reaches_yet_is_rendered_for_store_customers_in_its_locale(demo, engine):
    from sqlalchemy import update

    from relmail.store.models import Customer

    with engine.begin() as conn:
        conn.execute(update(Customer.__table__).values(locale="en_GB"))
    source = (demo.templates_dir / "welcome_offer.nl.html").read_text()
    write(demo, "welcome_offer.nl.html", source.replace("{% block content %}\n", "{% block content %}\n{{ data.vip_code }}\n", 1))
    errors = [f for f in check(demo, engine).errors if f.file == "welcome_offer.nl.html"]
    assert errors and " as nl_NL: " in errors[0].message


def test_every_lint_finding_of_every_file_even_with_syntax_errors(project):
    write(project, "bad.html", BAD)
    # A syntax error, and after it the same file's other findings.
    write(project, "syntax.html", '{% block subject %}x{% endblock %}\n<p>{{ customer.name </p>\n<img src="https://x.example/a.png">\n'
          '<a href="http://insecure.example/b">b</a>\n')
    write(project, "big.html", '{% extends "layouts/base.html" %}{% block subject %}Big{% endblock %}'
          "{% block content %}<tr><td>" + "<p>lorem ipsum dolor sit amet</p>" * 4000 + "</td></tr>{% endblock %}")
    findings = {(f.file, f.line, f.severity): f.message for f in check(project).findings}
    assert findings[("bad.html", 4, "error")] == "<img> without alt text"
    assert findings[("bad.html", 5, "warning")] == "link without https: http://insecure.example/"
    assert findings[("syntax.html", 2, "error")].startswith("unexpected")
    assert findings[("syntax.html", 3, "error")] == "<img> without alt text"
    assert findings[("syntax.html", 4, "warning")] == "link without https: http://insecure.example/b"
    # Templates no campaign uses are compiled and linted, not rendered with invented data.
    assert not any("missing_field" in m for m in findings.values())
    assert not any(k[0] == "big.html" for k in findings)
    # The shipped templates have no errors.
    shipped = {"ebike_launch", "usage_tip", "welcome_offer", "service_reminder", "newsletter"}
    assert not [k for k in findings if k[0].split(".")[0] in shipped and k[2] == "error"]


def test_a_template_used_by_a_campaign_over_102_kb_is_a_warning(project):
    write(project, "offer.html", '{% extends "layouts/base.html" %}{% block subject %}Big{% endblock %}'
          "{% block content %}<tr><td>" + "<p>lorem ipsum dolor sit amet</p>" * 4000 + "</td></tr>{% endblock %}")
    (project.campaigns_dir / "offers.yml").write_text(CAMPAIGN, encoding="utf-8")
    report = check(project, compare=False)
    assert any(f.file == "offer.html" and f.severity == "warning" and "Gmail clips" in f.message for f in report.findings)


def test_cli_exit_codes_generated_samples_and_json(project, engine):
    ok = run(project, "--json")
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert data["ok"] is True and data["samples"] == "generated" and data["files"] == 18  # with partials/product_rows.txt
    write(project, "bad.html", BAD)
    bad = run(project)
    assert bad.exit_code == 6
    assert "error: bad.html:4: <img> without alt text" in bad.output
    assert "not used by a campaign (linted only): bad" in bad.stderr
    assert run(project, "--generated", "--campaign", "weekly").exit_code == 6  # the lint covers every file


def test_cli_without_a_database_says_to_use_generated_samples(tmp_path, monkeypatch):
    from relmail.project import init_project

    monkeypatch.setenv("RELMAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "k")
    shop = init_project(tmp_path / "shop")
    out = run(shop)
    assert out.exit_code == 5 and "relmail templates check --generated" in out.output
    assert run(shop, "--generated").exit_code == 0


def test_a_name_only_some_variants_lack_is_a_warning_that_names_those_variants(demo, engine):
    # A partial shared by the Dutch and the default variant; only the Dutch one gives it a note.
    write(demo, "partials/note.html", "<tr><td>{% if note is defined %}{{ note }}{% endif %}</td></tr>\n")
    body = '{% extends "layouts/base.html" %}\n{% block subject %}Note{% endblock %}\n{% block content %}\n'
    write(demo, "note.html", body + '{% include "partials/note.html" %}\n{% endblock %}\n')
    write(demo, "note.nl.html", body + '{% set note = "Gratis bezorging" %}{% include "partials/note.html" %}\n'
                                       '{% if customer.attributes.pakjesautomaat is defined %}x{% endif %}\n{% endblock %}\n')
    write(demo, "../campaigns/notes.yml", CAMPAIGN.replace("id: offer", "id: note").replace("template: offer", "template: note"))
    warnings = [f for f in check(demo, engine, compare=False).findings if f.file == "partials/note.html"]
    assert [w.message.split(": the template")[0] for w in warnings] == [
        "'note' is not defined for any sample customer of notes/note (note.html only; the other variants have it)"]
    # A file only the Dutch variant is made of: no other variant to compare with.
    own = [f.message.split(": the template")[0] for f in check(demo, engine, compare=False).findings if f.file == "note.nl.html"]
    assert own == ["'customer.attributes.pakjesautomaat' is not defined for any sample customer of notes/note"]


def test_generated_samples_of_a_shop_with_a_currency_per_language_need_no_price_per_currency(project):
    # Invented products have no price_nl; the store's do (tests/test_localized_products.py shows the error they get).
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace("[brand]\n", '[brand]\ncurrency = { en = "GBP", nl = "EUR" }\n', 1))
    report = check(Project.load(project.root), generated=True, compare=False)
    assert report.samples == "generated" and report.errors == []


def test_generated_samples_price_every_featured_product_in_the_customers_currency():
    # A message featuring an id the invented catalogue lacks gets a stand-in: priced like the invented products,
    # so a shop selling in two currencies checks its templates without a price per currency to invent.
    from datetime import UTC, datetime

    from relmail.render.catalog import localized
    from relmail.render.currency import Currencies
    from relmail.render.samples import SampleSource

    currencies = Currencies("GBP", {"en": "GBP", "nl": "EUR"})
    samples = SampleSource(None, datetime(2026, 11, 23, tzinfo=UTC), generated=True).samples(["nl_NL"], ("EB-200", "X-9"))
    assert samples
    for sample in samples:
        assert [localized(p, "nl_NL", currencies)["price"] for p in sample.context.featured_products] == [2499.0, 0.0]


def test_a_customer_never_mailed_for_an_invalid_address_is_no_sample(demo, engine, tmp_path):
    """An address a customers import flagged (INVALID_ADDRESS, never mailed) cannot be put in a To: header. The
    check samples the emptiest customer of each locale, which such a bare row often is (a CRM record with
    only an address): it must take a customer a send could reach, not fail every variant over the data."""
    from relmail.importers import import_file

    bare = tmp_path / "bare.csv"
    bare.write_text("id,email,locale\nA0000000,jerôme.girard@courriel.example,nl_NL\nA0000001,jan@@mail.example,en_GB\n",
                    encoding="utf-8")
    assert import_file(engine, "customers", bare).flagged_addresses == 2
    report = check(demo, engine)
    assert report.findings == [] and report.rendered


def test_an_html_part_over_102_kb_only_as_sent_is_a_warning(project):
    # Attributes double their '=' in quoted-printable (=3D) and accents take six bytes: under the limit as text, over it as sent.
    cell = '<td class="a" style="color:#000" title="é">é</td>'
    write(project, "offer.html", '{% extends "layouts/base.html" %}{% block subject %}Big{% endblock %}'
          "{% block content %}<tr>" + cell * 1750 + "</tr>{% endblock %}")
    (project.campaigns_dir / "offers.yml").write_text(CAMPAIGN, encoding="utf-8")
    sizes = [f.message for f in check(project, compare=False).findings if f.file == "offer.html" and "Gmail clips" in f.message]
    assert sizes and all("the HTML part is 1" in m and "KB as sent" in m for m in sizes), sizes
    email = Renderer(project).render(MessageSpec(id="offer", template="offer", topic="promotions", subject="-"),
                                     CustomerContext(id="C1", email="c1@example.org", locale="en_US"))
    assert len(email.html.encode("utf-8")) < GMAIL_CLIP_BYTES < transfer_size(email.html)


def test_a_control_character_in_the_rendered_e_mail_is_a_warning_naming_what_it_stood_for(project):
    write(project, "offer.html", '{% extends "layouts/base.html" %}{% block subject %}Our children\x92s range{% endblock %}'
          "{% block content %}<tr><td>Hello</td></tr>{% endblock %}")
    (project.campaigns_dir / "offers.yml").write_text(CAMPAIGN, encoding="utf-8")
    findings = [f for f in check(project, compare=False).findings if f.file == "offer.html" and f.severity == "warning"]
    assert any("the subject holds the control character U+0092 (Windows-1252 '’' stored wrongly)" in f.message for f in findings), findings
    assert run(project, "--strict", "--campaign", "offers").exit_code == 6


def test_a_topic_without_a_label_in_a_language_the_customers_read_is_a_warning(project, engine):
    from relmail.store.models import Customer

    (project.campaigns_dir / "offers.yml").write_text(CAMPAIGN, encoding="utf-8")
    write(project, "offer.html", '{% extends "layouts/base.html" %}{% block subject %}Offer{% endblock %}'
          "{% block content %}<tr><td>Hello</td></tr>{% endblock %}")
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": "C1", "email": "c1@example.org", "locale": "nl_NL", "created_at": AS_OF},
            {"id": "C2", "email": "c2@example.org", "locale": "fr_FR", "created_at": AS_OF}])
    labels = [f.message for f in check(project, engine, compare=False).findings if f.file == "relmail.toml"]
    # The example's topic labels have en and nl: a French customer's pages would show the default language's.
    assert len(labels) == 4 and {m.split("'")[1] for m in labels} == {"promotions", "newsletter", "product-tips", "service"}
    assert ("topic 'promotions' has no label in 'fr': customers reading pages in that language see it as "
            "'Offers and new bikes'; add [topics.promotions] label = { fr = \"...\" }") in labels
    with engine.begin() as conn:
        conn.execute(Customer.__table__.delete().where(Customer.__table__.c.id == "C2"))
    assert not [f for f in check(project, engine, compare=False).findings if f.file == "relmail.toml"]


def test_customers_whose_language_a_template_has_no_variant_for_are_a_warning(project, engine):
    """The plan warns per audience; the check, before any plan, per the store's customers."""
    from relmail.store.models import Customer

    (project.campaigns_dir / "offers.yml").write_text(CAMPAIGN, encoding="utf-8")
    offer = ('{% extends "layouts/base.html" %}{% block subject %}Offer{% endblock %}'
             "{% block content %}<tr><td>Hello</td></tr>{% endblock %}")
    write(project, "offer.html", offer)
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": f"C{i}", "email": f"c{i}@example.org", "locale": loc, "created_at": AS_OF}
            for i, loc in enumerate(["fr_FR", "fr_FR", "fr_BE", project.settings.default_locale])])
    found = [f for f in check(project, engine, compare=False).findings if f.file == "offer.html" and "their language" in f.message]
    written = project.settings.default_locale.split("_")[0]
    assert [(f.severity, f.message) for f in found] == [(
        "warning", f"offers/offer: 3 recipient(s) get offer.html, written in '{written}', not in their language "
                   "(2 fr_FR, 1 fr_BE); add offer.fr.html for them (customers in the store)")]
    write(project, "offer.fr.html", offer.replace("Hello", "Bonjour"))
    assert not [f for f in check(project, engine, compare=False).findings if f.message.startswith("offers/offer: ")]
