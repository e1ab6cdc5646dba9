"""A signed return path per e-mail (``[delivery.smtp] verp``): the tag, the SMTP envelope, the bounce mailbox.

A bounce without a valid tag cannot suppress anyone once VERP is on: anyone
can mail the bounce mailbox a DSN or an ARF report naming a customer's
address or an e-mail's (derived, so guessable) Message-ID.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from relmail.delivery import get_adapter
from relmail.delivery.base import delivery_id, delivery_key
from relmail.delivery.verp import MAX_ID, MAX_LOCAL_PART, MAX_TAG, ReturnPath, decode, encode, from_config
from relmail.errors import ConfigError
from relmail.feedback.bounces import import_bounces
from relmail.feedback.dsn import parse
from relmail.store.models import Delivery
from test_feedback_bounces import DATA, DOMAIN, RUN, SENT, add_shop, invoke, mid, plan_rows, postfix_bounce, read, stored, write_mbox

KEY = "test-signing-key-not-secret"
RETURN_PATH = ReturnPath("bounces", "+", DOMAIN, KEY)
_ids = st.integers(min_value=1, max_value=MAX_ID)
_keys = st.text(min_size=1, max_size=40)


# -- the tag ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(_ids, _keys)
def test_a_tag_names_its_delivery_in_either_case_and_fits_the_local_part(delivery, key):
    tag = encode(key, delivery)
    assert decode(key, tag) == delivery and decode(key, tag.upper()) == delivery  # servers may fold the case
    assert len(tag) <= MAX_TAG and tag.isalnum() and tag == tag.lower()


@settings(max_examples=300, deadline=None)
@given(_ids, _keys, st.data())
def test_an_altered_tag_is_refused(delivery, key, data):
    tag = encode(key, delivery)
    at = data.draw(st.integers(0, len(tag) - 1))
    other = data.draw(st.sampled_from([c for c in "abcdefghijklmnopqrstuvwxyz234567" if c != tag[at]]))
    assert decode(key, tag[:at] + other + tag[at + 1:]) is None
    assert decode(key, tag[:at] + tag[at + 1:]) is None  # a character cut
    assert decode(key, tag + other) is None and decode(key, "a" + tag) is None  # one added, a leading zero
    assert decode(key + "x", tag) is None  # another project's key


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_no_tag(text):
    assert decode(KEY, text) is None or encode(KEY, decode(KEY, text)) == text.lower()


@settings(max_examples=200, deadline=None)
@given(_ids, st.integers(1, MAX_LOCAL_PART), st.sampled_from(["+", "-", "="]))
def test_every_return_path_relmail_accepts_keeps_the_64_octet_local_part(delivery, length, separator):
    config = {"verp": True, "envelope_from": "b" * length + "@shop.example", "verp_separator": separator}
    try:
        path = from_config(config, KEY)
    except ConfigError as exc:
        assert "leaves no room for the return-path tag" in str(exc)
        assert length + len(separator) + MAX_TAG > MAX_LOCAL_PART
        return
    address = path.address(delivery)
    assert len(address.rpartition("@")[0]) <= MAX_LOCAL_PART and path.delivery_in(address) == delivery


@pytest.mark.parametrize(("config", "key", "words"), [
    ({"verp": True}, KEY, "verp = true needs envelope_from"),
    ({"verp": True, "envelope_from": "bounces@shop.example", "verp_separator": "."}, KEY, "'verp_separator' must be one of"),
    ({"verp": True, "envelope_from": "bounces@shop.example", "verp_required": "yes"}, KEY, "'verp_required' must be true or false"),
    ({"verp": "yes", "envelope_from": "bounces@shop.example"}, KEY, "'verp' must be true or false"),
    ({"verp": True, "envelope_from": "bounces@shop.example"}, None, "RELMAIL_SIGNING_KEY, which is not set"),
])
def test_a_return_path_that_cannot_work_is_refused(config, key, words):
    with pytest.raises(ConfigError, match=words):
        from_config(config, key)


def test_without_verp_there_is_no_return_path():
    assert from_config({"envelope_from": "bounces@shop.example"}, KEY) is None
    assert from_config({"verp": False}, None) is None


def test_the_tag_is_read_after_the_last_separator_whatever_the_mail_server_rewrote():
    address = RETURN_PATH.address(42)
    tag = address.split("+", 1)[1].split("@")[0]
    assert RETURN_PATH.delivery_in(address) == 42
    assert RETURN_PATH.delivery_in(f"shop-bounces+{tag}@mail.internal") == 42  # a virtual alias, rewritten
    assert RETURN_PATH.delivery_in(f"bounces-{tag}@{DOMAIN}") is None  # another separator
    assert RETURN_PATH.delivery_in(f"+{tag}@{DOMAIN}") is None and RETURN_PATH.delivery_in(tag) is None


def test_a_delivery_key_names_its_delivery_and_a_proof_none():
    assert delivery_id(delivery_key(7)) == 7
    assert delivery_id("proof:20261123T090000:C0000001:ebike") is None and delivery_id("d07") is None


# -- the SMTP envelope ---------------------------------------------------------------------------


def test_each_e_mail_goes_out_with_its_own_signed_return_path_and_a_proof_with_the_plain_one(tmp_path):
    from smtp_server import PASSWORD, USER, SmtpServer
    from test_delivery_smtp import NOW, make_message

    with SmtpServer(tmp_path, "starttls") as server:
        config = server.config(username=USER, envelope_from="bounces@fietsenwinkel.example", verp=True)
        secrets = {"smtp_password": PASSWORD, "signing_key": KEY}
        messages = [dataclasses.replace(make_message(i), key=delivery_key(i + 1)) for i in range(3)]
        messages.append(make_message(9))  # a proof's key names no delivery
        with get_adapter("smtp", config, secrets, clock=lambda: NOW, sleep=lambda s: None) as adapter:
            assert all(r.accepted for r in adapter.send(messages))
        plain = dataclasses.replace(make_message(10), key=delivery_key(11))
        with get_adapter("smtp", {**config, "verp": False}, secrets, clock=lambda: NOW) as adapter:
            assert adapter.send([plain])[0].accepted
        senders = {m.to: server.handler.received_by(m.to)[0].mail_from for m in [*messages, plain]}
    tagged = [senders[m.to] for m in messages[:3]]
    assert [RETURN_PATH.delivery_in(s) for s in tagged] == [1, 2, 3]
    assert all(s.startswith("bounces+") and s.endswith("@fietsenwinkel.example") for s in tagged)
    assert senders[messages[3].to] == senders[plain.to] == "bounces@fietsenwinkel.example"


def test_verp_without_the_signing_key_stops_before_anything_is_sent(tmp_path):
    from smtp_server import PASSWORD, USER, SmtpServer

    with SmtpServer(tmp_path, "starttls") as server, pytest.raises(ConfigError, match="RELMAIL_SIGNING_KEY"):
        get_adapter("smtp", server.config(username=USER, envelope_from="bounces@shop.example", verp=True),
                    {"smtp_password": PASSWORD})


# -- the bounce mailbox ------------------------------------------------------------------------------


def delivery_of(engine, customer: str) -> int:
    D = Delivery.__table__
    with engine.connect() as conn:
        return conn.execute(select(D.c.id).where(D.c.customer_id == customer)).scalar_one()


def tagged(data: bytes, header: str, address: str) -> bytes:
    """``data`` with the return path in the ``header`` line (added at the top if there is none) made ``address``."""
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(header.lower().encode() + b":") and f"bounces@{DOMAIN}".encode() in line:
            lines[i] = line.replace(f"bounces@{DOMAIN}".encode(), address.encode())
            return b"\n".join(lines)
    return f"{header}: {address}\n".encode() + data


@pytest.mark.parametrize(("name", "header"), [
    ("postfix-hard.eml", "X-Original-To"),  # Postfix, before a virtual alias rewrote the recipient
    ("postfix-hard.eml", "Delivered-To"),  # Postfix local delivery, Gmail and Google Workspace
    ("postfix-hard.eml", "To"),  # the report's own To: the envelope sender it answers (fetched by getmail)
    ("postfix-hard.eml", "X-Postfix-Sender"),  # the delivery-status part's per-message field
    ("postfix-hard.eml", "Return-Path"),  # the returned headers
    ("postfix-delayed.eml", "X-Postfix-Sender"),
    ("exim.eml", "Envelope-to"),  # Exim
    ("exim.eml", "Return-path"),  # quoted in the text of a bounce without DSN
    ("gmail.eml", "Delivered-To"),
    ("exchange-online.eml", "To"),  # Exchange Online: To: <bounces+tag@...>
    ("qmail.eml", "Return-Path"),  # quoted by qmail
    ("arf-complaint.eml", "Original-Mail-From"),  # an ARF report's field
])
def test_a_report_to_a_tagged_return_path_answers_that_delivery(engine, tmp_path, name, header):
    add_shop(engine)
    customer = SENT[name][0]
    address = RETURN_PATH.address(delivery_of(engine, customer))
    if name == "gmail.eml":
        address = address.upper()  # a server that folds the case of the local part
    data = tagged(read(name), header, address)
    assert address.lower() in [a.lower() for a in parse(data).return_paths]
    result = import_bounces(engine, [write_mbox(tmp_path / "bounces", [data])], return_path=RETURN_PATH)
    assert dict(result.matched_by) == {"tag": 1} and result.unmatched == []
    assert [row[:3] for row in stored(engine)] == [(customer, _stored_type(result), RUN)]


def test_an_arf_report_is_tied_to_its_e_mail_by_the_returned_message_s_return_path(engine, tmp_path):
    add_shop(engine)
    address = RETURN_PATH.address(delivery_of(engine, "C0000008"))
    data = read("arf-complaint.eml").replace(
        b"Original-Mail-From: <bounces@fietsenwinkel.example>\n", b"").replace(
        b"From: Fietsenwinkel <news@", f"Return-Path: <{address}>\nFrom: Fietsenwinkel <news@".encode())
    result = import_bounces(engine, [write_mbox(tmp_path / "bounces", [data])], return_path=RETURN_PATH)
    assert dict(result.matched_by) == {"tag": 1} and stored(engine)[0][:2] == ("C0000008", "email_complained")


def _stored_type(result) -> str:
    [kind] = result.applied.applied
    return "email_" + kind


def test_forged_reports_without_a_valid_tag_suppress_nobody(engine, tmp_path):
    """What anyone can mail the bounce mailbox: the customer's address and the e-mail's Message-ID, no tag."""
    add_shop(engine)
    anna = RETURN_PATH.address(delivery_of(engine, "C0000001"))
    tag = anna.split("+")[1].split("@")[0]
    forged_tag = anna.replace(tag, tag[:-1] + ("b" if tag[-1] != "b" else "c"))
    reports = [read(n) for n in sorted(SENT)] + [tagged(read("postfix-hard.eml"), "Delivered-To", forged_tag)]
    result = import_bounces(engine, [write_mbox(tmp_path / "bounces", reports)], return_path=RETURN_PATH)
    assert result.applied.total_applied == 0 and stored(engine) == [] and result.matched_by == {}
    assert result.unverified == len(result.unmatched) == 8 and result.error() is None
    why = [u.why for u in result.unmatched]
    assert why.count("unverified: not sent to a tagged return path; only a tagged report is applied (verp_required)") == 7
    assert "unverified: its return-path tag is invalid or altered; only a tagged report is applied (verp_required)" in why
    assert all(u.as_dict()["unverified"] for u in result.unmatched)


def test_with_verp_required_false_a_stored_message_id_matches_and_an_address_never_does(engine, tmp_path):
    add_shop(engine)
    lenient = dataclasses.replace(RETURN_PATH, required=False)
    by_address = read("gmail.eml").replace(mid(SENT["gmail.eml"][2]).encode(), b"<unknown@example.com>")
    result = import_bounces(engine, [write_mbox(tmp_path / "bounces", [read("postfix-hard.eml"), by_address])], return_path=lenient)
    assert dict(result.matched_by) == {"message-id": 1} and [r[0] for r in stored(engine)] == ["C0000001"]
    [(u)] = result.unmatched
    assert (u.recipient, u.unverified) == ("daan@gmail.example", True)
    assert u.why == "unverified: not sent to a tagged return path; and it returns no Message-ID the ledger holds"


def test_an_e_mail_that_left_untagged_is_found_by_its_message_id_even_with_verp_required(engine, tmp_path):
    # Sent before verp was on, or through another adapter: its bounce has no tag to carry.
    add_shop(engine)
    D = Delivery.__table__
    with engine.begin() as conn:
        conn.execute(update(D).where(D.c.customer_id == "C0000001").values(return_path_tagged=False))
        conn.execute(update(D).where(D.c.customer_id != "C0000001").values(return_path_tagged=True))
    reports = [read("postfix-hard.eml"), read("gmail.eml")]  # C0000001's e-mail, and a tagged one's
    result = import_bounces(engine, [write_mbox(tmp_path / "bounces", reports)], return_path=RETURN_PATH)
    assert dict(result.matched_by) == {"message-id": 1} and [r[0] for r in stored(engine)] == ["C0000001"]
    [u] = result.unmatched
    assert u.unverified and u.why == "unverified: not sent to a tagged return path; only a tagged report is applied (verp_required)"


def test_a_tag_wins_over_the_recipient_and_message_id_the_report_names(engine, tmp_path):
    """A customer who knows their own e-mail's return path can only ever report on that e-mail."""
    add_shop(engine)
    mallory = RETURN_PATH.address(delivery_of(engine, "C0000009"))
    about_anna = tagged(read("postfix-hard.eml"), "Delivered-To", mallory)
    result = import_bounces(engine, [write_mbox(tmp_path / "bounces", [about_anna])], return_path=RETURN_PATH)
    assert dict(result.matched_by) == {"tag": 1} and [r[0] for r in stored(engine)] == ["C0000009"]


