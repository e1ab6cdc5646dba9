"""A relmail project: a folder with ``relmail.toml``, campaigns, segments, templates.

Settings are read once into plain dataclasses. Secrets are never stored in
the file: ``[secrets]`` names the environment variables that hold them, and
:meth:`Project.secret` reads them when needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .delivery.idn import to_ascii
from .errors import ConfigError
from .importers import fields

CONFIG_NAME = "relmail.toml"
ENV_DATABASE_URL = "RELMAIL_DATABASE_URL"
ENV_PROJECT = "RELMAIL_PROJECT"

#: Default environment-variable names for each secret relmail knows about.
DEFAULT_SECRETS = {
    "signing_key": "RELMAIL_SIGNING_KEY",
    "smtp_password": "RELMAIL_SMTP_PASSWORD",
    "esp_api_key": "RELMAIL_ESP_API_KEY",
    "esp_api_secret": "RELMAIL_ESP_API_SECRET",
    "webhook_key": "RELMAIL_WEBHOOK_KEY",
    "dkim_private_key": "RELMAIL_DKIM_PRIVATE_KEY",
    "sendgrid_webhook_public_key": "RELMAIL_SENDGRID_WEBHOOK_PUBLIC_KEY",
    "mailgun_webhook_key": "RELMAIL_MAILGUN_WEBHOOK_KEY",
    "postmark_webhook_password": "RELMAIL_POSTMARK_WEBHOOK_PASSWORD",
    "brevo_webhook_token": "RELMAIL_BREVO_WEBHOOK_TOKEN",
    "mailjet_webhook_password": "RELMAIL_MAILJET_WEBHOOK_PASSWORD",
    "mandrill_webhook_key": "RELMAIL_MANDRILL_WEBHOOK_KEY",
}


@dataclass(frozen=True)
class Sender:
    from_name: str
    from_email: str
    reply_to: str | None = None

    @property
    def domain(self) -> str:
        """The From address's domain in its ASCII form (``xn--mller-kva.de`` for ``müller.de``): what a
        Message-ID, a Feedback-ID, a DKIM signature and an ESP's API take."""
        domain = self.from_email.rpartition("@")[2]
        try:
            return to_ascii(domain)
        except UnicodeError:
            return domain


@dataclass(frozen=True)
class Brand:
    name: str
    url: str = ""
    color: str = "#1a73e8"
    logo_url: str = ""
    postal_address: str = ""


@dataclass(frozen=True)
class ConsentSettings:
    """``[consent]``: what a global opt-in means for a topic the customer has no record for.

    A shop often records one "accepts e-mail marketing" flag, imported as the
    global preference (topic ``*``). With ``global_opt_in_covers_topics``
    (the default) a global opt-in counts as consent for every topic without
    a record of its own, except the ``explicit_topics``, which need their
    own opt-in. A topic's own record (in or out) always wins, and a global
    opt-out always stops everything (UNSUBSCRIBED).
    """

    global_opt_in_covers_topics: bool = True
    explicit_topics: tuple[str, ...] = ()

    def global_counts_for(self, topic: str | None) -> bool:
        """Whether a global opt-in is consent for ``topic`` (when the customer has no record for it)."""
        return self.global_opt_in_covers_topics and topic not in (None, "*") and topic not in self.explicit_topics


@dataclass(frozen=True)
class Settings:
    name: str
    database_url: str
    default_locale: str
    timezone: str
    sender: Sender
    brand: Brand
    unsubscribe_url: str
    unsubscribe_mailto: str | None
    secrets: dict[str, str]
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    #: ``[unsubscribe] authserv_id``: the receiving server whose Authentication-Results vouch for a
    #: hand-written unsubscribe request's sender (:mod:`relmail.feedback.authresults`).
    unsubscribe_authserv_id: str | None = None
    #: Every table of the file as read, for the stages that own their own
    #: sections (``[delivery]``, ``[tracking]``, ``[model]`` ...).
    raw: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{CONFIG_NAME}: [{name}] must be a table")
        return value


