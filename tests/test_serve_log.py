"""`relmail serve`'s request log: the webhook secret or customer token a URL carries never reaches it."""

from __future__ import annotations

import logging
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
    result = CliRunner().invoke(cli, ["-p", str(project.root), "serve", "--port", "8025"])
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
