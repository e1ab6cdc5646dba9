"""The bounce mailbox of the shop's own SMTP server: reading, parsing, matching, applying (both backends).

The fixtures in tests/data/bounces/ are bounces as the named systems write
them (Postfix, Exchange Online, Gmail, qmail, Exim, an Exchange and a
vacation auto-reply, a Yahoo ARF report), addressed to the demo shop's e-mails.
"""

from __future__ import annotations

import json
import mailbox
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from relmail.cli import cli
from relmail.errors import ValidationError
from relmail.feedback.authresults import vouched
from relmail.feedback.bounces import import_bounces, read_bounces
from relmail.feedback.dsn import Report, parse
from relmail.feedback.mailboxes import read_mail
from relmail.feedback.records import FieldError
from relmail.store.models import Customer, Delivery, Event, FeedbackReject, Preference

DATA = Path(__file__).parent / "data" / "bounces"
T0 = datetime(2026, 11, 23, 9, 4, 9, tzinfo=UTC)
RUN = "weekly:2026-W48"
DOMAIN = "fietsenwinkel.example"

#: fixture -> (customer, address, Message-ID of the e-mail it answers)
SENT = {
    "postfix-hard.eml": ("C0000001", "anna@example.com", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"),
    "postfix-delayed.eml": ("C0000002", "bram@example.com", "1b2c3d4e5f60718293a4b5c6d7e8f90a"),
    "exchange-online.eml": ("C0000003", "carla@contoso.example", "2c3d4e5f60718293a4b5c6d7e8f90a1b"),
    "gmail.eml": ("C0000004", "Daan@Gmail.example", "3d4e5f60718293a4b5c6d7e8f90a1b2c"),
    "qmail.eml": ("C0000005", "eva@example.net", "4e5f60718293a4b5c6d7e8f90a1b2c3d"),
    "out-of-office.eml": ("C0000006", "frank@example.org", "5f60718293a4b5c6d7e8f90a1b2c3d4e"),
    "vacation.eml": ("C0000007", "greta@example.de", "60718293a4b5c6d7e8f90a1b2c3d4e5f"),
    "arf-complaint.eml": ("C0000008", "gert@yahoo.example", "718293a4b5c6d7e8f90a1b2c3d4e5f60"),
    "exim.eml": ("C0000009", "hanna@example.org", "8293a4b5c6d7e8f90a1b2c3d4e5f6071"),
}


def mid(digest: str) -> str:
    return f"<{digest}.relmail@{DOMAIN}>"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


# -- parsing each format -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "recipient", "type_", "status"), [
    ("postfix-hard.eml", "dsn", "anna@example.com", "bounced_hard", "5.1.1"),
    ("postfix-delayed.eml", "dsn", "bram@example.com", "bounced_soft", "4.4.1"),
    ("exchange-online.eml", "dsn", "carla@contoso.example", "bounced_hard", "5.1.10"),
    ("gmail.eml", "dsn", "daan@gmail.example", "bounced_hard", "5.1.1"),
    ("qmail.eml", "bounce", "eva@example.net", "bounced_hard", "5.1.1"),
    ("exim.eml", "bounce", "hanna@example.org", "bounced_hard", "5.1.1"),
    ("arf-complaint.eml", "arf", "gert@yahoo.example", "complained", None),
])
def test_each_format_gives_the_recipient_its_outcome_and_the_answered_message_id(name, kind, recipient, type_, status):
    report = parse(read(name))
    assert report.kind == kind
    assert [(o.recipient, o.type, o.status) for o in report.outcomes] == [(recipient, type_, status)]
    assert report.original_message_id == mid(SENT[name][2])
    assert report.date is not None and report.date.tzinfo is not None


@pytest.mark.parametrize(("said", "expected"), [
    ("550 5.1.1 <hanna@example.org>: Recipient address rejected: User unknown", ("bounced_hard", "5.1.1")),
    ("552 5.2.2 <hanna@example.org>: Mailbox full", ("bounced_soft", "5.2.2")),
    ("550 5.7.1 Message rejected as spam", ("bounced_blocked", "5.7.1")),
    ("Unrouteable address", ("bounced_hard", None)),
])
def test_a_status_in_the_text_of_an_older_format_bounce_decides_hard_or_soft(said, expected):
    data = read("exim.eml").replace(b"550 5.1.1 <hanna@example.org>: Recipient address rejected: User unknown", said.encode())
    assert [(o.type, o.status) for o in parse(data).outcomes] == [expected]


