"""SMTP adapter against a real SMTP server (aiosmtpd) with STARTTLS, implicit TLS and AUTH.

Tests on the ``server`` fixture run twice: against a server that offers
PIPELINING (the envelope goes out in one write) and one that does not
(lock-step).
"""

from __future__ import annotations

import base64
import dataclasses
import email
import re
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relmail.delivery import DeliveryAborted, OutgoingMessage, get_adapter
from relmail.delivery.smtp import dot_stuffed, queue_id, quoted
from relmail.errors import ConfigError
from smtp_server import PASSWORD, USER, SmtpServer, free_port

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
SECRETS = {"smtp_password": PASSWORD}


def make_message(i: int, to: str | None = None, **extra) -> OutgoingMessage:
    to = to or f"customer{i}@example.org"
    msg = EmailMessage()
    msg["From"] = "Fietsenwinkel <news@fietsenwinkel.example>"
    msg["To"] = to
    msg["Subject"] = f"Nieuwe e-bike {i} — €2499"
    msg["Message-ID"] = f"<run1.C{i:07d}.ebike@fietsenwinkel.example>"
    msg["List-Unsubscribe"] = f"<https://fietsenwinkel.example/relmail/unsubscribe/tok{i}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(f"Hallo klant {i},\n.a line starting with a dot\nGroeten")
    msg.add_alternative(f"<p>Hallo klant {i}</p>", subtype="html")
    return OutgoingMessage(
        key=f"run1:C{i:07d}:ebike-launch",
        to=to,
        from_addr="news@fietsenwinkel.example",
        subject=str(msg["Subject"]),
        raw=msg.as_bytes(),
        metadata={"relmail_customer": f"C{i:07d}", "relmail_run": "run1", "relmail_message": "ebike-launch"},
        **extra,
    )


@pytest.fixture(params=[True, False], ids=["pipelining", "lock-step"])
def server(tmp_path, request):
    with SmtpServer(tmp_path, "starttls", pipelining=request.param) as srv:
        yield srv


def adapter_for(srv: SmtpServer, **cfg):
    config = srv.config(**{"username": USER, "pool_size": 3, "messages_per_connection": 4, "retry_delay": 300, **cfg})
    return get_adapter("smtp", config, SECRETS, clock=lambda: NOW, sleep=lambda s: None)


def parsed(data: bytes):
    return email.message_from_bytes(data, policy=default_policy)


