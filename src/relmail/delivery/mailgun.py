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
that only the faulty recipients are rejected. Mailgun takes at most three
tags per message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from email.utils import formataddr

from ..errors import UnsupportedFeature
from .base import Abort, OutgoingMessage, Result, accepted, chunks, rejected
from .http import HttpAdapter, json_body

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


def group_key(m: OutgoingMessage) -> tuple:
    headers = tuple(sorted((k.lower(), v) for k, v in m.headers.items() if k.lower() != "message-id"))
    return (m.from_addr, m.from_name, m.reply_to, m.subject, m.text, m.html, m.tags, headers, tuple(sorted(m.metadata)))


class MailgunAdapter(HttpAdapter):
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
            if len(m.tags) > 3:
                raise UnsupportedFeature(f"mailgun: message {m.key}: Mailgun allows at most 3 tags per message")

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
                for r in self._post_batch(batch):
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
        fields += [("o:tag", t) for t in m.tags]
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
        fields += [("o:tag", t) for t in first.tags]
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
        if resp.status_code == 404:
            raise Abort(f"Mailgun domain {self.domain!r} not found at {self.base_url} (wrong region?): {why}", 404)
        return [rejected(m.key, f"HTTP {resp.status_code}: {why or resp.text[:300]}", http_status=resp.status_code) for m in batch]