def test_the_report_date_is_its_date_header_in_utc():
    assert parse(read("postfix-hard.eml")).date == datetime(2026, 11, 23, 9, 4, 12, tzinfo=UTC)
    assert parse(read("gmail.eml")).date == datetime(2026, 11, 23, 9, 5, 40, tzinfo=UTC)  # -0800
    assert parse(read("qmail.eml")).date == datetime(2026, 11, 23, 9, 6, 1, tzinfo=UTC)  # "-0000"


@pytest.mark.parametrize("name", ["out-of-office.eml", "vacation.eml"])
def test_auto_replies_report_nothing(name):
    """An out-of-office reply names the e-mail it answers (In-Reply-To) and says "could not", yet nothing happened to the delivery."""
    report = parse(read(name))
    assert (report.kind, report.outcomes) == ("auto-reply", ())


def dsn(action="failed", status="5.1.1", diagnostic="smtp; 550 5.1.1 User unknown", date="Mon, 23 Nov 2026 10:04:12 +0100",
        recipient="rfc822; anna@example.com", extra: str = "") -> bytes:
    """A minimal RFC 3464 report with one recipient block; None leaves a field out."""
    fields = [f"Final-Recipient: {recipient}" if recipient is not None else "", f"Action: {action}" if action is not None else "",
              f"Status: {status}" if status is not None else "", f"Diagnostic-Code: {diagnostic}" if diagnostic is not None else "", extra]
    block = "\n".join(f for f in fields if f)
    head = f"Date: {date}\n" if date is not None else ""
    return (f"{head}From: MAILER-DAEMON@mx.example\nMessage-ID: <dsn-{action}-{status}@mx.example>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
            "The mail system\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
            f"{block}\n\n--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: {mid('ab' * 16)}\n\n--b--\n").encode()


@pytest.mark.parametrize(("action", "status", "diagnostic", "expected"), [
    ("failed", "5.1.1", "smtp; 550 5.1.1 User unknown", "bounced_hard"),
    ("failed", "5.2.1", "smtp; 550 5.2.1 Mailbox disabled", "bounced_hard"),
    ("failed", "5.4.4", "smtp; 554 5.4.4 Unable to route", "bounced_hard"),
    # Permanent for this message or this sender, not the address: suppressing the customer would be wrong,
    # and so would counting them as the mailbox's soft bounces: blocks, which no rule counts.
    ("failed", "5.7.1", "smtp; 550 5.7.1 Message rejected as spam", "bounced_blocked"),
    ("failed", "5.7.26", "smtp; 550 5.7.26 Unauthenticated email (DMARC)", "bounced_blocked"),
    ("failed", "5.2.2", "smtp; 552 5.2.2 Mailbox full", "bounced_soft"),
    ("failed", "5.3.4", "smtp; 552 5.3.4 Message too big", "bounced_blocked"),
    ("delayed", "4.7.0", "smtp; 421 4.7.0 IP not in whitelist for RCPT domain, closing connection", "bounced_blocked"),
    ("failed", "4.4.7", "X-Postfix; delivery time expired", "bounced_soft"),
    ("delayed", "4.4.1", "X-Postfix; connection timed out", "bounced_soft"),
    ("delivered", "2.0.0", "smtp; 250 2.0.0 OK", "delivered"),
    ("Failed (permanent)", "5.1.1 (bad destination mailbox)", None, "bounced_hard"),
    ("error", "5.0.0", "smtp; 550 no such user", "bounced_hard"),  # OpenSMTPD's word for failed
    ("failed", None, "smtp; 550 5.1.1 User unknown", "bounced_hard"),  # Status left out: the diagnostic's
    ("failed", None, "smtp; 450 mailbox busy", "bounced_soft"),
])
def test_action_and_status_decide_hard_or_soft(action, status, diagnostic, expected):
    assert [o.type for o in parse(dsn(action, status, diagnostic)).outcomes] == [expected]


def test_relayed_and_expanded_recipients_report_nothing():
    assert (parse(dsn("relayed", "2.0.0")).kind, parse(dsn("relayed", "2.0.0")).outcomes) == ("DSN relayed", ())
    assert parse(dsn("expanded", "2.0.0")).outcomes == ()