def test_starttls_auth_pool_delivers_every_message_intact_and_reuses_connections(server):
    messages = [make_message(i) for i in range(20)]
    with adapter_for(server) as adapter:
        results = adapter.send(messages)
    assert [r.key for r in results] == [m.key for m in messages]
    assert all(r.status == "accepted" and r.smtp_code == 250 for r in results)
    assert all(r.provider_id and r.provider_id.startswith("Q") for r in results)
    assert len({r.provider_id for r in results}) == 20
    assert sorted(len(server.handler.received_by(m.to)) for m in messages) == [1] * 20
    for m in messages:
        got = server.handler.received_by(m.to)[0]
        assert got.mail_from == "news@fietsenwinkel.example"
        assert got.data == m.as_bytes()  # byte for byte, dot-stuffing undone by the server
        body = parsed(got.data)
        assert body["Subject"] == m.subject
        assert body["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert ".a line starting with a dot" in body.get_body(("plain",)).get_content()
    # 20 messages, 4 per connection: 5 to 7 logins (one per connection), never one per message.
    assert 5 <= len(server.handler.logins) <= 7
    # MAIL FROM, RCPT TO and DATA in one write exactly when the server offers PIPELINING.
    assert server.handler.pipelined == [server.handler.pipelining] * 20


# aiosmtpd only counts STARTTLS as TLS; implicit TLS is encrypted from the first byte.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_with_auth(tmp_path):
    with SmtpServer(tmp_path, "tls") as srv, adapter_for(srv) as adapter:
        results = adapter.send([make_message(1), make_message(2)])
        assert [r.status for r in results] == ["accepted", "accepted"]
        assert len(srv.handler.messages) == 2
        assert srv.handler.logins


def test_wrong_password_aborts_with_every_message_deferred(server):
    config = server.config(username=USER)
    adapter = get_adapter("smtp", config, {"smtp_password": "wrong"}, clock=lambda: NOW)
    with pytest.raises(DeliveryAborted, match="AUTH refused") as info:
        adapter.send([make_message(1), make_message(2)])
    adapter.close()
    assert [r.status for r in info.value.results] == ["deferred", "deferred"]
    assert server.handler.messages == []


def test_untrusted_certificate_aborts(server):
    config = server.config(username=USER)
    del config["ca_file"]
    adapter = get_adapter("smtp", config, SECRETS, clock=lambda: NOW)
    with pytest.raises(DeliveryAborted, match="not trusted") as info:
        adapter.send([make_message(1)])
    # The one line a user reads says which setting trusts a relay's own CA.
    assert 'relmail.toml [delivery.smtp] ca_file = "/path/to/ca.pem"' in str(info.value)
    adapter.close()
    assert server.handler.messages == []


@pytest.mark.parametrize(
    "stage,reply",
    [
        ("rcpt", "451 4.3.0 Try again later"),
        ("rcpt", "421 4.7.0 Too busy, closing"),  # mid-pipeline: DATA's reply never comes
        ("data", "421 4.7.0 Too busy, closing"),
    ],
)
def test_temporary_failure_defers_and_the_retry_delivers(server, stage, reply):
    messages = [make_message(i) for i in range(6)]
    server.handler.script(stage, messages[2].to, reply)
    with adapter_for(server) as adapter:
        first = adapter.send(messages)
        code = int(reply[:3])
        assert first[2].status == "deferred"
        assert first[2].smtp_code == code
        assert first[2].retry_at == NOW + timedelta(seconds=300)
        assert not first[2].ambiguous
        assert [r.status for i, r in enumerate(first) if i != 2] == ["accepted"] * 5
        assert server.handler.received_by(messages[2].to) == []
        again = adapter.send([messages[2]])
    assert again[0].status == "accepted"
    assert all(len(server.handler.received_by(m.to)) == 1 for m in messages)


def test_permanent_failures_map_to_rejections_and_hard_bounces(server):
    messages = [make_message(i) for i in range(5)]
    server.handler.script("rcpt", messages[0].to, "550 5.1.1 No such user")
    server.handler.script("rcpt", messages[1].to, "550 5.7.1 Blocked by policy")
    server.handler.script("data", messages[2].to, "554 5.7.1 Message looks like spam")
    server.handler.script("rcpt", messages[3].to, "553 Mailbox name not allowed")
    with adapter_for(server, pool_size=1) as adapter:
        results = adapter.send(messages)
    statuses = [(r.status, r.hard_bounce, r.smtp_code) for r in results]
    assert statuses == [
        ("rejected", True, 550),
        ("rejected", False, 550),
        ("rejected", False, 554),
        ("rejected", True, 553),
        ("accepted", False, 250),
    ]
    assert "No such user" in results[0].reason and "RCPT TO" in results[0].reason
    # RSET kept the single connection usable after each refusal.
    assert len(server.handler.logins) == 1
    assert [m.rcpt_tos for m in server.handler.messages] == [[messages[4].to]]


def test_data_accepted_after_a_refused_recipient_is_abandoned_without_a_final_dot(tmp_path):
    # RFC 2920 servers refuse DATA when no recipient was accepted; one that sends
    # 354 anyway must not get a final dot, which could deliver an empty message.
    messages = [make_message(i) for i in range(3)]
    with SmtpServer(tmp_path, "plain", auth=False) as srv:
        srv.handler.script("rcpt", messages[0].to, "lenient:550 5.1.1 No such user")
        with get_adapter("smtp", srv.config(pool_size=1), {}, clock=lambda: NOW) as adapter:
            results = adapter.send(messages)
    assert [(r.status, r.hard_bounce) for r in results] == [("rejected", True), ("accepted", False), ("accepted", False)]
    assert [m.rcpt_tos for m in srv.handler.messages] == [[messages[1].to], [messages[2].to]]


def test_an_address_with_a_line_break_is_rejected_and_smuggles_nothing(server):
    evil = dataclasses.replace(make_message(1), to="anna@example.org\r\nRCPT TO:<eve@example.org>")
    messages = [evil, make_message(2)]
    with adapter_for(server, pool_size=1) as adapter:
        results = adapter.send(messages)
    assert [r.status for r in results] == ["rejected", "accepted"]
    assert "line break" in results[0].reason
    assert [m.rcpt_tos for m in server.handler.messages] == [[messages[1].to]]


def test_connection_dropped_before_data_is_resent_on_a_fresh_connection(server):
    messages = [make_message(i) for i in range(12)]
    server.handler.script("rcpt", messages[5].to, "drop")
    server.handler.script("rcpt", messages[9].to, "drop")
    with adapter_for(server) as adapter:
        results = adapter.send(messages)
    assert all(r.status == "accepted" for r in results)
    received = [rcpt for m in server.handler.messages for rcpt in m.rcpt_tos]
    assert sorted(received) == sorted(m.to for m in messages)  # nothing lost, nothing twice


@pytest.mark.parametrize("action,stored", [("drop", 0), ("drop-after-store", 1)])
def test_connection_dropped_after_the_final_dot_is_ambiguous_and_never_resent(server, action, stored):
    messages = [make_message(i) for i in range(10)]
    server.handler.script("data", messages[4].to, action)
    with adapter_for(server) as adapter:
        results = adapter.send(messages)
    r = results[4]
    assert r.status == "deferred" and r.ambiguous and "may have been delivered" in r.reason
    assert all(x.status == "accepted" for i, x in enumerate(results) if i != 4)
    assert len(server.handler.received_by(messages[4].to)) == stored
    received = [rcpt for m in server.handler.messages for rcpt in m.rcpt_tos]
    assert len(received) == len(set(received)) == 9 + stored


def test_unreachable_server_defers_the_batch_without_raising():
    config = {"host": "127.0.0.1", "port": free_port(), "security": "none", "retry_delay": 120, "timeout": 2}
    with get_adapter("smtp", config, {}, clock=lambda: NOW) as adapter:
        results = adapter.send([make_message(i) for i in range(5)])
    assert {r.status for r in results} == {"deferred"}
    assert {r.retry_at for r in results} == {NOW + timedelta(seconds=120)}
    assert all("server unavailable" in r.reason for r in results)


def test_messages_without_raw_are_built_from_fields(tmp_path):
    with SmtpServer(tmp_path, "plain", auth=False) as srv:
        msg = OutgoingMessage(
            key="r:C1:m", to="a@example.org", to_name="Anna de Vries", from_addr="news@fietsenwinkel.example",
            from_name="Fietsenwinkel", subject="Hoi", text="tekst", html="<b>html</b>",
            headers={"List-Unsubscribe": "<https://x/u/1>"},
        )
        with get_adapter("smtp", srv.config(), {}, clock=lambda: NOW) as adapter:
            [result] = adapter.send([msg])
        assert result.status == "accepted"
        got = parsed(srv.handler.messages[0].data)
        assert got["To"] == "Anna de Vries <a@example.org>"
        assert got["List-Unsubscribe"] == "<https://x/u/1>"
        assert got.get_body(("html",)).get_content().strip() == "<b>html</b>"


def _rsa_key() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, der


def test_dkim_signature_verifies_and_covers_the_unsubscribe_headers(server):
    pem, der = _rsa_key()
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def dns(name, timeout=5):
        assert name == b"relmail2026._domainkey.fietsenwinkel.example."
        return record

    secrets = {**SECRETS, "dkim_private_key": pem.decode()}
    config = server.config(username=USER, dkim={"selector": "relmail2026", "domain": "fietsenwinkel.example"})
    with get_adapter("smtp", config, secrets, clock=lambda: NOW) as adapter:
        assert adapter.send([make_message(7)])[0].status == "accepted"
    data = server.handler.messages[0].data
    assert data.startswith(b"DKIM-Signature:")
    assert dkim.verify(data, dnsfunc=dns)
    signed = parsed(data)["DKIM-Signature"].replace(" ", "").replace("\n", "").lower()
    assert "list-unsubscribe:list-unsubscribe-post" in signed or (
        "list-unsubscribe" in signed and "list-unsubscribe-post" in signed
    )
    assert not dkim.verify(data.replace(b"Hallo klant 7", b"Hallo klant 8"), dnsfunc=dns)


def test_dkim_key_file_inside_the_project_is_refused(tmp_path):
    pem, _ = _rsa_key()
    (tmp_path / "dkim.pem").write_bytes(pem)
    config = {"host": "localhost", "security": "none", "dkim": {"selector": "s", "domain": "d.example", "key_file": "dkim.pem"}}
    with pytest.raises(ConfigError, match="inside the project folder"):
        get_adapter("smtp", config, {}, root=tmp_path)
    outside = tmp_path / "secrets"
    outside.mkdir()
    (outside / "k.pem").write_bytes(pem)
    config["dkim"]["key_file"] = str(outside / "k.pem")
    adapter = get_adapter("smtp", config, {}, root=tmp_path / "project")
    assert adapter.signer is not None and adapter.signer.selector == "s"


@pytest.mark.parametrize("pem", ["-----BEGIN PRIVATE KEY-----\nSECRETMATERIAL1\n-----END PRIVATE KEY-----\n", "SECRETMATERIAL1",
                                 "-----BEGIN RSA PRIVATE KEY-----\n" + "SECRETMATERIAL1" * 5 + "\n-----END RSA PRIVATE KEY-----\n"])
def test_a_dkim_key_that_is_not_one_is_a_config_error_that_does_not_quote_it(pem):
    # A key pasted with a line missing: one line naming the setting, not a traceback.
    config = {"host": "localhost", "security": "none", "dkim": {"selector": "s", "domain": "d.example"}}
    with pytest.raises(ConfigError, match=r"\[delivery.dkim\]: the private key cannot sign") as info:
        get_adapter("smtp", config, {"dkim_private_key": pem})
    assert "SECRETMATERIAL" not in str(info.value)


def test_config_errors_name_the_table_and_key():
    with pytest.raises(ConfigError, match=r"\[delivery.smtp\]: missing key 'host'"):
        get_adapter("smtp", {}, {})
    with pytest.raises(ConfigError, match="'security' must be one of"):
        get_adapter("smtp", {"host": "h", "security": "ssl"}, {})
    with pytest.raises(ConfigError, match="smtp_password"):
        get_adapter("smtp", {"host": "h", "username": "u"}, {})


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("2.0.0 Ok: queued as 4XyZ12Abc", "4XyZ12Abc"),
        ("OK id=1tAbCd-000Xyz-2Q", "1tAbCd-000Xyz-2Q"),
        ("2.6.0 <abc@host> Queued mail for delivery", "abc@host"),
        ("Message accepted for delivery", None),
    ],
)
def test_queue_id_from_postfix_exim_exchange_replies(reply, expected):
    assert queue_id(reply) == expected


@pytest.mark.parametrize(
    "address",
    [
        "anna@example.org", "o'brien+tag@sub.example.org", "a.b-c_d@x-y.example", "{weird}|~`^=?/*&%$#!@example.org",
        "Anna <anna@example.org>", "a..b@example.org", ".a@example.org", "a.@example.org", "\"a b\"@example.org",
        "a@[127.0.0.1]", "anna@exämple.org", "", "a(comment)@example.org", "a@b@example.org",
    ],
)
def test_quoted_address_is_what_smtplib_would_send(address):
    assert quoted(address) == smtplib.quoteaddr(address)


@pytest.mark.parametrize(
    "payload",
    [b".starts with a dot\r\nx\r\n", b"a\r\n.\r\n..two\r\nend", b"no dots\r\n", b"a\r\n.", b"", b"x.y\r\n. z\r\n"],
)
def test_dot_stuffing_doubles_every_leading_dot_and_ends_the_last_line(payload):
    expected = re.sub(rb"(?m)^\.", b"..", payload)
    assert dot_stuffed(payload) == (expected if expected.endswith(b"\r\n") else expected + b"\r\n")
