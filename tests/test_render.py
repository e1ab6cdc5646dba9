"""Render stage: sandbox, escaping, locale variants and filters, errors, links, inline-once."""

from __future__ import annotations

import re

import pytest

from relmail import tokens
from relmail.errors import NotFound, SignatureError, TemplateError
from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer, RenderError
from relmail.render.environment import make_environment
from relmail.render.inline import inline_source, protect
from relmail.render.inline_diff import inline_difference
from relmail.render.samples import sample_contexts

KEY = "test-signing-key-not-secret"
#: The render project's [project] name, signed into its tokens.
PROJECT = "Fietsenwinkel"
TRACKING = """
[tracking]
utm_source = "relmail"
utm_medium = "email"
utm_campaign = "{campaign}"
utm_content = "{message}"
"""

PRODUCTS = [
    {"id": "EB-200", "name": "E-bike Stad 200", "price": 2499.0, "url": "https://fietsenwinkel.example/p/EB-200", "category": "e-bikes"},
    {"id": "LOCK-S1", "name": "SlimSlot S1 smart lock", "price": 129.0, "url": "https://fietsenwinkel.example/p/LOCK-S1", "category": "accessories"},
]


@pytest.fixture
def render_project(tmp_path, monkeypatch) -> Project:
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", KEY)
    project = init_project(tmp_path / "shop")
    with open(project.root / "relmail.toml", "a", encoding="utf-8") as f:
        f.write(TRACKING)
    return Project.load(project.root)


@pytest.fixture
def renderer(render_project) -> Renderer:
    return Renderer(render_project)


#: What the example campaign's entry gives a template as ``message.data`` (the usage tip prints its feature's name).
MESSAGE_DATA = {"usage_tip": {"feature": {"id": "share-access", "name": "Share access"}}}


def spec(template: str = "ebike_launch", **kw) -> MessageSpec:
    base = dict(id=template.replace("_", "-"), template=template, topic="promotions", campaign_id="weekly", run_id="weekly:2026-W48",
                data=MESSAGE_DATA.get(template, {}))
    return MessageSpec(**{**base, **kw})


def customer(**kw) -> CustomerContext:
    # featured: what the launch template shows (a send takes it from the message's products).
    base = dict(id="C0000001", email="jan@example.nl", first_name="Jan", last_name="de Vries", locale="en_GB",
                recommended_products=PRODUCTS, featured_products=PRODUCTS[:1])
    return CustomerContext(**{**base, **kw})


def write(render_project: Project, name: str, text: str) -> None:
    path = render_project.templates_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# -- security -------------------------------------------------------------


def test_customer_name_with_script_is_escaped_in_html_and_raw_in_text_and_subject(renderer):
    email = renderer.render(spec(), customer(first_name="<script>alert(1)</script>"))
    assert "<script>alert(1)</script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    # Subject and text part are not HTML: the name appears as typed, not as entities.
    assert email.subject.startswith("<script>alert(1)</script>, meet the")


@pytest.mark.parametrize(
    "expr",
    [
        "''.__class__.__mro__",
        "''.__class__.__mro__[1].__subclasses__()",
        "customer.__class__",
        "lipsum.__globals__",
        "cycler.__init__.__globals__",
        "products.append(1)",
    ],
)
def test_sandbox_blocks_python_internals_as_a_render_error(render_project, expr):
    write(render_project, "evil.html", "{% block subject %}x{% endblock %}<html><body>{{ " + expr + " }}</body></html>")
    r = Renderer(render_project)
    with pytest.raises(RenderError) as info:
        r.render(spec("evil"), customer())
    assert info.value.customer_id == "C0000001"
    assert "evil.html" in str(info.value)
    assert isinstance(info.value, TemplateError) and info.value.exit_code == 6


@pytest.mark.parametrize("address", ["jörg@example.com", "x\r\nBcc: a@evil.example", "no-at-sign", "<a@b.example>"])
def test_an_address_that_cannot_be_sent_to_fails_the_e_mail_by_customer_id_without_quoting_it(renderer, address):
    # The error reaches a send's summary and a CI log: the customer is named by id, never by address.
    with pytest.raises(RenderError) as info:
        renderer.render(spec(), customer(email=address))
    assert info.value.customer_id == "C0000001" and "the recipient address" in str(info.value)
    assert address.split("@")[0].split("\r")[0] not in str(info.value)


