"""The pages in headless Chromium: axe-core finds no violations, they work without JavaScript, they read on a phone.

The app runs on a real HTTP server in a thread, on each backend. axe-core is
the npm registry's, vendored in tests/vendor/axe-core. Screenshots of the
preference page (English and Dutch, desktop and 375 px) and of the
unsubscribe pages are written to the test's folder, and also to
``$RELMAIL_SCREENSHOTS`` when it is set (``docs/images`` for the docs)::

    RELMAIL_SCREENSHOTS=docs/images RELMAIL_TEST_BACKENDS=sqlite pytest tests/test_web_browser.py
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from relmail import tokens
from relmail.project import Project
from relmail.store.models import Customer, Preference
from relmail.web.app import make_app

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
KEY = "test-signing-key-not-secret"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
#: The brand's logo as the page shows it (a data: URL, so the screenshots need no network).
LOGO = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='220' height='44' viewBox='0 0 220 44'%3E"
        "%3Ccircle cx='22' cy='22' r='18' fill='%230b6e4f'/%3E%3Cpath d='M13 27l6-12 6 10 5-6 5 8' stroke='%23fff' stroke-width='3' "
        "fill='none'/%3E%3Ctext x='50' y='30' font-family='Helvetica,Arial,sans-serif' font-size='22' font-weight='700' "
        "fill='%231f2328'%3EFietsenwinkel%3C/text%3E%3C/svg%3E")


@pytest.fixture
def site(project, engine):
    """(base URL, engine): the example project, its logo a data: URL, two customers, served over HTTP."""
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('logo_url = "https://fietsenwinkel.example/logo.png"', f'logo_url = "{LOGO}"'))
    yield from serving(project, engine, {"C0000001": "en_GB", "C0000002": "nl_NL"}, "example.nl")


def serving(project, engine, locales: dict[str, str], domain: str):
    """Yield (base URL, engine) of ``relmail serve``'s app on a free port, with these customers (id -> locale)
    stored and subscribed to the newsletter; stop the server after."""
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": cid, "email": f"{cid.lower()}@{domain}", "locale": locale, "created_at": T0 - timedelta(days=400), "attributes": {}}
            for cid, locale in locales.items()])
        conn.execute(Preference.__table__.insert(), [
            {"customer_id": cid, "topic": "newsletter", "opted_in": True, "max_per_week": None, "updated_at": T0, "source": "import"}
            for cid in locales])
    server = make_server("127.0.0.1", 0, make_app(Project.load(project.root), engine), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", engine
    server.shutdown()
    thread.join(10)


def link(base: str, kind: str, customer: str, topic: str = "promotions") -> str:
    return f"{base}/{kind}/{tokens.sign(KEY, customer, topic, 'weekly:2026-W48', 'Fietsenwinkel')}"


def axe_violations(browser) -> list[dict]:
    """axe-core's violations on the page shown (every rule axe runs by default, best practices included)."""
    if not browser.evaluate("typeof axe !== 'undefined'"):
        browser.call("Runtime.evaluate", expression=AXE.read_text(encoding="utf-8"))
    result = browser.evaluate("axe.run(document, {resultTypes: ['violations']}).then(r => JSON.stringify(r.violations))")
    return [{"id": v["id"], "impact": v["impact"], "nodes": [n["html"][:120] for n in v["nodes"]]} for v in json.loads(result)]


def test_the_vendored_axe_core_is_the_registrys_file():
    readme = (AXE.parent / "README.md").read_text()
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() in readme and "axe-core 4.14.1" in readme
    assert (AXE.parent / "LICENSE").read_text().startswith("Mozilla Public License")


def test_every_page_passes_axe_core_with_no_violations(site, browser):
    base, _ = site
    pages = {
        "unsubscribe (en)": link(base, "unsubscribe", "C0000001"),
        "unsubscribe (nl)": link(base, "unsubscribe", "C0000002"),
        "unsubscribe from everything": link(base, "unsubscribe", "C0000001", "*"),
        "preferences (en)": link(base, "preferences", "C0000001"),
        "preferences (nl)": link(base, "preferences", "C0000002"),
        "invalid link": f"{base}/unsubscribe/not-a-token",
    }
    checked = {}
    for name, url in pages.items():
        for width in (1024, 375):
            browser.show(url, width)
            checked[(name, width)] = axe_violations(browser)
    # The pages after a POST: a saved form (with its notice), a refused limit, unsubscribed, a refused request.
    browser.show(link(base, "preferences", "C0000002"), 375)
    browser.click("#topic-1", navigates=False)
    browser.click("button[type=submit]")
    assert "Opgeslagen." in browser.evaluate("document.body.innerText")
    checked[("preferences saved (nl)", 375)] = axe_violations(browser)
    # The browser itself refuses 99 (max=50); past its check, the server refuses it too.
    browser.evaluate("document.getElementById('max_per_week').value = '99'; document.querySelector('form').noValidate = true")
    browser.click("button[type=submit]")
    assert "Er is niets opgeslagen." in browser.evaluate("document.body.innerText")
    checked[("preferences refused limit (nl)", 375)] = axe_violations(browser)
    browser.show(link(base, "unsubscribe", "C0000001"), 375)
    browser.click("button[value=topic]")
    assert browser.evaluate("document.querySelector('h1').textContent") == "You are unsubscribed"
    checked[("unsubscribed (en)", 375)] = axe_violations(browser)
    assert {k: v for k, v in checked.items() if v} == {}
    assert len(checked) == 15