def test_original_recipient_wins_over_the_final_one():
    report = parse(dsn(extra="Original-Recipient: rfc822; anna@old.example"))
    assert report.outcomes[0].recipient == "anna@old.example"
    assert "final recipient anna@example.com" in report.outcomes[0].reason


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"status": None, "diagnostic": None}, "Status", "without a 4.x.x or 5.x.x status"),
    ({"status": "2.0.0", "diagnostic": None}, "Status", "without a 4.x.x or 5.x.x status"),
    ({"action": "bounced"}, "Action", "expected failed, delayed"),
    ({"recipient": "rfc822; not-an-address"}, "Final-Recipient", "expected 'rfc822; address'"),
    ({"recipient": None, "action": None}, "Final-Recipient", "no per-recipient fields"),
    ({"date": None}, "Date", "is missing"),
    ({"date": "yesterday"}, "Date", "is not an RFC 5322 date"),
    ({"date": "Fri, 01 Jan 3026 00:00:00 +0000"}, "Date", "implausible time"),
])
def test_an_unusable_report_names_the_field(kwargs, field, words):
    with pytest.raises(FieldError) as caught:
        parse(dsn(**kwargs))
    assert caught.value.field == field and words in caught.value.message


def test_mail_that_is_no_report_is_not_a_bounce():
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "klant@example.com", "bounces@fietsenwinkel.example", "Vraag over mijn fiets"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg.set_content("Hallo, wanneer wordt mijn fiets geleverd?")
    assert parse(msg.as_bytes()).kind == "not a bounce"


def test_a_message_without_a_sender_is_unusable():
    with pytest.raises(FieldError) as caught:
        parse(b"Date: Mon, 23 Nov 2026 10:00:00 +0000\nSubject: hello\n\nbody\n")
    assert caught.value.field == "From"


def test_a_complaint_with_the_recipient_redacted_is_matched_by_its_message_id(engine, tmp_path):
    add_shop(engine)
    redacted = (read("arf-complaint.eml").replace(b"Original-Rcpt-To: <gert@yahoo.example>\n", b"")
                .replace(b"To: redacted@yahoo.example", b"To: redacted"))
    report = parse(redacted)
    assert [(o.recipient, o.type) for o in report.outcomes] == [("", "complained")]
    result = import_bounces(engine, [write_mbox(tmp_path / "redacted", [redacted])])
    assert dict(result.applied.applied) == {"complained": 1} and stored(engine) == [
        ("C0000008", "email_complained", RUN, "ebike", "promotions")]
    unknown = redacted.replace(mid(SENT["arf-complaint.eml"][2]).encode(), b"<elsewhere@example.com>")
    result = import_bounces(engine, [write_mbox(tmp_path / "unknown", [unknown])])
    assert [u.why for u in result.unmatched] == ["Message-ID <elsewhere@example.com> is not in the ledger, and the report names no recipient"]
    with pytest.raises(FieldError, match="neither a recipient"):
        parse(unknown.replace(b"Message-ID: <elsewhere@example.com>", b""))


def test_an_arf_report_of_another_feedback_type_is_no_complaint():
    report = parse(read("arf-complaint.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam"))
    assert (report.kind, report.outcomes) == ("ARF not-spam", ())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_are_read_or_refused_never_crash(data):
    try:
        report = parse(data, now=lambda: T0)
    except FieldError as exc:
        assert exc.message
    else:
        assert isinstance(report, Report)


_header_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.one_of(st.none(), _header_text, st.sampled_from(["failed", "delayed", "delivered", "relayed"])),
       status=st.one_of(st.none(), _header_text, st.from_regex(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)),
       diagnostic=st.one_of(st.none(), _header_text), date=st.one_of(st.none(), _header_text),
       recipient=st.one_of(st.none(), _header_text, st.emails().map(lambda a: f"rfc822; {a}")),
       extra=st.sampled_from(["", "Original-Recipient: rfc822;", "Original-Recipient: x@y@z", "Action: delayed"]))
def test_arbitrary_delivery_status_fields_are_read_or_refused_never_crash(action, status, diagnostic, date, recipient, extra):
    data = dsn(*(v.replace("\r", " ").replace("\n", " ") if isinstance(v, str) else v
                 for v in (action, status, diagnostic, date, recipient)), extra=extra)
    try:
        report = parse(data, now=lambda: T0)
    except FieldError as exc:
        assert exc.message
    else:
        assert all(o.type in ("bounced_hard", "bounced_soft", "delivered") and "@" in o.recipient for o in report.outcomes)


_PART_TYPES = ["text/plain", "text/html", "message/delivery-status", "message/feedback-report", "message/rfc822",
               "text/rfc822-headers", "multipart/mixed", "multipart/report; report-type=delivery-status",
               "multipart/report; report-type=feedback-report", "application/octet-stream"]