@pytest.mark.parametrize("target", ["secret.pem", "/proc/self/environ"])
def test_a_template_linked_to_a_file_outside_the_templates_folder_is_refused_and_its_content_never_rendered(
        render_project, tmp_path, monkeypatch, target):
    # A symbolic link committed with the templates would put the DKIM key or the process's
    # environment (signing key, ESP key, database password) into every e-mail.
    monkeypatch.setenv("RELMAIL_ESP_API_KEY", "esp-key-must-not-leak")
    outside = tmp_path / target if not target.startswith("/") else target
    if not target.startswith("/"):
        outside.write_text("-----BEGIN PRIVATE KEY----- dkim-key-must-not-leak", encoding="utf-8")
    (render_project.templates_dir / "partials" / "legal.html").symlink_to(outside)
    write(render_project, "leak.html", '{% block subject %}x{% endblock %}<html><body>{% include "partials/legal.html" %}</body></html>')
    with pytest.raises(TemplateError, match=r"legal\.html: refused, it leads outside .*templates") as info:
        Renderer(render_project).render(spec("leak"), customer())
    assert "must-not-leak" not in str(info.value)
    # A link to another template inside the folder is still a template.
    write(render_project, "partials/plain.html", "<p>Plain partial</p>")
    (render_project.templates_dir / "partials" / "same.html").symlink_to(render_project.templates_dir / "partials" / "plain.html")
    write(render_project, "fine.html", '{% block subject %}x{% endblock %}<html><body>{% include "partials/same.html" %}</body></html>')
    assert "Plain partial" in Renderer(render_project).render(spec("fine"), customer()).html


# -- strict undefined, defaults, per-customer failures ------------------------


def test_undefined_variable_fails_with_file_and_line_but_default_falls_back(render_project):
    write(render_project, "strict.html", "{% block subject %}Hi{% endblock %}<html><body>\n<p>{{ customer.attributes.city|default('somewhere') }}</p>\n<p>{{ customer.attributes.tier }}</p></body></html>")
    r = Renderer(render_project)
    with pytest.raises(RenderError) as info:
        r.render(spec("strict"), customer(attributes={}))
    assert info.value.file.endswith("strict.html") and info.value.line == 3
    assert "tier" in info.value.reason
    email = r.render(spec("strict"), customer(attributes={"tier": "loyal"}))
    assert "<p>somewhere</p>" in email.html and "<p>loyal</p>" in email.html


def test_render_many_continues_past_a_failing_customer_and_produces_nothing_for_it(render_project):
    write(render_project, "needs_city.html", "{% block subject %}Hi{% endblock %}<html><body>{{ customer.attributes.city }}</body></html>")
    r = Renderer(render_project)
    batch = [customer(id="C1", attributes={"city": "Utrecht"}), customer(id="C2", attributes={}), customer(id="C3", attributes={"city": "Delft"})]
    results = list(r.render_many((spec("needs_city"), c) for c in batch))
    assert [res.ok for res in results] == [True, False, True]
    assert results[1].email is None and "city" in results[1].error.reason
    assert b"Delft" in results[2].email.raw.replace(b"=\r\n", b"")


def test_syntax_error_fails_at_compile_with_file_and_line_before_any_render(render_project):
    write(render_project, "broken.html", "{% block subject %}x{% endblock %}\n<html>\n{% if customer %}\n</html>")
    r = Renderer(render_project)
    with pytest.raises(TemplateError, match=r"broken\.html:\d+") as info:
        list(r.render_many([(spec("broken"), customer())]))
    assert not isinstance(info.value, RenderError)
    with pytest.raises(TemplateError, match=r"broken\.html:\d+"):
        r.check_syntax()


def test_unknown_template_is_not_found(renderer):
    with pytest.raises(NotFound):
        renderer.render(spec("nope"), customer())


# -- locale variants and filters ------------------------------------------


def test_locale_variant_chosen_before_the_default_and_falls_back(renderer):
    nl = renderer.render(spec("welcome_offer"), customer(locale="nl_NL"))
    en = renderer.render(spec("welcome_offer"), customer(locale="en_GB"))
    de = renderer.render(spec("welcome_offer"), customer(locale="de_DE"))
    assert nl.template == "welcome_offer.nl.html" and nl.subject == "Welkom bij Fietsenwinkel: 10% korting op je eerste bestelling"
    assert en.template == "welcome_offer.html" and en.subject == "Welcome to Fietsenwinkel: 10% off your first order"
    assert de.template == "welcome_offer.html"
    # Partials have variants too: the Dutch footer in the Dutch e-mail.
    assert "afmelden" in nl.html and "unsubscribe</a>" in en.html
    # Every message of the example has its Dutch variant; a German customer gets each one's default.
    tip = renderer.render(spec("usage_tip"), customer(locale="nl_NL"))
    assert tip.template == "usage_tip.nl.html" and tip.subject.endswith(": toegang delen")
    assert renderer.render(spec("usage_tip"), customer(locale="de_DE")).template == "usage_tip.html"