def test_tags_of_two_e_mails_or_of_a_delivery_the_ledger_lacks_or_an_erased_customer_apply_nothing(engine, tmp_path):
    from relmail.store.erasure import forget

    add_shop(engine)
    two = tagged(tagged(read("postfix-hard.eml"), "Delivered-To", RETURN_PATH.address(delivery_of(engine, "C0000001"))),
                 "X-Original-To", RETURN_PATH.address(delivery_of(engine, "C0000002")))
    elsewhere = tagged(read("gmail.eml"), "Delivered-To", RETURN_PATH.address(10**9))
    erased = tagged(read("exim.eml"), "Envelope-to", RETURN_PATH.address(delivery_of(engine, "C0000009")))
    forget(engine, "C0000009")
    result = import_bounces(engine, [write_mbox(tmp_path / "bounces", [two, elsewhere, erased])], return_path=RETURN_PATH)
    assert result.applied.total_applied == 0 and stored(engine) == []
    assert [u.why for u in result.unmatched] == [
        "unverified: its return paths carry the tags of 2 different e-mails; only a tagged report is applied (verp_required)",
        f"its return-path tag names delivery {10**9}, but the ledger does not hold it (another database?)",
        f"its return-path tag names delivery {delivery_of(engine, 'C0000009')}, but its customer was erased since",
    ]


