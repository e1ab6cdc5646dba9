"""Postmark ``POST /email/batch``: up to 500 distinct messages per request.

Each message keeps its own subject, bodies, ``Headers`` (List-Unsubscribe,
Message-ID ...) and ``Metadata`` (the relmail ids the webhooks return);
``MessageStream`` defaults to ``broadcast``, Postmark's stream for bulk
mail. Postmark carries one ``Tag`` per message: relmail's tags are joined
with ``/`` (``weekly/ebike-launch``). The answer holds one entry per message,
in order: ``ErrorCode`` 0 is accepted (``MessageID`` becomes
``provider_id``), 406 (inactive recipient: bounced or complained before) is
a hard bounce, others are rejections. Metadata limits (10 fields, names of
20 and values of 80 characters) are checked before anything is sent.

Message streams per topic: Postmark keeps a suppression list per stream,
so a customer who unsubscribes from an e-mail stops getting that stream
only. ``streams`` maps each stream to the topics it carries
(:class:`Streams`); each e-mail goes on its topic's stream, and the feedback
provider (:mod:`relmail.feedback.postmark`) turns an unsubscribe on a stream
into exactly those topics. ``message_stream`` carries every topic no stream
lists.

Error codes that refuse the account or server, not a message (a bad server
token, a From address without a confirmed Sender Signature, no credits, an
account pending approval or not allowed to send), stop the batch whether
they come for the whole request or for its entries: every e-mail not yet
accepted stays deferred and ``relmail send`` resumes after the fix
(:mod:`.esp`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import formataddr

from ..errors import ConfigError, UnsupportedFeature
from .base import Abort, OutgoingMessage, Result, accepted, chunks, deferred, rejected
from .config import Config
from .esp import AccountRefusals, unique_tags
from .http import HttpAdapter, json_body

#: Postmark error codes that mean the account or server cannot send at all -> what to fix.
ACCOUNT_ERRORS = {
    10: "set the server's API token in the secret esp_api_key",
    400: "add a Sender Signature (or the domain) for [sender] from_email in Postmark",
    401: "confirm the Sender Signature of [sender] from_email (Postmark sent a confirmation e-mail)",
    405: "the account has no credits left: buy credits or change the plan",
    412: "the account is pending approval; until then Postmark sends only to the From address's own domain",
    413: "the account may not send: contact Postmark support",
}
INACTIVE_RECIPIENT = 406
TAG_SEPARATOR = "/"


#: Postmark's default stream for bulk mail.
DEFAULT_STREAM = "broadcast"


@dataclass(frozen=True)
class Streams:
    """The project's message streams, from ``[delivery.postmark]`` ``streams`` and ``message_stream``.

    ``streams`` is a table: stream id -> the topics it carries. ``message_stream``
    (default ``broadcast``) carries every other topic. A topic on two streams,
    or ``message_stream`` listed in ``streams`` too, is a configuration error:
    an e-mail goes on exactly one stream, and an unsubscribe from it must mean
    exactly its topics.
    """

    by_topic: Mapping[str, str]
    #: The stream of every topic no stream lists.
    default: str = DEFAULT_STREAM
    #: Whether the project names its streams (``message_stream`` or ``streams`` set).
    configured: bool = False

    def for_topic(self, topic: str | None) -> str:
        return self.by_topic.get(topic or "", self.default)

    def topics_of(self, stream: str) -> tuple[str, ...] | None:
        """The topics ``stream`` carries: a tuple, ``("*",)`` for the default stream, None for a stream not relmail's."""
        if stream == self.default:
            return ("*",)
        topics = tuple(t for t, s in self.by_topic.items() if s == stream)
        return topics or None

    @classmethod
    def from_config(cls, config: Config | Mapping) -> Streams:
        if not isinstance(config, Config):
            config = Config("postmark", dict(config))
        where = f"{config.where}: key 'streams'"
        default = config.string("message_stream", DEFAULT_STREAM)
        table = config.get("streams") or {}
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table of stream id = topics")
        by_topic: dict[str, str] = {}
        for stream, topics in table.items():
            if stream == default:
                raise ConfigError(f"{where}: '{stream}' is message_stream, which carries every topic no stream lists; "
                                  "do not list it in streams")
            if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t and t != "*" for t in topics):
                raise ConfigError(f"{where}: stream '{stream}': topics must be a list of topics")
            for topic in topics:
                if topic in by_topic and by_topic[topic] != stream:
                    raise ConfigError(f"{where}: topic '{topic}' is on stream '{by_topic[topic]}' and stream '{stream}'; "
                                      "an e-mail goes on one stream")
                by_topic[topic] = stream
        return cls(by_topic, default, "message_stream" in config or bool(table))


