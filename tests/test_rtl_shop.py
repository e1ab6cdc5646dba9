"""A shop in Israel and the Gulf: Hebrew, Arabic and English e-mails, from a blank project to the SMTP server.

The project is made by ``relmail init --blank --locale he_IL``, its
customers come from the Magento samples (``examples/magento/``) through
copies of the built-in mapping that give each store view its language, and
its templates are written as docs/guide/templates.md says: ``lang`` and
``dir`` from ``{{ language }}`` and ``{{ direction }}`` on ``<html>`` and on
the outermost element, a Latin product name inside Hebrew text passed
through ``isolate``. The e-mails go to a real SMTP server (aiosmtpd) and are
read back from the bytes it received; the Hebrew one is shown in headless
Chromium at phone width. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.sendkit import use_smtp
from tests.smtp_server import PASSWORD, SmtpServer

from relmail.cli import cli
from relmail.project import Project
from relmail.sending.run import send
from relmail.store.db import connect

MAGENTO = Path(__file__).resolve().parent.parent / "examples" / "magento"
NOW = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
FSI, PDI, RLM = "\u2068", "\u2069", "\u200f"
NOA, OMAR, SARAH, RAMI = ("magento-" + hashlib.sha256(a.encode()).hexdigest()[:16] for a in (
    "noa.levi@mail.example", "omar.haddad@mail.example", "sarah.miller@mail.example", "rami.o'neil@mail.example"))

HEBREW = """<!DOCTYPE html>
<html lang="{{ language }}" dir="{{ direction }}">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block subject %}חדש: {{ featured.name }}{% endblock %}</title>
<style> .wrap { direction: rtl; text-align: right; } .price { font-weight: bold; } p { margin: 0 0 12px; } </style></head>
<body>
<div class="wrap" dir="{{ direction }}">
<p id="hello">שלום {{ customer.first_name|default('לקוח יקר', true) }},</p>
<p>חדש בחנות: <a href="{{ featured.url }}"><strong>{{ featured.name|isolate }}</strong></a> ב־<span class="price">{{ featured.price|money }}</span>, עד {{ now|add_days(14)|date('long') }}.</p>
<p id="tip">גם מומלץ: {{ product("ZAA-100").attributes.name_en|isolate }} ב־{{ product("ZAA-100").price|money }}.</p>
<p id="bare">גם מומלץ: {{ product("ZAA-100").attributes.name_en }} ב־{{ product("ZAA-100").price|money }}.</p>
<p><a href="{{ links.unsubscribe }}">הסרה מרשימת התפוצה</a></p>
</div>
</body>
</html>
"""
ARABIC = """<!DOCTYPE html>
<html lang="{{ language }}" dir="{{ direction }}">
<head><meta charset="utf-8"><title>{% block subject %}جديد: {{ featured.name }}{% endblock %}</title></head>
<body>
<div dir="{{ direction }}">
<p>مرحبًا {{ customer.first_name|default('عزيزي العميل', true) }}،</p>
<p>جديد في المتجر: <a href="{{ featured.url }}">{{ featured.name|isolate }}</a> بسعر {{ featured.price|money }}، حتى {{ now|add_days(14)|date('long') }}.</p>
<p><a href="{{ links.unsubscribe }}">إلغاء الاشتراك</a></p>
</div>
</body>
</html>
"""
ENGLISH = """<!DOCTYPE html>
<html lang="en" dir="{{ direction }}">
<head><meta charset="utf-8"><title>{% block subject %}New: {{ featured.name }}{% endblock %}</title></head>
<body>
<p>Hello {{ customer.first_name|default('there', true) }},</p>
<p>New in the shop: <a href="{{ featured.url }}">{{ featured.name }}</a> for {{ featured.price|money }}.</p>
<p><a href="{{ links.unsubscribe }}">Unsubscribe</a></p>
</body>
</html>
"""
PRODUCTS = """id,name,category,price,url,name_ar,name_en,price_ar,price_en_AE
OLV-500,שמן זית Galil Gold 500ml,oil,89.90,https://galil.example/p/olv-500,زيت زيتون Galil Gold 500 مل,Galil Gold olive oil 500ml,89.00,89.00
ZAA-100,זעתר (100 גרם),spices,24.50,https://galil.example/p/zaa-100,زعتر (100 غرام),Za'atar Extra!,24.00,24.00
"""
CAMPAIGN = """title: New olive oil
policy:
  consent: opt-in
  min_relevance: 0
  holdout_share: 0
messages:
  - id: oil
    template: oil
    topic: news
    segments: [everyone]
    products: ["OLV-500"]
    offer: promotion
    value: 5
