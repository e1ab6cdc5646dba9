"""The preference and unsubscribe pages in Hebrew and Arabic, in headless Chromium at phone and desktop width.

The pages are laid out right to left (``dir`` on ``<html>``, logical CSS
sides), nothing sticks out on either side, axe-core finds nothing, and the
forms change the customer's consent. The example project names its topics
in English and Dutch; ``promotions`` gets Hebrew and Arabic labels here and
``newsletter`` an English one only ("Bike News+"), as a shop's table often
has, so a Latin label ending in a neutral character sits inside Hebrew and
Arabic sentences. Each test runs on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.test_web_browser import axe_violations, link, serving

from relmail.store.models import Preference

HE, AR, EN = "C0000011", "C0000012", "C0000013"

#: Page direction, what sticks out of the viewport on either side, and where the notice's bar is.
LAYOUT = """(() => {
    const over = Array.from(document.querySelectorAll('body *')).filter(e => {
        const r = e.getBoundingClientRect(); return r.right > innerWidth + 0.5 || r.left < -0.5; });
    const notice = document.querySelector('.notice'), style = notice && getComputedStyle(notice);
    return {lang: document.documentElement.lang, dir: document.documentElement.dir,
            direction: getComputedStyle(document.body).direction, scroll: document.documentElement.scrollWidth,
            over: over.map(e => e.outerHTML.slice(0, 60)), h1: document.querySelector('h1').textContent,
            bar: style ? [style.borderRightWidth, style.borderLeftWidth] : null,
            text: document.body.innerText};
})()"""


@pytest.fixture
def site(project, engine):
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace(
        'label = { en = "Offers and new bikes", nl = "Aanbiedingen en nieuwe fietsen" }',
        'label = { en = "Offers and new bikes", nl = "Aanbiedingen en nieuwe fietsen", he = "מבצעים ואופניים חדשים", '
        'ar = "عروض ودراجات جديدة" }').replace('label = { en = "Newsletter", nl = "Nieuwsbrief" }', 'label = { en = "Bike News+" }'))
    yield from serving(project, engine, {HE: "he_IL", AR: "ar_AE", EN: "en_GB"}, "example.org")


def consent(engine, customer: str) -> dict[str, bool]:
    P = Preference.__table__
    with engine.connect() as conn:
        return dict(conn.execute(select(P.c.topic, P.c.opted_in).where(P.c.customer_id == customer)).all())


@pytest.mark.parametrize("customer, lang, h1", [(HE, "he", "העדפות הדוא״ל שלך"), (AR, "ar", "تفضيلات البريد الإلكتروني")])
def test_the_preference_page_reads_right_to_left_on_a_phone_and_saves(site, browser, tmp_path, customer, lang, h1):
    base, engine = site
    for width in (1280, 375):
        browser.show(link(base, "preferences", customer), width)
        page = browser.evaluate(LAYOUT)
        assert (page["lang"], page["dir"], page["direction"], page["h1"]) == (lang, "rtl", "rtl", h1)
        assert page["scroll"] <= width and page["over"] == [], page
        assert axe_violations(browser) == []
    # The docs show it: RELMAIL_SCREENSHOTS=docs/images pytest tests/test_web_rtl.py
    name = f"preferences-{lang}-phone.png"
    browser.screenshot(tmp_path / name, 375)
    if os.environ.get("RELMAIL_SCREENSHOTS"):
        shutil.copy(tmp_path / name, Path(os.environ["RELMAIL_SCREENSHOTS"]) / name)
    browser.click("#topic-1", navigates=False)  # promotions: on
    browser.click("button[type=submit]")
    page = browser.evaluate(LAYOUT)
    saved = {"he": "נשמר.", "ar": "تم الحفظ."}[lang]
    assert page["text"].split("\n")[:2] == [h1, saved], page["text"]
    assert page["bar"] == ["5px", "0px"]  # the notice's bar on the right, where a right-to-left reader starts
    assert page["over"] == [] and axe_violations(browser) == []
    assert consent(engine, customer) == {"newsletter": True, "promotions": True}


def test_the_unsubscribe_page_in_arabic_unsubscribes_from_the_topic(site, browser):
    base, engine = site
    browser.show(link(base, "unsubscribe", AR, "newsletter"), 375)
    page = browser.evaluate(LAYOUT)
    assert (page["dir"], page["direction"], page["h1"]) == ("rtl", "rtl", "إلغاء الاشتراك")
    # The topic has no Arabic label: its English one, set apart from the Arabic around it, its "+" at its end.
    assert "هل تريد التوقف عن تلقي رسائل البريد الإلكتروني حول Bike News+ من Fietsenwinkel؟" in page["text"]
    assert browser.evaluate("""(() => { const walk = document.createTreeWalker(document.querySelector('p'), NodeFilter.SHOW_TEXT);
        let node = walk.nextNode(); while (!node.data.includes('Bike News+')) node = walk.nextNode();
        const x = i => {
        const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1); return r.getBoundingClientRect().left; };
        return x(node.data.indexOf('+')) - x(node.data.indexOf('B')); })()""") > 0
    assert page["over"] == [] and axe_violations(browser) == []
    browser.click("button[value=topic]")
    page = browser.evaluate(LAYOUT)
    assert page["h1"] == "تم إلغاء اشتراكك" and page["over"] == []
    assert consent(engine, AR) == {"newsletter": False}


def test_an_english_customer_still_gets_the_page_left_to_right(site, browser):
    base, _ = site
    browser.show(link(base, "preferences", EN), 375)
    page = browser.evaluate(LAYOUT)
    assert (page["lang"], page["dir"], page["direction"]) == ("en", "ltr", "ltr")
