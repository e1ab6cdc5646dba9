"""Brevo (formerly Sendinblue) transactional API: ``POST /v3/smtp/email``, one e-mail per request.

Each e-mail goes as Brevo's JSON document: ``sender``, ``to``, ``subject``,
``htmlContent`` / ``textContent``, ``replyTo``, ``tags`` and ``headers``
with the headers relmail rendered (List-Unsubscribe, List-Unsubscribe-Post,
Message-ID ...). Brevo carries no metadata field of its own: the relmail
ids travel as JSON in the ``X-Mailin-custom`` header, which Brevo returns
in every webhook event (:mod:`relmail.feedback.brevo`). The key is the
secret ``esp_api_key``, sent in the ``api-key`` header.

Answers: 201 with ``messageId`` is accepted (the id, without its angle
brackets, becomes ``provider_id``, which the events name as
``message-id``); a 400 (``invalid_parameter``, ``missing_parameter`` ...)
rejects the e-mail with Brevo's message; 429 is retried and then deferred,
waiting what ``Retry-After`` or ``x-sib-ratelimit-reset`` says (:mod:`.http`).
Brevo's documentation of this endpoint describes no 5xx answer, nor
whether an e-mail answered with one was sent: a 5xx is read as a lost answer (below), asked
again with the same key within the key's lifetime, and an e-mail whose
request still got a 5xx then is ambiguous, settled as delivered, uncertain,
never sent again by a later run that Brevo might take for a new e-mail. A refusal of the account (a wrong key, a request from an
IP address not among the account's authorised IPs, no credits left, an
account not yet validated or not allowed to send, a sender that is not
verified) stops the batch, every e-mail not yet accepted deferred
(:mod:`.esp`), with what to fix.

Idempotency: every e-mail of the ledger carries an ``idempotencyKey``
(a UUID, as Brevo requires) in ``headers``, derived from its key, Message-ID
and recipient, the same on every attempt. Brevo documents that it processes
a key once within its time-to-live and refuses a repeat with the error code
``duplicate_parameter`` (no HTTP status, message or id of the first e-mail is
documented). It documents the time-to-live twice, differently: 30 minutes
in its idempotency guide, 15 in the changelog that announced the key; relmail
holds to the shorter (:data:`KEY_TTL`). So a request whose answer was lost is
made again (:attr:`~relmail.delivery.http.HttpAdapter.repeatable`) while less
than 15 minutes have passed since that attempt, and never later: Brevo sends
it or, having sent it already, refuses the repeat, which relmail records as
accepted (without Brevo's id) instead of as uncertain. Past the 15 minutes
the e-mail stays ambiguous and the ledger settles it as delivered, uncertain
(never twice). Proofs (``relmail send --test-to``) carry no key: a second
proof is a second e-mail, and a ``duplicate_parameter`` to a proof is a
refusal like any other 400. A copy of the store sending the same run through
the same account within the time-to-live makes the same keys (the docs tell
staging to use its own).

Batch mode (``messageVersions``) is not used, by design. relmail's ledger
decides exactly once per e-mail, and a version batch answers for the batch:
one idempotency key covers every version, a 400 refuses them all without
naming the faulty one, and in the schema Brevo documents a version has no
headers of its own, so each customer's List-Unsubscribe link, Message-ID
and relmail ids could not travel with their e-mail. One request per
e-mail, ``concurrency`` in flight, keeps each e-mail's answer its own;
Brevo's limit for this endpoint (1,000 requests a second) is far above
what a shop sends.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta

from ..errors import UnsupportedFeature
from .base import OutgoingMessage, Result, accepted, delivery_id, header, rejected
from .esp import AccountRefusals, unique_tags
from .http import HttpAdapter, json_body

#: The header Brevo returns in its webhook events, carrying relmail's ids.
METADATA_HEADER = "X-Mailin-custom"
IDEMPOTENCY_HEADER = "idempotencyKey"
#: How long Brevo remembers a key: the shorter of the two times its documentation gives (15 and 30 minutes).
KEY_TTL = timedelta(minutes=15)
#: The namespace of the idempotency keys (a fixed, random UUID: the keys are relmail's own).
_KEYS = uuid.UUID("6f1d3c52-8e0b-4d55-9a57-2b8f0c1e4a90")

#: Error codes that refuse the account, not an e-mail -> what to fix.
ACCOUNT_CODES = {
    "unauthorized": "set a Brevo API key (v3, SMTP & API > API keys) in the secret esp_api_key",
    "not_enough_credits": "the account has no e-mail credits left: buy credits or change the plan",
    "account_under_validation": "the account is being validated by Brevo; sending starts once it is",
    "permission_denied": ("the API key needs the permission to send transactional e-mail, and the account must be allowed "
                          "to send (activated, not suspended)"),
    "reseller_permission_denied": "the account is not allowed to send transactional e-mail: ask Brevo support",
}
#: Words of a 400 about the sender: a From address Brevo has not verified, the same for every e-mail.
_SENDER_WORDS = ("sender", "valid")
#: A 401 about where the request came from (Brevo's authorised IPs), not about the key.
_IP_REFUSAL = re.compile(r"\bip\b|authori[sz]ed[ _]ips", re.IGNORECASE)


def idempotency_key(m: OutgoingMessage) -> str:
    """The UUID Brevo sees on every attempt of ``m``: the same key, Message-ID and recipient give the same."""
    return str(uuid.uuid5(_KEYS, f"{m.key}\n{m.message_id or ''}\n{m.to.lower()}"))


class BrevoAdapter(AccountRefusals, HttpAdapter):
    name = "brevo"
    default_base_url = "https://api.brevo.com"
    max_batch = 1000
    repeatable = True
    repeat_window = KEY_TTL
    config_keys = ("base_url", "timeout", "max_retries", "max_retry_wait", "concurrency")

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        self.api_key = self.secret("esp_api_key")

    def configure(self, session) -> None:
        session.headers.update({"api-key": self.api_key, "Accept": "application/json"})

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            if not (m.html or m.text):
                raise UnsupportedFeature(f"brevo: message {m.key} has no html or text part; Brevo needs htmlContent or textContent")
            if not m.subject:
                raise UnsupportedFeature(f"brevo: message {m.key}: the subject is empty; Brevo needs one")
            for name in (METADATA_HEADER, IDEMPOTENCY_HEADER):
                if header(m.headers, name) is not None:
                    raise UnsupportedFeature(f"brevo: message {m.key}: header {name} is relmail's own on Brevo")

    def document(self, m: OutgoingMessage) -> dict:
        """The JSON body of ``POST /v3/smtp/email`` for ``m``."""
        doc: dict = {
            "sender": _address(m.from_addr, m.from_name),
            "to": [_address(m.to, m.to_name)],
            "subject": m.subject,
        }
        if m.html:
            doc["htmlContent"] = m.html
        if m.text:
            doc["textContent"] = m.text
        if m.reply_to:
            doc["replyTo"] = {"email": m.reply_to}
        headers = {k: str(v) for k, v in m.headers.items()}
        if m.metadata:
            headers[METADATA_HEADER] = json.dumps({k: str(v) for k, v in m.metadata.items()}, separators=(",", ":"))
        if delivery_id(m.key) is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key(m)
        if headers:
            doc["headers"] = headers
        if m.tags:
            doc["tags"] = unique_tags(m)
        return doc

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        return self.map_messages(self._post, messages)

    def _post(self, m: OutgoingMessage) -> Result:
        outcome = self.request("POST", "/v3/smtp/email", json=self.document(m))
        if outcome.response is None:
            return outcome.defer(m.key)
        resp = outcome.response
        status, data = resp.status_code, json_body(resp)
        data = data if isinstance(data, dict) else {}
        if 200 <= status < 300:
            pid = str(data.get("messageId") or "").strip().strip("<>") or None
            return accepted(m.key, pid, http_status=status)
        code, why = str(data.get("code") or ""), str(data.get("message") or resp.text[:300]).strip()
        if code == "duplicate_parameter" and delivery_id(m.key) is not None:
            # The one parameter relmail can repeat is the idempotency key: Brevo took this e-mail before.
            return accepted(m.key, None, http_status=status, reason=f"Brevo had already accepted this e-mail ({why})")
        return rejected(m.key, f"HTTP {status}, Brevo {code or 'error'}: {why}", http_status=status)

    def account_refusal(self, response) -> str | None:
        data = json_body(response)
        data = data if isinstance(data, dict) else {}
        code, why = str(data.get("code") or ""), str(data.get("message") or response.text[:300]).strip()
        if response.status_code == 401 and _IP_REFUSAL.search(why):
            return (f"Brevo refuses requests from this IP address ({why}): add it under Security > Authorized IPs "
                    "in Brevo, or send from an address listed there")
        if response.status_code in (401, 403) and code not in ACCOUNT_CODES:
            code = "unauthorized" if response.status_code == 401 else "permission_denied"
        if code in ACCOUNT_CODES:
            return f"Brevo refuses the account ({code}: {why}): {ACCOUNT_CODES[code]}"
        low = why.lower()
        if response.status_code == 400 and all(w in low for w in _SENDER_WORDS):
            return (f"Brevo refuses the sender ({why}): add [sender] from_email as a sender in Brevo "
                    "(Senders, domains & dedicated IPs) and verify it, or authenticate its domain")
        return None


def _address(email: str, name: str | None) -> dict:
    return {"email": email, "name": name} if name else {"email": email}