@pytest.mark.parametrize(
    "expr, locale, expected",
    [
        ("2499|money", "nl_NL", "€\xa02.499,00"),
        ("2499|money", "en_GB", "€2,499.00"),
        ("129|money('GBP')", "en_GB", "£129.00"),
        ("1234.5|number", "nl_NL", "1.234,5"),
        ("1234.5|number", "en_GB", "1,234.5"),
        ("0.15|percent", "nl_NL", "15%"),
        ("'2026-11-23'|date('long')", "nl_NL", "23 november 2026"),
        ("'2026-11-23'|date('long')", "en_GB", "23 November 2026"),
        ("'2026-11-23'|date", "nl_NL", "23 nov 2026"),
        ("'2026-11-23'|add_days(14)|date('short')", "nl_NL", "07-12-2026"),
    ],
)
def test_babel_filters_format_for_the_locale(expr, locale, expected):
    env = make_environment(None, autoescape=False)
    assert env.from_string("{{ " + expr + " }}").render(locale=locale) == expected


@pytest.mark.parametrize(
    "expr, locale, expected",
    [
        # CLDR minimumGroupingDigits = 2: no separator in a four-digit number, one from five digits on.
        ("1234|number", "pl_PL", "1234"),
        ("12345|number", "pl_PL", "12\xa0345"),
        ("1234567|number", "pl", "1\xa0234\xa0567"),
        ("-1234.5|number", "pl_PL", "-1234,5"),
        ("1234.5|money('PLN')", "pl_PL", "1234,50\xa0zł"),
        ("12345.5|money('PLN')", "pl_PL", "12\xa0345,50\xa0zł"),
        ("9999.999|money('PLN')", "pl_PL", "10\xa0000,00\xa0zł"),  # five digits once rounded
        ("12.34|percent", "pl_PL", "1234%"),
        ("1234|number", "es_ES", "1234"),
        ("1234|number", "it_IT", "1234"),
        ("1234|money", "pt_PT", "1234,00\xa0€"),
        # Languages (and Spanish of Mexico, Portuguese of Brazil) that group from four digits keep doing so.
        ("1234|number", "de_DE", "1.234"),
        ("1234|money", "de_DE", "1.234,00\xa0€"),
        ("1234|number", "es_MX", "1,234"),
        ("1234|number", "pt_BR", "1.234"),
        ("1234|number", "en_GB", "1,234"),
    ],
)
def test_numbers_follow_the_locales_minimum_grouping_digits(expr, locale, expected):
    env = make_environment(None, autoescape=False)
    assert env.from_string("{{ " + expr + " }}").render(locale=locale) == expected


PL_PRODUCTS = 'plural(one="produkt", few="produkty", many="produktów", other="produktu")'


@pytest.mark.parametrize(
    "count, locale, expected",
    [(1, "pl_PL", "produkt"), (2, "pl_PL", "produkty"), (4, "pl", "produkty"), (5, "pl_PL", "produktów"), (12, "pl_PL", "produktów"),
     (22, "pl_PL", "produkty"), (25, "pl_PL", "produktów"), (0, "pl_PL", "produktów"), (1.5, "pl_PL", "produktu")],
)
def test_plural_picks_the_languages_form_for_the_count(count, locale, expected):
    env = make_environment(None, autoescape=False)
    assert env.from_string("{{ n|" + PL_PRODUCTS + " }}").render(n=count, locale=locale) == expected
    de = env.from_string('{{ n }} {{ n|plural(one="Bestellung", other="Bestellungen") }}')
    assert [de.render(n=n, locale="de_DE") for n in (1, 2, 0)] == ["1 Bestellung", "2 Bestellungen", "0 Bestellungen"]


def test_plural_without_a_form_the_language_needs_fails_whatever_the_count():
    env = make_environment(None, autoescape=False)
    # One and other are English, not Polish: 2 needs "few" and 5 "many", so even a count of 1 is refused.
    with pytest.raises(TemplateError, match=r"plural: Polish \(pl_PL\) needs the forms one=, few=, many= \(missing: few, many\)"):
        env.from_string('{{ 1|plural(one="produkt", other="produkty") }}').render(locale="pl_PL")