"""
#: The shop's store views and the languages they are in, added to copies of the built-in mappings.
LOCALE_OF_STORE = "  locale: {column: _store, parse: lookup, values: {he_il: he_IL, ar_ae: ar_AE, en_ae: en_AE, default: he_IL, admin: null}}\n"
LOCALE_OF_VIEW = ("  locale: {column: Store View, parse: lookup, values: {Hebrew Store View: he_IL, Arabic Store View: ar_AE, "
                  "English Store View: en_IL, English Store View (UAE): en_AE, Default Store View: he_IL}}\n")


def relmail(root: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--project", str(root), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def shop(tmp_path, db_url, monkeypatch) -> Project:
    monkeypatch.setenv("RELMAIL_DATABASE_URL", db_url)
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "test-signing-key-not-secret")
    root = tmp_path / "shop"
    result = CliRunner().invoke(cli, ["init", str(root), "--blank", "--name", "Galil & Gulf", "--domain", "galil.example",
                                      "--locale", "he_IL", "--timezone", "Asia/Jerusalem"])
    assert result.exit_code == 0 and "Note:" not in result.output, result.output
    config = root / "relmail.toml"
    config.write_text(config.read_text().replace('currency = "ILS"', 'currency = { he = "ILS", ar = "AED", en = "ILS", en_AE = "AED" }')
                      .replace('postal_address = ""', 'postal_address = "Herzl 12, Haifa"')
                      # The pages name each topic in every language the customers read (templates check warns otherwise).
                      # (init --blank names its own newsletter topic in every language it has wording in).
                      + '\n[topics.news]\nlabel = { he = "חדשות", ar = "أخبار", en = "News" }\n')
    relmail(root, "db", "upgrade")
    builtin = Path(__import__("relmail").__file__).parent / "importers" / "mappings" / "magento"
    (root / "maps").mkdir()
    (root / "maps" / "customers.yml").write_text((builtin / "customers.yml").read_text() + LOCALE_OF_STORE)
    (root / "maps" / "subscribers.yml").write_text((builtin / "customers-newsletter.yml").read_text() + LOCALE_OF_VIEW)
    relmail(root, "import", "customers", str(MAGENTO / "export_customer_main.csv"), "--map", str(root / "maps" / "customers.yml"))
    relmail(root, "import", "customers", str(MAGENTO / "subscribers.csv"), "--map", str(root / "maps" / "subscribers.yml"))
    relmail(root, "import", "orders", str(MAGENTO / "export.csv"), "--map", "magento")
    (root / "products.csv").write_text(PRODUCTS, encoding="utf-8")
    relmail(root, "import", "products", str(root / "products.csv"))
    for name, text in (("oil.he.html", HEBREW), ("oil.ar.html", ARABIC), ("oil.html", ENGLISH)):
        (root / "templates" / name).write_text(text, encoding="utf-8")
    (root / "campaigns" / "oil.yml").write_text(CAMPAIGN)
    return Project.load(root)


def test_the_templates_check_passes_and_names_an_e_mail_in_hebrew_that_lacks_dir(shop):
    # The blank project's newsletter is Hebrew only: its Arabic and English readers are the check's one warning.
    assert "0 errors, 0 warnings" in relmail(shop.root, "templates", "check", "--strict", "--campaign", "oil")
    he = shop.templates_dir / "oil.he.html"
    he.write_text(HEBREW.replace(' dir="{{ direction }}"', ""), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--project", str(shop.root), "templates", "check", "--strict"])
    assert result.exit_code == 6
    assert ("warning: oil.he.html: oil/oil [oil.he.html + text from the HTML]: an e-mail in 'he', a right-to-left language, "
            "without dir=\"rtl\" on <html> and on an element in <body> (Gmail keeps no attribute of <html> or <body>): mail "
            "programs lay it out left to right; write <html lang=\"{{ language }}\" dir=\"{{ direction }}\"> and give the "
            "outermost table or div dir=\"{{ direction }}\"") in result.output
    # On <html> only: Gmail's readers would still get it left to right.
    he.write_text(HEBREW.replace('<div class="wrap" dir="{{ direction }}">', '<div class="wrap">'), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--project", str(shop.root), "templates", "check"])
    assert "without dir=\"rtl\" on an element in <body> (Gmail keeps no attribute" in result.output
    assert "on <html> and" not in result.output


def test_the_text_part_keeps_the_hebrew_in_its_logical_order_and_the_prices_in_each_customers_currency(shop, monkeypatch):
    monkeypatch.setenv("RELMAIL_NOW", NOW.isoformat())  # the offer's end is 14 days after the preview's now
    text = relmail(shop.root, "preview", "oil", "--customer", NOA, "--text")
    lines = [line for line in text.splitlines() if line]
    assert lines[0] == "שלום נועה,"
    assert lines[1] == (f"חדש בחנות: [{FSI}שמן זית Galil Gold 500ml{PDI}](https://galil.example/p/olv-500) "
                        f"ב־{RLM}89.90\xa0{RLM}₪, עד 21 בדצמבר 2026.")
    assert lines[2] == f"גם מומלץ: {FSI}Za'atar Extra!{PDI} ב־{RLM}24.50\xa0{RLM}₪."
    arabic = relmail(shop.root, "preview", "oil", "--customer", OMAR, "--text")
    assert f"جديد في المتجر: [{FSI}زيت زيتون Galil Gold 500 مل{PDI}](https://galil.example/p/olv-500) بسعر {RLM}89.00\xa0د.إ.{RLM}، حتى 21 ديسمبر 2026." in arabic
    # English in the Emirates pays in dirhams (price_en_AE), English in Israel in shekels: a currency per locale.
    assert "for AED\xa089.00." in relmail(shop.root, "preview", "oil", "--customer", SARAH, "--text")
    assert "for ₪89.90." in relmail(shop.root, "preview", "oil", "--customer", RAMI, "--text")


def test_the_dry_run_ci_plan_renders_every_language_and_passes_its_gates(shop, monkeypatch):
    monkeypatch.setenv("RELMAIL_NOW", "2026-12-04T14:00:00+02:00")
    out = relmail(shop.root, "plan", "oil", "--window", "next-week", "--dry-run", "--out", str(shop.root / "plan.md"),
                  "--render-sample", "3", "--max-suppression-rate", "0.95", "--min-sends", "1")
    assert "render gate: 6 renders of 3 template variants, 0 failed." in out
    for variant in ("oil.ar.html + text from the HTML", "oil.he.html + text from the HTML", "oil.html + text from the HTML"):
        assert variant in out
    # Layla unsubscribed, Dan never confirmed, Yossi never subscribed: suppressed, and named in the preview.
    assert re.search(r"NO_CONSENT\s+3\s+3", out)
    assert (shop.root / "plan.md").read_text().count(" | suppress | ") == 3


def test_a_hebrew_e_mail_as_the_smtp_server_received_it(shop, tmp_path, monkeypatch, browser):
    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)
    engine = connect(shop.database_url)
    try:
        with SmtpServer(tmp_path) as server:
            use_smtp(shop, server)
            sent = send(Project.load(shop.root), engine, "oil", "2026-W50", now=lambda: NOW)
            received = {m.rcpt_tos[0]: m.data for m in server.handler.messages}
    finally:
        engine.dispose()
    assert sent.done["accepted"] == 6 == len(received)
    raw = received["noa.levi@mail.example"]
    header = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")  # every header line is ASCII: the Hebrew is RFC 2047-encoded
    (subject,) = re.findall(r"^Subject: (.*(?:\r\n[ \t].*)*)", header, re.M)
    assert all(re.fullmatch(r"=\?utf-8\?[bq]\?[^?]+\?=", word) for word in subject.split()), subject
    assert all(len(line) <= 78 for line in f"Subject: {subject}".split("\r\n"))  # folded, as RFC 2047 asks
    assert str(make_header(decode_header(subject))) == "חדש: שמן זית Galil Gold 500ml"
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Content-Language"] == "he"
    html = message.get_body(("html",)).get_content()
    plain = message.get_body(("plain",)).get_content()
    assert message.get_body(("html",)).get_content_charset() == message.get_body(("plain",)).get_content_charset() == "utf-8"
    assert '<html lang="he" dir="rtl">' in html and '<div class="wrap" dir="rtl" style="direction:rtl; text-align:right"' in html
    assert plain.replace("\r\n", "\n").startswith("שלום נועה,\n\nחדש בחנות: [\u2068שמן זית Galil Gold 500ml\u2069]")
    assert "עד 21 בדצמבר 2026." in plain  # the templates' now is the send's clock (NOW), not the machine's
    arabic = email.message_from_bytes(received["omar.haddad@mail.example"], policy=email.policy.default)
    assert arabic["Content-Language"] == "ar" and str(arabic["Subject"]) == "جديد: زيت زيتون Galil Gold 500 مل"
    assert '<html lang="ar" dir="rtl">' in arabic.get_body(("html",)).get_content()

    # In a browser at phone width: right to left, nothing sticking out, the isolated name in one piece.
    page = tmp_path / "noa.html"
    page.write_text(html, encoding="utf-8")
    browser.show(page, 375)
    seen = browser.evaluate("""(() => {
        const box = e => e.getBoundingClientRect();
        const at = (p, ch) => { const node = [...p.childNodes].find(n => n.nodeType === 3 && n.data.includes("Za'atar"));
            const r = document.createRange(); const i = node.data.indexOf(ch, node.data.indexOf("Za'atar"));
            r.setStart(node, i); r.setEnd(node, i + 1); return r.getBoundingClientRect().left; };
        const hello = document.getElementById('hello'), range = document.createRange();
        range.selectNodeContents(hello);
        return {direction: getComputedStyle(document.querySelector('.wrap')).direction,
                scroll: document.documentElement.scrollWidth,
                gapRight: box(hello).right - range.getBoundingClientRect().right,
                gapLeft: range.getBoundingClientRect().left - box(hello).left,
                isolated: at(document.getElementById('tip'), '!') - at(document.getElementById('tip'), 'Z'),
                bare: at(document.getElementById('bare'), '!') - at(document.getElementById('bare'), 'Z')};
    })()""")
    assert seen["direction"] == "rtl" and seen["scroll"] <= 375
    assert seen["gapRight"] < 1 < seen["gapLeft"]  # the greeting starts at the right
    # "Za'atar Extra!" isolated ends in its "!"; without isolate the "!" jumps to the left of the name, its end in Hebrew.
    assert seen["isolated"] > 0 > seen["bare"], seen
