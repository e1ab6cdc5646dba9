"""Mailjet Send API v3.1 ``POST /v3.1/send``: up to 50 messages per request.

Authentication is HTTP Basic with the API key (secret ``esp_api_key``) and
its secret key (secret ``esp_api_secret``). Each message keeps its own
subject, ``TextPart``/``HTMLPart``, ``ReplyTo`` and ``Headers``
(List-Unsubscribe, List-Unsubscribe-Post, Feedback-ID ...). Mailjet writes
the Message-ID itself and refuses one in ``Headers`` (``send-0011``), so the
render stage's is left out: the recipient sees Mailjet's, and Mailjet's
events find the delivery by ``MessageID`` and ``EventPayload`` instead. The
render stage's Message-ID travels as the custom header
``X-Relmail-Message-ID`` (Mailjet passes custom headers on): a bounce that
reaches the shop's own bounce mailbox and returns the e-mail's headers names
the delivery by it (:mod:`relmail.feedback.bounces`).
``CustomID`` is the message key and ``EventPayload`` the relmail metadata as
compact JSON: Mailjet returns both in every event, which is how the webhook
(:mod:`relmail.feedback.mailjet`) finds the delivery again; the tags, joined
with ``/``, are the ``CustomCampaign`` Mailjet's statistics group by. The
numeric ``MessageID`` Mailjet answers with is the ``provider_id``, the same
number its events carry.

Batches and exactly-once. The ledger records a whole chunk at its point of
no return before the one request that carries it (as for Postmark's batch),
and Mailjet processes each message of ``Messages`` separately: its answer
holds one entry per message, in order, ``Status`` ``success`` (with the
recipient's ``MessageID``) or ``error`` (with ``Errors[]``). Each entry is
checked to echo its message's ``CustomID`` and becomes that message's result,
exactly what a request of its own would have given; so batching is safe, and
used. Where that cannot be told, nothing is guessed:

- no answer after the request was sent (read timeout, reset): every message
  of the request is ``deferred`` and ``ambiguous``, as a single send would be;
- an answer whose entries cannot be matched to the messages (missing,
  miscounted, another ``CustomID``, an unknown ``Status``): the same;
- a refusal of the request as a whole (a 4xx with one error and no
  ``Messages``, such as ``mj-0002`` malformed JSON or ``mj-0011`` payload too
  large) sent nothing: each message is tried again in a request of its own,
  so only a faulty one is rejected;
- an error that refuses the account (``send-0008``, a From address Mailjet
  has not validated; ``mj-0001``, a suspended key; any 401 or 403), or a
  header every e-mail carries (``send-0011``), for the request or for one of
  its entries, stops the send (exit 7): the messages
  Mailjet accepted in the same answer stay accepted, every other one stays
  deferred and ``relmail send`` resumes after the fix (:mod:`.esp`).

Other entry errors reject their message with Mailjet's code and text
(``mj-0013``, an invalid recipient address, as a hard bounce); an entry error
with status 429 or 5xx defers it. An answer with entries is read entry by
entry whatever its HTTP status, never retried whole (that would send its
accepted messages again: :meth:`~.http.HttpAdapter.answers_each_message`);
a 429 or 5xx without entries is retried as for every HTTP adapter, honouring
``Retry-After`` (:mod:`.http`).

``sandbox = true`` sets ``SandboxMode``: Mailjet validates every message
and delivers none. ``relmail send --dry-run`` never reaches an adapter (it
renders and writes nothing), so the sandbox is not a dry run: a send through
it records its e-mails as accepted in the ledger. It is meant for a staging
copy of the project, to prove the account, the sender and the payloads.

Mailjet's documented limits are checked before anything is sent: a subject
of at most 255 characters, a text or HTML part, and no header of Mailjet's
forbidden list (``send-0011``: ``Reply-To``, ``Subject``, ``X-MJ-CustomID``,
``Date``, ``List-Id`` ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UnsupportedFeature
from . import metadata
from .base import Abort, OutgoingMessage, Result, accepted, chunks, deferred, rejected
from .esp import AccountRefusals, unique_tags
from .http import HttpAdapter, json_body

#: Messages per request (Send API v3.1's documented limit).
MAX_MESSAGES = 50
MAX_SUBJECT = 255
#: Headers Mailjet writes itself: the rendered one is left out of ``Headers``, which refuses it (send-0011).
MAILJET_WRITES = {"message-id"}
#: Headers Mailjet refuses in ``Headers`` (its send-0011), lower case: its documented list of forbidden
#: headers, and those a message property sets (Reply-To, X-Mailjet-DeduplicateCampaign ...).
RESERVED = {
    "from", "sender", "to", "cc", "bcc", "subject", "reply-to", "return-path", "delivered-to", "dkim-signature",
    "domainkey-status", "received-spf", "authentication-results", "received", "user-agent", "x-mailer", "date",
    "list-id", "x-csa-complaints", "x-feedback-id", "x-mj-customid", "x-mj-eventpayload", "x-mailjet-campaign",
    "x-mailjet-deduplicatecampaign", "x-mailjet-prio", "x-mailjet-debug", "x-mj-templateid", "x-mj-templatelanguage",
    "x-mj-templateerrorreporting", "x-mj-templateerrordeliver", "x-mj-vars", "x-mailjet-trackopen",
    "x-mailjet-trackclick", "x-mj-monitoringcategory", "x-mj-workflowid", "x-mailjet-segmentation", "x-mj-mid",
    "x-mj-errormessage", "x-mj-statisticscontactslistid",
}
#: Error codes that refuse the account, the sender or what every e-mail carries, not one message -> what to fix.
ACCOUNT_ERRORS = {
    "send-0006": "the API key may not set a Sender header: ask Mailjet support for the permission",
    "send-0007": "the sender is not validated in Mailjet",
    "send-0008": "validate [sender] from_email (or its domain) under Sender domains & addresses in Mailjet",
    "mj-0001": "the API key is suspended: check its status under API Key Management in Mailjet",
    "mj-0015": "set the API key in the secret esp_api_key and its secret key in esp_api_secret",
    # Every e-mail of a send has the same headers: rejecting each for good would lose the whole send.
    "send-0011": "Mailjet does not take a header the e-mails carry (the error names it); they wait: report it to relmail",
}
#: The invalid-address error: the recipient's address can never receive.
INVALID_ADDRESS = "mj-0013"
TRACKING = ("account_default", "disabled", "enabled")
TAG_SEPARATOR = "/"


class MailjetAdapter(AccountRefusals, HttpAdapter):
    name = "mailjet"
    default_base_url = "https://api.mailjet.com"
    max_batch = MAX_MESSAGES
    config_keys = ("base_url", "sandbox", "track_opens", "track_clicks", "timeout", "max_retries", "max_retry_wait")

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        self._auth = (self.secret("esp_api_key"), self.secret("esp_api_secret"))
        self.sandbox = self.config.boolean("sandbox", False)
        self.track_opens = self.config.choice("track_opens", TRACKING, None) if "track_opens" in self.config else None
        self.track_clicks = self.config.choice("track_clicks", TRACKING, None) if "track_clicks" in self.config else None

    def configure(self, session) -> None:
        session.auth = self._auth
        session.headers["Accept"] = "application/json"

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            if m.html is None and m.text is None:
                raise UnsupportedFeature(f"mailjet: message {m.key} has only raw MIME; Mailjet needs TextPart or HTMLPart")
            if len(m.subject) > MAX_SUBJECT:
                raise UnsupportedFeature(f"mailjet: message {m.key}: the subject has {len(m.subject)} characters, "
                                         f"Mailjet allows {MAX_SUBJECT}")
            bad = sorted(h for h in m.headers if h.lower() in RESERVED)
            if bad:
                raise UnsupportedFeature(f"mailjet: message {m.key}: Mailjet does not allow setting header(s) {', '.join(bad)} "
                                         "in Headers (a message property sets them)")

    def item(self, m: OutgoingMessage) -> dict:
        """One entry of ``Messages``."""
        item: dict[str, Any] = {
            "From": _address(m.from_addr, m.from_name),
            "To": [_address(m.to, m.to_name)],
            "Subject": m.subject,
            "CustomID": m.key,
        }
        if m.text is not None:
            item["TextPart"] = m.text
        if m.html is not None:
            item["HTMLPart"] = m.html
        if m.reply_to:
            item["ReplyTo"] = {"Email": m.reply_to}
        headers = {k: str(v) for k, v in m.headers.items() if k.lower() not in MAILJET_WRITES}
        if m.message_id:
            # Mailjet writes the Message-ID: a bounce that returns the headers names the delivery by this one.
            headers[metadata.MESSAGE_ID_HEADER] = m.message_id
        if headers:
            item["Headers"] = headers
        if m.metadata:
            item["EventPayload"] = json.dumps({k: str(v) for k, v in m.metadata.items()}, separators=(",", ":"), sort_keys=True)
        if m.tags:
            item["CustomCampaign"] = TAG_SEPARATOR.join(unique_tags(m))
        if self.track_opens is not None:
            item["TrackOpens"] = self.track_opens
        if self.track_clicks is not None:
            item["TrackClicks"] = self.track_clicks
        return item

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        out: list[Result | None] = []
        try:
            for batch in chunks(messages, MAX_MESSAGES):
                out.extend(self.hand_over(batch, self._post))
        except Abort as exc:
            known = out + list(exc.partial or [])
            exc.partial = known + [None] * (len(messages) - len(known))
            raise
        return out  # type: ignore[return-value]

    def _post(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        body: dict[str, Any] = {"Messages": [self.item(m) for m in batch]}
        if self.sandbox:
            body["SandboxMode"] = True
        outcome = self.request("POST", "/v3.1/send", json=body)
        if outcome.response is None:
            return [outcome.defer(m.key) for m in batch]
        resp = outcome.response
        status = resp.status_code
        data = json_body(resp)
        entries = data.get("Messages") if isinstance(data, dict) else None
        if entries is None and 400 <= status < 500:
            # The request was refused as a whole: nothing was sent. Alone, a faulty message is the only one refused.
            if len(batch) > 1:
                return [r for m in batch for r in self._post([m])]
            return [rejected(batch[0].key, f"HTTP {status}: {_request_error(data, resp.text)}", http_status=status)]
        if not _aligned(entries, batch):
            why = (f"HTTP {status}: Mailjet's answer does not say what became of each message of the request; "
                   "it may have sent them")
            return [deferred(m.key, self.retry_at(), why, http_status=status, ambiguous=True) for m in batch]
        results = [self._one(m, e, status) for m, e in zip(batch, entries)]
        refusal = next((err for e in entries for err in _errors(e) if _refuses_account(err)), None)
        if refusal is not None:
            # Keep what Mailjet accepted in the same answer; the rest waits for the fix.
            raise Abort(_refusal(refusal), status, partial=[r if r.accepted else None for r in results])
        return results

    def _one(self, m: OutgoingMessage, entry: Mapping[str, Any], status: int) -> Result:
        if entry["Status"] == "success":
            return accepted(m.key, _message_id(entry, m.to), http_status=status)
        errors = _errors(entry)
        why = "; ".join(_describe(err) for err in errors) or "Mailjet answered Status error without Errors"
        codes = {_status_code(err) for err in errors}
        if codes and all(c is not None and (c == 429 or c >= 500) for c in codes):
            return deferred(m.key, self.retry_at(), why, http_status=status)
        hard = any(err.get("ErrorCode") == INVALID_ADDRESS and _about_recipient(err) for err in errors)
        return rejected(m.key, why, hard_bounce=hard, http_status=status)

    def answers_each_message(self, response) -> bool:
        data = json_body(response)
        return isinstance(data, dict) and isinstance(data.get("Messages"), list)

    def account_refusal(self, response) -> str | None:
        if self.answers_each_message(response):
            return None  # read entry by entry in _post
        data = json_body(response)
        error = data if isinstance(data, dict) else {"ErrorMessage": (response.text or "").strip()[:300]}
        if response.status_code in (401, 403) or _refuses_account(error):
            return _refusal({"StatusCode": response.status_code, **error})
        return None


def _address(email: str, name: str | None) -> dict:
    return {"Email": email, "Name": name} if name else {"Email": email}


def _aligned(entries: Any, batch: Sequence[OutgoingMessage]) -> bool:
    """Whether ``entries`` is one readable answer per message of ``batch``, in order."""
    if not isinstance(entries, list) or len(entries) != len(batch):
        return False
    for entry, m in zip(entries, batch):
        if not isinstance(entry, dict) or entry.get("Status") not in ("success", "error"):
            return False
        echoed = entry.get("CustomID")
        if echoed not in (None, "", m.key):
            return False
    return True


def _errors(entry: Mapping[str, Any]) -> list[dict]:
    errors = entry.get("Errors")
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _status_code(error: Mapping[str, Any]) -> int | None:
    code = error.get("StatusCode")
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def _refuses_account(error: Mapping[str, Any]) -> bool:
    return error.get("ErrorCode") in ACCOUNT_ERRORS or _status_code(error) in (401, 403)


def _about_recipient(error: Mapping[str, Any]) -> bool:
    related = error.get("ErrorRelatedTo")
    fields = related if isinstance(related, list) else [related]
    return any(isinstance(f, str) and f.startswith("To") for f in fields)


def _describe(error: Mapping[str, Any]) -> str:
    """``Mailjet send-0003: <its message> (HTMLPart, TextPart)``: the code, the text and the fields it names."""
    code = error.get("ErrorCode") or f"HTTP {error.get('StatusCode')}"
    related = error.get("ErrorRelatedTo")
    fields = f" ({', '.join(map(str, related))})" if isinstance(related, list) and related else ""
    return f"Mailjet {code}: {error.get('ErrorMessage') or 'no message'}{fields}"


def _request_error(data: Any, text: str) -> str:
    return _describe(data) if isinstance(data, dict) and (data.get("ErrorCode") or data.get("ErrorMessage")) else text.strip()[:300]


def _refusal(error: Mapping[str, Any]) -> str:
    code = error.get("ErrorCode")
    fix = ACCOUNT_ERRORS.get(code) or (
        ACCOUNT_ERRORS["mj-0015"] if error.get("StatusCode") == 401
        else "the API key must belong to an account that may send from [sender] from_email")
    return f"Mailjet refused the request ({_describe(error)}): {fix}"


def _message_id(entry: Mapping[str, Any], to: str) -> str | None:
    """The recipient's ``MessageID`` (a number, as the events carry it), else its ``MessageUUID``."""
    recipients = [r for r in entry.get("To") or [] if isinstance(r, dict)]
    mine = next((r for r in recipients if str(r.get("Email", "")).lower() == to.lower()), recipients[0] if recipients else {})
    number = mine.get("MessageID")
    if isinstance(number, int) and not isinstance(number, bool) and number > 0:
        return str(number)
    if isinstance(number, str) and number.isdigit() and int(number) > 0:
        return number
    uuid = mine.get("MessageUUID")
    return str(uuid) if uuid else None
