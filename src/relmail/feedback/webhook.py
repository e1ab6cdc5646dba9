"""What a provider needs to check a webhook: the request and the configuration.

Kept free of any web framework so the providers can be tested (and used
from another framework) with plain values.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ConfigError, RelmailError, SignatureError

if TYPE_CHECKING:  # pragma: no cover
    from ..project import Project

class MissingCredentials(SignatureError):
    """The request carries no signature or credentials at all (answered with 401)."""


class ProviderUnreachable(RelmailError):
    """A request relmail makes to the provider to check a webhook failed (answered with 503).

    SNS retries a message only after a 5xx or no answer, and drops it after a
    4xx: a network fault on our side must not cost a complaint or a bounce.
    """


class ProviderRefused(RelmailError):
    """The provider answered a request relmail made to check a webhook with a 4xx (``status``)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


#: Default replay window for providers that sign a timestamp (seconds).
DEFAULT_MAX_AGE = 900


@dataclass(frozen=True)
class WebhookRequest:
    """The parts of an HTTP request a provider verifies and parses.

    ``headers`` must be case-insensitive (werkzeug ``Headers``) or use
    lower-case keys; ``auth`` is the HTTP Basic (username, password), and
    ``path_secret`` the secret segment of ``/webhooks/<provider>/<secret>``.
    """

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None
    path_secret: str | None = None

    def header(self, name: str) -> str | None:
        value = self.headers.get(name)
        if value is None:
            value = self.headers.get(name.lower())
        return value


def _fetch(url: str) -> bytes:
    """GET ``url``; no answer or a 5xx is :class:`ProviderUnreachable`, a 4xx :class:`ProviderRefused`.

    Every message names the host only, never the URL: an SNS SubscribeURL
    carries the token that confirms the subscription in its query, and
    these messages reach the log and the webhook's answer.
    """
    import requests

    host = urlsplit(url).hostname or "the provider"
    try:
        response = requests.get(url, timeout=10)
        body = response.content
    except requests.RequestException as exc:
        raise ProviderUnreachable(f"no answer from {host}: {exc.__class__.__name__}") from None
    if response.status_code >= 500:
        raise ProviderUnreachable(f"{host} answered HTTP {response.status_code}")
    if response.status_code >= 400:
        raise ProviderRefused(f"{host} answered HTTP {response.status_code}", response.status_code)
    return body


@dataclass
class WebhookConfig:
    """Secrets and settings for the webhook endpoints.

    ``secret(name)`` reads a named project secret (``None`` when unset);
    ``settings`` is the ``[feedback]`` table of ``relmail.toml``.
    """

    secret_lookup: Callable[[str], str | None]
    settings: Mapping[str, Any] = field(default_factory=dict)
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    #: GET a URL and return its body (SNS certificates, subscription confirmation); raise
    #: :class:`ProviderUnreachable` when the provider cannot be reached or fails (5xx), and
    #: :class:`ProviderRefused` when it refuses (4xx), each naming the host only.
    http_get: Callable[[str], bytes] = _fetch
    #: The public address ``relmail serve`` is reached at (``[unsubscribe] base_url``): a provider that signs
    #: the URL it posts to (Mandrill) signs that one, not the one a proxy passes on.
    base_url: str = ""
    #: The environment variable that holds a named secret, for the message that says it is unset.
    secret_variable: Callable[[str], str] | None = None

    @classmethod
    def from_project(cls, project: Project) -> WebhookConfig:
        return cls(secret_lookup=lambda name: project.secret(name, required=False),
                   settings=project.settings.section("feedback"), base_url=project.settings.unsubscribe_url,
                   secret_variable=project.secret_variable)

    def secret(self, name: str) -> str:
        """A secret the endpoint cannot work without; unset is a configuration error (503)."""
        value = self.secret_lookup(name)
        if not value:
            where = f" (export {self.secret_variable(name)}=...)" if self.secret_variable else ""
            raise ConfigError(f"webhook secret '{name}' is not set{where}")
        return value

    def held_in(self, name: str) -> str:
        """Where secret ``name`` is read from, for a message: its environment variable, or its name."""
        return self.secret_variable(name) if self.secret_variable else f"secret '{name}'"

    def provider_settings(self, provider: str) -> Mapping[str, Any]:
        value = self.settings.get(provider, {})
        if not isinstance(value, dict):
            raise ConfigError(f"relmail.toml: [feedback.{provider}] must be a table")
        return value

    @property
    def max_age(self) -> int:
        value = self.settings.get("max_signature_age", DEFAULT_MAX_AGE)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError("relmail.toml [feedback]: max_signature_age must be a positive number of seconds")
        return value

    def check_fresh(self, signed_at: datetime, provider: str) -> None:
        """Refuse a signed timestamp outside the replay window (either direction)."""
        age = abs((self.now() - signed_at).total_seconds())
        if age > self.max_age:
            raise SignatureError(f"{provider}: signed timestamp is {int(age)} s away from now (limit {self.max_age} s)")


def check_basic_auth(request: WebhookRequest, config: WebhookConfig, provider: str, secret: str, username: str) -> None:
    """Raise unless ``request`` carries the webhook's credentials: HTTP Basic, or the password as the URL's last segment.

    For providers that do not sign their webhooks and put credentials in the
    callback URL instead (``https://user:password@host/webhooks/<provider>``),
    which they send as HTTP Basic auth. The password is the project secret
    ``secret``, the user name ``[feedback.<provider>] username`` (default
    ``username``); both are compared in constant time, as bytes
    (``compare_digest`` refuses a ``str`` with a character outside ASCII,
    which anyone can send). No credentials at all is
    :class:`MissingCredentials` (answered 401), wrong ones a
    :class:`~relmail.errors.SignatureError` (403).
    """
    password = config.secret(secret)
    user = str(config.provider_settings(provider).get("username", username))
    if request.auth is not None:
        user_ok = hmac.compare_digest(request.auth[0].encode(), user.encode())
        pass_ok = hmac.compare_digest(request.auth[1].encode(), password.encode())
        if user_ok and pass_ok:
            return
        raise SignatureError(f"{provider}: wrong webhook credentials")
    if request.path_secret is not None:
        if hmac.compare_digest(request.path_secret.encode(), password.encode()):
            return
        raise SignatureError(f"{provider}: wrong webhook credentials")
    raise MissingCredentials(f"{provider}: no credentials (use https://user:password@host/webhooks/{provider})")
