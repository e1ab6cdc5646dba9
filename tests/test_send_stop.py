"""A send asked to stop (Ctrl-C, SIGTERM) finishes and records the e-mails in hand, makes no further
request or retry, and leaves nothing uncertain: the next send delivers every remaining e-mail once."""

from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import responses
from sqlalchemy import select
from tests.faultkit import faulty, use_plain_smtp
from tests.sendkit import RUN, WINDOW, build
from tests.smtp_server import SmtpServer

from relmail.delivery import get_adapter
from relmail.delivery.base import STOPPED
from relmail.sending import ledger
from relmail.sending.run import send
from relmail.sending.stopping import StopRequest
from relmail.store.models import Delivery

D = Delivery.__table__
SENDGRID = "https://api.sendgrid.com/v3/mail/send"


def _later() -> datetime:
    """A clock past the 5xx answers' retry_delay, so the resuming send may retry them."""
    return datetime.now(UTC) + timedelta(hours=1)


def _customer(request_body) -> str:
    return json.loads(request_body)["personalizations"][0]["custom_args"]["relmail_customer"]


def _errors(engine) -> Counter:
    with engine.connect() as conn:
        return Counter(conn.execute(select(D.c.last_error).where(D.c.run_id == RUN, D.c.status == "planned")).scalars())


