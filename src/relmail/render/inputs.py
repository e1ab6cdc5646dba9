"""The two inputs of a render: the message (:class:`MessageSpec`) and the customer (:class:`CustomerContext`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import tokens
from ..importers import fields
from .catalog import Catalog


@dataclass(frozen=True)
class MessageSpec:
    """What to render: one message of a campaign run.

    ``template`` is the name without extension (``ebike_launch`` →
    ``templates/ebike_launch.html`` or a locale variant). ``subject`` and
    ``preheader`` are optional Jinja strings; without ``subject`` the
    template's ``{% block subject %}`` is the subject.
    """

    id: str
    template: str
    topic: str
    campaign_id: str = ""
    run_id: str = ""
    #: A Jinja string, or per-locale strings ``{"nl": ..., "en": ...}`` (campaign files allow both).
    subject: str | Mapping[str, str] | None = field(default=None, hash=False)
    preheader: str | None = None
    #: Extra message data for the template (``message.data``), e.g. the offer.
    data: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    #: (campaign file, index of the message in it): where a failing ``subject`` is named.
    origin: tuple[str, int] | None = field(default=None, hash=False, compare=False)

    def __hash__(self) -> int:
        # Computed once: the spec is the key of the compiled-template cache,
        # looked up for every e-mail.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.id, self.template, self.topic, self.campaign_id, self.run_id, _freeze(self.subject), self.preheader))
            object.__setattr__(self, "_hash", h)
        return h

    @classmethod
    def from_campaign(cls, campaign, message, run_id: str = tokens.PREVIEW_RUN) -> MessageSpec:
        """The spec of a :class:`relmail.campaigns.Message` of ``campaign`` in run ``run_id``."""
        return cls(
            id=message.id,
            template=message.template,
            topic=message.topic,
            campaign_id=campaign.name,
            run_id=run_id,
            subject=message.subject or None,
            data=dict(message.data),
            origin=_origin(campaign, message),
        )

    def subject_for(self, languages: tuple[str, ...], default_locale: str) -> str | None:
        """The subject source for a language: exact locale, then language, then the default."""
        return self.subject_key(languages, default_locale)[1]

    def subject_key(self, languages: tuple[str, ...], default_locale: str) -> tuple[str | None, str | None]:
        """(the key of the per-locale table it came from, or None for one string; the subject source)."""
        if self.subject is None or isinstance(self.subject, str):
            return None, self.subject
        # Keys in any spelling of a locale (pl_pl, DE, de-AT) mean that locale, as a customer's locale is read.
        table = {_locale_key(k): (k, v) for k, v in self.subject.items()}
        for key in (*languages, default_locale, default_locale.split("_")[0], "default"):
            if key in table:
                return table[key]
        return next(iter(table.values()), (None, None))

    def subject_where(self, languages: tuple[str, ...], default_locale: str) -> tuple[str, int | None, str]:
        """(file, line, field) of the subject used for ``languages``: the campaign file's ``messages.N.subject[.KEY]``."""
        from ..campaigns.parse import line_in_file

        key = self.subject_key(languages, default_locale)[0]
        if self.origin is None:
            return f"{self.campaign_id or 'campaign'} message {self.id}", None, "subject" + (f".{key}" if key else "")
        file, index = self.origin
        loc = ("messages", index, "subject", *((key,) if key else ()))
        return file, line_in_file(Path(file), loc), ".".join(map(str, loc))


def _origin(campaign, message) -> tuple[str, int] | None:
    path = getattr(campaign, "path", None)
    if path is None:
        return None
    try:
        return str(path), list(campaign.messages).index(message)
    except ValueError:
        return None


@dataclass
class CustomerContext:
    """Who it is for: the customer's fields, recommended products, extra data."""

    id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    #: Product dicts: id, name, price, url, category, image_url, attributes; never a featured one.
    recommended_products: list[Mapping[str, Any]] = field(default_factory=list)
    #: Anything else a template needs (owned products, service due date ...), as ``data``.
    data: Mapping[str, Any] = field(default_factory=dict)
    #: The message's featured products, and the catalogue ``product("SKU")`` looks ids up in.
    featured_products: list[Mapping[str, Any]] = field(default_factory=list)
    #: Featured ids the catalogue does not have (the template's ``featured`` then names the first).
    absent_featured: tuple[str, ...] = ()
    catalog: Catalog | None = None
    #: The To header's display name when the e-mail goes to someone else than the customer (a proof: the
    #: reviewer's name, "" for none); None: the customer's name.
    to_name: str | None = None

    @property
    def name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    @property
    def addressee(self) -> str:
        """The display name of the e-mail's To header: :attr:`to_name` when set, else the customer's :attr:`name`."""
        return self.name if self.to_name is None else self.to_name


def _freeze(value):
    return tuple(sorted(value.items())) if isinstance(value, Mapping) else value


def _locale_key(key: str) -> str:
    """A per-locale subject's key in the form customers' locales are stored (``pl_PL``, ``de``); ``default`` as it is."""
    try:
        return key if key == "default" else fields.locale(key)
    except fields.FieldError:
        return key  # refused when the campaign is read (relmail.campaigns.parse)
