"""Signed unsubscribe/preference links and UTM tracking parameters.

The unsubscribe and preference links carry a token from
:func:`relmail.tokens.sign` (customer, topic, run, HMAC with the project's
signing key): it cannot be forged, and knowing one customer's link does not
reveal another's. Formats are fixed, the web app answers them:
``{base_url}/unsubscribe/{token}`` and ``{base_url}/preferences/{token}``.

Tracking parameters come from the optional ``[tracking]`` table of
``relmail.toml``::

    [tracking]
    utm_source = "relmail"
    utm_medium = "email"
    utm_campaign = "{campaign}"      # {campaign} {message} {run} {topic} are filled in
    utm_content = "{message}"
    domains = ["fietsenwinkel.example"]   # default: the brand's domain

They are added to outbound http(s) links to those domains only, never to
the unsubscribe/preference links, never to mailto: or anchors, and never
twice (a link that already has ``utm_source`` keeps its own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from markupsafe import Markup

from .. import tokens
from ..delivery.idn import to_ascii
from ..errors import ConfigError

_UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")


@dataclass(frozen=True)
class Tracking:
    """UTM parameters (templates with ``{campaign}`` etc.) and the domains they apply to."""

    params: tuple[tuple[str, str], ...] = ()
    domains: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings) -> Tracking:
        table = settings.section("tracking")
        params = []
        for key, value in table.items():
            if key == "domains" or key == "enabled":
                continue
            if not key.startswith("utm_") or not isinstance(value, str):
                raise ConfigError(f"relmail.toml [tracking]: '{key}' must be a utm_* key with a string value")
            params.append((key, value))
        if table.get("enabled") is False:
            params = []
        domains = table.get("domains")
        if domains is None:
            host = urlsplit(settings.brand.url).hostname
            domains = [host] if host else []
        if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
            raise ConfigError("relmail.toml [tracking]: 'domains' must be a list of host names")
        return cls(tuple(params), tuple(d.lower() for d in domains))

    def query(self, *, campaign: str, message: str, run: str, topic: str) -> str:
        """The encoded query string for one message ('' when tracking is off)."""
        values = {"campaign": campaign, "message": message, "run": run, "topic": topic}
        try:
            pairs = [(k, v.format(**values)) for k, v in self.params]
        except (KeyError, IndexError) as exc:
            raise ConfigError(f"relmail.toml [tracking]: unknown placeholder {exc} (use campaign, message, run, topic)") from None
        return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs if v)


class LinkTracker:
    """Adds one message's UTM query to the links that should carry it.

    Used as the ``track`` filter (per e-mail, for links whose URL comes from
    the context) and at compile time for literal links; both call
    :meth:`add`, so the decision is the same either way.
    """

    def __init__(self, query: str, domains: tuple[str, ...], never: tuple[str, ...]):
        self.query = query
        self.domains = domains
        #: URL prefixes that never get parameters (unsubscribe, preferences).
        self.never = never
        # The same product and shop links recur in every e-mail of a batch.
        self._cache: dict[str, str] = {}

    def wants(self, url: str) -> bool:
        if not self.query or not url.startswith(("https://", "http://")) or url.startswith(self.never):
            return False
        if "utm_source=" in url:
            return False
        host = urlsplit(url).hostname or ""
        return any(host == d or host.endswith("." + d) for d in self.domains)

    def add(self, url: str) -> str:
        """``url`` with the UTM query appended before any ``#fragment``."""
        hit = self._cache.get(url)
        if hit is not None:
            return hit
        result = url
        if self.wants(url):
            base, hash_, fragment = url.partition("#")
            sep = "" if base.endswith(("?", "&")) else ("&" if "?" in base else "?")
            result = f"{base}{sep}{self.query}{hash_}{fragment}"
        if len(self._cache) > 50_000:
            self._cache.clear()
        self._cache[url] = result
        return result

    def filter(self, value):
        """Jinja filter: works on escaped markup (``&amp;``) and on plain strings."""
        if isinstance(value, Markup):
            if "&" not in value:  # nothing escaped in it: the markup is the URL
                return Markup(self.add(str(value)).replace("&", "&amp;"))
            return Markup(self.add(value.unescape()).replace("&", "&amp;").replace('"', "&#34;"))
        return self.add(str(value))


_ADDRESS = re.compile(r"[^@\s<>\"(),;:]+@[^@\s<>\"(),;:]+")


