"""The fast MIME builder: parseable by the standard library, equivalent to EmailMessage."""

from __future__ import annotations

import binascii
import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relmail.errors import TemplateError
from relmail.project import Project, init_project
from relmail.render import CustomerContext, MessageSpec, Renderer
from relmail.render.mime import MimeTemplate, format_address, header_text, message_id


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def build(subject="Hello", to_name="Jan de Vries", to_email="jan@example.nl", html="<p>Hi</p>\n", text="Hi\n", **kw):
    tmpl = MimeTemplate("Fietsenwinkel", "news@fietsenwinkel.example", "service@fietsenwinkel.example",
                        [("Feedback-ID", "weekly:ebike-launch:promotions:fietsenwinkel.example"), ("X-Relmail-Run", "weekly:2026-W48")])
    return tmpl.build(to_name=to_name, to_email=to_email, subject=subject, html=html, text=text,
                      rfc_message_id=message_id("run", "C1", "m", "fietsenwinkel.example"),
                      list_unsubscribe="https://fietsenwinkel.example/relmail/unsubscribe/TOKEN",
                      list_unsubscribe_mailto="mailto:unsubscribe@fietsenwinkel.example?subject=unsubscribe%20TOKEN", **kw)


def test_parses_to_the_same_headers_and_parts_as_an_equivalent_emailmessage():
    html = "<html><body><p>Prijs € 2.499,00 — " + "x" * 200 + "</p>\n<p>.</p></body></html>\n"
    text = "Prijs € 2.499,00\n.\nFrom here\n" + "y " * 100 + "\n"
    ours = parse(build(subject="Jan, maak kennis met de E-bike — nú", to_name="Zoë O'Brien-Müller", html=html, text=text))

    ref = EmailMessage()
    ref["From"] = "Fietsenwinkel <news@fietsenwinkel.example>"
    ref["Reply-To"] = "service@fietsenwinkel.example"
    ref["To"] = "Zoë O'Brien-Müller <jan@example.nl>"
    ref["Subject"] = "Jan, maak kennis met de E-bike — nú"
    ref.set_content(text)
    ref.add_alternative(html, subtype="html")
    ref = parse(bytes(ref))

    for name in ("From", "Reply-To", "To", "Subject"):
        assert str(ours[name]) == str(ref[name]), name
    assert ours["To"].addresses[0].display_name == "Zoë O'Brien-Müller"
    assert ours.get_content_type() == ref.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ours.iter_parts()] == ["text/plain", "text/html"]
    for kind in ("plain", "html"):
        a = ours.get_body((kind,)).get_content().replace("\r\n", "\n")
        b = ref.get_body((kind,)).get_content().replace("\r\n", "\n")
        assert a == b
    assert ours.defects == [] and all(p.defects == [] for p in ours.iter_parts())


def test_one_click_unsubscribe_and_bulk_headers():
    msg = parse(build())
    assert msg["List-Unsubscribe"] == (
        "<https://fietsenwinkel.example/relmail/unsubscribe/TOKEN>, "
        "<mailto:unsubscribe@fietsenwinkel.example?subject=unsubscribe%20TOKEN>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Feedback-ID"] == "weekly:ebike-launch:promotions:fietsenwinkel.example"
    assert msg["Message-ID"].endswith("@fietsenwinkel.example>")
    assert msg["Date"].datetime.tzinfo is not None
    assert msg["MIME-Version"] == "1.0"


def test_message_id_is_deterministic_per_run_customer_message():
    a = message_id("run1", "C1", "m", "shop.example")
    assert a == message_id("run1", "C1", "m", "shop.example")
    assert len({a, message_id("run2", "C1", "m", "shop.example"), message_id("run1", "C2", "m", "shop.example"),
                message_id("run1", "C1", "n", "shop.example")}) == 4


def test_lines_are_crlf_and_at_most_78_characters_in_headers_and_76_in_bodies():
    raw = build(subject="A rather long subject line " * 6, html="<p>" + "é" * 500 + "</p>", text="z" * 1000)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in head.split(b"\r\n") if not line.startswith((b"List-Unsubscribe:", b" <mailto")))
    assert all(len(line) <= 76 for line in body.split(b"\r\n"))


def test_header_injection_is_impossible():
    msg = parse(build(subject="Hi\r\nBcc: victim@example.com", to_name="Eve\nBcc: x@example.com"))
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Hi Bcc: victim@example.com"


def test_bad_addresses_are_a_template_error():
    with pytest.raises(TemplateError):
        format_address("x", "not-an-address")
    with pytest.raises(TemplateError, match="SMTPUTF8"):
        format_address("x", "jöhn@example.nl")
    assert format_address(None, "a@bücher.example") == "a@xn--bcher-kva.example"
    assert format_address(None, "a@straße.example") == "a@xn--strae-oqa.example"  # IDNA 2008: ß stays a letter


def breakable_spaces_once(text: str) -> str:
    return re.sub(r"[^\S\u00a0\u202f\u2007]+", " ", text).strip()


