"""Feedback from the world back into the store: ESP events, unsubscribes, preferences.

Every provider (:mod:`.sendgrid`, :mod:`.mailgun`, :mod:`.postmark`,
:mod:`.ses`, :mod:`.brevo`, :mod:`.mailjet`, :mod:`.mandrill`) is a :class:`~relmail.feedback.provider.Provider` with the same
methods: ``verify`` (a webhook's signature), ``receive`` (a webhook POST),
``read_export`` (an exported file) and ``parse_event`` (one provider event).
Reading is partial: a :class:`~relmail.feedback.provider.Batch` holds the
valid events and the invalid ones, each with its position and reason.

:func:`import_file` reads an export and hands it to
:func:`~relmail.feedback.ingest.ingest`, which applies the valid events and
records the invalid ones in one transaction. :func:`import_bounces` does the
same for the bounce mailbox of the shop's own SMTP server
(:mod:`.bounces`: delivery status notifications, other bounces, ARF
complaints), tying each bounce to the delivery it answers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from ..errors import ConfigError, Problem, ValidationError
from .apply import ApplyResult, apply_events
from .bounces import BounceResult, import_bounces, read_bounces
from .events import TYPES, FeedbackEvent
from .ingest import ingest
from .provider import Batch, Provider
from .resubscribe import ResubscribeResult, resubscribe

if TYPE_CHECKING:
    from ..project import Project

#: Provider name -> "module:Class", in the order the CLI lists them.
PROVIDERS = {
    "sendgrid": "sendgrid:SendGrid",
    "mailgun": "mailgun:Mailgun",
    "postmark": "postmark:Postmark",
    "ses": "ses:Ses",
    "brevo": "brevo:Brevo",
    "mailjet": "mailjet:Mailjet",
    "mandrill": "mandrill:Mandrill",
}

#: Providers whose webhook credentials may travel in the URL: HTTP Basic (``https://user:secret@host/...``),
#: or the secret as the last path segment (``/webhooks/<provider>/<secret>``).
URL_CREDENTIALS = ("postmark", "brevo", "mailjet")

__all__ = [
    "PROVIDERS", "TYPES", "URL_CREDENTIALS", "ApplyResult", "Batch", "BounceResult", "FeedbackEvent", "Provider", "ResubscribeResult",
    "apply_events", "import_bounces", "import_file", "ingest", "provider", "read_bounces", "read_export", "resubscribe",
    "webhook_unready",
]


def provider(name: str, now: Callable[[], datetime] | None = None, project: Project | None = None) -> Provider:
    """The provider ``name`` (``sendgrid``, ``mailgun``, ``postmark``, ``ses``, ``brevo``, ``mailjet``, ``mandrill``).

    ``now`` is the clock event times are judged plausible against (tests).
    ``project`` gives the provider its ``[delivery.<name>]`` settings: the
    subscription scopes its events are read in (SendGrid's ``asm_groups``).
    """
    if name not in PROVIDERS:
        raise ConfigError(f"unknown feedback provider {name!r}; choose one of {', '.join(PROVIDERS)}")
    module, _, cls = PROVIDERS[name].partition(":")
    delivery = project.settings.section("delivery").get(name, {}) if project is not None else None
    if delivery is not None and not isinstance(delivery, dict):
        raise ConfigError(f"relmail.toml [delivery.{name}] must be a table")
    links = project.settings.unsubscribe_url if project is not None else ""
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(now=now, delivery=delivery, links=links)


def webhook_unready(project: Project) -> str | None:
    """Why the webhook of the ESP ``[delivery] adapter`` names would refuse every event, or None when it is ready.

    Checked when the app starts: an ESP retries a refused webhook for a while, then drops
    its events, and with them the bounces, complaints and unsubscribes they carried.
    """
    from .webhook import WebhookConfig

    name = project.settings.section("delivery").get("adapter")
    if name not in PROVIDERS:
        return None
    try:
        provider(name, project=project).check_ready(WebhookConfig.from_project(project))
    except ConfigError as exc:
        return f"/webhooks/{name} refuses every event (503): {exc}"
    return None


def read_export(path: str | Path, fmt: str, project: Project | None = None) -> Batch:
    """The events of export ``path`` of provider ``fmt``, valid and invalid; nothing is written."""
    return provider(fmt, project=project).read_export(Path(path))


def import_file(engine: Engine, path: str | Path, fmt: str, strict: bool = False, project: Project | None = None) -> ApplyResult:
    """Import an export file: the valid events are applied, the invalid ones recorded.

    With ``strict`` a file holding any invalid event writes nothing
    (:class:`~relmail.errors.ValidationError`). Events already in the store
    (from a webhook, or an earlier import of the same file) are counted as
    duplicates, not written twice.
    """
    batch = read_export(path, fmt, project)
    if strict and batch.invalid:
        raise invalid_events(batch)
    return ingest(engine, batch)


def invalid_events(batch: Batch, applied: bool = False) -> ValidationError:
    """The :class:`~relmail.errors.ValidationError` that reports ``batch``'s invalid events.

    ``applied`` says the valid events were applied (and the invalid ones
    recorded); otherwise nothing was written.
    """
    n = len(batch.invalid)
    done = (
        "the valid events were applied, the invalid ones recorded (relmail feedback rejects)"
        if applied else "nothing was imported"
    )
    problems = [Problem(batch.source, bad.line, bad.field, f"event #{bad.index}: {bad.reason}") for bad in batch.invalid]
    return ValidationError(f"{batch.source}: {n} invalid event(s) of {batch.records}; {done}", problems)