#: Hosts an ``http://`` base_url may name: this machine only.
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def checked_unsubscribe(base_url: str, mailto: str | None, where: str = "relmail.toml [unsubscribe]") -> tuple[str, str | None]:
    """``[unsubscribe]`` base_url and mailto as every e-mail's links need them, or :class:`ConfigError`.

    The base URL is the List-Unsubscribe target and every body link: a relative or
    plain-HTTP one would go out in every e-mail, and mailbox providers offer
    one-click unsubscribe only for an HTTPS URL (RFC 8058), so it is refused before
    anything is rendered; ``http://`` only for this machine (localhost, 127.0.0.1,
    ::1), for a rehearsal whose links are clicked where ``relmail serve`` runs. The mailto is an address, written without ``mailto:``.
    """
    parts = urlsplit(base_url)
    # A rehearsal on one machine (relmail serve on 127.0.0.1, the outbox's links clicked there) needs no certificate.
    local = parts.scheme.lower() == "http" and parts.hostname in LOOPBACK
    if not (parts.scheme.lower() == "https" or local) or not parts.hostname:
        shown = f"base_url '{base_url}' is not an https:// URL" if base_url else "no base_url"
        raise ConfigError(
            f"{where}: {shown}; every e-mail's unsubscribe link and its "
            "List-Unsubscribe header use it, and mailbox providers offer one-click unsubscribe only over HTTPS "
            "(e.g. base_url = \"https://myshop.example/relmail\", where relmail serve answers)"
        )
    if not base_url.isascii():
        # Headers are ASCII: an internationalized host goes in its IDNA form, as every mail program reads it.
        host = _idna(parts.hostname)
        if host is None or not parts.path.isascii() or not parts.query.isascii():
            raise ConfigError(f"{where}: base_url '{base_url}': write its path in ASCII letters (the host may be "
                              "internationalized)")
        netloc = host + (f":{parts.port}" if parts.port else "")
        base_url = parts._replace(netloc=netloc).geturl()
    if mailto is not None:
        mailto = mailto.strip()
        local, _, domain = mailto.rpartition("@")
        if not _ADDRESS.fullmatch(mailto) or not local.isascii() or _idna(domain) is None:
            raise ConfigError(f"{where}: mailto '{mailto}' is not an e-mail address with ASCII letters before the @ "
                              "(write it without 'mailto:', e.g. mailto = \"unsubscribe@myshop.example\")")
        mailto = f"{local}@{_idna(domain)}"
    return base_url.rstrip("/"), mailto or None


def _idna(domain: str) -> str | None:
    """The ASCII form of a domain, or None when it has none."""
    try:
        return to_ascii(domain)
    except UnicodeError:
        return None


@dataclass(frozen=True)
class LinkBuilder:
    """Builds the signed per-customer links of one project."""

    base_url: str
    mailto: str | None
    key: str
    #: The project's ``[project] name``, signed into every token.
    project: str

    def token(self, customer_id: str, topic: str, run_id: str) -> str:
        return tokens.sign(self.key, customer_id, topic, run_id, self.project)

    def unsubscribe_url(self, token: str) -> str:
        return f"{self.base_url}/unsubscribe/{token}"

    def preferences_url(self, token: str) -> str:
        return f"{self.base_url}/preferences/{token}"

    def unsubscribe_mailto(self, token: str) -> str | None:
        """A mailto: for List-Unsubscribe; the subject carries the token so the inbox can verify it."""
        if not self.mailto:
            return None
        return f"mailto:{self.mailto}?subject=unsubscribe%20{token}"

    @property
    def never_track(self) -> tuple[str, ...]:
        return (f"{self.base_url}/unsubscribe/", f"{self.base_url}/preferences/")


_HREF = re.compile(r"(<(?:a|area)\b[^>]*?\shref=)([\"'])(.*?)\2", re.IGNORECASE | re.DOTALL)


def track_links(protected_html: str, tracker: LinkTracker, placeholder_prefix: str) -> str:
    """Give the links of a protected template source their UTM parameters.

    A literal link is rewritten now, once; a link whose URL holds a Jinja
    placeholder is wrapped in ``{% filter track %}`` so the decision is made
    on the URL each e-mail really gets.
    """
    if not tracker.query:
        return protected_html
    token = re.compile(placeholder_prefix + r"\d{5}j")

    def fix(m: re.Match) -> str:
        value = m.group(3)
        if token.search(value):
            value = "{% filter track %}" + value + "{% endfilter %}"
        else:
            value = tracker.add(value.replace("&amp;", "&")).replace("&", "&amp;")
        return f"{m.group(1)}{m.group(2)}{value}{m.group(2)}"

    return _HREF.sub(fix, protected_html)