@st.composite
def mime_trees(draw, depth=0):
    """A message of random parts: report parts with field blocks or garbage, any transfer encoding, nested."""
    ctype = draw(st.sampled_from(_PART_TYPES))
    headers = [f"Content-Type: {ctype}" + ("; boundary=B" + str(depth) if ctype.startswith("multipart") else "")]
    headers += draw(st.lists(st.sampled_from([
        "Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: quoted-printable", "Date: Mon, 23 Nov 2026 10:04:12 +0100",
        "Date: 32 Foo 99999 99:99:99", "Auto-Submitted: auto-replied", "From: MAILER-DAEMON@mx.example", "Return-Path: <>",
        "Subject: Out of Office", "Message-ID: <x@y>", "In-Reply-To: <a@b>", "X-Failed-Recipients: a@b.example",
        "Content-Type: text/plain; charset=x-unknown-charset"]), max_size=4))
    if ctype.startswith("multipart") and depth < 2:
        children = draw(st.lists(mime_trees(depth + 1), min_size=0, max_size=3))
        body = "".join(f"--B{depth}\n{child}\n" for child in children) + f"--B{depth}--\n"
    else:
        fields = draw(st.lists(st.sampled_from([
            "Final-Recipient: rfc822; anna@example.com", "Final-Recipient: rfc822;", "Original-Recipient: rfc822; <a@b>",
            "Action: failed", "Action: delayed", "Action: delivered", "Status: 5.1.1", "Status: 4.4.7", "Status: 9.9.9",
            "Diagnostic-Code: smtp; 550 no", "Feedback-Type: abuse", "Original-Rcpt-To: gert@yahoo.example", "To: a@b.example",
            "Message-ID: <m@n>", "", "=?utf-8?b?////?=", "Hi. This is the qmail-send program", "<eva@example.net>:",
            "--- Below this line is a copy of the message."]), max_size=8))
        body = "\n".join(fields) + draw(st.text(max_size=80))
    return "\n".join(headers) + "\n\n" + body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mime_trees())
def test_arbitrary_mime_trees_are_read_or_refused_never_crash(text):
    try:
        report = parse(text.encode("utf-8", "surrogateescape"), now=lambda: T0)
    except FieldError as exc:
        assert exc.message
    else:
        # Every outcome names its recipient, but a complaint whose report redacts it (the Message-ID finds it).
        assert isinstance(report, Report) and all(
            "@" in o.recipient or (o.type == "complained" and report.original_message_id) for o in report.outcomes)


# -- reading mailboxes -----------------------------------------------------------------------


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(path)
    for data in messages:
        box.add(data)
    box.flush()
    box.close()
    return path


def test_an_mbox_gives_each_message_with_the_line_of_its_separator(tmp_path):
    box = write_mbox(tmp_path / "bounces", [read("postfix-hard.eml"), read("qmail.eml")])
    mails = list(read_mail(box))
    lines = box.read_bytes().split(b"\n")
    assert [m.index for m in mails] == [0, 1]
    assert all(lines[m.line - 1].startswith(b"From ") for m in mails) and mails[0].line == 1
    assert mails[1].where == f"{box}:{mails[1].line}"
    assert b"qmail-send program" in mails[1].data


def test_a_maildir_gives_new_and_cur_messages_by_file_name(tmp_path):
    box = mailbox.Maildir(tmp_path / "Maildir")
    for name in ("postfix-hard.eml", "gmail.eml"):
        box.add(read(name))
    key = next(box.iterkeys())
    msg = box[key]
    msg.set_subdir("cur")
    box[key] = msg  # one read by a mail program: in cur/ with flags
    mails = list(read_mail(tmp_path / "Maildir"))
    assert len(mails) == 2 and {Path(m.file).parent.name for m in mails} == {"new", "cur"}
    assert sorted(m.data for m in mails) == sorted(bytes(box.get_bytes(k)) for k in box.iterkeys())


def test_eml_files_and_folders_of_them(tmp_path):
    assert [m.file for m in read_mail(DATA / "qmail.eml")] == [str(DATA / "qmail.eml")]
    assert len(list(read_mail(DATA))) == len(list(DATA.glob("*.eml")))


