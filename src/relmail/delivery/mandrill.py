"""Mailchimp Transactional (Mandrill) ``POST /api/1.0/messages/send-raw``: the rendered MIME, one e-mail per request.

Each e-mail goes exactly as the render stage built it (``raw_message``),
with ``from_email`` and ``to`` naming the sender and the one recipient, so
the headers relmail rendered (List-Unsubscribe, List-Unsubscribe-Post,
Message-ID ...) reach the inbox unchanged. ``async`` is false: Mandrill
answers with the recipient's result at once instead of a blind ``queued``.
The key is the secret ``esp_api_key``; Mandrill takes it as ``key`` in the
JSON body (never logged: reasons quote Mandrill's answer, not the request).
``ip_pool`` names a dedicated IP pool.

send-raw has no ``metadata``, ``tags`` or ``subaccount`` parameter: it sends
the document "exactly as if it were sent through" Mandrill's SMTP servers,
which take those options as ``X-MC-*`` headers. relmail adds them on top of
the rendered headers: ``X-MC-Metadata`` (the relmail ids as a JSON object,
which Mandrill returns as ``msg.metadata`` in every webhook event:
:mod:`relmail.feedback.mandrill`), ``X-MC-Tags`` (the tags, comma-separated)
and, with ``[delivery.mandrill] subaccount``, ``X-MC-Subaccount``.
Mandrill's limits are checked before anything is sent: metadata at most 250
bytes of JSON, tags at most 50 characters, none starting with ``_`` (reserved
by Mandrill) or holding a comma (the header's separator).

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

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError, UnsupportedFeature
from .base import Abort, OutgoingMessage, Result, accepted, deferred, rejected
from .esp import AccountRefusals, unique_tags
from .http import HttpAdapter, json_body

PATH = "/messages/send-raw"
ACCEPTED_STATUSES = ("sent", "queued", "scheduled")

#: The SMTP headers that carry send-raw's per-message options.
METADATA_HEADER, TAGS_HEADER, SUBACCOUNT_HEADER = "X-MC-Metadata", "X-MC-Tags", "X-MC-Subaccount"
#: Mandrill's limits: bytes of JSON-encoded metadata per message, characters per tag, of a subaccount id.
MAX_METADATA_BYTES, MAX_TAG_LENGTH, MAX_SUBACCOUNT_LENGTH = 250, 50, 255

#: Error names (HTTP 500 ``{"status": "error", ...}``) that refuse the account -> what to fix.
ACCOUNT_ERRORS = {
    "Invalid_Key": "set a Mailchimp Transactional API key (Settings > SMTP & API Info) in the secret esp_api_key",
    "PaymentRequired": "the account cannot send until it is paid for: add transactional e-mail credits in Mailchimp",
    "Unknown_Subaccount": ("[delivery.mandrill] subaccount names no subaccount of the account: create it "
                           "(Outbound > Subaccounts) or correct the setting"),
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
    config_keys = ("base_url", "ip_pool", "subaccount", "timeout", "max_retries", "max_retry_wait", "concurrency")

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        self.api_key = self.secret("esp_api_key")
        self.ip_pool = self.config.string("ip_pool", None)
        self.subaccount = self.config.string("subaccount", None)
        if self.subaccount is not None and not (
                0 < len(self.subaccount) <= MAX_SUBACCOUNT_LENGTH and _header_safe(self.subaccount)):
            raise ConfigError(f"{self.config.where}: subaccount must be the id of a Mailchimp Transactional subaccount "
                              f"(printable ASCII, at most {MAX_SUBACCOUNT_LENGTH} characters), got {self.subaccount[:80]!r}")

    def configure(self, session) -> None:
        session.headers["Accept"] = "application/json"

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            try:
                m.as_bytes().decode("utf-8")
            except UnicodeDecodeError:
                raise UnsupportedFeature(f"mandrill: message {m.key}: the MIME is not UTF-8 text; "
                                         "raw_message is a JSON string") from None
            if len(_metadata(m).encode()) > MAX_METADATA_BYTES:
                raise UnsupportedFeature(f"mandrill: message {m.key}: metadata exceeds {MAX_METADATA_BYTES} bytes "
                                         "of JSON (Mandrill's limit)")
            for tag in unique_tags(m):
                if not (len(tag) <= MAX_TAG_LENGTH and _header_safe(tag) and "," not in tag and not tag.startswith("_")):
                    raise UnsupportedFeature(
                        f"mandrill: message {m.key}: tag {tag[:60]!r} must be printable ASCII of at most {MAX_TAG_LENGTH} "
                        "characters, without a comma and not starting with '_' (Mandrill's limits)")

    def options(self, m: OutgoingMessage) -> bytes:
        """The ``X-MC-*`` header lines that carry ``m``'s metadata, tags and the subaccount (see the module docstring)."""
        lines = []
        if m.metadata:
            lines.append(f"{METADATA_HEADER}: {_metadata(m)}")
        if m.tags:
            lines.append(f"{TAGS_HEADER}: {','.join(unique_tags(m))}")
        if self.subaccount:
            lines.append(f"{SUBACCOUNT_HEADER}: {self.subaccount}")
        return "".join(line + "\r\n" for line in lines).encode("ascii")

    def document(self, m: OutgoingMessage) -> dict:
        """The JSON body of ``send-raw`` for ``m`` (it holds the API key: never log it)."""
        doc: dict[str, Any] = {
            "key": self.api_key,
            "raw_message": (self.options(m) + m.as_bytes()).decode("utf-8"),
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


def _metadata(m: OutgoingMessage) -> str:
    """``m``'s metadata as Mandrill takes it: one JSON object of strings, ASCII (the rest escaped) to fit a header."""
    return json.dumps({k: str(v) for k, v in m.metadata.items()}, separators=(",", ":"))


def _header_safe(value: str) -> bool:
    """Whether ``value`` can be a header's value as it is: printable ASCII, no line break."""
    return value.isascii() and value.isprintable()


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