def test_without_verp_a_report_matches_as_it_always_did(engine):
    add_shop(engine)
    result = import_bounces(engine, [DATA / "postfix-hard.eml"])
    assert dict(result.matched_by) == {"message-id": 1} and result.unverified == 0


# -- end to end: sent over SMTP with verp, bounced, imported; a forgery next to it -------------------


def test_a_bounce_to_the_tagged_return_path_suppresses_and_a_forged_one_does_not(project, tmp_path, monkeypatch):
    import email as email_module

    from tests.sendkit import AS_OF, WINDOW, build, use_smtp
    from tests.smtp_server import PASSWORD, SmtpServer

    from relmail.project import Project
    from relmail.sending.run import send

    monkeypatch.setenv("RELMAIL_SMTP_PASSWORD", PASSWORD)
    engine = build(project)
    with SmtpServer(tmp_path) as server:
        use_smtp(project, server)
        with (project.root / "relmail.toml").open("a") as toml:  # [delivery.smtp] is the last table
            toml.write('envelope_from = "bounces@fietsenwinkel.example"\nverp = true\n')
        sent = send(Project.load(project.root), engine, "sendtest", WINDOW, now=lambda: AS_OF)
        assert sent.done["accepted"] == len(server.handler.messages) > 10
        first, second = server.handler.messages[:2]
    assert len({m.mail_from for m in server.handler.messages}) == len(server.handler.messages)
    customers = [email_module.message_from_bytes(m.data)["X-Relmail-Customer"] for m in (first, second)]
    before = plan_rows(project, tmp_path / "before.jsonl")

    real = postfix_bounce(first.data, first.rcpt_tos[0], AS_OF + timedelta(minutes=10)).replace(
        b"To: bounces@fietsenwinkel.example", f"Delivered-To: {first.mail_from}\nTo: {first.mail_from}".encode())
    forged = postfix_bounce(second.data, second.rcpt_tos[0], AS_OF + timedelta(minutes=11))
    box = write_mbox(tmp_path / "bounces", [real, forged])
    imported = invoke(project, "feedback", "bounces", str(box), "--json")
    assert imported.exit_code == 0, imported.output
    out = json.loads(imported.stdout)
    assert (out["applied"], out["matched_by"], out["unverified"]) == ({"bounced_hard": 1}, {"tag": 1}, 1)
    text = invoke(project, "feedback", "bounces", str(box))
    assert "1 unmatched (1 unverified)" in text.stdout and "unverified: not sent to a tagged return path" in text.stdout

    after = plan_rows(project, tmp_path / "after.jsonl")
    assert after[customers[0]][0] == "suppress" and "HARD_BOUNCE" in after[customers[0]][1]
    # The ledger says each e-mail left tagged (so its bounces must carry the tag), and why says so.
    D = Delivery.__table__
    with engine.connect() as conn:
        assert set(conn.execute(select(D.c.return_path_tagged).where(D.c.status == "accepted")).scalars()) == {True}
    assert "accepted via smtp with a signed return path (VERP)" in invoke(project, "why", customers[1], "--run", "sendtest:2026-W48").stdout
    assert after[customers[1]] == before[customers[1]]