class PostmarkAdapter(AccountRefusals, HttpAdapter):
    name = "postmark"
    default_base_url = "https://api.postmarkapp.com"
    max_batch = 500
    max_request_bytes = 45 * 1024 * 1024  # documented limit 50 MB
    config_keys = ("base_url", "message_stream", "streams", "track_opens", "track_links", "timeout", "max_retries", "max_retry_wait")

    def __init__(self, config=None, secret=None, **kw):
        super().__init__(config, secret, **kw)
        self.token = self.secret("esp_api_key")
        self.streams = Streams.from_config(self.config)
        self.track_opens = self.config.boolean("track_opens", None)
        modes = ("None", "HtmlAndText", "HtmlOnly", "TextOnly")
        self.track_links = self.config.choice("track_links", modes, None) if "track_links" in self.config else None

    def configure(self, session) -> None:
        session.headers.update({"X-Postmark-Server-Token": self.token, "Accept": "application/json"})

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            if m.html is None and m.text is None:
                raise UnsupportedFeature(f"postmark: message {m.key} has only raw MIME; Postmark needs HtmlBody or TextBody")
            if len(m.metadata) > 10:
                raise UnsupportedFeature(f"postmark: message {m.key}: Postmark allows 10 metadata fields")
            for k, v in m.metadata.items():
                if len(k) > 20 or len(str(v)) > 80:
                    raise UnsupportedFeature(f"postmark: message {m.key}: metadata {k!r} exceeds 20-character name / 80-character value")
            if len(TAG_SEPARATOR.join(unique_tags(m))) > 1000:
                raise UnsupportedFeature(f"postmark: message {m.key}: Tag longer than 1000 characters")

    def item(self, m: OutgoingMessage) -> dict:
        item: dict = {
            "From": formataddr((m.from_name or "", m.from_addr)),
            "To": formataddr((m.to_name or "", m.to)),
            "Subject": m.subject,
            "MessageStream": self.streams.for_topic(m.topic),
        }
        if m.html is not None:
            item["HtmlBody"] = m.html
        if m.text is not None:
            item["TextBody"] = m.text
        if m.reply_to:
            item["ReplyTo"] = m.reply_to
        if m.headers:
            item["Headers"] = [{"Name": k, "Value": str(v)} for k, v in m.headers.items()]
        if m.tags:
            item["Tag"] = TAG_SEPARATOR.join(unique_tags(m))
        if m.metadata:
            item["Metadata"] = {k: str(v) for k, v in m.metadata.items()}
        if self.track_opens is not None:
            item["TrackOpens"] = self.track_opens
        if self.track_links is not None:
            item["TrackLinks"] = self.track_links
        return item

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        out: list[Result | None] = []
        try:
            for batch in chunks(messages, self.max_batch, self.max_request_bytes, lambda m: len(json.dumps(self.item(m)))):
                out.extend(self.hand_over(batch, self._post))
        except Abort as exc:
            known = out + list(exc.partial or [])
            exc.partial = known + [None] * (len(messages) - len(known))
            raise
        return out  # type: ignore[return-value]

    def _post(self, batch: Sequence[OutgoingMessage]) -> list[Result]:
        outcome = self.request("POST", "/email/batch", json=[self.item(m) for m in batch])
        if outcome.response is None:
            return [outcome.defer(m.key) for m in batch]
        resp = outcome.response
        data = json_body(resp)
        if resp.status_code == 200 and isinstance(data, list) and len(data) == len(batch):
            refused = next((e for e in data if isinstance(e, dict) and e.get("ErrorCode") in ACCOUNT_ERRORS), None)
            if refused is not None:
                # Keep what Postmark accepted before the refusal; the rest waits for the fix.
                partial = [self._one(m, e, 200) if isinstance(e, dict) and e.get("ErrorCode") == 0 else None
                           for m, e in zip(batch, data)]
                raise Abort(_refusal(refused), 200, partial=partial)
            return [self._one(m, entry, resp.status_code) for m, entry in zip(batch, data)]
        code = data.get("ErrorCode") if isinstance(data, dict) else None
        why = data.get("Message") if isinstance(data, dict) else resp.text[:300]
        return [rejected(m.key, f"HTTP {resp.status_code}, Postmark error {code}: {why}", http_status=resp.status_code) for m in batch]

    def account_refusal(self, response) -> str | None:
        data = json_body(response)
        if isinstance(data, dict) and data.get("ErrorCode") in ACCOUNT_ERRORS:
            return _refusal(data)
        if response.status_code == 401:
            return _refusal({"ErrorCode": 10, "Message": response.text[:300]})
        return None

    def _one(self, m: OutgoingMessage, entry: dict, status: int) -> Result:
        code = entry.get("ErrorCode")
        if code == 0:
            return accepted(m.key, entry.get("MessageID"), http_status=status)
        why = f"Postmark error {code}: {entry.get('Message', '')}"
        if code == 429:
            return deferred(m.key, self.retry_at(), why, http_status=status)
        return rejected(m.key, why, hard_bounce=code == INACTIVE_RECIPIENT, http_status=status)


def _refusal(entry: dict) -> str:
    code = entry.get("ErrorCode")
    return f"Postmark refuses the account (error {code}: {entry.get('Message', '')}): {ACCOUNT_ERRORS[code]}"