def test_the_pages_work_without_javascript(site, browser):
    base, engine = site
    browser.call("Emulation.setScriptExecutionDisabled", value=True)
    browser.show(link(base, "unsubscribe", "C0000002"), 375)
    browser.click("button[value=topic]")
    P = Preference.__table__
    with engine.connect() as conn:
        row = conn.execute(select(P.c.opted_in, P.c.source).where(P.c.customer_id == "C0000002", P.c.topic == "promotions")).one()
    assert tuple(row) == (False, "unsubscribe-link")
    browser.show(link(base, "preferences", "C0000001"), 375)
    browser.click("#topic-4", navigates=False)  # service reminders: ticked by default, now off
    browser.click("#unsubscribe_all", navigates=False)
    browser.click("button[type=submit]")
    with engine.connect() as conn:
        rows = dict(conn.execute(select(P.c.topic, P.c.opted_in).where(P.c.customer_id == "C0000001", P.c.source == "preference-page")).all())
    assert rows == {"service": False, "*": False}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


#: Where the page is wider than the phone, and what sticks out of it.
LAYOUT = """(() => {
      const over = Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > innerWidth + 0.5);
      const small = Array.from(document.querySelectorAll('button, input[type=number]')).filter(e => e.getBoundingClientRect().height < 44);
      const text = Array.from(document.querySelectorAll('p, label, legend, li, .hint')).map(e => parseFloat(getComputedStyle(e).fontSize));
      return {scroll: document.documentElement.scrollWidth, over: over.map(e => e.tagName), small: small.map(e => e.outerHTML.slice(0, 80)),
              smallest: Math.min(...text), lang: document.documentElement.lang, h1: document.querySelector('h1').textContent};
    })()"""


def test_the_pages_read_well_on_a_phone_and_screenshots_are_written(site, browser, tmp_path):
    base, _ = site
    shots = {}
    layout = LAYOUT
    for lang, customer in (("en", "C0000001"), ("nl", "C0000002")):
        for width in (1280, 375):
            browser.show(link(base, "preferences", customer), width)
            page = browser.evaluate(layout)
            assert page["lang"] == lang and page["scroll"] <= width and page["over"] == [] and page["small"] == []
            assert page["smallest"] >= 15  # hints are a notch smaller than the 17 px body text
            name = f"preferences-{lang}-{'phone' if width < 600 else 'desktop'}.png"
            shots[name] = browser.screenshot(tmp_path / name, width)
    browser.show(link(base, "unsubscribe", "C0000001"), 375)
    assert browser.evaluate(layout)["over"] == []
    shots["unsubscribe-en-phone.png"] = browser.screenshot(tmp_path / "unsubscribe-en-phone.png", 375)
    browser.click("button[value=topic]")
    assert browser.evaluate(layout)["h1"] == "You are unsubscribed"
    shots["unsubscribed-en-phone.png"] = browser.screenshot(tmp_path / "unsubscribed-en-phone.png", 375)
    for name, data in shots.items():
        width, height = png_size(data)
        assert width == (375 if "phone" in name else 1280) and height > 400 and len(data) > 15_000, name
    if os.environ.get("RELMAIL_SCREENSHOTS"):
        for name in shots:
            shutil.copy(tmp_path / name, Path(os.environ["RELMAIL_SCREENSHOTS"]) / name)


def test_a_long_compound_word_in_a_topic_label_wraps_on_a_phone(project, engine, browser):
    # German and Polish run words together that no phone line holds: a topic label must wrap, not stick out.
    word = "Sonderangebotsbenachrichtigungsabonnementverwaltung"
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('en = "Offers and new bikes"', f'en = "{word}"'))
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C0000001", "email": "c1@example.nl", "locale": "en_GB",
                                                    "created_at": T0 - timedelta(days=400), "attributes": {}}])
    server = make_server("127.0.0.1", 0, make_app(Project.load(project.root), engine), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        for kind in ("unsubscribe", "preferences"):
            browser.show(link(base, kind, "C0000001"), 375)
            assert word in browser.evaluate("document.body.textContent")
            page = browser.evaluate(LAYOUT)
            assert page["scroll"] <= 375 and page["over"] == [], kind
    finally:
        server.shutdown()
        thread.join(10)
