"""Amazon SES v2 ``POST /v2/email/outbound-emails`` with raw content.

Each message is sent as the exact MIME the render stage built
(``Content.Raw.Data``, base64), one request per message (SES has no batch
call for pre-rendered mail; ``SendBulkEmail`` needs SES-side templates),
``concurrency`` requests in flight over reused connections. Requests are
signed with AWS Signature V4 by botocore, using the standard AWS credential
chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
profiles, instance roles) and ``region`` or ``AWS_REGION``. The relmail
metadata and tags travel as ``EmailTags``. SES allows only letters, digits,
``_`` and ``-`` in them, so every other character (and ``_`` itself) is
written ``_XX`` in hex: ``weekly:2026-W48`` travels as ``weekly_3A2026-W48``
and :func:`decode_tag` (used by the SES webhook) gives it back. An
e-mail whose ids would exceed SES's 256 characters a value carries none;
its events find it by SES's own id of the e-mail.

Errors: ``MessageRejected`` and ``BadRequestException`` reject the message;
``TooManyRequestsException`` (429) and 5xx are retried; account-level
errors (suspended, sending paused, unverified MAIL FROM domain, unknown
configuration set, and ``MessageRejected`` for an identity that is not
verified, as in the SES sandbox) stop the batch with what to fix, every
e-mail not yet accepted deferred.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Sequence
from email.utils import formataddr

from ..errors import ConfigError, UnsupportedFeature
from .base import Abort, OutgoingMessage, Result, accepted, deferred, rejected
from .esp import unique_tags
from .http import HttpAdapter, json_body

_TAG_MAX = 256
_TAG = re.compile(rf"^[A-Za-z0-9_-]{{1,{_TAG_MAX}}}$")
_PLAIN = re.compile(r"[A-Za-z0-9-]")


def encode_tag(value: str) -> str:
    """``value`` in the characters SES allows, reversibly (``_`` + two hex digits per other byte)."""
    return "".join(ch if _PLAIN.fullmatch(ch) else "".join(f"_{b:02X}" for b in ch.encode()) for ch in value)


def decode_tag(value: str) -> str:
    """The inverse of :func:`encode_tag`; a value that was never encoded comes back as it is."""
    if not re.fullmatch(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})*", value):
        return value
    return re.sub(rb"_([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), value.encode()).decode(errors="replace")
#: SES v2 SendEmail errors that refuse the account, not the message -> what to fix.
ACCOUNT_ERRORS = {
    "AccountSuspendedException": "the account's ability to send is permanently restricted: contact AWS support",
    "SendingPausedException": "sending is paused for the account or the configuration set: resume it in the SES console",
    "MailFromDomainNotVerifiedException": "verify the custom MAIL FROM domain of the sending identity in SES",
    "NotFoundException": "[delivery.ses] configuration_set must name a configuration set of this account and region",
}
#: ``MessageRejected`` with this text refuses an identity, not one message (SES sandbox, unverified sender).
_NOT_VERIFIED = "not verified"
TRANSIENT_ERRORS = {"LimitExceededException", "TooManyRequestsException"}
MAX_RAW_BYTES = 40 * 1024 * 1024  # SES v2 limit for a raw message


class SesAdapter(HttpAdapter):
    name = "ses"
    max_batch = 1000
    config_keys = ("region", "base_url", "configuration_set", "timeout", "max_retries", "max_retry_wait", "concurrency")

    def __init__(self, config=None, secret=None, **kw):
        cfg = dict(config or {})
        region = cfg.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise ConfigError("relmail.toml [delivery.ses]: missing key 'region' (or set AWS_REGION)")
        self.region = str(region)
        self.default_base_url = f"https://email.{self.region}.amazonaws.com"
        super().__init__(cfg, secret, **kw)
        self.configuration_set = self.config.string("configuration_set", None)
        import botocore.session

        credentials = botocore.session.Session().get_credentials()
        if credentials is None:
            raise ConfigError("ses: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)")
        self.credentials = credentials

    def validate(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            for name, value in self.tags(m):
                if not (_TAG.match(name) and _TAG.match(value)):
                    raise UnsupportedFeature(
                        f"ses: message {m.key}: EmailTag {name}={value!r} is too long or has characters SES does "
                        "not allow in a name (only letters, digits, '_' and '-', at most 256)"
                    )

    @staticmethod
    def tags(m: OutgoingMessage) -> list[tuple[str, str]]:
        ids = [(k, encode_tag(str(v))) for k, v in m.metadata.items()]
        # SES caps a value at 256 characters, which a long customer id outside ASCII (three characters a byte)
        # exceeds. Such an e-mail's ids travel not at all rather than stopping the send: its events find
        # the delivery by the id SES answered with (deliveries.provider_id), as an identity notification does.
        if any(len(v) > _TAG_MAX for _, v in ids):
            ids = []
        return ids + [(f"relmail_tag{i}", encode_tag(t)) for i, t in enumerate(unique_tags(m), 1)]

    def body(self, m: OutgoingMessage) -> dict:
        body: dict = {
            "FromEmailAddress": formataddr((m.from_name or "", m.from_addr)),
            "Destination": {"ToAddresses": [m.to]},
            "Content": {"Raw": {"Data": base64.b64encode(m.as_bytes()).decode("ascii")}},
        }
        if m.reply_to:
            body["ReplyToAddresses"] = [m.reply_to]
        tags = self.tags(m)
        if tags:
            body["EmailTags"] = [{"Name": k, "Value": v} for k, v in tags]
        if self.configuration_set:
            body["ConfigurationSetName"] = self.configuration_set
        return body

    def send_request(self, method: str, url: str, **kw):
        """Sign with SigV4 (botocore) and send over the reused ``requests`` session."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        data = json.dumps(kw.pop("json")).encode()
        aws = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(self.credentials.get_frozen_credentials(), "ses", self.region).add_auth(aws)
        return self.session.request(method, url, data=data, headers=dict(aws.headers.items()), timeout=self.timeout, **kw)

    def _send(self, messages: Sequence[OutgoingMessage]) -> list[Result]:
        return self.map_messages(self._post, messages)

    def _post(self, m: OutgoingMessage) -> Result:
        if len(m.as_bytes()) > MAX_RAW_BYTES:
            return rejected(m.key, "message larger than SES's 40 MB limit")
        outcome = self.request("POST", "/v2/email/outbound-emails", json=self.body(m))
        if outcome.response is None:
            return outcome.defer(m.key)
        resp = outcome.response
        data = json_body(resp) or {}
        if resp.status_code == 200:
            return accepted(m.key, data.get("MessageId"), http_status=200)
        kind = (resp.headers.get("x-amzn-ErrorType") or str(data.get("__type", ""))).split(":")[0].split("#")[-1]
        why = f"HTTP {resp.status_code} {kind}: {data.get('message') or data.get('Message') or resp.text[:300]}"
        if kind in ACCOUNT_ERRORS:
            raise Abort(f"SES refuses the account ({why}): {ACCOUNT_ERRORS[kind]}", resp.status_code)
        if kind == "MessageRejected" and _NOT_VERIFIED in why.lower():
            raise Abort(
                f"SES refuses an unverified identity ({why}): verify [sender] from_email (or its domain) in SES in "
                f"{self.region}; while the account is in the SES sandbox, recipients must be verified too, or request production access",
                resp.status_code,
            )
        if kind in TRANSIENT_ERRORS:
            return deferred(m.key, self.retry_at(), why, http_status=resp.status_code)
        return rejected(m.key, why, http_status=resp.status_code)
