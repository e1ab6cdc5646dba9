"""Mailchimp Transactional (Mandrill) ``POST /api/1.0/messages/send-raw``: the rendered MIME, one e-mail per request.

Each e-mail goes exactly as the render stage built it (``raw_message``),
with ``from_email`` and ``to`` naming the sender and the one recipient, so
the headers relmail rendered (List-Unsubscribe, List-Unsubscribe-Post,
Message-ID ...) reach the inbox unchanged. ``async`` is false: Mandrill
answers with the recipient's result at once instead of a blind ``queued``.
The key is the secret ``esp_api_key``; Mandrill takes it as ``key`` in the
JSON body (never logged: reasons quote Mandrill's answer, not the request).
``ip_pool`` names a dedicated IP pool.

Answers (an array with the recipient's result, or an error object):

- ``sent``, ``queued``, ``scheduled``: accepted; the ``_id`` becomes
  ``provider_id``, the id every webhook event of the e-mail carries
  (:mod:`relmail.feedback.mandrill`);
- ``rejected`` with ``reject_reason`` ``hard-bounce`` (the address is on
  Mandrill's rejection denylist after a hard bounce) and ``invalid`` (an
  address Mandrill cannot send to): a hard bounce, which suppresses the
  address in every later plan; ``spam`` and ``unsub`` (the recipient
  complained about, or unsubscribed from, an earlier e-mail of the account)
  reject the e-mail, and the feedback events record the complaint or
  unsubscribe (:data:`OPT_OUTS`); ``soft-bounce``, ``custom`` and ``rule``
  reject the e-mail without saying anything lasting about the address;
- ``rejected`` for ``invalid-sender``, ``unsigned`` and ``test-mode-limit``,
  and the errors ``Invalid_Key``, ``PaymentRequired`` and
  ``Unknown_Subaccount``: refusals of the account or sender, the same for
  every e-mail; they stop the send (exit 7) with what to fix, every e-mail
  not yet accepted stays deferred and ``relmail send`` resumes after the
  fix (:mod:`.esp`);
- ``ValidationError`` and other errors reject the e-mail with Mandrill's
  name and message; ``GeneralError`` and ``ServiceUnavailable`` defer it
  (``retry_delay``).

Mandrill answers every error with HTTP 500 and a JSON error object: that
answer is read as it is (:meth:`~.http.HttpAdapter.answers_each_message`),
never retried as a server fault. A 429 or a 5xx without Mandrill's error
object (a proxy in front) is retried as for every HTTP adapter (:mod:`.http`).

Exactly once: send-raw has no idempotency key, so a request whose answer
was lost (read timeout, reset) is *not* made again: its e-mail comes back
``deferred`` and ``ambiguous``, and the ledger settles it as accepted and
uncertain instead of sending it a second time. So does a 200 whose body
cannot be read as the recipient's result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UnsupportedFeature
from .base import Abort, OutgoingMessage, Result, accepted, deferred, rejected
from .esp import AccountRefusals
from .http import HttpAdapter, json_body

PATH = "/messages/send-raw"
ACCEPTED_STATUSES = ("sent", "queued", "scheduled")

#: Error names (HTTP 500 ``{"status": "error", ...}``) that refuse the account -> what to fix.
ACCOUNT_ERRORS = {
    "Invalid_Key": "set a Mailchimp Transactional API key (Settings > SMTP & API Info) in the secret esp_api_key",
    "PaymentRequired": "the account cannot send until it is paid for: add transactional e-mail credits in Mailchimp",
    "Unknown_Subaccount": "the subaccount the e-mails name does not exist in Mailchimp Transactional",
}
#: Error names of a fault on Mandrill's side: the e-mail waits ``retry_delay``.
TRANSIENT_ERRORS = ("GeneralError", "ServiceUnavailable")
#: ``reject_reason`` values that refuse the sender or the key, not the recipient -> what to fix.
ACCOUNT_REJECTS = {
    "invalid-sender": "Mandrill refuses [sender] from_email as a sender: check it under Settings > Sending Domains",
    "unsigned": "add and verify the domain of [sender] from_email under Settings > Sending Domains (SPF and DKIM)",
    "test-mode-limit": "the API key is a test key: set a production key in the secret esp_api_key",
}
#: ``reject_reason`` values that say the address can never receive: a hard bounce.
HARD_REJECTS = ("hard-bounce", "invalid")
#: ``reject_reason`` values that carry the recipient's earlier opt-out -> the feedback type it is recorded as.
OPT_OUTS = {"spam": "complained", "unsub": "unsubscribed"}


class MandrillAdapter(AccountRefusals, HttpAdapter):
    name = "mandrill"
    default_base_url = "https://mandrillapp.com/api/1.0"
    max_batch = 1000
    config_keys = ("base_url", "ip_pool", "timeout", "max_retries", "max_retry_wait", "concurrency")

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        self.api_key = self.secret("esp_api_key")
        self.ip_pool = self.config.string("ip_pool", None)

    def configure(self, session) -> None:
        session.headers["Accept"] = "application/json"

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            try:
                m.as_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise UnsupportedFeature(f"mandrill: message {m.key}: the MIME is not UTF-8 text; "
                                         "raw_message is a JSON string") from None

    def document(self, m: OutgoingMessage) -> dict:
        """The JSON body of ``send-raw`` for ``m`` (it holds the API key: never log it)."""
        doc: dict[str, Any] = {
            "key": self.api_key,
            "raw_message": m.as_bytes().decode("utf-8"),
            "from_email": m.from_addr,
            "to": [m.to],
            "async": False,
        }
        if self.ip_pool:
            doc["ip_pool"] = self.ip_pool
        return doc

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        return self.map_messages(self._post, messages)

    def _post(self, m: OutgoingMessage) -> Result:
        outcome = self.request("POST", PATH, json=self.document(m))
        if outcome.response is None:
            return outcome.defer(m.key)
        resp = outcome.response
        status, data = resp.status_code, json_body(resp)
        if _is_error(data):
            why = _describe(data)
            if data.get("name") in TRANSIENT_ERRORS:
                return deferred(m.key, self.retry_at(), why, http_status=status)
            return rejected(m.key, why, http_status=status)
        entry = _entry(data, m.to)
        if status != 200 or entry is None:
            # Mandrill may have taken it: settled as uncertain, never sent again.
            return deferred(m.key, self.retry_at(), f"HTTP {status} from Mandrill without the recipient's result: "
                            f"{(resp.text or '').strip()[:200]}", http_status=status, ambiguous=True)
        state, reason, pid = entry.get("status"), str(entry.get("reject_reason") or ""), entry.get("_id")
        pid = str(pid) if pid else None
        if state in ACCEPTED_STATUSES:
            return accepted(m.key, pid, http_status=status)
        if state == "invalid":
            return rejected(m.key, "Mandrill: invalid recipient address", hard_bounce=True, http_status=status)
        if state != "rejected":
            return deferred(m.key, self.retry_at(), f"Mandrill answered status {state!r}", http_status=status, ambiguous=True)
        if reason in ACCOUNT_REJECTS:
            raise Abort(f"Mandrill rejects the e-mails ({reason}): {ACCOUNT_REJECTS[reason]}", status)
        return rejected(m.key, f"Mandrill rejected it: {reason or 'no reason given'}", hard_bounce=reason in HARD_REJECTS,
                        http_status=status, feedback=OPT_OUTS.get(reason))

    def answers_each_message(self, response) -> bool:
        """Mandrill's own answer (the results array, or its error object sent with HTTP 500) is final, never retried."""
        data = json_body(response)
        return isinstance(data, list) or _is_error(data)

    def account_refusal(self, response) -> str | None:
        data = json_body(response)
        if _is_error(data) and data.get("name") in ACCOUNT_ERRORS:
            return f"Mandrill refuses the account ({_describe(data)}): {ACCOUNT_ERRORS[data['name']]}"
        return None


def _is_error(data: Any) -> bool:
    return isinstance(data, dict) and data.get("status") == "error"


def _describe(error: Mapping[str, Any]) -> str:
    return f"Mandrill {error.get('name') or 'error'}: {str(error.get('message') or 'no message').strip()[:300]}"


def _entry(data: Any, to: str) -> dict | None:
    """The recipient's result in the answer array (the only one, or the one naming ``to``)."""
    if not isinstance(data, list):
        return None
    entries = [e for e in data if isinstance(e, dict)]
    mine = [e for e in entries if str(e.get("email", "")).lower() == to.lower()]
    if mine:
        return mine[0]
    return entries[0] if len(entries) == 1 and len(data) == 1 else None