def test_filters_reject_non_numbers_with_a_template_error():
    env = make_environment(None, autoescape=False)
    with pytest.raises(TemplateError, match="money: expected a number"):
        env.from_string("{{ 'abc'|money }}").render(locale="nl_NL")


@pytest.mark.parametrize("code", ["ZL", "EURO", "zloty"])
def test_money_refuses_a_currency_code_babel_does_not_know_instead_of_printing_it_as_a_label(code):
    env = make_environment(None, autoescape=False)
    with pytest.raises(TemplateError, match=f"money: '{code}' is not an ISO 4217 currency code"):
        env.from_string("{{ 5|money(code) }}").render(locale="pl_PL", code=code)
    assert env.from_string("{{ 5|money('pln') }}").render(locale="pl_PL") == "5,00\xa0zł"


# -- links ------------------------------------------------------------------


def test_unsubscribe_token_verifies_and_tampering_fails(renderer):
    email = renderer.render(spec(), customer())
    token = re.search(r"/unsubscribe/([A-Za-z0-9_.\-]+)", email.html).group(1)
    claims = tokens.verify(KEY, token, PROJECT)
    assert claims == tokens.Claims("C0000001", "promotions", "weekly:2026-W48", PROJECT)
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(SignatureError):
        tokens.verify(KEY, forged, PROJECT)
    with pytest.raises(SignatureError):
        tokens.verify("another-key", token, PROJECT)
    # Another customer's link is not guessable from this one.
    other = renderer.render(spec(), customer(id="C0000002"))
    assert re.search(r"/unsubscribe/([A-Za-z0-9_.\-]+)", other.html).group(1) != token


def test_a_token_of_another_project_sharing_the_key_is_refused():
    # Staging and production signing with one key: production's link must not unsubscribe anyone on staging.
    production = tokens.sign(KEY, "C0000001", "promotions", "weekly:2026-W48", "Fietsenwinkel")
    with pytest.raises(SignatureError, match="another project"):
        tokens.verify(KEY, production, "Fietsenwinkel staging")
    assert tokens.verify(KEY, production, "Fietsenwinkel").project == "Fietsenwinkel"


def test_tokens_are_itsdangerous_own_and_links_already_sent_keep_working():
    from itsdangerous import URLSafeSerializer

    plain = URLSafeSerializer(KEY, salt="relmail.unsubscribe.v1")
    for claims in [("C0000001", "promotions", "weekly:2026-W48"), ("C1", "*", ""), ("C" * 300, "t" * 200, "r")]:
        # A link signed before tokens named their project (the last one zlib-compressed by itsdangerous)
        # is accepted by every project of the key: it is in inboxes for months.
        theirs = plain.dumps(list(claims))
        assert tokens.verify(KEY, theirs, PROJECT) == tokens.Claims(*claims, project=None)
        assert tokens.verify(KEY, theirs, "another project") == tokens.Claims(*claims, project=None)
        ours = tokens.sign(KEY, *claims, PROJECT)
        if not theirs.startswith("."):  # not compressed: our token is the same format, with the project
            assert ours == plain.dumps([*claims, PROJECT])
        assert plain.loads(ours) == [*claims, PROJECT]


def test_utm_on_outbound_links_never_on_unsubscribe_or_preferences(renderer):
    email = renderer.render(spec("newsletter"), customer())
    hrefs = re.findall(r'href="([^"]+)"', email.html)
    unsub = [h for h in hrefs if "/unsubscribe/" in h or "/preferences/" in h]
    shop_links = [h for h in hrefs if h.startswith("https://fietsenwinkel.example/") and h not in unsub]
    assert unsub and shop_links
    assert all("utm_" not in h for h in unsub)
    assert all("utm_source=relmail&amp;utm_medium=email&amp;utm_campaign=weekly&amp;utm_content=newsletter" in h for h in shop_links)
    # Literal links (rewritten at compile time) and context links (per e-mail) both.
    assert any(h.startswith("https://fietsenwinkel.example/blog/winter-riding?utm_source=") for h in shop_links)
    assert any(h.startswith("https://fietsenwinkel.example/p/EB-200?utm_source=") for h in shop_links)
    # The .txt body uses the same rule.
    assert "https://fietsenwinkel.example/p/EB-200?utm_source=relmail&utm_medium=email" in email.text
    assert re.search(r"Unsubscribe: https://\S+/unsubscribe/\S+$", email.text, re.M).group(0).count("utm_") == 0


