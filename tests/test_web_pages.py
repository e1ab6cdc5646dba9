"""The unsubscribe and preference pages: HTTP semantics, this shop's topics, this customer's language and consent (both backends)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.webkit import KEY, ONE_CLICK, PROJECT, RUN, T0, feedback_events, prefs, token
from werkzeug.test import Client

from relmail import tokens
from relmail.project import Project
from relmail.store.models import Customer, Event, Preference
from relmail.web.app import make_app
from relmail.web.pages import PACKAGE_LOCALES, PACKAGE_TEMPLATES, contrast, readable_on_white

#: C1 English, C2 Dutch, C3 Swedish (no catalogue), C4 Dutch and opted in to promotions, globally opted in.
CUSTOMERS = [("C0000001", "anna@example.com", "en_GB"), ("C0000002", "bram@example.nl", "nl_NL"),
             ("C0000003", "camille@example.se", "sv_SE"), ("C0000004", "daan@example.nl", "nl_BE")]


@pytest.fixture
def web_shop(project, engine):
    """(client, project, engine): the example project with four customers and one sent message."""
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": cid, "email": email, "locale": locale, "created_at": T0 - timedelta(days=400), "attributes": {}}
            for cid, email, locale in CUSTOMERS
        ])
        conn.execute(Event.__table__.insert(), [{
            "event_id": "sent:1", "customer_id": "C0000001", "type": "email_sent", "occurred_at": T0,
            "message_id": "ebike-launch", "run_id": RUN, "topic": "promotions"}])
        conn.execute(Preference.__table__.insert(), [
            {"customer_id": "C0000004", "topic": t, "opted_in": True, "max_per_week": None, "updated_at": T0, "source": "import"}
            for t in ("promotions", "*")])
    return Client(make_app(project, engine)), project, engine


def ticked(page: str) -> dict[str, bool]:
    """topic slug -> checked, as the preference page shows it."""
    return {m.group(2): bool(m.group(3)) for m in re.finditer(r'<input type="checkbox" id="topic-(\d+)" name="topic" value="([^"]+)"( checked)?', page)}


# -- unsubscribe: what changes what -----------------------------------------------------------------


def test_one_click_unsubscribes_from_the_tokens_topic_at_once_and_a_replay_is_harmless(web_shop):
    client, _, engine = web_shop
    response = client.post(f"/unsubscribe/{token()}", **ONE_CLICK)
    assert response.status_code == 200
    assert "You will no longer receive e-mails about <bdi>Offers and new bikes</bdi> from <bdi>Fietsenwinkel</bdi>." in response.text
    state = prefs(engine)
    assert state[("C0000001", "promotions")] == (False, "unsubscribe-link", None)
    first = feedback_events(engine)
    assert [(c, t, tp, m) for c, t, tp, m, _ in first] == [("C0000001", "email_unsubscribed", "promotions", "ebike-launch")]
    assert client.post(f"/unsubscribe/{token()}", **ONE_CLICK).status_code == 200
    assert feedback_events(engine) == first and prefs(engine) == state


@pytest.mark.parametrize("run", [tokens.PREVIEW_RUN, tokens.PROOF_RUN])
def test_a_preview_or_proof_link_shows_the_pages_but_changes_nothing(web_shop, run):
    """Whoever tests a preview or proof is not the customer whose data it shows: no click of theirs is her choice."""
    client, _, engine = web_shop
    trial = tokens.sign(KEY, "C0000004", "promotions", run, PROJECT)
    before, events = prefs(engine), feedback_events(engine)
    page = client.get(f"/unsubscribe/{trial}")
    assert page.status_code == 200 and 'name="confirm" value="unsubscribe"' in page.text
    for post in (client.post(f"/unsubscribe/{trial}", **ONE_CLICK),
                 client.post(f"/unsubscribe/{trial}", data={"confirm": "unsubscribe", "scope": "all"}),
                 client.post(f"/preferences/{trial}", data={"form": "preferences", "unsubscribe_all": "1"})):
        assert post.status_code == 200
        assert "comes from a test e-mail (a preview or a proof)" in post.text or "uit een test-e-mail" in post.text
    assert prefs(engine) == before and feedback_events(engine) == events
    # The same link of a real run unsubscribes her.
    assert client.post(f"/unsubscribe/{tokens.sign(KEY, 'C0000004', 'promotions', RUN, PROJECT)}", **ONE_CLICK).status_code == 200
    assert prefs(engine)[("C0000004", "promotions")][0] is False


def test_one_click_as_multipart_form_data_counts_too(web_shop):
    client, _, engine = web_shop
    response = client.post(f"/unsubscribe/{token()}", data={"List-Unsubscribe": "One-Click"}, content_type="multipart/form-data")
    assert response.status_code == 200 and prefs(engine)[("C0000001", "promotions")][0] is False


@pytest.mark.parametrize("method", ["get", "head"])
def test_get_and_head_show_the_confirmation_and_change_nothing(web_shop, method):
    client, _, engine = web_shop
    before = prefs(engine)
    response = getattr(client, method)(f"/unsubscribe/{token()}")
    get = client.get(f"/unsubscribe/{token()}")
    assert response.status_code == get.status_code == 200
    assert response.headers["Content-Type"] == get.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.data))
    assert response.headers["Referrer-Policy"] == "no-referrer" and response.headers["X-Frame-Options"] == "DENY"
    assert (response.data == b"") if method == "head" else (response.data == get.data)
    assert "Offers and new bikes" in get.text and "promotions" not in get.text.replace('value="promotions"', "")
    assert 'name="confirm" value="unsubscribe"' in get.text and "<script" not in get.text
    assert prefs(engine) == before and feedback_events(engine) == []


def test_a_link_of_another_project_sharing_the_key_is_refused_and_one_without_a_project_still_works(web_shop):
    from itsdangerous import URLSafeSerializer

    client, _, engine = web_shop
    staging = tokens.sign(KEY, "C0000001", "promotions", RUN, "Fietsenwinkel staging")
    assert client.post(f"/unsubscribe/{staging}", **ONE_CLICK).status_code == 400
    assert client.post(f"/preferences/{staging}", data={"form": "preferences", "unsubscribe_all": "1"}).status_code == 400
    assert feedback_events(engine) == []
    # A link signed before tokens named their project, months ago in an inbox: it unsubscribes.
    old = URLSafeSerializer(KEY, salt="relmail.unsubscribe.v1").dumps(["C0000001", "promotions", RUN])
    assert client.post(f"/unsubscribe/{old}", **ONE_CLICK).status_code == 200
    assert prefs(engine)[("C0000001", "promotions")][:2] == (False, "unsubscribe-link")


@pytest.mark.parametrize("form", [
    {},
    {"List-Unsubscribe": "one-click"},
    {"scope": "all"},  # the old button without the page's confirmation
    {"confirm": "unsubscribe"},
    {"confirm": "unsubscribe", "scope": "everything"},
    {"confirm": "yes", "scope": "topic"},
])
def test_any_other_post_changes_nothing_and_answers_400_saying_why(web_shop, form):
    client, _, engine = web_shop
    before = prefs(engine)
    response = client.post(f"/unsubscribe/{token()}", data=form)
    assert response.status_code == 400
    assert "neither a one-click unsubscribe from a mail program (List-Unsubscribe=One-Click) nor the confirmation" in response.text
    assert prefs(engine) == before and feedback_events(engine) == []


def test_the_pages_own_form_unsubscribes_after_the_person_confirms_from_the_topic_or_everything(web_shop):
    client, _, engine = web_shop
    page = client.get(f"/unsubscribe/{token('C0000002')}").text
    assert '<button type="submit" name="scope" value="topic">' in page and '<button type="submit" name="scope" value="all"' in page
    response = client.post(f"/unsubscribe/{token('C0000002')}", data={"confirm": "unsubscribe", "scope": "topic"})
    assert response.status_code == 200 and "Aanbiedingen en nieuwe fietsen" in response.text
    assert prefs(engine)[("C0000002", "promotions")][:2] == (False, "unsubscribe-link")
    response = client.post(f"/unsubscribe/{token('C0000001')}", data={"confirm": "unsubscribe", "scope": "all"})
    assert response.status_code == 200 and "You will no longer receive e-mails from <bdi>Fietsenwinkel</bdi>." in response.text
    assert prefs(engine)[("C0000001", "*")][:2] == (False, "unsubscribe-link")


def test_a_tampered_token_is_refused_and_changes_nothing(web_shop):
    client, _, engine = web_shop
    before = prefs(engine)
    good = token()
    body, _, sig = good.rpartition(".")
    forged = tokens.sign("another-key", "C0000002", "promotions", RUN, PROJECT)
    for bad in (good[:-2] + ("AA" if not good.endswith("AA") else "BB"), body.replace(body[2], "x", 1) + "." + sig, forged):
        for method in ("get", "post", "head"):
            response = getattr(client, method)(f"/unsubscribe/{bad}", **ONE_CLICK)
            assert response.status_code == 400
            if method != "head":
                assert "invalid or has been altered" in response.text
        assert client.post(f"/preferences/{bad}", data={"form": "preferences", "unsubscribe_all": "1"}).status_code == 400
    nl = client.get(f"/unsubscribe/{forged}", headers={"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.5"})
    assert '<html lang="nl" dir="ltr">' in nl.text and "Deze link is ongeldig" in nl.text
    assert prefs(engine) == before and feedback_events(engine) == []


def test_the_link_unsubscribes_again_after_the_customer_resubscribed(web_shop):
    client, _, engine = web_shop
    client.post(f"/unsubscribe/{token()}", **ONE_CLICK)
    client.post(f"/preferences/{token()}", data={"form": "preferences", "topic": ["promotions", "newsletter"]})
    assert prefs(engine)[("C0000001", "promotions")][:2] == (True, "preference-page")
    client.post(f"/unsubscribe/{token()}", **ONE_CLICK)
    assert prefs(engine)[("C0000001", "promotions")][:2] == (False, "unsubscribe-link")


def test_the_log_says_what_the_preference_page_changed_by_customer_id_only(web_shop, caplog):
    # A re-subscription on the page left no line in relmail serve's log, where an unsubscribe leaves one.
    client, _, _ = web_shop
    client.post(f"/unsubscribe/{token()}", **ONE_CLICK)
    caplog.clear()
    with caplog.at_level("INFO", logger="relmail.web"):
        client.post(f"/preferences/{token()}", data={"form": "preferences", "topic": ["promotions", "newsletter"]})
        client.post(f"/preferences/{token()}", data={"form": "preferences", "topic": ["promotions", "newsletter"]})
    lines = [r.getMessage() for r in caplog.records if r.name == "relmail.web"]
    assert lines == ["preferences customer=C0000001 changed=newsletter: on, promotions: on, service: off",
                     "preferences customer=C0000001 changed=nothing"]


def test_an_unknown_customer_gets_the_same_answer_and_nothing_is_written(web_shop):
    client, _, engine = web_shop
    before = prefs(engine)
    response = client.post(f"/unsubscribe/{token('C9999999')}", **ONE_CLICK)
    assert response.status_code == 200 and "You will no longer receive e-mails about <bdi>Offers and new bikes</bdi>" in response.text
    assert prefs(engine) == before and feedback_events(engine) == []


def test_without_a_signing_key_links_answer_503(web_shop, monkeypatch):
    client, _, engine = web_shop
    monkeypatch.delenv("RELMAIL_SIGNING_KEY")
    before = prefs(engine)
    response = client.post(f"/unsubscribe/{token()}", **ONE_CLICK)
    assert response.status_code == 503 and "Temporarily unavailable" in response.text
    assert prefs(engine) == before


# -- preferences: this shop's topics, this customer's consent ---------------------------------------


def test_the_page_lists_the_topics_the_campaigns_use_with_labels_in_the_customers_language(web_shop):
    client, project, _ = web_shop
    en = client.get(f"/preferences/{token()}").text
    nl = client.get(f"/preferences/{token('C0000002')}").text
    assert '<html lang="en" dir="ltr">' in en and '<html lang="nl" dir="ltr">' in nl
    assert "Your e-mail preferences" in en and "Je e-mailvoorkeuren" in nl
    # The order of [topics] in relmail.toml, the labels and descriptions per language.
    assert list(ticked(en)) == ["promotions", "newsletter", "product-tips", "service"]
    assert [m for m in re.findall(r'<label for="topic-\d+">([^<]+)</label>', nl)] == [
        "Aanbiedingen en nieuwe fietsen", "Nieuwsbrief", "Tips voor wat je kocht", "Onderhoudsherinneringen"]
    assert "When your bike is due for maintenance." in en and "Wanneer je fiets aan onderhoud toe is." in nl


def test_a_shop_with_its_own_topics_gets_only_those_and_unlabelled_ones_are_named_from_the_slug(web_shop, engine):
    _, project, _ = web_shop
    for path in project.campaigns_dir.glob("*.yml"):
        path.unlink()
    (project.campaigns_dir / "books.yml").write_text("""\