@pytest.mark.parametrize(("make", "words"), [
    (lambda p: p / "missing", "no such file or folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "neither a Maildir"),
])
def test_a_path_that_holds_no_mail_is_refused_whole(tmp_path, make, words):
    with pytest.raises(ValidationError, match=words):
        list(read_mail(make(tmp_path)))


# -- matching and applying -------------------------------------------------------------------


def add_shop(engine, with_deliveries=True) -> None:
    """The eight customers, each sent one e-mail at T0 (a delivery with its Message-ID and an email_sent event)."""
    with engine.begin() as conn:
        conn.execute(Customer.__table__.insert(), [
            {"id": cid, "email": email, "created_at": T0 - timedelta(days=400), "attributes": {}} for cid, email, _ in SENT.values()])
        conn.execute(Event.__table__.insert(), [
            {"event_id": f"sent:{RUN}:{cid}:ebike", "customer_id": cid, "type": "email_sent", "occurred_at": T0,
             "message_id": "ebike", "run_id": RUN, "topic": "promotions"} for cid, _, _ in SENT.values()])
        if with_deliveries:
            conn.execute(Delivery.__table__.insert(), [
                {"decision_id": i, "run_id": RUN, "customer_id": cid, "message_id": "ebike", "status": "accepted",
                 "adapter": "smtp", "rfc_message_id": mid(digest), "updated_at": T0}
                for i, (cid, _, digest) in enumerate(SENT.values(), start=1)])


def stored(engine) -> list[tuple]:
    E = Event.__table__
    with engine.connect() as conn:
        return sorted(conn.execute(select(E.c.customer_id, E.c.type, E.c.run_id, E.c.message_id, E.c.topic)
                                   .where(E.c.type != "email_sent")).all())


BROKEN = b"From: MAILER-DAEMON@mx.example\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; " \
         b"boundary=b\n\n--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n" \
         b"Final-Recipient: rfc822; anna@example.com\nAction: failed\nStatus: 5.1.1\n\n--b--\n"  # no Date


def everything(tmp_path) -> Path:
    names = sorted(SENT)
    return write_mbox(tmp_path / "bounces.mbox", [read(n) for n in names[:3]] + [BROKEN] + [read(n) for n in names[3:]])


def test_a_mailbox_is_matched_by_message_id_and_applied_once(engine, tmp_path):
    add_shop(engine)
    box = everything(tmp_path)
    result = import_bounces(engine, [box])
    assert result.messages == 10
    assert dict(result.applied.applied) == {"bounced_hard": 5, "bounced_soft": 1, "complained": 1}
    assert dict(result.matched_by) == {"message-id": 7} and result.unmatched == []
    assert dict(result.ignored) == {"auto-reply": 2}
    assert stored(engine) == [
        ("C0000001", "email_bounced_hard", RUN, "ebike", "promotions"),
        ("C0000002", "email_bounced_soft", RUN, "ebike", "promotions"),
        ("C0000003", "email_bounced_hard", RUN, "ebike", "promotions"),
        ("C0000004", "email_bounced_hard", RUN, "ebike", "promotions"),
        ("C0000005", "email_bounced_hard", RUN, "ebike", "promotions"),
        ("C0000008", "email_complained", RUN, "ebike", "promotions"),
        ("C0000009", "email_bounced_hard", RUN, "ebike", "promotions"),
    ]
    # The complaint withdraws every topic.
    with engine.connect() as conn:
        prefs = conn.execute(select(Preference.__table__.c.customer_id, Preference.__table__.c.topic,
                                    Preference.__table__.c.opted_in, Preference.__table__.c.source)).all()
    assert prefs == [("C0000008", "*", False, "bounce-mailbox")]
    # The unusable message is reported by its place and recorded once.
    [(_, bad)] = result.invalid
    separators = [i for i, line in enumerate(box.read_bytes().split(b"\n"), start=1) if line.startswith(b"From ")]
    assert (bad.index, bad.field, bad.line, bad.raw["file"]) == (3, "Date", separators[3], str(box))
    assert str(result.error()).startswith("1 unusable message(s) of 10")

    again = import_bounces(engine, [box])
    assert (again.applied.total_applied, again.applied.duplicates) == (0, 7)
    with engine.connect() as conn:
        rejects = conn.execute(select(FeedbackReject.__table__.c.provider, FeedbackReject.__table__.c.position,
                                      FeedbackReject.__table__.c.field)).all()
    assert rejects == [("smtp", 3, "Date")]


def test_the_same_bounce_in_another_mailbox_counts_once(engine, tmp_path):
    add_shop(engine)
    import_bounces(engine, [DATA / "postfix-hard.eml"])
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(read("postfix-hard.eml"))
    result = import_bounces(engine, [tmp_path / "Maildir"])
    assert (result.applied.total_applied, result.applied.duplicates) == (0, 1)


def test_without_a_known_message_id_the_address_finds_the_latest_send_before_the_bounce(engine):
    add_shop(engine, with_deliveries=False)
    with engine.begin() as conn:  # a later e-mail to Anna, and one after the bounce, which it cannot answer
        conn.execute(Event.__table__.insert(), [
            {"event_id": f"sent:{run}:C0000001:tip", "customer_id": "C0000001", "type": "email_sent", "occurred_at": at,
             "message_id": "lock-tip", "run_id": run, "topic": "tips"}
            for run, at in (("weekly:2026-W48b", T0 + timedelta(seconds=1)), ("weekly:2026-W49", T0 + timedelta(days=7)))])
    result = import_bounces(engine, [DATA / "postfix-hard.eml", DATA / "gmail.eml"])
    assert dict(result.matched_by) == {"address": 2}
    assert stored(engine) == [("C0000001", "email_bounced_hard", "weekly:2026-W48b", "lock-tip", "tips"),
                              ("C0000004", "email_bounced_hard", RUN, "ebike", "promotions")]  # Daan@Gmail.example, any case


def test_bounces_no_email_of_relmail_answers_are_listed_not_applied(engine, tmp_path):
    add_shop(engine, with_deliveries=False)
    with engine.begin() as conn:
        conn.execute(Event.__table__.delete().where(Event.__table__.c.customer_id == "C0000003"))
        conn.execute(Event.__table__.update().where(Event.__table__.c.customer_id == "C0000004")
                     .values(occurred_at=T0 + timedelta(days=1)))
    stranger = read("postfix-hard.eml").replace(b"anna@example.com", b"nobody@example.com")
    (tmp_path / "stranger.eml").write_bytes(stranger)
    result = import_bounces(engine, [DATA / "exchange-online.eml", DATA / "gmail.eml", tmp_path / "stranger.eml"])
    assert result.applied.total_applied == 0 and result.error() is None
    why = {u.recipient: u.why for u in result.unmatched}
    assert why["carla@contoso.example"].endswith("relmail never sent an e-mail to this address")
    assert "is not in the ledger" in why["carla@contoso.example"]
    assert "sent nothing to this address before the bounce (2026-11-23 09:05 UTC)" in why["daan@gmail.example"]
    assert why["nobody@example.com"].endswith("never sent an e-mail to this address")


def test_a_late_bounce_for_an_erased_customer_records_nothing(engine):
    from relmail.store.erasure import forget

    add_shop(engine)
    forget(engine, "C0000001")
    result = import_bounces(engine, [DATA / "postfix-hard.eml"])
    assert result.applied.total_applied == 0 and stored(engine) == []
    assert [(u.recipient, u.why) for u in result.unmatched] == [
        ("anna@example.com", f"the customer of {mid(SENT['postfix-hard.eml'][2])} was erased since")]


def test_a_dry_run_reads_and_matches_but_writes_nothing(engine, tmp_path):
    add_shop(engine)
    result = import_bounces(engine, [everything(tmp_path)], dry_run=True)
    assert result.applied.total_applied == 7 and len(result.invalid) == 1
    assert "nothing was written" in str(result.error())
    assert stored(engine) == []
    with engine.connect() as conn:
        assert conn.execute(select(FeedbackReject.__table__.c.id)).all() == []


def test_read_bounces_alone_touches_no_database():
    box = read_bounces(DATA)
    assert box.messages == 9 and len(box.reports) == 7 and dict(box.ignored) == {"auto-reply": 2}


# -- the command -------------------------------------------------------------------------------


def invoke(project, *args):
    return CliRunner().invoke(cli, ["-p", str(project.root), *args])


def shop_engine(project):
    from relmail.store.db import make_engine

    return make_engine(project.database_url)


def test_cli_text_json_and_exit_codes(project, tmp_path):
    engine = shop_engine(project)
    add_shop(engine)
    engine.dispose()
    clean = invoke(project, "feedback", "bounces", str(DATA))
    assert clean.exit_code == 0, clean.output
    assert f"{DATA}: 9 message(s): 7 new event(s), 0 already stored, 0 unmatched, ignored 2 auto-reply, 0 unusable; 1 opt-out(s)" \
        in clean.stdout
    assert "bounced_hard    5\nbounced_soft    1\ncomplained      1" in clean.stdout
    # A cron job's run that finds nothing new logs one line, no empty table.
    again = invoke(project, "feedback", "bounces", str(DATA))
    assert again.exit_code == 0 and again.stdout.splitlines() == [
        f"{DATA}: 9 message(s): 0 new event(s), 7 already stored, 0 unmatched, ignored 2 auto-reply, 0 unusable; 0 opt-out(s)"]

    box = everything(tmp_path)
    broken = invoke(project, "feedback", "bounces", str(box), "--json")
    assert broken.exit_code == 4
    out = json.loads(broken.stdout)
    assert (out["total_applied"], out["duplicates"], out["messages"]) == (0, 7, 10)
    [bad] = out["invalid"]
    assert (bad["file"], bad["index"], bad["field"]) == (str(box), 3, "Date")
    assert f"{box}:{bad['line']}: field 'Date'" in broken.stderr

    rejects = invoke(project, "feedback", "rejects", "--provider", "smtp")
    assert rejects.exit_code == 0 and "Date" in rejects.stdout

    dry = invoke(project, "feedback", "bounces", str(DATA / "qmail.eml"), "--dry-run")
    assert dry.exit_code == 0 and "nothing written (--dry-run)" in dry.stdout

    missing = invoke(project, "feedback", "bounces", str(tmp_path / "nope"))
    assert missing.exit_code == 2  # click: the path does not exist


# -- end to end: sent over SMTP, bounced, imported, suppressed ----------------------------------


def postfix_bounce(original: bytes, recipient: str, date: datetime) -> bytes:
    """The DSN Postfix writes when the next hop refuses ``recipient`` with 550 5.1.1: the original's headers returned."""
    headers = original.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n")
    stamp = date.strftime("%a, %d %b %Y %H:%M:%S +0000").encode()
    return (b"Return-Path: <>\nDate: " + stamp + b"\nFrom: MAILER-DAEMON@mail.fietsenwinkel.example (Mail Delivery System)\n"
            b"Subject: Undelivered Mail Returned to Sender\nTo: bounces@fietsenwinkel.example\nAuto-Submitted: auto-replied\n"
            b"Message-Id: <20261120121000.E2E@mail.fietsenwinkel.example>\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"E2E.1/mail\"\n\n"
            b"--E2E.1/mail\nContent-Type: text/plain; charset=us-ascii\n\nThis is the mail system.\n\n"
            b"<" + recipient.encode() + b">: host mx.example said: 550 5.1.1 User unknown\n\n"
            b"--E2E.1/mail\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mail.fietsenwinkel.example\n\n"
            b"Final-Recipient: rfc822; " + recipient.encode() + b"\nAction: failed\nStatus: 5.1.1\n"
            b"Diagnostic-Code: smtp; 550 5.1.1 <" + recipient.encode() + b">: User unknown\n\n"
            b"--E2E.1/mail\nContent-Type: text/rfc822-headers\n\n" + headers + b"\n\n--E2E.1/mail--\n")


def plan_rows(project, path: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    result = invoke(project, "plan", "sendtest", "--window", "2026-W49", "--as-of", "2026-11-30T12:00:00+00:00",
                    "--dry-run", "--out", str(path))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["customer_id"]: (r["action"], tuple(r["reasons"])) for r in rows}


def test_a_bounce_of_an_e_mail_sent_over_smtp_suppresses_the_customer_in_the_next_plan(project, tmp_path, monkeypatch):
    import email as email_module

    from tests.sendkit import AS_OF, WINDOW, build, use_smtp
    from tests.smtp_server import PASSWORD, SmtpServer

    from relmail.project import Project
    from relmail.sending.run import send

    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)
    engine = build(project)
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        with (project.root / "relmail.toml").open("a") as toml:  # the Return-Path: [delivery.smtp] is the last table
            toml.write('envelope_from = "bounces@fietsenwinkel.example"\n')
        sent = send(Project.load(project.root), engine, "sendtest", WINDOW, now=lambda: AS_OF)
        assert sent.done["accepted"] == len(server.handler.messages) > 10
        captured = server.handler.messages[0]
    assert captured.mail_from == "bounces@fietsenwinkel.example"
    original = email_module.message_from_bytes(captured.data)
    customer, recipient = original["X-Relmail-Customer"], captured.rcpt_tos[0]

    before = plan_rows(project, tmp_path / "before.jsonl")
    assert "HARD_BOUNCE" not in before[customer][1]

    box = write_mbox(tmp_path / "bounces", [postfix_bounce(captured.data, recipient, AS_OF + timedelta(minutes=10))])
    imported = invoke(project, "feedback", "bounces", str(box), "--json")
    assert imported.exit_code == 0, imported.output
    out = json.loads(imported.stdout)
    assert (out["applied"], out["matched_by"]) == ({"bounced_hard": 1}, {"message-id": 1})

    after = plan_rows(project, tmp_path / "after.jsonl")
    assert after[customer][0] == "suppress" and "HARD_BOUNCE" in after[customer][1]
    assert {c: row for c, row in after.items() if c != customer} == {c: row for c, row in before.items() if c != customer}