def test_utm_keeps_existing_query_and_fragment_and_skips_other_domains(render_project):
    write(render_project, "links.html", '{% block subject %}x{% endblock %}<html><body>'
          '<a href="https://fietsenwinkel.example/a?x=1#top">a</a><a href="{{ data.u }}">b</a>'
          '<a href="https://other.example/">c</a><a href="mailto:service@fietsenwinkel.example">d</a></body></html>')
    email = Renderer(render_project).render(spec("links"), customer(data={"u": "https://fietsenwinkel.example/b?y=2&z=3"}))
    assert 'href="https://fietsenwinkel.example/a?x=1&amp;utm_source=relmail&amp;utm_medium=email&amp;utm_campaign=weekly&amp;utm_content=links#top"' in email.html
    assert 'href="https://fietsenwinkel.example/b?y=2&amp;z=3&amp;utm_source=relmail' in email.html
    assert 'href="https://other.example/"' in email.html
    assert 'href="mailto:service@fietsenwinkel.example"' in email.html


# -- text part --------------------------------------------------------------


def test_text_part_derived_from_html_keeps_links_and_skips_head_and_preheader(renderer):
    email = renderer.render(spec("ebike_launch"), customer(locale="nl_NL"))
    assert email.text.startswith("# Hallo Jan,")
    assert "Verder fietsen met minder moeite" not in email.text  # the hidden preheader
    assert "@media" not in email.text and "<" not in email.text
    assert "[Bekijk de E-bike Stad 200](https://fietsenwinkel.example/p/EB-200?utm_source=relmail" in email.text
    assert "€\xa02.499,00" in email.text and "€\xa0129,00" in email.text
    assert re.search(r"\[afmelden\]\(https://fietsenwinkel\.example/relmail/unsubscribe/[^)?]+\)", email.text)


