"""Mailgun messages API (US ``api.mailgun.net`` or EU ``api.eu.mailgun.net``).

A personal message goes to ``POST /v3/{domain}/messages.mime`` with the
exact MIME the render stage built (its Message-ID and List-Unsubscribe
headers intact), the relmail metadata as ``v:`` variables and the tags as
``o:tag``. Messages whose content and headers are identical except the
recipient (and Message-ID) are batch-sent: one ``POST /v3/{domain}/messages``
with up to 1,000 ``to`` recipients and ``recipient-variables``, so that
Mailgun sends each recipient a separate message and the ``v:`` metadata
resolves per recipient (``%recipient.relmail_customer%``). In a batch
Mailgun assigns the Message-Id (one per request, the ``provider_id`` of
each message in it). A 400 for a batch is retried message by message so
that only the faulty recipients are rejected.

Mailgun's documented limits are checked before anything is sent: at most
three tags per message (repeated tags are dropped), each ASCII and at most
128 characters, and the ``o:``, ``h:`` and ``v:`` options of a message at
most 16 kB together. A refusal of the account or domain (bad key, an
unverified or sandbox domain, a free account's authorized recipients, a
domain not yet allowed to send large batches, a domain unknown in the
region) stops the batch, every e-mail not yet accepted deferred
(:mod:`.esp`), with a message that says what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from email.utils import formataddr

from ..errors import UnsupportedFeature
from .base import Abort, OutgoingMessage, Result, accepted, chunks, rejected
from .esp import AccountRefusals, error_text, unique_tags
from .http import HttpAdapter, json_body

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}

#: Mailgun's limits: tags per message, characters per tag, bytes of o:/h:/v: options.
MAX_TAGS = 3
MAX_TAG_LENGTH = 128
MAX_OPTION_BYTES = 16_000

#: Words of Mailgun's "Domain ... is not allowed to send: <why>" answers -> what to fix.
_NOT_ALLOWED = (
    ("sandbox", "send from your own verified domain, or add the recipients as authorized recipients"),
    ("free account", "upgrade the Mailgun account, or add the recipients as authorized recipients"),
    ("unverified", "add the DNS records Mailgun lists for the domain and verify it"),
    ("activate", "activate the Mailgun account (see its activation e-mail)"),
    ("disabled", "ask Mailgun support why the domain is disabled"),
)


def group_key(m: OutgoingMessage) -> tuple:
    headers = tuple(sorted((k.lower(), v) for k, v in m.headers.items() if k.lower() != "message-id"))
    return (m.from_addr, m.from_name, m.reply_to, m.subject, m.text, m.html, m.tags, headers, tuple(sorted(m.metadata)))


class MailgunAdapter(AccountRefusals, HttpAdapter):
    name = "mailgun"
    max_batch = 1000
    config_keys = ("region", "base_url", "domain", "batch_identical", "timeout", "max_retries", "max_retry_wait", "concurrency")

    def __init__(self, config=None, secret=None, **kw):
        region = (config or {}).get("region", "us")
        if region not in REGIONS:
            from ..errors import ConfigError

            raise ConfigError(f"relmail.toml [delivery.mailgun]: key 'region' must be 'us' or 'eu'; got {region!r}")
        self.default_base_url = REGIONS[region]
        super().__init__(config, secret, **kw)
        self.api_key = self.secret("esp_api_key")
        self.domain = self.config.string("domain", None) or self.config.get("sender_domain")
        if not self.domain:
            from ..errors import ConfigError

            raise ConfigError(f"{self.config.where}: missing key 'domain' (your Mailgun sending domain)")
        self.batch_identical = self.config.boolean("batch_identical", True)

    def configure(self, session) -> None:
        session.auth = ("api", self.api_key)

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            tags = unique_tags(m)
            if len(tags) > MAX_TAGS:
                raise UnsupportedFeature(f"mailgun: message {m.key}: {len(tags)} tags; Mailgun allows at most {MAX_TAGS} tags per message")
            for tag in tags:
                if len(tag) > MAX_TAG_LENGTH or not tag.isascii():
                    raise UnsupportedFeature(
                        f"mailgun: message {m.key}: tag {tag[:40]!r} must be ASCII and at most {MAX_TAG_LENGTH} characters (Mailgun's limit)"
                    )
            size = sum(len(k.encode()) + len(v.encode()) for k, v in self._options(m))
            if size > MAX_OPTION_BYTES:
                raise UnsupportedFeature(
                    f"mailgun: message {m.key}: its o:, h: and v: options take {size:,} bytes, Mailgun allows {MAX_OPTION_BYTES:,} in total"
                )

    def _options(self, m: OutgoingMessage) -> list[tuple[str, str]]:
        """Every ``o:``, ``h:`` and ``v:`` field a single send of ``m`` carries (the most any request does)."""
        fields = self._variables(m)
        if m.raw is None:
            fields += [(f"h:{k}", str(v)) for k, v in m.headers.items()]
            if m.reply_to:
                fields.append(("h:Reply-To", m.reply_to))
        return fields

    def account_refusal(self, response) -> str | None:
        status, why = response.status_code, error_text(response)
        low = why.lower()
        if status == 401:
            return f"Mailgun refused the API key ({why}): set the account's API key or the domain's sending key in esp_api_key"
        if status == 403 and "large batches" in low:
            return (f"Mailgun does not let domain {self.domain} send large batches yet ({why}): ask Mailgun support to allow "
                    "batch sending, or set [delivery.mailgun] batch_identical = false to send one message per request")
        if status == 403:
            return f"Mailgun refused access ({why}): esp_api_key must belong to the account that owns domain {self.domain}"
        if status == 404:
            return f"Mailgun has no domain {self.domain!r} at {self.base_url} ({why}): check [delivery.mailgun] domain and region (wrong region?)"
        if status == 400 and "not allowed to send" in low:
            fix = next((fix for words, fix in _NOT_ALLOWED if words in low), "fix the domain in Mailgun's control panel")
            return f"Mailgun does not let domain {self.domain} send ({why}): {fix}"
        return None

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        groups: dict[tuple, list[OutgoingMessage]] = {}
        singles: list[OutgoingMessage] = []
        for m in messages:
            if self.batch_identical and (m.html is not None or m.text is not None):
                groups.setdefault(group_key(m), []).append(m)
            else:
                singles.append(m)
        batches: list[list[OutgoingMessage]] = []
        for g in groups.values():
            if len(g) == 1:
                singles.extend(g)
                continue
            # recipient-variables are keyed by address: one address per request.
            seen: set[str] = set()
            unique = []
            for m in g:
                (singles if m.to.lower() in seen else unique).append(m)
                seen.add(m.to.lower())
            batches.extend(chunks(unique, self.max_batch))
        by_key: dict[str, Result] = {}
        try:
            for batch in batches:
                if len(batch) == 1:
                    singles.append(batch[0])
                    continue
                for r in self.hand_over(batch, self._post_batch):
                    by_key[r.key] = r
            for r in self.map_messages(self._post_one, singles):
                by_key[r.key] = r
        except Abort as exc:
            if exc.partial is not None:  # from map_messages over singles
                by_key.update((r.key, r) for r in exc.partial if r is not None)
            exc.partial = [by_key.get(m.key) for m in messages]
            raise
        return [by_key[m.key] for m in messages]

    def _variables(self, m: OutgoingMessage) -> list[tuple[str, str]]:
        fields = [(f"v:{k}", str(v)) for k, v in m.metadata.items()]
        fields += [("o:tag", t) for t in unique_tags(m)]
        return fields

    def _post_one(self, m: OutgoingMessage) -> Result:
        path = f"/v3/{self.domain}/messages"
        if m.raw is not None:
            fields = [("to", m.to), *self._variables(m)]
            outcome = self.request("POST", path + ".mime", data=fields, files={"message": ("message.eml", m.as_bytes())})
        else:
            fields = [*self._content_fields(m), ("to", formataddr((m.to_name or "", m.to))), *self._variables(m)]
            fields += [(f"h:{k}", str(v)) for k, v in m.headers.items()]
            outcome = self.request("POST", path, data=fields)
        return self._result([m], outcome)[0]

    def _content_fields(self, m: OutgoingMessage) -> list[tuple[str, str]]:
        fields = [("from", formataddr((m.from_name or "", m.from_addr))), ("subject", m.subject)]
        if m.text is not None:
            fields.append(("text", m.text))
        if m.html is not None:
            fields.append(("html", m.html))
        if m.reply_to:
            fields.append(("h:Reply-To", m.reply_to))
        return fields

    def _post_batch(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        first = batch[0]
        fields = self._content_fields(first)
        fields += [("to", formataddr((m.to_name or "", m.to))) for m in batch]
        fields += [(f"h:{k}", str(v)) for k, v in first.headers.items() if k.lower() != "message-id"]
        fields += [(f"v:{k}", f"%recipient.{k}%") for k in first.metadata]
        fields += [("o:tag", t) for t in unique_tags(first)]
        variables = {m.to: {k: str(v) for k, v in m.metadata.items()} for m in batch}
        fields.append(("recipient-variables", json.dumps(variables, separators=(",", ":"))))
        outcome = self.request("POST", f"/v3/{self.domain}/messages", data=fields)
        if outcome.response is not None and outcome.response.status_code == 400:
            return [self._post_one(m) for m in batch]
        return self._result(batch, outcome)

    def _result(self, batch: Sequence[OutgoingMessage], outcome) -> list[Result]:
        if outcome.response is None:
            return [outcome.defer(m.key) for m in batch]
        resp = outcome.response
        data = json_body(resp) or {}
        if resp.status_code == 200:
            pid = str(data.get("id", "")).strip("<>") or None
            return [accepted(m.key, pid, http_status=200) for m in batch]
        why = data.get("message") if isinstance(data, dict) else None
        return [rejected(m.key, f"HTTP {resp.status_code}: {why or resp.text[:300]}", http_status=resp.status_code) for m in batch]