# -- who vouches for a hand-written unsubscribe's sender ----------------------------------------


@pytest.mark.parametrize("headers, expected", [
    (["mx.shop.example; dmarc=pass (p=reject dis=none) header.from=example.org"], "DMARC pass"),
    (["mx.shop.example 1; dkim=pass (2048-bit key) header.d=Example.ORG header.s=s1"], "DKIM pass"),
    (["mx.shop.example; dkim=pass header.i=@example.org"], "DKIM pass"),
    # A signature of another domain (a mailing service's own) is not the From domain's.
    (["mx.shop.example; dkim=pass header.d=mailer.example; dmarc=fail header.from=example.org"], None),
    # SPF checks the envelope sender, not From.
    (["mx.shop.example; spf=pass smtp.mailfrom=example.org"], None),
    # A header the sender wrote, under another server's name, counts for nothing.
    (["attacker.example; dmarc=pass header.from=example.org", "mx.shop.example; dmarc=none header.from=example.org"], None),
    (["mx.shop.example; dmarc=pass header.from=example.org.evil.example"], None),
])
def test_only_the_shops_server_vouching_for_the_from_domain_counts(headers, expected):
    assert vouched(headers, "mx.shop.example", "anna@example.org") == expected


@given(st.lists(st.text(max_size=200), max_size=3), st.text(max_size=40))
def test_any_authentication_results_text_is_read_without_error(headers, sender):
    assert vouched(headers, "mx.shop.example", sender) in (None, "DMARC pass", "DKIM pass")


