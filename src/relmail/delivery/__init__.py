"""Delivery adapters behind one small interface (see :mod:`relmail.delivery.base`).

``[delivery] adapter = "smtp"`` in ``relmail.toml`` picks an adapter from
:data:`ADAPTERS`; its settings are the ``[delivery.<name>]`` table, with the
plain keys of ``[delivery]`` (``rate_per_second``, ``outbox`` ...) as
defaults and ``[delivery.dkim]`` passed along.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError, DeliveryError, did_you_mean, likely
from .base import (
    ACCEPTED,
    DEFERRED,
    REJECTED,
    Adapter,
    DeliveryAborted,
    OutgoingMessage,
    Result,
)

#: Adapter name → "module:Class"; imported only when chosen.
ADAPTERS: dict[str, str] = {
    "smtp": "relmail.delivery.smtp:SmtpAdapter",
    "sendgrid": "relmail.delivery.sendgrid:SendGridAdapter",
    "mailgun": "relmail.delivery.mailgun:MailgunAdapter",
    "postmark": "relmail.delivery.postmark:PostmarkAdapter",
    "ses": "relmail.delivery.ses:SesAdapter",
    "brevo": "relmail.delivery.brevo:BrevoAdapter",
    "mailjet": "relmail.delivery.mailjet:MailjetAdapter",
    "mandrill": "relmail.delivery.mandrill:MandrillAdapter",
    "file": "relmail.delivery.file:FileAdapter",
}

__all__ = [
    "ACCEPTED", "DEFERRED", "REJECTED", "ADAPTERS", "Adapter", "DeliveryAborted",
    "OutgoingMessage", "Result", "adapter_class", "get_adapter", "adapter_from_project", "delivery_config",
]


def adapter_class(name: str) -> type[Adapter]:
    """The class registered as ``name``; :class:`DeliveryError` names the known ones."""
    try:
        target = ADAPTERS[name]
    except KeyError:
        raise DeliveryError(f"unknown delivery adapter {name!r}; known: {', '.join(sorted(ADAPTERS))}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def _secret_reader(secrets: Any) -> Callable[..., str | None]:
    if secrets is None:
        return lambda name, required=True: None
    if callable(secrets):
        return secrets
    if isinstance(secrets, Mapping):

        def read(name: str, required: bool = True) -> str | None:
            value = secrets.get(name)
            if required and not value:
                raise ConfigError(f"secret '{name}' is not set")
            return value or None

        return read
    raise TypeError("secrets must be a callable like Project.secret or a mapping")


def get_adapter(name: str, config: Mapping[str, Any] | None = None, secrets: Any = None, **kw: Any) -> Adapter:
    """Build adapter ``name`` from its settings table and a secret reader.

    ``secrets`` is ``Project.secret`` (or any ``f(name, required=True)``) or a
    plain mapping; ``kw`` passes ``root``, ``clock``, ``sleep``, ``limiter``.
    """
    return adapter_class(name)(dict(config or {}), _secret_reader(secrets), **kw)


def delivery_config(delivery: Mapping[str, Any], name: str | None = None) -> tuple[str, dict[str, Any]]:
    """(adapter name, merged settings) from a ``[delivery]`` table."""
    name = name or delivery.get("adapter") or "file"
    if not isinstance(name, str):
        raise ConfigError("relmail.toml [delivery]: key 'adapter' must be a string")
    if name not in ADAPTERS:
        raise ConfigError(f"relmail.toml [delivery]: adapter {name!r} is unknown; known: {', '.join(sorted(ADAPTERS))}")
    shared = {k: v for k, v in delivery.items() if k != "adapter" and not (isinstance(v, dict) and k in ADAPTERS)}
    own = delivery.get(name, {})
    if not isinstance(own, dict):
        raise ConfigError(f"relmail.toml [delivery.{name}] must be a table")
    return name, {**shared, **own}


#: Settings every adapter reads (rate limits and warm-up, the retry delay, DKIM, the sender's domain).
COMMON_KEYS = ("rate_per_second", "rate_per_hour", "warmup", "warmup_start", "retry_delay", "dkim", "sender_domain")
#: Settings every HTTP (ESP) adapter reads.
HTTP_KEYS = ("base_url", "timeout", "max_retries", "max_retry_wait", "concurrency")


def adapter_keys(name: str) -> list[str]:
    """Every setting adapter ``name`` reads: its own, the ESPs' HTTP ones where it is one, and the shared ones."""
    from .http import HttpAdapter

    cls = adapter_class(name)
    return sorted({*cls.config_keys, *COMMON_KEYS, *(HTTP_KEYS if issubclass(cls, HttpAdapter) else ())})


def check_keys(name: str, own: Mapping[str, Any]) -> None:
    """Refuse a key of ``[delivery.<name>]`` the adapter does not read: a misspelt ``base_url`` or
    ``message_stream`` would otherwise be ignored, and the e-mails go where the default says."""
    if not adapter_class(name).config_keys:  # an adapter (a plug-in) that does not say what it reads
        return
    known = adapter_keys(name)
    for key in own:
        if key not in known:
            raise ConfigError(f"relmail.toml [delivery.{name}]: unknown key '{key}' (known: {', '.join(known)})"
                              f"{did_you_mean(likely(key, known))}")


def adapter_from_project(project: Any, name: str | None = None, **kw: Any) -> Adapter:
    """The adapter ``relmail.toml`` selects (or ``name``), wired to the project's secrets and folder."""
    delivery = project.settings.section("delivery")
    name, config = delivery_config(delivery, name)
    check_keys(name, delivery.get(name, {}))
    config.setdefault("sender_domain", project.settings.sender.domain)
    kw.setdefault("root", project.root)
    return get_adapter(name, config, project.secret, **kw)
