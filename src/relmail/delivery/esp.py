"""What the ESP adapters share beyond HTTP: one tag list, and refusals of the account.

:func:`unique_tags` drops repeated tags (a campaign and its message may
share a name, and SendGrid refuses repeated categories).

:class:`AccountRefusals` looks at every provider answer before the generic
HTTP handling does. An answer that refuses the *account* (a revoked key, an
unverified domain or sender, a sandbox, a suspended or unpaid account, a
limit the provider has not lifted yet) is the same for every message: it
stops the batch with :class:`~relmail.delivery.base.Abort`, so every e-mail
not yet accepted stays ``deferred`` and ``relmail send`` resumes after the
fix, instead of each e-mail being rejected for good. The message says what
to fix. Each adapter names its provider's refusals in ``account_refusal``.
"""

from __future__ import annotations

from typing import Any

import requests

from .base import Abort, OutgoingMessage


def unique_tags(message: OutgoingMessage) -> list[str]:
    """The message's tags in order, each once."""
    return list(dict.fromkeys(message.tags))


class AccountRefusals:
    """Mixin for :class:`~relmail.delivery.http.HttpAdapter` subclasses; see the module docstring."""

    name: str

    def send_request(self, method: str, url: str, **kw: Any) -> requests.Response:
        response = super().send_request(method, url, **kw)  # type: ignore[misc]
        why = self.account_refusal(response)
        if why:
            raise Abort(f"{why} (HTTP {response.status_code})", response.status_code)
        return response

    def account_refusal(self, response: requests.Response) -> str | None:
        """What to fix, when ``response`` refuses the account rather than a message; else None."""
        return None


def error_text(response: requests.Response) -> str:
    """The provider's error message: the JSON ``message``/``Message``/``errors`` text, else the body."""
    try:
        data = response.json()
    except ValueError:
        return (response.text or "").strip()[:300]
    if isinstance(data, dict):
        if isinstance(data.get("errors"), list):
            return "; ".join(str(e.get("message") if isinstance(e, dict) else e) for e in data["errors"])
        for key in ("message", "Message"):
            if data.get(key):
                return str(data[key])
    return str(data)[:300]