def _sendgrid_send(project):
    """The fake provider started, the project sending to it: (server, environment, the send command line)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    toml = project.root / "relmail.toml"
    toml.write_text(toml.read_text().replace('adapter = "file"', 'adapter = "sendgrid"')
                    + f'\n[delivery.sendgrid]\nbase_url = "http://127.0.0.1:{server.server_address[1]}"\n')
    env = {**os.environ, "RELMAIL_ESP_API_KEY": "sg-key"}
    command = [sys.executable, "-c", "from relmail.cli import main; main()", "-p", str(project.root),
               "send", "sendtest", "--window", WINDOW]
    return server, env, command


@responses.activate
def test_a_stop_during_provider_errors_makes_no_retry_and_leaves_nothing_uncertain(project):
    engine = build(project, customers=80)
    stop = StopRequest()
    answering = {"status": 500}
    posted: list[str] = []

    def provider(request):
        posted.append(_customer(request.body))
        stop.set()  # the first request is answered while the stop arrives
        status = answering["status"]
        return status, {"X-Message-Id": f"sg-{len(posted)}"}, "" if status == 202 else '{"errors":[{"message":"down"}]}'

    responses.add_callback(responses.POST, SENDGRID, callback=provider)
    adapter = get_adapter("sendgrid", {"concurrency": 4, "max_retries": 3}, {"esp_api_key": "sg-key"})
    started = time.monotonic()
    result = send(project, engine, "sendtest", WINDOW, adapter=adapter, batch_size=20, stop=stop)
    waited = time.monotonic() - started

    # Only requests already in flight when the stop came were made, each once: no 1+2+4 s of retries.
    assert 1 <= len(posted) <= 4 and len(set(posted)) == len(posted)
    assert waited < 1 + 2 + 4, "a stopped send must not sleep through a retry"
    assert result.stopped and result.summary()["stopped"] is True
    assert result.done["deferred"] == len(posted) and result.done["stopped"] == 20 - len(posted)
    assert result.done["handed_over"] == len(posted)
    states = ledger.status_counts(engine, RUN)
    assert "sending" not in states and "committing" not in states, "the batch in hand is recorded before returning"
    assert states["deferred"] == len(posted) and ledger.uncertain_count(engine, RUN) == 0
    assert _errors(engine)[STOPPED] == 20 - len(posted), "what was not handed over is due again, saying why"

    answering["status"] = 202
    first = set(posted)
    posted.clear()
    again = send(project, engine, "sendtest", WINDOW, adapter=get_adapter("sendgrid", {}, {"esp_api_key": "sg-key"}),
                 batch_size=20, now=_later)
    assert not again.stopped
    assert ledger.status_counts(engine, RUN) == {"accepted": len(posted)}
    assert len(posted) == len(set(posted)) > 20, "every e-mail handed over once after the stop"
    assert first <= set(posted), "the e-mails the provider refused with a 5xx are retried, not settled as delivered"


def test_a_stop_during_an_smtp_batch_finishes_the_transactions_in_flight_only(project, tmp_path):
    engine = build(project, customers=80)
    server = SmtpServer(tmp_path, mode="plain", auth=False)
    handler = faulty(server, delay=0.02)
    stop = StopRequest()
    handler.on_data = lambda n: stop.set() if n >= 3 else None
    with server:
        project = use_plain_smtp(project, server)
        result = send(project, engine, "sendtest", WINDOW, batch_size=30, workers=1, stop=stop)
        received_then = len(handler.messages)
        assert result.stopped
        # The pool's two connections finish what they were sending when the third message arrived.
        assert 3 <= received_then <= 3 + 2
        assert result.done["accepted"] == received_then and result.done["stopped"] == 30 - received_then
        assert ledger.uncertain_count(engine, RUN) == 0
        assert set(ledger.status_counts(engine, RUN)) == {"accepted", "planned"}

        again = send(project, engine, "sendtest", WINDOW, batch_size=30, workers=1)
    ids = [email.message_from_bytes(m.data)["Message-ID"] for m in handler.messages]
    assert not again.stopped
    assert len(ids) == len(set(ids)) > 30, "every e-mail arrived once over the two sends"
    assert ledger.status_counts(engine, RUN) == {"accepted": len(ids)}


class _Provider(BaseHTTPRequestHandler):
    """A SendGrid-shaped endpoint on a real socket, for a send in another process."""

    status = 500
    #: Seconds each request takes to be answered.
    delay = 0.05
    customers: list[str] = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.customers.append(_customer(body))
        time.sleep(self.delay)
        self.send_response(self.status)
        self.send_header("X-Message-Id", f"sg-{len(self.customers)}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_signal_stops_in_order_only_while_sending_and_a_second_one_at_once():
    stop = StopRequest()
    with pytest.raises(KeyboardInterrupt):
        stop.signal()  # planning, rendering a dry run: nothing to finish, so at once
    stop = StopRequest()
    with stop.sending():
        stop.signal()
        assert stop()
        with pytest.raises(KeyboardInterrupt):
            stop.signal()


@pytest.mark.parametrize("first, second", [(signal.SIGINT, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)])
def test_only_the_same_signal_again_stops_at_once(first, second):
    # A CI runner cancelling a job sends SIGINT, then SIGTERM: the orderly stop goes on.
    stop = StopRequest()
    with stop.sending():
        assert stop.signal(first) is True and stop() and stop.first_signal == first
        assert stop.signal(second) is False and stop.signal(second) is False
        with pytest.raises(KeyboardInterrupt):
            stop.signal(first)  # a second Ctrl-C: the person means it
    stop = StopRequest()
    with pytest.raises(KeyboardInterrupt):
        stop.signal(first)  # nothing being sent: at once, and the other signal does not interrupt the unwinding
    assert stop.signal(second) is False


@pytest.mark.slow
@pytest.mark.parametrize("how", ["one-process", "process-group-two-senders"])
def test_a_ci_runners_cancel_sigint_then_sigterm_still_finishes_the_requests_in_flight(project, how):
    # GitHub Actions cancels a job with SIGINT, then SIGTERM 7.5 s later (then SIGKILL): the SIGTERM
    # arrives while the requests the SIGINT let finish are still being answered.
    engine = build(project, customers=150)
    _Provider.customers, _Provider.status, _Provider.delay = [], 202, 3.0
    server, env, command = _sendgrid_send(project)
    command += ["--workers", "1"] if how == "one-process" else ["--workers", "2", "--batch-size", "10"]

    def kill(signum):
        if how == "one-process":
            proc.send_signal(signum)
        else:
            os.killpg(proc.pid, signum)

    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while not _Provider.customers and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _Provider.customers, "the send never reached the provider"
        kill(signal.SIGINT)
        time.sleep(0.5)  # the requests in flight are answered after 3 s
        in_flight = len(_Provider.customers)
        kill(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        # Every request in flight got its answer and is recorded: nothing left to settle as uncertain.
        states = ledger.status_counts(engine, RUN)
        assert "sending" not in states and "committing" not in states, (states, err)
        assert states["accepted"] == len(_Provider.customers) >= in_flight
        assert ledger.uncertain_count(engine, RUN) == 0
        assert "stopped" in out, "the summary of what was done is printed before exiting"
        assert "Stopping: the e-mails in hand are finished and recorded" in err
        assert "Still stopping in order: SIGTERM after Ctrl-C (SIGINT) does not stop at once" in err

        _Provider.delay, accepted = 0.0, list(_Provider.customers)
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
    finally:
        _Provider.delay = 0.05
        server.shutdown()
        server.server_close()
    sent = _Provider.customers
    assert len(sent) == len(set(sent)) > len(accepted), "an e-mail was posted twice after the stop"
    assert ledger.status_counts(engine, RUN) == {"accepted": len(sent)}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm-one-process", "ctrl-c-two-senders", "sigterm-process-group-two-senders"])
def test_a_signal_while_the_provider_answers_5xx_exits_130_promptly_and_the_next_send_sends_the_rest(project, how):
    engine = build(project, customers=150)
    _Provider.customers, _Provider.status = [], 500
    server, env, command = _sendgrid_send(project)
    command += ["--workers", "1"] if how == "sigterm-one-process" else ["--workers", "2", "--batch-size", "10"]
    try:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while len(_Provider.customers) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _Provider.customers, "the send never reached the provider"
        if how == "sigterm-one-process":
            proc.send_signal(signal.SIGTERM)  # a pod's deadline: the container's first process only
        elif how == "sigterm-process-group-two-senders":
            os.killpg(proc.pid, signal.SIGTERM)  # timeout(1), systemctl stop: the senders get it too
        else:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the senders too; they leave it to the submitter
        # Without the orderly stop, closing waited for every queued request and its 1+2+4 s retries: minutes.
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Stopping" in err and "the same command resumes" in err
        assert "stopped" in out, "the summary of what was done is printed before exiting"
        assert ledger.uncertain_count(engine, RUN) == 0
        states = ledger.status_counts(engine, RUN)
        assert "sending" not in states and "committing" not in states

        _Provider.status, refused = 202, set(_Provider.customers)
        _Provider.customers = []
        later = _later().isoformat()
        final = subprocess.run(command, env={**env, "RELMAIL_NOW": later}, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr
    finally:
        server.shutdown()
        server.server_close()
    sent = _Provider.customers
    assert len(sent) == len(set(sent)), "an e-mail was posted twice after the stop"
    assert ledger.status_counts(engine, RUN) == {"accepted": len(sent)}
    assert refused <= set(sent), "the e-mails answered 5xx before the stop are sent, not assumed delivered"


@responses.activate
def test_postmark_makes_no_further_batch_request_once_stopping_and_waits_for_no_retry():
    from tests.delivery_messages import FakeTime, message

    calls = []

    def provider(request):
        calls.append(json.loads(request.body))
        return 500, {}, '{"ErrorCode": 701, "Message": "down"}'

    responses.add_callback(responses.POST, "https://api.postmarkapp.com/email/batch", callback=provider)
    fake = FakeTime()
    adapter = get_adapter("postmark", {"max_retries": 3}, {"esp_api_key": "pm"}, clock=fake.clock, sleep=fake.sleep)
    adapter.max_batch = 2
    adapter.stopping = lambda: len(calls) >= 1  # the stop arrives while the first request is answered
    results = adapter.send([message(i) for i in range(6)])
    assert len(calls) == 1 and fake.sleeps == [], "no retry of the answered request, no further batch"
    assert [r.withheld for r in results] == [False, False, True, True, True, True]
    assert all(r.status == "deferred" for r in results)
    assert {r.reason for r in results[2:]} == {STOPPED}
