"""Keep the webhook secrets of request paths out of the request log.

Postmark, Brevo and Mailjet sign nothing, so their webhooks may carry relmail's
password as the path's last segment (``/webhooks/brevo/TOKEN``), and a request
log writes the path as it came: whoever reads the log could post forged
bounces and unsubscribes. The filter writes such a segment as ``***``.
"""

from __future__ import annotations

import logging
import re

# /webhooks/<provider>/<secret>, also under [unsubscribe] base_url's path (/relmail/webhooks/...); the secret
# ends where the path does (a query string or the space before the HTTP version in a request line).
_WEBHOOK_SECRET = re.compile(r"(/webhooks/[^/\s?#]+/)[^\s?#]+")


def redact_webhook_secrets(text: str) -> str:
    """``text`` with the secret segment of every webhook path in it written as ``***``."""
    return _WEBHOOK_SECRET.sub(r"\1***", text)


class WebhookSecretFilter(logging.Filter):
    """A logging filter that redacts webhook secrets from a record's message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_webhook_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_webhook_secrets(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_request_log(logger_name: str = "werkzeug") -> None:
    """Install :class:`WebhookSecretFilter` on the request log of ``relmail serve`` (werkzeug's), once."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, WebhookSecretFilter) for f in logger.filters):
        logger.addFilter(WebhookSecretFilter())