@pytest.mark.parametrize("subject, first_line, asks", [
    ("unsubscribe", "", True),
    ("Re: Your weekly tips", "Please unsubscribe me.", True),
    ("AW: Newsletter", "Bitte abmelden", True),
    ("Re: Nieuwsbrief", "Uitschrijven graag", True),
    ("Re: Ofertas", "Quiero darme de baja", False),  # not at the start: a person must read it
    ("darse de baja", "", True),
    ("Baja California trip", "Is the e-bike good for Baja?", False),
    ("Re: order 1234", "Unsubscribing is hard? Where is my order?", False),
    ("Re: Your weekly tips", "> unsubscribe\nThanks!", False),  # a quote is not what they wrote
    ("R: Cancellami dalla newsletter", "Per favore non scrivetemi più.", True),  # Italian Outlook's reply prefix
    ("I: Natale da Bottega Sapori", "Per favore disiscrivetemi", True),  # and its forward prefix
    ("RIF: Offerte", "Annulla l'iscrizione", True),
    ("Disiscrizione", "", True),
    ("Cancellazione ordine 1234", "Vorrei annullare l'ordine", False),  # an order, not the list
])
def test_a_person_asking_to_be_removed_is_an_unsubscribe_request(subject, first_line, asks):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "anna@example.org", "unsubscribe@fietsenwinkel.example", subject
    msg["Date"], msg["Message-ID"] = "Mon, 23 Nov 2026 10:00:00 +0000", "<q1@example.org>"
    msg.set_content(first_line or "Thanks")
    report = parse(bytes(msg), lambda: datetime(2026, 11, 24, tzinfo=UTC))
    assert (report.kind == "unsubscribe request" and report.token is None) == asks, report.kind