@settings(max_examples=150, deadline=None)
@given(subject=st.text(min_size=1, max_size=200).filter(lambda s: s.strip()), name=st.text(max_size=80))
def test_any_subject_and_display_name_round_trip(subject, name):
    msg = parse(build(subject=subject, to_name=name))
    # Runs of whitespace a line may break at become one space; the no-break spaces stay ("1 234,50 €").
    assert msg["Subject"] == breakable_spaces_once(subject)
    expected_name = " ".join(name.split())
    assert msg["To"].addresses[0].addr_spec == "jan@example.nl"
    if len(expected_name.encode()) <= 45 or (expected_name.isascii() and expected_name.isprintable() and "=?" not in expected_name):
        assert msg["To"].addresses[0].display_name == expected_name
    else:
        # A name longer than one encoded word spans several; the standard
        # library's address parser puts a space between them (it does so for
        # its own EmailMessage output too), so decode it the RFC 2047 way.
        from email.header import decode_header, make_header

        raw = format_address(name, "jan@example.nl").rpartition(" <")[0]
        assert str(make_header(decode_header(raw))) == expected_name


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=400), html=st.text(max_size=400))
def test_any_body_round_trips(text, html):
    msg = parse(build(text=text, html=html))
    def norm(s):
        return (s if s.endswith("\n") else s + "\n").replace("\r\n", "\n").replace("\r", "\n")
    assert norm(msg.get_body(("plain",)).get_content()) == norm(text)
    assert norm(msg.get_body(("html",)).get_content()) == norm(html)


def test_header_text_plain_ascii_is_left_readable():
    assert header_text("Subject", "Hello Jan") == "Subject: Hello Jan"
    assert header_text("Subject", "Zoë").startswith("Subject: =?utf-8?b?")


def test_rendered_email_is_complete_and_parseable(tmp_path, monkeypatch):
    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "k")
    project = init_project(tmp_path / "shop")
    r = Renderer(Project.load(project.root))
    spec = MessageSpec(id="welcome-offer", template="welcome_offer", topic="promotions", campaign_id="weekly", run_id="weekly:2026-W48")
    ctx = CustomerContext(id="C0000007", email="zoe@example.nl", first_name="Zoë", last_name="Ünal", locale="nl_NL")
    rendered = r.render(spec, ctx)
    msg = parse(rendered.raw)
    assert msg["Subject"] == rendered.subject == "Welkom bij Fietsenwinkel: 10% korting op je eerste bestelling"
    assert msg["To"].addresses[0].display_name == "Zoë Ünal"
    assert msg["From"] == "Fietsenwinkel <news@fietsenwinkel.example>"
    assert msg["Reply-To"] == "service@fietsenwinkel.example"
    assert msg["X-Relmail-Customer"] == "C0000007" and msg["X-Relmail-Message"] == "welcome-offer"
    assert msg["X-Relmail-Run"] == "weekly:2026-W48"
    assert msg["Message-ID"] == rendered.rfc_message_id
    assert msg["List-Unsubscribe"].startswith("<https://fietsenwinkel.example/relmail/unsubscribe/")
    assert msg.get_body(("html",)).get_content().replace("\r\n", "\n") == rendered.html.replace("\r\n", "\n") + (
        "" if rendered.html.endswith("\n") else "\n")
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == rendered.text
    # A retry renders the same Message-ID.
    assert r.render(spec, ctx).rfc_message_id == rendered.rfc_message_id



_PIECES = st.sampled_from(["From ", "F", "x", "é", "=", " ", "\n", "From the shop ", "y" * 70])


@given(st.lists(_PIECES, max_size=60).map("".join))
@settings(max_examples=300, deadline=None)
def test_no_body_line_starts_with_from_and_lines_stay_at_most_76(text):
    # A line 'From ' is rewritten '>From ' by any mbox on the way, which breaks the DKIM body hash.
    raw = build(text=text, html=text)
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"\r\nFrom " not in body and all(len(line) <= 76 for line in body.split(b"\r\n"))
    msg = parse(raw)
    def norm(s):
        return (s if s.endswith("\n") else s + "\n").replace("\r\n", "\n")
    assert norm(msg.get_body(("plain",)).get_content()) == norm(msg.get_body(("html",)).get_content()) == norm(text)


@pytest.mark.parametrize("subject", ["x" * 2000, "Sale " + "ä" * 1500, "Offers: " + "-" * 999 + " end"])
def test_no_header_line_is_over_998_octets_whatever_the_subject(subject):
    raw = build(subject=subject)
    head = raw.partition(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 998
    assert parse(raw)["Subject"] == subject


def test_the_date_header_is_relmails_now_in_a_rehearsal(monkeypatch):
    """A rehearsal's outbox is dated on the rehearsal's day, as its deliveries and events are."""
    from email.utils import parsedate_to_datetime

    from relmail.render.mime import _CLOCK

    monkeypatch.setenv("RELMAIL_NOW", "2026-11-23T09:30:00+01:00")
    assert parsedate_to_datetime(_CLOCK.now()) == datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
    monkeypatch.setenv("RELMAIL_NOW", "2026-11-30T09:30:00+01:00")
    assert parsedate_to_datetime(_CLOCK.now()) == datetime(2026, 11, 30, 8, 30, tzinfo=UTC)
    monkeypatch.delenv("RELMAIL_NOW")
    assert abs(parsedate_to_datetime(_CLOCK.now()) - datetime.now(UTC)).total_seconds() < 5


def test_a_body_mostly_outside_ascii_goes_base64_at_little_over_half_the_quoted_printable_size():
    hebrew = "<p dir=\"rtl\">שלום חנה, הזמנתך מוכנה לאיסוף בחנות. תודה שקנית אצלנו!</p>\n" * 40
    dutch = "<p>Beste Hanna, uw bestelling ligt klaar in de winkel. Dank voor uw aankoop!</p>\n" * 40
    raw = build(html=hebrew, text=dutch)
    msg = parse(raw)
    html, text = msg.get_body(("html",)), msg.get_body(("plain",))
    assert html["Content-Transfer-Encoding"] == "base64" and text["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content().replace("\r\n", "\n") == hebrew and text.get_content().replace("\r\n", "\n") == dutch
    qp_size = len(binascii.b2a_qp(hebrew.encode(), istext=True))
    html_size = len(raw.split(b"Content-Transfer-Encoding: base64\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0])
    assert html_size < 0.6 * qp_size