#: A gallery-style e-mail with no .txt: its preheader hidden the ways ESP galleries hide one.
HIDDEN_PREHEADERS = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{% block subject %}Spring is in{% endblock %}</title>
<style>
  .preheader { display: none !important; visibility: hidden; mso-hide: all; font-size: 1px; line-height: 1px;
               max-height: 0; max-width: 0; opacity: 0; overflow: hidden; }
  .hide-mobile { color: #333333; }
  @media only screen and (max-width: 620px) { .hide-mobile { display: none !important; } }
</style>
</head>
<body>
<span class="preheader">Spring picks for {{ customer.first_name }}: 20% off until Sunday.</span>
<div style="display:none;max-height:0;overflow:hidden">Preview text for the inbox list&#8199;&#847;&#8199;&#847;</div>
<div style="font-size:0; mso-hide:all">Only Outlook skips this line.</div>
<p style="visibility:hidden">Invisible spacer words.</p>
<div style="display:none">{% if customer.first_name %}Hidden greeting {{ customer.first_name }}{% endif %}{% set seen = true %}</div>
<table role="presentation" width="600">
  <tr><td><h1>Hello {{ customer.first_name }},</h1><p>Our spring range is in.</p></td></tr>
  {% for p in products %}<tr><td><a href="{{ p.url }}">{{ p.name }}</a></td></tr>{% endfor %}
  <tr><td class="hide-mobile">Free delivery on orders over 50 euros.</td></tr>
  <tr><td>{% if seen %}Seen.{% endif %} <a href="{{ links.unsubscribe }}">Unsubscribe</a></td></tr>
</table>
</body>
</html>
"""


def test_text_part_derived_from_html_leaves_out_what_css_hides(render_project):
    write(render_project, "spring.html", HIDDEN_PREHEADERS)
    text = Renderer(render_project).render(spec("spring"), customer()).text
    for hidden in ("Spring picks", "20% off", "Preview text", "Only Outlook", "Invisible spacer", "Hidden greeting", "\u2007", "\u034f"):
        assert hidden not in text, (hidden, text)
    assert text.startswith("# Hello Jan,\n\nOur spring range is in.\n"), text
    assert "[E-bike Stad 200](https://fietsenwinkel.example/p/EB-200?utm_source=relmail" in text
    # Hidden only on phones by a media query: still read as text. A {% set %} inside a hidden element still runs.
    assert "Free delivery on orders over 50 euros." in text and "Seen." in text


def test_text_part_from_txt_template_when_present(renderer):
    email = renderer.render(spec("newsletter"), customer())
    assert email.text.startswith("Fietsenwinkel news\n==================\n\nHello Jan,")
    assert "E-bike Stad 200: €2,499.00\nhttps://fietsenwinkel.example/p/EB-200?utm_source=relmail" in email.text


def test_text_template_derived_once_per_template(renderer, monkeypatch):
    import relmail.render.compiler as mod

    calls = []
    real = mod.derive_text_source
    monkeypatch.setattr(mod, "derive_text_source", lambda *a, **k: calls.append(1) or real(*a, **k))
    for i in range(5):
        renderer.render(spec("usage_tip"), customer(id=f"C{i}"))
    assert len(calls) == 1


@pytest.mark.parametrize("template", ["ebike_launch", "welcome_offer", "newsletter"])
@pytest.mark.parametrize("locale, prices", [("en_GB", ("€2,499.00", "€129.00")), ("nl_NL", ("€\xa02.499,00", "€\xa0129,00"))])
def test_the_demo_templates_list_products_one_per_line_in_the_text_part(renderer, template, locale, prices):
    text = renderer.render(spec(template), customer(locale=locale)).text
    utm = "?utm_source=relmail&utm_medium=email&utm_campaign=weekly&utm_content=" + template.replace("_", "-")
    block = (f"E-bike Stad 200: {prices[0]}\nhttps://fietsenwinkel.example/p/EB-200{utm}\n\n"
             f"SlimSlot S1 smart lock: {prices[1]}\nhttps://fietsenwinkel.example/p/LOCK-S1{utm}\n")
    assert block in text, text
    assert "[E-bike Stad 200](" not in text and "[SlimSlot" not in text


def test_an_include_without_a_txt_partial_is_derived_from_its_html_and_a_locale_variant_is_chosen(render_project):
    write(render_project, "partials/card.html", '<tr><td><a href="{{ p.url }}">{{ p.name }}</a> <b>{{ p.price|money }}</b></td></tr>')
    write(render_project, "partials/offer.html", "<tr><td>{{ message.data.code }}</td></tr>")
    write(render_project, "partials/offer.nl.txt", "Code: {{ message.data.code }}")
    write(render_project, "cards.html", '{% extends "layouts/base.html" %}{% block subject %}x{% endblock %}{% block content %}'
          '{% for p in products %}{% include "partials/card.html" %}{% endfor %}{% include "partials/offer.html" %}{% endblock %}')
    r = Renderer(render_project)
    en = r.render(spec("cards", data={"code": "W10"}), customer()).text
    nl = r.render(spec("cards", data={"code": "W10"}), customer(locale="nl_NL")).text
    assert "[E-bike Stad 200](https://fietsenwinkel.example/p/EB-200?utm_source=relmail" in en and "€2,499.00" in en
    assert "W10" in en and "Code: W10" not in en  # no offer.txt for English: derived from the HTML
    assert "Code: W10" in nl


# -- inline-once: the two traps and the equality --------------------------


def test_trap_jinja_in_href_and_src_is_not_percent_encoded():
    env = make_environment(None)
    src = '<html><head><style>a{color:red}</style></head><body><a href="{{ p.url }}"><img src="{{ p.img }}" alt="{{ p.name }}"></a></body></html>'
    out = inline_source(env, src)
    assert 'href="{{ p.url }}"' in out and 'src="{{ p.img }}"' in out
    assert "%7B" not in out and "%20" not in out
    assert 'style="color:red"' in out


def test_trap_loops_between_table_rows_stay_in_the_table():
    env = make_environment(None)
    src = ('<html><head><style>td{padding:4px}</style></head><body><table>\n'
           '{% for p in products %}<tr><td>{{ p.name }}</td></tr>{% else %}<tr><td>none</td></tr>{% endfor %}\n'
           '{% if extra %}<tr><td>extra</td></tr>{% endif %}</table></body></html>')
    out = inline_source(env, src)
    table = out[out.index("<table>"): out.index("</table>")]
    # Foster parenting would have moved the statements before <table>.
    assert "{% for p in products %}" in table and "{% endfor %}" in table and "{% if extra %}" in table
    html = env.from_string(out).render(products=[{"name": "A"}, {"name": "B"}], extra=False)
    assert html.count('<td style="padding:4px">') == 2
    assert html.index("<table>") < html.index(">A<") < html.index(">B<") < html.index("</table>")


def test_media_queries_stay_in_head_style_with_important():
    env = make_environment(None)
    src = ('<html><head><style>.c{width:600px} @media only screen and (max-width:620px){.c{width:100% !important}}</style>'
           '</head><body><table class="c"><tr><td>{{ x }}</td></tr></table></body></html>')
    out = inline_source(env, src)
    head = out[: out.index("</head>")]
    assert "@media only screen and (max-width:620px)" in head.replace(": ", ":") and "!important" in head
    assert 'class="c"' in out and "width:600px" in out


def test_jinja_statement_inside_style_is_refused_with_line():
    env = make_environment(None)
    with pytest.raises(TemplateError, match=r":2: Jinja statements inside <style>"):
        protect(env, "<html><head><style>\n{% if x %}.a{color:red}{% endif %}</style></head></html>", "t.html")


def test_computed_include_name_is_refused(render_project):
    write(render_project, "dyn.html", '{% block subject %}x{% endblock %}<html><body>{% include name %}</body></html>')
    with pytest.raises(TemplateError, match=r"dyn\.html:1: include must name its template with a string literal"):
        Renderer(render_project).render(spec("dyn"), customer())


def test_inline_once_equals_inline_after_render_for_every_shipped_template_and_sample(renderer):
    checked = 0
    for template in renderer.message_templates():
        for locale in ["en_GB", "nl_NL"]:
            for ctx in sample_contexts(locale):
                assert inline_difference(renderer, spec(template), ctx) is None, (template, locale, ctx.id)
                checked += 1
    assert checked == 5 * 2 * 3


def test_inline_check_catches_a_class_set_by_jinja(render_project):
    # A class computed by Jinja cannot be matched by a selector at compile time: the check must say so.
    write(render_project, "cls.html", '{% block subject %}x{% endblock %}<html><head><style>.hot{color:red}</style></head>'
          '<body><p class="{{ data.cls }}">hi</p></body></html>')
    diff = inline_difference(Renderer(render_project), spec("cls"), customer(data={"cls": "hot"}))
    assert diff is not None and "color:red" in diff


def test_inline_runs_premailer_once_per_template_source(renderer, monkeypatch):
    import relmail.render.inline as inline

    inline._CACHE.clear()
    calls = []
    real = inline._premailer
    monkeypatch.setattr(inline, "_premailer", lambda doc, *rest: calls.append(1) or real(doc, *rest))
    for i in range(20):
        renderer.render(spec("usage_tip", id=f"m{i % 2}"), customer(id=f"C{i}", locale="en_GB"))
    assert len(calls) == 1  # two messages share the template: still one premailer run


def test_cli_render_with_json_context(render_project, tmp_path):
    from click.testing import CliRunner

    from relmail.cli import cli

    ctx = tmp_path / "ctx.json"
    ctx.write_text('{"brand": {"name": "Shop & Co", "postal_address": "Dam 1"}, "links": {"preferences": "https://x/p", "unsubscribe": "https://x/u"}}')
    out = CliRunner().invoke(cli, ["-p", str(render_project.root), "render", "partials/footer.html", "--context", str(ctx), "--locale", "nl_NL"])
    assert out.exit_code == 0, out.output
    assert "klant bent bij Shop &amp; Co" in out.output
    missing = CliRunner().invoke(cli, ["-p", str(render_project.root), "render", "partials/footer.html", "--context", str(ctx.parent / "nope.json")])
    assert missing.exit_code == 2
    # Without them in the context, brand and links are the project's, as in a send.
    ctx.write_text("{}")
    own = CliRunner().invoke(cli, ["-p", str(render_project.root), "render", "partials/footer.html", "--context", str(ctx)])
    assert own.exit_code == 0, own.output
    brand = render_project.settings.brand
    assert brand.name.replace("&", "&amp;") in own.output
    assert f"{render_project.settings.unsubscribe_url.rstrip('/')}/unsubscribe/preview" in own.output
    (render_project.templates_dir / "typo.html").write_text("<p>{{ brand.name }}</p>\n<p>{{ custmer.first_name }}</p>\n")
    undefined = CliRunner().invoke(cli, ["-p", str(render_project.root), "render", "typo.html", "--context", str(ctx)])
    assert undefined.exit_code == 6 and "typo.html:2" in undefined.output


def test_a_featured_product_missing_from_the_catalogue_tests_false_and_printing_it_names_the_product():
    from jinja2.sandbox import SandboxedEnvironment

    from relmail.render.catalog import Catalog, catalog_variables
    from relmail.render.optional import Missing

    variables = catalog_variables(Catalog({}), [], absent=("EB-200",))
    env = SandboxedEnvironment(undefined=Missing)
    assert env.from_string("{% if featured %}yes{% else %}no{% endif %}").render(variables) == "no"
    with pytest.raises(Exception, match="featured product 'EB-200' is not in the catalogue"):
        env.from_string("{{ featured.name }}").render(variables)


SUBJECTS = """\
title: Subjects
messages:
  - id: launch
    template: ebike_launch
    topic: promotions
    segments: [everyone]
    offer: promotion
    subject:
      en: "For {{ customer.first_name }}"
      nl: "Voor {{ customer.frist_name }}"
      de: "Für {{ customer.first_name }"
"""


def test_a_campaign_subject_that_fails_is_named_by_the_campaign_file_line_and_field(render_project):
    from relmail.campaigns import load_campaign
    from relmail.render import RenderError

    (render_project.campaigns_dir / "subjects.yml").write_text(SUBJECTS, encoding="utf-8")
    campaign = load_campaign(render_project, "subjects")
    s = MessageSpec.from_campaign(campaign, campaign.message("launch"), "subjects:2026-W48")
    renderer = Renderer(render_project)
    assert renderer.render(s, customer()).subject == "For Jan"
    path = str(render_project.campaigns_dir / "subjects.yml")
    # Not the template: the template renders fine, the Dutch subject in the campaign has the typo.
    with pytest.raises(RenderError) as caught:
        renderer.render(s, customer(locale="nl_NL"))
    assert caught.value.file == path and caught.value.line == 10
    assert f"{path}:10: field 'messages.0.subject.nl': undefined variable: 'dict object' has no attribute 'frist_name'" in str(caught.value)
    with pytest.raises(TemplateError, match=re.escape(f"{path}:11: field 'messages.0.subject.de': unexpected '}}'")):
        renderer.render(s, customer(locale="de_DE"))


def test_html_lang_and_content_language_say_the_language_the_e_mail_is_written_in(renderer):
    # The example's default locale is en_GB; welcome_offer has a Dutch variant. A Brazilian customer reads the English base.
    for locale, language in (("nl_NL", "nl"), ("en_GB", "en"), ("pt_BR", "en")):
        email = renderer.render(spec("welcome_offer"), customer(locale=locale))
        head = email.raw.split(b"\r\n\r\n", 1)[0].decode()
        assert f"\r\nContent-Language: {language}\r\n" in head, locale
        assert f'<html lang="{language}"' in email.html, locale


@pytest.mark.parametrize("lang", ["en", "en-GB", "fr_BE"])
def test_a_base_template_that_names_its_own_language_is_sent_as_written_in_it(render_project, lang):
    # A Belgian shop mails in Dutch by default (default_locale nl_BE), with a French variant and an English base
    # for everyone else. The base's <html lang="en"> is what it is written in: Content-Language said the default's
    # language (nl), and the plan warned that English readers got a Dutch e-mail.
    toml = render_project.root / "relmail.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('default_locale = "en_GB"', 'default_locale = "nl_BE"'), encoding="utf-8")
    project = Project.load(render_project.root)
    write(project, "fallback.html", f'<!DOCTYPE html>\n<html dir="ltr" lang="{lang}">\n<head><title>{{% block subject %}}Hello'
                                    '{% endblock %}</title></head><body><p>Hello {{ language }}</p>'
                                    '<a href="{{ links.unsubscribe }}">Unsubscribe</a></body></html>\n')
    write(project, "fallback.nl.html", '<html lang="{{ language }}"><head><title>{% block subject %}Dag{% endblock %}</title>'
                                       '</head><body>Dag <a href="{{ links.unsubscribe }}">Afmelden</a></body></html>')
    renderer = Renderer(project)
    declared = lang.replace("_", "-")
    for locale, language in (("de_DE", declared), ("nl_BE", "nl"), ("en_US", declared)):
        email = renderer.render(spec("fallback"), customer(locale=locale))
        head = email.raw.split(b"\r\n\r\n", 1)[0].decode()
        assert f"\r\nContent-Language: {language}\r\n" in head, locale
    assert f"Hello {declared}" in renderer.render(spec("fallback"), customer(locale="de_DE")).html
