"""Keep the secrets of request paths out of the request log.

Two kinds of path carry one. Postmark, Brevo and Mailjet sign nothing, so
their webhooks may carry relmail's password as the path's last segment
(``/webhooks/brevo/TOKEN``): whoever reads the log could post forged bounces
and unsubscribes. The unsubscribe and preference pages take a customer's
signed token (``/unsubscribe/TOKEN``, ``/preferences/TOKEN``): whoever reads
it could change that customer's consent, and it names the customer. A
request log writes the path as it came; the filter writes such a segment as
``***``.
"""

from __future__ import annotations

import logging
import re

# /webhooks/<provider>/<secret>, /unsubscribe/<token>, /preferences/<token>, also under [unsubscribe] base_url's
# path (/relmail/webhooks/...); the secret ends where the path does (a query string or the space before the HTTP
# version in a request line).
_SECRET_PATH = re.compile(r"(/webhooks/[^/\s?#]+/|/unsubscribe/|/preferences/)[^\s?#]+")


def redact_path_secrets(text: str) -> str:
    """``text`` with the secret segment of every webhook, unsubscribe or preference path in it written as ``***``."""
    return _SECRET_PATH.sub(r"\1***", text)


class PathSecretFilter(logging.Filter):
    """A logging filter that redacts the secrets of paths from a record's message and its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_path_secrets(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_path_secrets(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_request_log(logger_name: str = "werkzeug") -> None:
    """Install :class:`PathSecretFilter` on the request log of ``relmail serve`` (werkzeug's), once."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, PathSecretFilter) for f in logger.filters):
        logger.addFilter(PathSecretFilter())