@dataclass(frozen=True)
class Project:
    """A loaded project. ``root`` is the folder holding ``relmail.toml``."""

    root: Path
    settings: Settings

    @property
    def campaigns_dir(self) -> Path:
        return self.root / "campaigns"

    @property
    def segments_dir(self) -> Path:
        return self.root / "segments"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def database_url(self) -> str:
        """The database URL: ``RELMAIL_DATABASE_URL`` wins over the file.

        A relative SQLite path is taken relative to the project folder, so
        commands behave the same from any working directory. Set but empty
        (a CI secret the job cannot read) is an error, not the file's URL:
        falling back would plan against the project's own SQLite file.
        """
        env = os.environ.get(ENV_DATABASE_URL)
        if env is not None and not env.strip():
            raise ConfigError(f"{ENV_DATABASE_URL} is set but empty (a CI secret this job cannot read?): set it to the "
                              "database's URL, or unset it to use database_url from relmail.toml")
        url = env or self.settings.database_url
        return resolve_sqlite_path(url, self.root)

    def secret_variable(self, name: str) -> str:
        """The environment variable that holds secret ``name`` (``[secrets]``, else relmail's default)."""
        var = self.settings.secrets.get(name) or DEFAULT_SECRETS.get(name)
        if var is None:
            raise ConfigError(f"unknown secret '{name}'")
        return var

    def secret(self, name: str, required: bool = True) -> str | None:
        """Read secret ``name`` from the environment variable the project names."""
        var = self.secret_variable(name)
        value = os.environ.get(var)
        if not value and required:
            raise ConfigError(f"secret '{name}' is not set: export {var}=...")
        return value or None

    @classmethod
    def load(cls, root: str | os.PathLike | None = None) -> Project:
        """Load the project at ``root``, or find it from ``$RELMAIL_PROJECT`` or the cwd upwards."""
        folder = find_project_root(root)
        return cls(root=folder, settings=load_settings(folder / CONFIG_NAME))