messages:
  - {id: releases, template: newsletter, topic: new-releases, segments: [everyone], offer: promotion}
  - {id: digest, template: newsletter, topic: newsletter, segments: [everyone], offer: loyalty}
""")
    page = Client(make_app(Project.load(project.root), engine)).get(f"/preferences/{token()}").text
    assert list(ticked(page)) == ["newsletter", "new-releases"]
    assert '<label for="topic-2">New releases</label>' in page
    assert "Offers and new bikes" not in page and "Service reminders" not in page


def test_a_topic_is_ticked_only_where_the_record_or_the_consent_rule_says_so(web_shop):
    client, _, engine = web_shop
    # No records: the opt-in topics are not ticked; service mail is opt-out (campaigns/weekly.yml), so ticked.
    assert ticked(client.get(f"/preferences/{token('C0000002')}").text) == {
        "promotions": False, "newsletter": False, "product-tips": False, "service": True}
    # A record for promotions ticks it; the global opt-in (*) counts for the other topics, as [consent]
    # global_opt_in_covers_topics (the default) makes the plan count it.
    assert ticked(client.get(f"/preferences/{token('C0000004')}").text) == {
        "promotions": True, "newsletter": True, "product-tips": True, "service": True}


def test_a_global_opt_in_ticks_no_topic_that_consent_says_needs_its_own_opt_in(web_shop):
    client, project, _ = web_shop
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text() + '\n[consent]\nexplicit_topics = ["newsletter"]\n')
    client = Client(make_app(Project.load(project.root), web_shop[2]))
    assert ticked(client.get(f"/preferences/{token('C0000004')}").text) == {
        "promotions": True, "newsletter": False, "product-tips": True, "service": True}
    # Saving the page as shown writes nothing: what was ticked by the rule is what the page compared against.
    before = prefs(web_shop[2])
    page = client.get(f"/preferences/{token('C0000004')}").text
    form = {"form": "preferences", "topic": [t for t, on in ticked(page).items() if on], "max_per_week": ""}
    assert client.post(f"/preferences/{token('C0000004')}", data=form).status_code == 200
    assert prefs(web_shop[2]) == before


def test_saving_writes_only_what_changed_records_opt_outs_and_says_so_in_the_customers_language(web_shop):
    client, _, engine = web_shop
    # C0000004 has promotions and the global opt-in on record; newsletter and product tips are ticked by the
    # global opt-in ([consent] default). Unticking promotions and product tips writes those two rows only.
    form = {"form": "preferences", "topic": ["newsletter", "service"], "max_per_week": "3"}
    response = client.post(f"/preferences/{token('C0000004')}", data=form)
    assert response.status_code == 200 and '<html lang="nl" dir="ltr">' in response.text
    assert "Je krijgt geen e-mails meer over <bdi>Aanbiedingen en nieuwe fietsen</bdi>." in response.text
    assert "Je krijgt geen e-mails meer over <bdi>Tips voor wat je kocht</bdi>." in response.text
    assert "Hooguit 3 e-mails per week." in response.text
    state = prefs(engine)
    assert {k: v for k, v in state.items() if k[0] == "C0000004"} == {
        ("C0000004", "promotions"): (False, "preference-page", None), ("C0000004", "product-tips"): (False, "preference-page", None),
        ("C0000004", "*"): (True, "preference-page", 3)}
    assert [(c, t, tp) for c, t, tp, _, _ in feedback_events(engine)] == [
        ("C0000004", "email_unsubscribed", "product-tips"), ("C0000004", "email_unsubscribed", "promotions")]
    again = client.post(f"/preferences/{token('C0000004')}", data=form)
    assert "Er is niets veranderd." in again.text and len(feedback_events(engine)) == 2 and prefs(engine) == state
    client.post(f"/preferences/{token('C0000004')}", data={**form, "unsubscribe_all": "1"})
    assert prefs(engine)[("C0000004", "*")] == (False, "preference-page", 3)
    # Ticking newsletter on for a customer without a global opt-in writes its row and says so.
    on = client.post(f"/preferences/{token('C0000002')}", data={"form": "preferences", "topic": ["newsletter", "service"]})
    assert "Je krijgt e-mails over <bdi>Nieuwsbrief</bdi>." in on.text and prefs(engine)[("C0000002", "newsletter")][0] is True


@pytest.mark.parametrize("form", [{}, {"topic": ["newsletter"]}, {"unsubscribe_all": "1"}, {"form": "other", "unsubscribe_all": "1"}])
def test_a_post_that_is_not_the_preference_form_changes_nothing_and_answers_400(web_shop, form):
    client, _, engine = web_shop
    before = prefs(engine)
    response = client.post(f"/preferences/{token('C0000004')}", data=form)
    assert response.status_code == 400 and "niet van het voorkeurenformulier" in response.text
    assert prefs(engine) == before and feedback_events(engine) == []


def test_a_bad_weekly_limit_saves_nothing(web_shop):
    client, _, engine = web_shop
    before = prefs(engine)
    response = client.post(f"/preferences/{token()}", data={"form": "preferences", "topic": ["newsletter"], "max_per_week": "999"})
    assert response.status_code == 400 and "The weekly limit must be a whole number from 1 to 50" in response.text
    assert 'role="alert"' in response.text and prefs(engine) == before


@pytest.mark.parametrize("method", ["get", "head"])
def test_head_on_the_preference_page_is_a_get_and_changes_nothing(web_shop, method):
    client, _, engine = web_shop
    before = prefs(engine)
    response = getattr(client, method)(f"/preferences/{token()}")
    assert response.status_code == 200 and response.headers["Content-Length"] == client.get(f"/preferences/{token()}").headers["Content-Length"]
    assert prefs(engine) == before


# -- language, brand, templates ---------------------------------------------------------------------


def test_german_and_polish_customers_get_the_pages_in_their_language_with_polish_plurals(web_shop, engine):
    client, _, _ = web_shop
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": cid, "email": email, "locale": locale, "created_at": T0 - timedelta(days=400), "attributes": {}}
            for cid, email, locale in (("C0000005", "jonas@example.at", "de_AT"), ("C0000006", "zofia@example.pl", "pl_PL"))])
    de = client.get(f"/unsubscribe/{token('C0000005')}").text
    assert '<html lang="de" dir="ltr">' in de and "Möchten Sie keine E-Mails mehr zu <strong>" in de and "Von allen E-Mails abmelden" in de
    pl = client.get(f"/unsubscribe/{token('C0000006')}").text
    assert '<html lang="pl" dir="ltr">' in pl and "Czy chcesz przestać otrzymywać od <bdi>Fietsenwinkel</bdi> e-maile na temat: <strong>" in pl
    # Polish has three plural forms: 1 e-mail, 2-4 e-maile (not 12-14), 5+ e-maili.
    said = {}
    for limit in ("1", "2", "5", "12", "22"):
        page = client.post(f"/preferences/{token('C0000006')}",
                           data={"form": "preferences", "topic": ["newsletter"], "max_per_week": limit}).text
        said[limit] = re.search(r"Najwyżej \d+ e-mail\w* tygodniowo\.", page).group(0)
    assert said == {"1": "Najwyżej 1 e-mail tygodniowo.", "2": "Najwyżej 2 e-maile tygodniowo.", "5": "Najwyżej 5 e-maili tygodniowo.",
                    "12": "Najwyżej 12 e-maili tygodniowo.", "22": "Najwyżej 22 e-maile tygodniowo."}
    page = client.post(f"/preferences/{token('C0000005')}", data={"form": "preferences", "topic": ["newsletter"], "max_per_week": "3"}).text
    assert "Gespeichert." in page and "Höchstens 3 E-Mails pro Woche." in page


@pytest.mark.parametrize("locale, lang, asked, button", [
    ("fr_BE", "fr", "Voulez-vous ne plus recevoir les e-mails « <strong>", "Me désabonner de tous les e-mails"),
    ("es_MX", "es", "¿Desea dejar de recibir correos electrónicos sobre <strong>", "Darme de baja de todos los correos electrónicos"),
    ("it_CH", "it", "Non desidera più ricevere e-mail su <strong>", "Annulla l’iscrizione a tutte le e-mail"),
])
def test_french_spanish_and_italian_customers_get_the_pages_in_their_language(web_shop, engine, locale, lang, asked, button):
    client, _, _ = web_shop
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [{"id": "C0000007", "email": "x@example.org", "locale": locale,
                                                    "created_at": T0 - timedelta(days=400), "attributes": {}}])
    page = client.get(f"/unsubscribe/{token('C0000007')}").text
    assert f'<html lang="{lang}" dir="ltr">' in page and asked in page and button in page


def test_a_language_without_a_catalogue_falls_back_to_the_projects_and_a_project_can_add_one(web_shop, engine):
    client, project, _ = web_shop
    page = client.get(f"/unsubscribe/{token('C0000003')}").text
    assert '<html lang="en" dir="ltr">' in page and "Unsubscribe from <bdi>Offers and new bikes</bdi>" in page  # default_locale en_GB
    sv = project.templates_dir / "pages" / "locale" / "sv" / "LC_MESSAGES"
    sv.mkdir(parents=True)
    (sv / "relmail.po").write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
                                   'msgid "Unsubscribe from %(topic)s"\nmsgstr "Avsluta prenumerationen: %(topic)s"\n', encoding="utf-8")
    config = project.root / "relmail.toml"
    config.write_text(config.read_text().replace('label = { en = "Newsletter", nl = "Nieuwsbrief" }',
                                                 'label = { en = "Newsletter", nl = "Nieuwsbrief", sv = "Nyhetsbrev" }'))
    page = Client(make_app(Project.load(project.root), engine)).get(f"/unsubscribe/{token('C0000003', 'newsletter')}").text
    assert '<html lang="sv" dir="ltr">' in page and "Avsluta prenumerationen: <bdi>Nyhetsbrev</bdi>" in page
    assert "Unsubscribe from all e-mails" in page  # not translated yet: the English text
    # A project catalogue for a shipped language changes one wording and keeps the rest.
    nl = project.templates_dir / "pages" / "locale" / "nl" / "LC_MESSAGES"
    nl.mkdir(parents=True)
    (nl / "relmail.po").write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
                                   'msgid "Unsubscribe"\nmsgstr "Uitschrijven"\n', encoding="utf-8")
    page = Client(make_app(Project.load(project.root), engine)).get(f"/unsubscribe/{token('C0000002')}").text
    assert "<h1>Uitschrijven</h1>" in page and "Afmelden voor alle e-mails" in page


def test_brand_name_logo_and_a_readable_colour(web_shop, engine):
    client, project, _ = web_shop
    page = client.get(f"/unsubscribe/{token()}").text
    assert '<img src="https://fietsenwinkel.example/logo.png" alt="Fietsenwinkel">' in page
    assert "--accent: #0b6e4f;" in page and "--on-accent: #ffffff;" in page
    text = (project.root / "relmail.toml").read_text().replace('color = "#0b6e4f"', 'color = "#ffd400"').replace(
        'logo_url = "https://fietsenwinkel.example/logo.png"', 'logo_url = "http://insecure.example/logo.png"')
    (project.root / "relmail.toml").write_text(text)
    page = Client(make_app(Project.load(project.root), engine)).get(f"/unsubscribe/{token()}").text
    accent = re.search(r"--accent: (#[0-9a-f]{6});", page).group(1)
    assert accent != "#ffd400" and contrast(accent, "#ffffff") >= 4.5 and accent == readable_on_white("#ffd400")
    assert "<img" not in page and '<span class="name">Fietsenwinkel</span>' in page  # no http:// image on the page
    assert "img-src https: data:" in client.get(f"/unsubscribe/{token()}").headers["Content-Security-Policy"]


def test_page_templates_can_be_overridden_in_templates_pages_and_templates_check_passes_a_good_one(web_shop, engine):
    from click.testing import CliRunner

    from relmail.cli import cli

    client, project, _ = web_shop
    pages = project.templates_dir / "pages"
    pages.mkdir()
    (pages / "unsubscribe.html").write_text(
        '{% extends "base.html" %}{% block body %}<h1>{{ _("Unsubscribe") }}</h1>{% if topic %}<p class="ours">{{ topic.label }}</p>{% endif %}'
        '<form method="post"><input type="hidden" name="confirm" value="unsubscribe">'
        '<button name="scope" value="topic">{{ _("Unsubscribe") }}</button></form>{% endblock %}', encoding="utf-8")
    app = Client(make_app(Project.load(project.root), engine))
    page = app.get(f"/unsubscribe/{token('C0000002')}").text
    assert '<p class="ours">Aanbiedingen en nieuwe fietsen</p>' in page and "<h1>Afmelden</h1>" in page
    assert "--accent: #0b6e4f" in page  # the package's base.html around it
    # Generated samples: this store has customers but no catalogue, and the point here is the pages folder.
    out = CliRunner().invoke(cli, ["-p", str(project.root), "templates", "check", "--generated", "--no-compare", "--json"])
    assert out.exit_code == 0 and "pages/" not in out.stdout


def test_the_catalogues_are_babels_and_complete():
    """The .pot is what Babel extracts from the templates now; Dutch translates every message; no fuzzy entries."""
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    method_map = [("**/templates/**.html", "jinja2")]
    options = {"**/templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}
    extracted = {m[2] if isinstance(m[2], str) else m[2][0]
                 for m in extract_from_dir(str(PACKAGE_TEMPLATES.parent), method_map, options_map=options)}
    with (PACKAGE_LOCALES / "relmail.pot").open("rb") as fh:
        pot = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    assert extracted == pot, "run: pybabel extract -F src/relmail/web/babel.cfg -o src/relmail/web/locale/relmail.pot src/relmail/web"
    shipped = sorted(p.name for p in PACKAGE_LOCALES.iterdir() if (p / "LC_MESSAGES" / "relmail.po").is_file())
    assert shipped == ["ar", "de", "en", "es", "fr", "he", "it", "nl", "pl"]
    for lang in shipped:
        with (PACKAGE_LOCALES / lang / "LC_MESSAGES" / "relmail.po").open("rb") as fh:
            catalog = read_po(fh, locale=lang)
        ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog if m.id}
        assert ids == pot, f"run: pybabel update -i src/relmail/web/locale/relmail.pot -d src/relmail/web/locale -D relmail ({lang})"
        assert not [m.id for m in catalog if m.id and m.fuzzy]
        if lang != "en":
            assert not [m.id for m in catalog if m.id and not (m.string if isinstance(m.string, str) else all(m.string))]
    assert Path(PACKAGE_TEMPLATES.parent / "babel.cfg").is_file()


def test_serve_logs_plain_lines_when_stderr_is_not_a_terminal(project):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relmail = str(Path(sys.executable).with_name("relmail"))  # the console script beside this Python
    proc = subprocess.Popen([relmail, "-p", str(project.root), "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        end = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    assert resp.read() == b"ok\n"
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < end, "relmail serve did not start"
                time.sleep(0.2)
        for path in ("/unsubscribe/not-a-token", "/no-such-page"):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
    finally:
        proc.terminate()
        log = proc.communicate(timeout=10)[1].decode()
    assert '"GET /healthz HTTP/1.1" 200' in log and '"GET /unsubscribe/*** HTTP/1.1" 400' in log and "not-a-token" not in log
    assert '"GET /no-such-page HTTP/1.1" 404' in log
    assert "\x1b[" not in log


def test_a_broken_page_template_of_the_project_never_breaks_an_unsubscribe_and_templates_check_names_it(web_shop, engine, caplog):
    from click.testing import CliRunner

    from relmail.cli import cli

    _, project, _ = web_shop
    pages = project.templates_dir / "pages"
    pages.mkdir()
    # A syntax error on line 3, and a page that fails only once the form was saved (labels of the "all" change).
    (pages / "unsubscribed.html").write_text('{% extends "base.html" %}\n{% block body %}<h1>{{ _("You are unsubscribed") }}</h1>\n'
                                             '{% endblock', encoding="utf-8")
    (pages / "preferences.html").write_text('{% extends "base.html" %}{% block body %}\n{% if saved %}{% for c in changes %}'
                                            '{{ labels[c.topic].upper() }}{% endfor %}{% endif %}<form method="post">'
                                            '<input type="hidden" name="form" value="preferences"></form>{% endblock %}', encoding="utf-8")
    client = Client(make_app(Project.load(project.root), engine))
    with caplog.at_level("ERROR", logger="relmail.web"):
        response = client.post(f"/unsubscribe/{token('C0000002')}", **ONE_CLICK)
    assert response.status_code == 200 and "<h1>Je bent afgemeld</h1>" in response.text  # relmail's own page, in Dutch
    assert prefs(engine)[("C0000002", "promotions")][0] is False  # and the unsubscribe was recorded
    assert "templates/pages/unsubscribed.html:3: " in caplog.text
    response = client.post(f"/preferences/{token('C0000002')}", data={"form": "preferences", "unsubscribe_all": "1"})
    assert response.status_code == 200 and 'name="unsubscribe_all"' in response.text
    assert "templates/pages/preferences.html:2: " in caplog.text
    out = CliRunner().invoke(cli, ["-p", str(project.root), "templates", "check", "--generated", "--no-compare"])
    assert out.exit_code == 6
    assert "error: pages/unsubscribed.html:3: unexpected end of template" in out.stdout
    assert "error: pages/preferences.html:2: dict object has no element None" in out.stdout


def test_a_translation_with_a_placeholder_the_page_does_not_pass_shows_english_and_is_named_by_file_and_line(web_shop, engine, caplog):
    from click.testing import CliRunner

    from relmail.cli import cli

    _, project, _ = web_shop
    sv = project.templates_dir / "pages" / "locale" / "sv" / "LC_MESSAGES"
    sv.mkdir(parents=True)
    # A translator's typo: %(amne)s for %(topic)s, on line 7 of the catalogue.
    (sv / "relmail.po").write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'
                                   '#, python-format\nmsgid "Unsubscribe from %(topic)s"\nmsgstr "Avsluta prenumerationen: %(amne)s"\n\n'
                                   'msgid "Unsubscribe from all e-mails"\nmsgstr "Avsluta alla prenumerationer"\n', encoding="utf-8")
    client = Client(make_app(Project.load(project.root), engine))
    with caplog.at_level("ERROR", logger="relmail.web"):
        response = client.get(f"/unsubscribe/{token('C0000003')}")
    assert response.status_code == 200 and '<html lang="sv" dir="ltr">' in response.text
    assert "Unsubscribe from <bdi>Offers and new bikes</bdi>" in response.text and "Avsluta alla prenumerationer" in response.text
    assert "templates/pages/locale/sv/LC_MESSAGES/relmail.po:6: the translation of 'Unsubscribe from %(topic)s': " \
           "unknown named placeholder 'amne'" in caplog.text
    out = CliRunner().invoke(cli, ["-p", str(project.root), "templates", "check", "--generated", "--no-compare"])
    assert out.exit_code == 6 and "error: pages/locale/sv/LC_MESSAGES/relmail.po:6: the translation of" in out.stdout


def test_a_page_template_runs_in_the_e_mails_bounded_sandbox(web_shop, engine, caplog):
    _, project, _ = web_shop
    pages = project.templates_dir / "pages"
    pages.mkdir()
    # A string over [render] max_sequence (100,000), a page that tries to change what it was given, one that reaches for Python.
    (pages / "unsubscribe.html").write_text('{% extends "base.html" %}{% block body %}\n{{ "x" * 200000 }}{% endblock %}', encoding="utf-8")
    (pages / "invalid.html").write_text('{% extends "base.html" %}{% block body %}\n{{ brand.__class__ }}{% endblock %}', encoding="utf-8")
    (pages / "preferences.html").write_text('{% extends "base.html" %}{% block body %}\n{{ state.topics.clear() }}{% endblock %}',
                                            encoding="utf-8")
    client = Client(make_app(Project.load(project.root), engine))
    with caplog.at_level("ERROR", logger="relmail.web"):
        unsubscribe = client.get(f"/unsubscribe/{token()}")
        preferences = client.get(f"/preferences/{token()}")
        invalid = client.get("/unsubscribe/forged")
    assert unsubscribe.status_code == 200 and "xxxxxxxxxx" not in unsubscribe.text and 'name="confirm"' in unsubscribe.text
    assert "templates/pages/unsubscribe.html:2: the template would make a string or list 200,000 long" in caplog.text
    assert "[render] max_sequence in relmail.toml" in caplog.text
    assert preferences.status_code == 200 and 'name="form" value="preferences"' in preferences.text
    assert "templates/pages/preferences.html:2: " in caplog.text and "unsafe" in caplog.text
    assert invalid.status_code == 400 and "<class" not in invalid.text and "Brand" not in invalid.text


def test_a_page_template_linked_to_a_file_outside_the_project_is_never_shown(web_shop, engine, tmp_path, caplog):
    _, project, _ = web_shop
    secret = tmp_path / "dkim.pem"
    secret.write_text("-----BEGIN PRIVATE KEY----- must-not-leak", encoding="utf-8")
    pages = project.templates_dir / "pages"
    pages.mkdir()
    (pages / "unsubscribe.html").symlink_to(secret)
    client = Client(make_app(Project.load(project.root), engine))
    with caplog.at_level("ERROR", logger="relmail.web"):
        response = client.get(f"/unsubscribe/{token()}")
    assert response.status_code == 200 and "must-not-leak" not in response.text and 'name="confirm"' in response.text
    assert "unsubscribe.html: refused, it leads outside" in caplog.text and "must-not-leak" not in caplog.text


@pytest.mark.parametrize("tail", [")", ".", "/", ">", "%20"])
def test_a_link_a_mail_program_extended_after_the_token_still_opens_the_page(web_shop, tail):
    # A plain-text mail program takes the ')' of "[Unsubscribe](https://.../TOKEN)" into the link; a reader copies the full stop.
    client, _, _ = web_shop
    response = client.get(f"/unsubscribe/{token()}{tail}")
    assert response.status_code == 200 and "Unsubscribe from <bdi>Offers and new bikes</bdi>" in response.text
    href = re.search(r'<a href="([^"]+)">Or choose which e-mails you get', response.text).group(1)
    from urllib.parse import urljoin

    assert urljoin(f"http://shop.example/r/unsubscribe/{token()}{tail}", href) == f"http://shop.example/r/preferences/{token()}"
    assert client.get(f"/preferences/{token()}{tail}").status_code == 200
    # The signature is verified all the same (the last character's low bits are padding: alter two).
    altered = token()[:-2] + ("AA" if not token().endswith("AA") else "BB")
    assert client.get(f"/unsubscribe/{altered}{tail}").status_code == 400


def test_a_link_cut_off_before_its_token_gets_the_invalid_link_page_in_the_readers_language(web_shop):
    client, _, _ = web_shop
    for path in ("/unsubscribe/", "/preferences/"):
        response = client.get(path, headers={"Accept-Language": "nl-NL,nl;q=0.9"})
        assert response.status_code == 400 and '<html lang="nl" dir="ltr">' in response.text and "Referrer-Policy" in response.headers


def test_a_misspelt_name_in_a_page_template_is_an_error_with_file_and_line_not_a_blank(web_shop, engine):
    from click.testing import CliRunner

    from relmail.cli import cli

    _, project, _ = web_shop
    pages = project.templates_dir / "pages"
    pages.mkdir()
    # topic.lable for topic.label; and topic.label printed for an "everything" link, which has no topic.
    (pages / "unsubscribe.html").write_text('{% extends "base.html" %}{% block body %}\n{% if topic %}<h1>{{ topic.lable }}</h1>{% endif %}'
                                            '\n<p>{{ topic.label }}</p>{% endblock %}', encoding="utf-8")
    page = Client(make_app(Project.load(project.root), engine)).get(f"/unsubscribe/{token()}")
    assert page.status_code == 200 and "Unsubscribe from <bdi>Offers and new bikes</bdi>" in page.text  # relmail's own page
    out = CliRunner().invoke(cli, ["-p", str(project.root), "templates", "check", "--generated", "--no-compare"])
    assert out.exit_code == 6
    assert "error: pages/unsubscribe.html:2: " in out.stdout and "'lable'" in out.stdout
    assert "error: pages/unsubscribe.html:3: 'None' has no attribute 'label'" in out.stdout


def test_the_pages_date_what_they_change_on_relmails_clock(web_shop, monkeypatch):
    # A rehearsal under RELMAIL_NOW: an unsubscribe dated by the machine's clock lay weeks after the plans
    # it should stop, and a consent import of the rehearsed week counted as older than it.
    monkeypatch.setenv("RELMAIL_NOW", "2026-11-24T12:00:00+01:00")
    client, _, engine = web_shop
    assert client.post(f"/unsubscribe/{token()}", **ONE_CLICK).status_code == 200
    form = {"form": "preferences", "topic": ["newsletter"], "max_per_week": ""}
    assert client.post(f"/preferences/{token('C0000004')}", data=form).status_code == 200
    t = Preference.__table__
    e = Event.__table__
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.customer_id, t.c.topic, t.c.updated_at).where(t.c.source != "import")).all()
        events = conn.execute(select(e.c.customer_id, e.c.occurred_at).where(e.c.type == "email_unsubscribed")).all()
    expected = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)

    def as_utc(when: datetime) -> datetime:  # SQLite gives back naive UTC
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    assert rows and all(as_utc(when) == expected for _, _, when in rows), rows
    assert events and all(as_utc(when) == expected for _, when in events), events


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream"])
def test_one_click_without_a_form_content_type_counts_too(web_shop, content_type):
    # RFC 8058's body is what makes it a one-click POST; a mail program that sends it without
    # a form's Content-Type still means it, and no scanner or prefetcher sends that body.
    client, _, engine = web_shop
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(f"/unsubscribe/{token()}", data=b"List-Unsubscribe=One-Click\r\n", headers=headers)
    assert response.status_code == 200 and prefs(engine)[("C0000001", "promotions")][0] is False
    assert client.post(f"/unsubscribe/{token()}", data=b"List-Unsubscribe=one-click", headers=headers).status_code == 400
