"""SendGrid v3 ``POST /v3/mail/send``.

Messages whose content is identical (sender, reply-to, subject, text, html,
categories) share one request with up to 1,000 personalizations (SendGrid's
limit); each personalization carries its own recipient, ``headers``
(List-Unsubscribe, Message-ID ...) and ``custom_args`` (the relmail
metadata the event webhook returns). Personal e-mails, which differ in
content, go one request each over the reused session. A 202 answer accepts
the request; its ``X-Message-Id`` is every message's ``provider_id``.
Each request turns SendGrid's subscription tracking off
(``tracking_settings``), whatever the account's setting: with it on,
SendGrid adds its own unsubscribe footer and List-Unsubscribe header in
place of relmail's (https://www.twilio.com/docs/sendgrid/ui/sending-email/list-unsubscribe).

SendGrid rejects a request as a whole: when a 400 names personalizations
(``personalizations.3.to.0.email``) those messages are rejected and the rest
is sent again; an unexplained 400 for a grouped request is retried message
by message so that only the faulty ones are rejected. A refusal of the
account or its settings (a revoked key, a From address that is no verified
Sender Identity, an unknown unsubscribe group or IP pool) stops the batch
instead, every e-mail not yet accepted deferred (:mod:`.esp`).

Unsubscribe groups (``asm``): SendGrid drops every later e-mail of a group
to a recipient who left it. ``asm_groups`` maps each group id to the topics
it covers (:class:`Groups`), so each e-mail goes with the group of its
topic, SendGrid's preference page shows every group (``groups_to_display``),
and the feedback provider (:mod:`relmail.feedback.sendgrid`) turns a group
(un)subscribe into exactly those topics. ``asm_group_id`` alone is one group
for every e-mail: leaving it leaves everything.

SendGrid's documented limits are checked before anything is sent:
categories unique (repeated tags are dropped), at most 10, ASCII, at most
255 characters each; ``ip_pool_name`` 2 to 64 characters; a non-empty
subject and at least one non-empty content part; ``custom_args`` at most
10,000 bytes; no reserved header.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError, UnsupportedFeature
from .base import Abort, OutgoingMessage, Result, accepted, chunks, rejected
from .config import Config
from .esp import AccountRefusals, error_text, unique_tags
from .http import HttpAdapter, json_body

#: Headers SendGrid does not let a sender set (its documented reserved list).
RESERVED = {"x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type", "content-transfer-encoding",
            "to", "from", "subject", "reply-to", "cc", "bcc"}
_INDEX = re.compile(r"^personalizations\.(\d+)\b")

#: 400 error fields that are settings of the account, the same for every
#: message: the request is refused for all of them, not for one recipient.
ACCOUNT_FIELDS = {
    "asm.group_id": "[delivery.sendgrid] asm_groups (or asm_group_id) must name unsubscribe groups of this SendGrid account",
    "asm.groups_to_display": "[delivery.sendgrid] asm_groups must name unsubscribe groups of this SendGrid account",
    "ip_pool_name": "[delivery.sendgrid] ip_pool_name must be an IP pool of this SendGrid account",
    "from": "[sender] from_email must be a verified Sender Identity of this SendGrid account",
    "from.email": "[sender] from_email must be a verified Sender Identity of this SendGrid account",
    "template_id": "the template id must exist in this SendGrid account",
}


#: SendGrid shows at most 25 groups on its subscription preference page.
MAX_GROUPS_TO_DISPLAY = 25
#: The topics of the global group: every topic.
EVERY_TOPIC = ("*",)


@dataclass(frozen=True)
class Group:
    """One SendGrid unsubscribe group and the relmail topics it covers (``("*",)``: every topic)."""

    id: int
    topics: tuple[str, ...]
    name: str | None = None

    @property
    def everything(self) -> bool:
        return self.topics == EVERY_TOPIC

    def __str__(self) -> str:
        return f"SendGrid group '{self.name}' (group {self.id})" if self.name else f"SendGrid group {self.id}"


class Groups:
    """The project's unsubscribe groups, from ``[delivery.sendgrid]`` ``asm_groups`` and ``asm_group_id``.

    ``asm_groups`` is a table: group id -> its topics (a list, or ``"*"`` for
    the global group, which carries every topic no other group lists), or
    ``{ name = "Promotions", topics = [...] }``. ``asm_group_id`` is the
    global group under its older name. A topic in two groups, or two global
    groups, is a configuration error: an e-mail has exactly one group.
    """

    def __init__(self, groups: Sequence[Group] = ()):
        self.by_id = {g.id: g for g in groups}
        self.by_topic = {t: g for g in groups for t in g.topics}

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def get(self, group_id: int | None) -> Group | None:
        return self.by_id.get(group_id) if group_id is not None else None

    def for_topic(self, topic: str | None) -> Group | None:
        """The group an e-mail on ``topic`` goes with: the one listing it, else the global one."""
        return self.by_topic.get(topic or "*") or self.by_topic.get("*")

    @classmethod
    def from_config(cls, config: Config | Mapping) -> Groups:
        if not isinstance(config, Config):
            config = Config("sendgrid", dict(config))
        where = f"{config.where}: key 'asm_groups'"
        table = config.get("asm_groups") or {}
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table of group id = topics")
        groups: list[Group] = []
        for key, value in table.items():
            if not str(key).isdigit() or int(key) <= 0:
                raise ConfigError(f"{where}: {key!r} is not a SendGrid group id (a positive whole number)")
            name = None
            if isinstance(value, dict):
                name, value = value.get("name"), value.get("topics")
                if name is not None and (not isinstance(name, str) or not name.strip()):
                    raise ConfigError(f"{where}: group {key}: name must be a non-empty string")
            topics = EVERY_TOPIC if value in ("*", ["*"]) else value
            if not isinstance(topics, (list, tuple)) or not topics or not all(isinstance(t, str) and t for t in topics):
                raise ConfigError(f"{where}: group {key}: topics must be a list of topics, or \"*\" for every topic")
            if "*" in topics and topics != EVERY_TOPIC:
                raise ConfigError(f"{where}: group {key}: \"*\" (every topic) cannot be listed with other topics")
            groups.append(Group(int(key), tuple(dict.fromkeys(topics)), name))
        single = config.integer("asm_group_id", None, minimum=1)
        if single is not None:
            if single in {g.id for g in groups} or any(g.everything for g in groups):
                raise ConfigError(f"{config.where}: asm_group_id is the group of every topic asm_groups does not list; "
                                  "give that group topics = \"*\" in asm_groups instead of setting both")
            groups.append(Group(single, EVERY_TOPIC))
        seen: dict[str, int] = {}
        for g in groups:
            for topic in g.topics:
                if topic in seen:
                    what = "every topic (\"*\")" if topic == "*" else f"topic '{topic}'"
                    raise ConfigError(f"{where}: {what} is in group {seen[topic]} and group {g.id}; an e-mail has one group")
                seen[topic] = g.id
        if len(groups) > MAX_GROUPS_TO_DISPLAY:
            raise ConfigError(f"{where}: {len(groups)} groups; SendGrid shows at most {MAX_GROUPS_TO_DISPLAY} on its preference page")
        return cls(groups)


def content_key(m: OutgoingMessage) -> tuple:
    return (m.from_addr, m.from_name, m.reply_to, m.subject, m.text, m.html, m.tags)


class SendGridAdapter(AccountRefusals, HttpAdapter):
    name = "sendgrid"
    default_base_url = "https://api.sendgrid.com"
    max_batch = 1000
    max_request_bytes = 20 * 1024 * 1024  # documented limit 30 MB
    config_keys = ("base_url", "sandbox", "ip_pool_name", "asm_group_id", "asm_groups", "timeout", "max_retries",
                   "max_retry_wait", "concurrency")

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        self.api_key = self.secret("esp_api_key")
        self.sandbox = self.config.boolean("sandbox", False)
        self.ip_pool = self.config.string("ip_pool_name", None)
        if self.ip_pool is not None and not 2 <= len(self.ip_pool) <= 64:
            raise ConfigError(f"{self.config.where}: key 'ip_pool_name' must be 2 to 64 characters (SendGrid's limit); got {len(self.ip_pool)}")
        self.groups = Groups.from_config(self.config)

    def configure(self, session) -> None:
        session.headers["Authorization"] = f"Bearer {self.api_key}"

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            if m.html is None and m.text is None:
                raise UnsupportedFeature(f"sendgrid: message {m.key} has only raw MIME; SendGrid's v3 API needs text or html")
            if not _content(m):
                raise UnsupportedFeature(f"sendgrid: message {m.key}: text and html are both empty; SendGrid refuses empty content")
            if not m.subject:
                raise UnsupportedFeature(f"sendgrid: message {m.key}: the subject is empty; SendGrid needs one")
            tags = unique_tags(m)
            if len(tags) > 10:
                raise UnsupportedFeature(f"sendgrid: message {m.key}: {len(tags)} categories, SendGrid allows 10")
            for tag in tags:
                if len(tag) > 255 or not tag.isascii():
                    raise UnsupportedFeature(
                        f"sendgrid: message {m.key}: category {tag[:40]!r} must be ASCII and at most 255 characters (SendGrid's limit)"
                    )
            bad = sorted(h for h in m.headers if h.lower() in RESERVED)
            if bad:
                raise UnsupportedFeature(f"sendgrid: message {m.key}: SendGrid does not allow setting header(s) {', '.join(bad)}")
            if len(json.dumps(dict(m.metadata))) > 10_000:
                raise UnsupportedFeature(f"sendgrid: message {m.key}: custom_args exceed 10,000 bytes")
            self.check_topics([m.topic], f"message {m.key}: ")

    def check_topics(self, topics, what: str = "") -> None:
        for topic in topics:
            if self.groups and self.groups.for_topic(topic) is None:
                # Without a group SendGrid's unsubscribe would be global and relmail's topic-sized.
                raise UnsupportedFeature(
                    f"sendgrid: {what}topic '{topic}' is in no group of [delivery.sendgrid] asm_groups; "
                    "list it under its group, or give one group topics = \"*\"")

    def body(self, group: Sequence[OutgoingMessage]) -> dict:
        first = group[0]
        body: dict = {
            "personalizations": [self.personalization(m) for m in group],
            "from": _address(first.from_addr, first.from_name),
            "subject": first.subject,
            "content": _content(first),
            # The e-mail's own unsubscribe link and List-Unsubscribe (signed, answered by relmail) are the ones:
            # SendGrid's subscription tracking, where the account has it on, would add a second link in the
            # footer and put its own List-Unsubscribe in place of relmail's.
            "tracking_settings": {"subscription_tracking": {"enable": False}},
        }
        if first.reply_to:
            body["reply_to"] = {"email": first.reply_to}
        if first.tags:
            body["categories"] = unique_tags(first)
        if self.ip_pool:
            body["ip_pool_name"] = self.ip_pool
        group = self.groups.for_topic(first.topic)
        if group is not None:
            body["asm"] = {"group_id": group.id}
            if len(self.groups.by_id) > 1:
                # The customer manages every group on SendGrid's page, as on relmail's own.
                body["asm"]["groups_to_display"] = sorted(self.groups.by_id)
        if self.sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    @staticmethod
    def personalization(m: OutgoingMessage) -> dict:
        p: dict = {"to": [_address(m.to, m.to_name)]}
        if m.headers:
            p["headers"] = {k: str(v) for k, v in m.headers.items()}
        if m.metadata:
            p["custom_args"] = {k: str(v) for k, v in m.metadata.items()}
        return p

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        groups: dict[tuple, list[OutgoingMessage]] = {}
        for m in messages:
            group = self.groups.for_topic(m.topic)
            groups.setdefault((content_key(m), group.id if group else None), []).append(m)
        by_key: dict[str, Result] = {}

        def size(m: OutgoingMessage) -> int:
            return len(json.dumps(self.personalization(m)))

        requests_ = [c for g in groups.values() for c in chunks(g, self.max_batch, self.max_request_bytes, size)]
        if all(len(r) == 1 for r in requests_):
            # Personal e-mails: one request each, several in flight.
            return self.map_messages(lambda m: self._post([m])[0], messages)
        try:
            for req in requests_:
                for r in self.hand_over(req, self._post):
                    by_key[r.key] = r
        except Abort as exc:
            exc.partial = [by_key.get(m.key) for m in messages]
            raise
        return [by_key[m.key] for m in messages]

    def _post(self, group: Sequence[OutgoingMessage]) -> list[Result]:
        outcome = self.request("POST", "/v3/mail/send", json=self.body(group))
        if outcome.response is None:
            return [outcome.defer(m.key) for m in group]
        resp = outcome.response
        status = resp.status_code
        if 200 <= status < 300:
            pid = resp.headers.get("X-Message-Id")
            return [accepted(m.key, pid, http_status=status) for m in group]
        errors = (json_body(resp) or {}).get("errors") or []
        named: dict[int, str] = {}
        general: list[str] = []
        for e in errors:
            match = _INDEX.match(str(e.get("field") or ""))
            if match and int(match.group(1)) < len(group):
                named.setdefault(int(match.group(1)), str(e.get("message") or "invalid"))
            else:
                general.append(str(e.get("message") or e))
        if named and not general:
            out = {group[i].key: rejected(group[i].key, f"HTTP {status}: {why}", http_status=status) for i, why in named.items()}
            rest = [m for i, m in enumerate(group) if i not in named]
            if rest:
                out.update((r.key, r) for r in self._post(rest))
            return [out[m.key] for m in group]
        if len(group) > 1:
            return [self._post([m])[0] for m in group]
        reason = "; ".join(general) or resp.text[:300]
        return [rejected(group[0].key, f"HTTP {status}: {reason}", http_status=status)]


    def account_refusal(self, response) -> str | None:
        status = response.status_code
        if status == 401:
            return "SendGrid refused the API key: set a valid key (with the Mail Send permission) in the secret esp_api_key"
        if status == 403:
            why = error_text(response)
            if "sender identity" in why.lower():
                return (f"SendGrid refuses the From address ({why}): verify it as a Single Sender or authenticate "
                        "its domain (Settings > Sender Authentication), or set [sender] from_email to a verified one")
            return f"SendGrid refused access ({why}): the API key needs the Mail Send permission and the account must be allowed to send"
        if status == 400:
            for error in (json_body(response) or {}).get("errors") or []:
                fix = ACCOUNT_FIELDS.get(str(error.get("field") or "")) if isinstance(error, dict) else None
                if fix:
                    return f"SendGrid refuses the account settings ({error.get('message')}): {fix}"
        return None


def _content(m: OutgoingMessage) -> list[dict]:
    """The non-empty content parts, text/plain before text/html as SendGrid requires."""
    parts = [("text/plain", m.text), ("text/html", m.html)]
    return [{"type": kind, "value": value} for kind, value in parts if value]


def _address(email: str, name: str | None) -> dict:
    return {"email": email, "name": name} if name else {"email": email}