@pytest.mark.parametrize("where", ["returned headers", "quoted in the text"])
def test_a_report_names_relmails_message_id_from_the_x_relmail_message_id_an_esp_kept(where):
    """Mailjet writes its own Message-ID; relmail's travels as X-Relmail-Message-ID, which a bounce returns."""
    ours, theirs = "<run.C0000001.ebike@fietsenwinkel.example>", "<a1b2c3.mailjet@mailjet.com>"
    headers = f"Message-ID: {theirs}\nX-Relmail-Message-ID: {ours}\nTo: anna@example.com\n"
    returned = (f"--b\nContent-Type: text/rfc822-headers\n\n{headers}\n" if where == "returned headers"
                else f"--b\nContent-Type: text/plain\n\n--- original message ---\n{headers}\n")
    data = ("Date: Mon, 23 Nov 2026 10:04:12 +0100\nFrom: MAILER-DAEMON@mx.example\nMessage-ID: <r1@mx.example>\n"
            "MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
            "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
            "Final-Recipient: rfc822; anna@example.com\nAction: failed\nStatus: 5.1.1\n\n"
            f"{returned}--b--\n").encode()
    report = parse(data, now=lambda: datetime(2026, 11, 24, tzinfo=UTC))
    assert (report.original_message_id, report.relmail_message_id) == (theirs, ours)
    assert report.message_ids == (theirs, ours)  # the returned Message-ID first: every other adapter keeps relmail's
    assert parse(dsn(), now=lambda: datetime(2026, 11, 24, tzinfo=UTC)).relmail_message_id is None