def resolve_sqlite_path(url: str, root: Path) -> str:
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////"):
        path = url[len(prefix):]
        if path and path != ":memory:" and not Path(path).is_absolute():
            return prefix + str((root / path).resolve())
    return url


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    if start is not None:
        folder = Path(start).expanduser().resolve()
        if not (folder / CONFIG_NAME).is_file():
            raise ConfigError(f"{folder} is not a relmail project (no {CONFIG_NAME}); run 'relmail init {start}'")
        return folder
    env = os.environ.get(ENV_PROJECT)
    if env:
        return find_project_root(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise ConfigError(f"no {CONFIG_NAME} in {here} or its parents; use --project DIR or run 'relmail init DIR'")


def _get(table: dict, key: str, kind: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing key '{key}'")
        return default
    value = table[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: key '{key}' must be a {kind.__name__}, got {type(value).__name__}")
    return value


def load_settings(path: Path) -> Settings:
    """Parse and validate ``relmail.toml``; errors name the file and key."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None

    def table(name: str) -> dict:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        return value

    proj, snd, brand, unsub, secrets = (table(n) for n in ("project", "sender", "brand", "unsubscribe", "secrets"))
    where = f"{path} [project]"
    name = _get(proj, "name", str, where)
    sender = Sender(
        from_name=_get(snd, "from_name", str, f"{path} [sender]", name),
        from_email=_get(snd, "from_email", str, f"{path} [sender]"),
        reply_to=_get(snd, "reply_to", str, f"{path} [sender]", None),
    )
    if "@" not in sender.from_email:
        raise ConfigError(f"{path} [sender]: from_email '{sender.from_email}' is not an e-mail address")
    for key, value in secrets.items():
        if not isinstance(value, str) or not value.isidentifier():
            raise ConfigError(
                f"{path} [secrets]: '{key}' must name an environment variable (the secret itself never goes in the file)"
            )
    return Settings(
        name=name,
        database_url=_get(proj, "database_url", str, where, "sqlite:///relmail.db"),
        default_locale=_get(proj, "default_locale", str, where, "en_GB"),
        timezone=_get(proj, "timezone", str, where, "UTC"),
        sender=sender,
        brand=Brand(
            name=_get(brand, "name", str, f"{path} [brand]", name),
            url=_get(brand, "url", str, f"{path} [brand]", ""),
            color=_get(brand, "color", str, f"{path} [brand]", "#1a73e8"),
            logo_url=_get(brand, "logo_url", str, f"{path} [brand]", ""),
            postal_address=_get(brand, "postal_address", str, f"{path} [brand]", ""),
        ),
        unsubscribe_url=_get(unsub, "base_url", str, f"{path} [unsubscribe]", ""),
        unsubscribe_mailto=_get(unsub, "mailto", str, f"{path} [unsubscribe]", None),
        unsubscribe_authserv_id=_get(unsub, "authserv_id", str, f"{path} [unsubscribe]", None),
        secrets={**DEFAULT_SECRETS, **secrets},
        consent=_consent(table("consent"), f"{path} [consent]"),
        raw=data,
    )


def _consent(table: dict, where: str) -> ConsentSettings:
    for key in table:
        if key not in ("global_opt_in_covers_topics", "explicit_topics"):
            raise ConfigError(f"{where}: unknown key '{key}' (known: global_opt_in_covers_topics, explicit_topics)")
    topics = _get(table, "explicit_topics", list, where, [])
    if not all(isinstance(t, str) and t and t != "*" for t in topics):
        raise ConfigError(f"{where}: explicit_topics must be a list of topic names (not '*')")
    return ConsentSettings(_get(table, "global_opt_in_covers_topics", bool, where, True), tuple(topics))


def example_dir() -> Path:
    """The example project shipped with relmail (campaigns, segments, templates)."""
    return Path(__file__).parent / "example"


#: The [secrets] table both project templates write: names of environment variables, never secrets.
SECRETS_TABLE = """[secrets]
signing_key = "RELMAIL_SIGNING_KEY"
smtp_password = "RELMAIL_SMTP_PASSWORD"
esp_api_key = "RELMAIL_ESP_API_KEY"
webhook_key = "RELMAIL_WEBHOOK_KEY"
"""

DEFAULT_CONFIG = """\
# relmail project settings. Secrets never go in this file: [secrets] names
# the environment variables that hold them.

[project]
name = "{name}"
# SQLite in this folder by default; RELMAIL_DATABASE_URL overrides, e.g.
# postgresql+psycopg://user@host:5432/dbname
database_url = "sqlite:///relmail.db"
default_locale = "en_GB"
timezone = "Europe/Amsterdam"

[sender]
from_name = "{name}"
from_email = "news@fietsenwinkel.example"
reply_to = "service@fietsenwinkel.example"

[brand]
name = "{name}"
url = "https://fietsenwinkel.example"
color = "#0b6e4f"
logo_url = "https://fietsenwinkel.example/logo.png"
postal_address = "Keizersgracht 1, 1015 CJ Amsterdam, NL"

[unsubscribe]
base_url = "https://fietsenwinkel.example/relmail"
mailto = "unsubscribe@fietsenwinkel.example"

# How the preference and unsubscribe pages name the campaigns' topics, per language.
[topics.promotions]
label = {{ en = "Offers and new bikes", nl = "Aanbiedingen en nieuwe fietsen" }}
description = {{ en = "New models and offers, a few times a month.", nl = "Nieuwe modellen en aanbiedingen, een paar keer per maand." }}

[topics.newsletter]
label = {{ en = "Newsletter", nl = "Nieuwsbrief" }}
description = {{ en = "Riding tips and news from the shop, every other week.", nl = "Fietstips en nieuws uit de winkel, om de week." }}

[topics.product-tips]
label = {{ en = "Tips for what you bought", nl = "Tips voor wat je kocht" }}
description = {{ en = "How to get more out of the bike or lock you have.", nl = "Hoe je meer haalt uit je fiets of slot." }}

[topics.service]
label = {{ en = "Service reminders", nl = "Onderhoudsherinneringen" }}
description = {{ en = "When your bike is due for maintenance.", nl = "Wanneer je fiets aan onderhoud toe is." }}

{secrets}
[delivery]
adapter = "file"
outbox = "outbox"
"""


BLANK_CONFIG = """\
# relmail project settings. Secrets never go in this file: [secrets] names
# the environment variables that hold them.

[project]
name = "{name}"
# SQLite in this folder by default (kept out of git by .gitignore); RELMAIL_DATABASE_URL
# overrides, e.g. postgresql+psycopg://user@host:5432/dbname
database_url = "sqlite:///relmail.db"
# Customers without a locale or time zone of their own get these.
default_locale = "{locale}"
timezone = "{timezone}"

[sender]
from_name = "{name}"
from_email = "news@{domain}"
reply_to = "service@{domain}"

[brand]
name = "{name}"
url = "https://{domain}"
color = "#1a73e8"
logo_url = ""
# Most countries require a postal address in marketing e-mail: fill it in.
postal_address = ""
# The currency of the products file's prices (that of {locale}'s country); a shop selling in
# several: a table by language, e.g. currency = {{ de = "EUR", pl = "PLN" }}.
currency = "{currency}"

[unsubscribe]
# Where `relmail serve` answers unsubscribe and preference links (RFC 8058 one-click); https:// only.
base_url = "https://{domain}/relmail"
# Offered in List-Unsubscribe too: deliver it into a mailbox `relmail feedback bounces` reads
# (the unsubscribe requests sent to it are applied from there), or remove the line.
mailto = "unsubscribe@{domain}"

[consent]
# A shop often records one "accepts e-mail marketing" flag: the global opt-in (topic "*").
# true: it counts as consent for every topic the customer has no record of their own for.
global_opt_in_covers_topics = true
# Topics that need their own explicit opt-in, whatever the global flag says.
explicit_topics = []

# How the preference and unsubscribe pages name the campaigns' topics, per language.
[topics.newsletter]
label = {topic_labels}

{secrets}
[delivery]
# E-mails are written to outbox/ until you choose smtp, sendgrid, mailgun, postmark, ses, brevo, mailjet
# or mandrill.
adapter = "file"
outbox = "outbox"
"""


def blank_dir() -> Path:
    """The blank project shipped with relmail: one neutral segment, campaign and template."""
    return Path(__file__).parent / "blank"


def blank_languages() -> list[str]:
    """The languages the blank project's newsletter has wording in (``blank/newsletter.toml``)."""
    return list(tomllib.loads((blank_dir() / "newsletter.toml").read_text(encoding="utf-8")))


def blank_language(locale: str) -> str | None:
    """The language of ``locale`` the blank newsletter is written in (``de`` for ``de_AT``); None when relmail has no wording for it."""
    language = fields.locale(locale).split("_", 1)[0]
    return language if language in blank_languages() else None


def blank_topic_labels() -> str:
    """The newsletter topic's label in every language of the blank newsletter, as a TOML inline table."""
    wording = tomllib.loads((blank_dir() / "newsletter.toml").read_text(encoding="utf-8"))
    return "{ " + ", ".join(f"{lang} = {json.dumps(text['topic'], ensure_ascii=False)}" for lang, text in wording.items()) + " }"


def blank_newsletter(locale: str) -> str:
    """The blank project's ``templates/newsletter.html`` in the language of ``locale``, or in English when there is no wording for it."""
    wording = tomllib.loads((blank_dir() / "newsletter.toml").read_text(encoding="utf-8"))
    skeleton = string.Template((blank_dir() / "newsletter.html").read_text(encoding="utf-8"))
    return skeleton.substitute(wording[blank_language(locale) or "en"])


_DOMAIN = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")


def init_project(folder: str | os.PathLike, name: str = "Fietsenwinkel", force: bool = False, *, blank: bool = False,
                 domain: str | None = None, locale: str = "en_GB", timezone: str = "UTC") -> Project:
    """Create a project folder with ``relmail.toml`` and the example files.

    ``blank``: a project for your own shop instead: sender, reply-to, brand
    and unsubscribe addresses on ``domain``, one neutral segment, campaign
    and template (in the language of ``locale`` when it is one of
    :func:`blank_languages`, else in English), and a ``.gitignore`` that
    keeps the database, import rejects, outbox and model files out of git.
    """
    root = Path(folder).expanduser().resolve()
    config = root / CONFIG_NAME
    if config.exists() and not force:
        raise ConfigError(f"{config} exists already; use --force to overwrite the example files")
    if blank:
        domain = (domain or "").strip().lower()
        if not _DOMAIN.match(domain):
            raise ConfigError(f"--domain {domain!r} is not a domain name (e.g. leesteken.nl): the sender and links use it")
        if '"' in name or "\\" in name or not name.strip():
            raise ConfigError("--name must be a non-empty name without quotes or backslashes")
        _check_zones(locale, timezone)
    root.mkdir(parents=True, exist_ok=True)
    if blank:
        from .render.currency import of_locale  # Babel's currency data: only when a blank project is made

        config.write_text(BLANK_CONFIG.format(name=name.strip(), domain=domain, locale=locale, timezone=timezone,
                                              currency=of_locale(locale), secrets=SECRETS_TABLE,
                                              topic_labels=blank_topic_labels()), encoding="utf-8")
        source = blank_dir()
        ignore = root / ".gitignore"
        if not ignore.exists() or force:
            ignore.write_text((source / "gitignore").read_text(encoding="utf-8"), encoding="utf-8")
    else:
        config.write_text(DEFAULT_CONFIG.format(name=name, secrets=SECRETS_TABLE), encoding="utf-8")
        source = example_dir()
    for sub in ("campaigns", "segments", "templates"):
        if (source / sub).is_dir():
            shutil.copytree(source / sub, root / sub, dirs_exist_ok=True)
        else:
            (root / sub).mkdir(exist_ok=True)
    if blank:
        (root / "templates" / "newsletter.html").write_text(blank_newsletter(locale), encoding="utf-8")
    return Project.load(root)


def _check_zones(locale: str, timezone: str) -> None:
    """A blank project's locale and time zone must be real: every customer defaults to them."""
    for parse, value, option in ((fields.locale, locale, "--locale"), (fields.time_zone, timezone, "--timezone")):
        try:
            parse(value)
        except fields.FieldError as exc:
            raise ConfigError(f"{option}: {exc}") from None
