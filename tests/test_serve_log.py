"""`relmail serve`'s request log: the webhook secret or customer token a URL carries never reaches it."""

from __future__ import annotations

import logging
import re
import threading
import urllib.error
import urllib.request

import werkzeug.serving
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from relmail.cli import cli
from relmail.web.accesslog import redact_path_secrets

SECRET = "brevo-token-7f3a9c"


def serve_one_request(monkeypatch, project, path: str) -> int:
    """Run ``relmail serve`` on a free port, POST an empty JSON array to ``path`` once, stop; the HTTP status
    (400 for the right secret, which lets the empty body be read and refused; 403 for a wrong one)."""
    status: list[int] = []

    def run_once(host, port, app, **_):
        server = werkzeug.serving.make_server(host, 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        request = urllib.request.Request(f"http://127.0.0.1:{server.server_port}{path}", data=b"[]", method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request) as answer:
                status.append(answer.status)
        except urllib.error.HTTPError as refused:
            status.append(refused.code)
        finally:
            server.shutdown()
            thread.join()

    monkeypatch.setattr(werkzeug.serving, "run_simple", run_once)
    result = CliRunner().invoke(cli, ["-p", str(project.root), "serve", "--port", "8091"])
    assert result.exit_code == 0, result.output
    return status[0]


def test_serve_logs_a_webhook_path_without_its_secret(project, monkeypatch, caplog):
    monkeypatch.setenv("RELMAIL_BREVO_WEBHOOK_TOKEN", SECRET)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        # Under [unsubscribe] base_url's path too, as a proxy passes it on.
        for path in (f"/webhooks/brevo/{SECRET}", f"/relmail/webhooks/brevo/{SECRET}?batched=1"):
            assert serve_one_request(monkeypatch, project, path) == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any('"POST /webhooks/brevo/*** HTTP/1.1" 400' in line for line in lines), lines
    assert any('"POST /relmail/webhooks/brevo/***?batched=1 HTTP/1.1" 400' in line for line in lines), lines
    assert not any(SECRET in r.getMessage() for r in caplog.records)


def test_a_wrong_secret_is_not_logged_either(project, monkeypatch, caplog):
    """A guess at the password is someone's attempt, maybe a typo of the real one: not in the log."""
    monkeypatch.setenv("RELMAIL_BREVO_WEBHOOK_TOKEN", SECRET)
    with caplog.at_level(logging.INFO):
        assert serve_one_request(monkeypatch, project, f"/webhooks/brevo/{SECRET}x") == 403
    assert not any(SECRET in r.getMessage() for r in caplog.records)
    assert any("/webhooks/brevo/***" in r.getMessage() for r in caplog.records)


@given(provider=st.sampled_from(["postmark", "brevo", "mailjet"]),
       secret=st.text(st.characters(blacklist_characters="/?# \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680"
                                    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                                    "\u2028\u2029\u202f\u205f\u3000"), min_size=1))
def test_no_secret_segment_survives_redaction(provider, secret):
    line = f"POST /webhooks/{provider}/{secret} HTTP/1.1"
    assert redact_path_secrets(line) == f"POST /webhooks/{provider}/*** HTTP/1.1"


def test_paths_without_a_secret_are_kept():
    for line in ("POST /webhooks/sendgrid HTTP/1.1", "GET /unsubscribe/ HTTP/1.1", "GET /healthz HTTP/1.1"):
        assert redact_path_secrets(line) == line


def test_serve_logs_unsubscribe_and_preference_paths_without_the_customers_token(project, monkeypatch, caplog):
    """A token in the log would let its reader change that customer's consent (and it names the customer)."""
    from relmail import tokens

    monkeypatch.setenv("RELMAIL_SIGNING_KEY", "k" * 32)
    token = tokens.sign("k" * 32, "C0000042", "newsletter", "weekly:2026-W48", project.settings.name)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        for path in (f"/unsubscribe/{token}", f"/relmail/preferences/{token}?lang=fr"):
            serve_one_request(monkeypatch, project, path)
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any('"POST /unsubscribe/*** HTTP/1.1"' in line for line in lines), lines
    assert any('"POST /relmail/preferences/***?lang=fr HTTP/1.1"' in line for line in lines), lines
    assert not any(token in r.getMessage() for r in caplog.records)


def start_serve(monkeypatch, project) -> str:
    """What ``relmail serve`` says on stderr before it serves (the server itself is not started)."""
    monkeypatch.setattr(werkzeug.serving, "run_simple", lambda *a, **kw: None)
    result = CliRunner().invoke(cli, ["-p", str(project.root), "serve"])
    assert result.exit_code == 0, result.output
    return result.stderr


def select_adapter(project, name: str) -> None:
    path = project.root / "relmail.toml"
    path.write_text(re.sub(r'(?m)^adapter = "\w+"', f'adapter = "{name}"', path.read_text()))


def test_serve_warns_when_the_esps_webhook_would_refuse_every_event(project, monkeypatch):
    """Unwarned, SendGrid's events get 503 until SendGrid gives up on them: bounces and unsubscribes lost."""
    monkeypatch.delenv("RELMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY", raising=False)
    select_adapter(project, "sendgrid")
    assert ("warning: /webhooks/sendgrid refuses every event (503): webhook secret 'sendgrid_webhook_public_key' "
            "is not set (export RELMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY=...)") in start_serve(monkeypatch, project)
    monkeypatch.setenv("RELMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY", "not a key")
    assert "warning: /webhooks/sendgrid refuses every event (503): secret 'sendgrid_webhook_public_key' is not an " \
           "ECDSA public key" in start_serve(monkeypatch, project)


def test_serve_is_quiet_about_webhooks_that_are_ready(project, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    monkeypatch.setenv("RELMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY", key)
    select_adapter(project, "sendgrid")
    assert "warning" not in start_serve(monkeypatch, project)
    select_adapter(project, "ses")  # [feedback.ses] topic_arns unset: SES has no secret, it has topics
    assert "warning: /webhooks/ses refuses every event (503): relmail.toml [feedback.ses] topic_arns is not set" \
        in start_serve(monkeypatch, project)


def test_the_unset_webhook_secret_names_its_environment_variable(project, monkeypatch, caplog):
    """The 503 answer and the log say what to export, under the name [secrets] gives it."""
    monkeypatch.delenv("RELMAIL_BREVO_WEBHOOK_TOKEN", raising=False)
    path = project.root / "relmail.toml"
    path.write_text(path.read_text().replace("[secrets]\n", '[secrets]\nbrevo_webhook_token = "SHOP_BREVO_HOOK"\n'))
    with caplog.at_level(logging.WARNING, logger="relmail.web"):
        assert serve_one_request(monkeypatch, project, "/webhooks/brevo") == 503
    assert any("webhook secret 'brevo_webhook_token' is not set (export SHOP_BREVO_HOOK=...)" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_wsgi_server_logs_the_same_warning(project, monkeypatch, caplog):
    from relmail.web import create_app

    monkeypatch.delenv("RELMAIL_POSTMARK_WEBHOOK_PASSWORD", raising=False)
    monkeypatch.setenv("RELMAIL_PROJECT", str(project.root))
    select_adapter(project, "postmark")
    with caplog.at_level(logging.WARNING, logger="relmail.web"):
        create_app()
    assert any("/webhooks/postmark refuses every event (503): webhook secret 'postmark_webhook_password' is not set "
               "(export RELMAIL_POSTMARK_WEBHOOK_PASSWORD=...)" in r.getMessage() for r in caplog.records)



def test_serve_listens_on_8080_by_default_not_on_a_local_mail_catchers_port(project, monkeypatch):
    # MailHog and Mailpit take 8025 (their web page) and 1025 (their SMTP server), MailDev and MailCatcher
    # 1080: `relmail serve` beside one of them must start without --port, and say where it listens.
    asked: list[tuple[str, int]] = []
    monkeypatch.setattr(werkzeug.serving, "run_simple", lambda host, port, app, **_: asked.append((host, port)))
    result = CliRunner().invoke(cli, ["-p", str(project.root), "serve"])
    assert result.exit_code == 0, result.output
    assert asked == [("127.0.0.1", 8080)]
    assert "relmail serving Fietsenwinkel on http://127.0.0.1:8080/ (development server)" in result.stderr
    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    assert "[default: 8080; 1<=x<=65535]" in help_text and "8025" not in help_text
