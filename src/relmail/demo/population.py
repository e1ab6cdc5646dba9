"""Who the demo shop's customers are: identity, tenure, traits, consent.

One chunk of customers at a time, all columns drawn at once.  The traits
that drive behaviour later (activity, e-mail engagement, favourite
category) are drawn here too, so behaviour and mail history agree with
each other (an active buyer also opens more mail).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from . import catalog as cat
from .frames import DAY

#: Tenure is drawn as ``MAX_TENURE_DAYS * u**TENURE_SKEW``: many recent
#: customers, a long tail of customers of several years.
MAX_TENURE_DAYS = 6 * 365
TENURE_SKEW = 1.6
#: Share of customers who, apart from opening some mail, do nothing in a year.
INACTIVE_SHARE = 0.55
#: Nobody signed up less than an hour before ``as_of``.
HOUR_MIN = 3_600

#: Opt-in rates per topic at signup, in catalog.TOPICS order.
TOPIC_OPT_IN = (0.82, 0.66, 0.74, 0.96)
GLOBAL_UNSUBSCRIBED = 0.03
FREQUENCY_WISH = 0.05
#: Addresses that no longer exist: they hard-bounce on their first send.
DEAD_MAILBOX = 0.004
#: Addresses with a syntax error (typed in a shop's checkout form years ago).
INVALID_SYNTAX = 0.001

HINTS = ("leisure", "commuter", "family", "practical", "sporty", "practical")  # per CATEGORIES


def customer_id(index: int) -> str:
    return f"C{index + 1:07d}"


def _ascii(text: str) -> str:
    """Lower-case ASCII local part: ``van den Berg`` -> ``vandenberg``."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in plain.lower() if ch.isalnum())


@dataclass
class Population:
    start: int  # global index of the first customer
    ids: list[str]
    first: list[str]
    last: list[str]
    email: list[str]
    nl: np.ndarray  # bool: locale nl_NL (else en_GB)
    london: np.ndarray  # bool: time zone Europe/London
    created: np.ndarray  # int64 epoch seconds
    activity: np.ndarray  # float: relative rate of shop behaviour
    engagement: np.ndarray  # float 0..1: chance to open a delivered e-mail
    favourite: np.ndarray  # int: index into CATEGORIES
    birth_year: np.ndarray
    city: list[str]
    dead_mailbox: np.ndarray  # bool
    invalid: np.ndarray  # bool: address has a syntax error
    #: Consent as at signup, changed by the mail history: [n, len(TOPICS)].
    opted_in: np.ndarray
    opt_time: np.ndarray  # int64 [n, len(TOPICS)]: when the consent was last changed
    opt_source: np.ndarray  # object [n, len(TOPICS)]
    global_out: np.ndarray  # bool: topic '*' opted out before the mail history
    global_time: np.ndarray  # int64
    global_source: np.ndarray  # object
    max_per_week: np.ndarray  # int: 0 = no wish

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> np.ndarray:
        return np.arange(self.start, self.start + self.n, dtype=np.int64)


def draw(rng: np.random.Generator, start: int, n: int, as_of: int) -> Population:
    """Draw ``n`` customers with global indexes ``start ..``."""
    nl = rng.random(n) < 0.6
    # English speakers mostly live in the Netherlands too; some order from the UK.
    london = ~nl & (rng.random(n) < 0.3)

    first_i = rng.integers(0, 50, n)
    last_i = rng.integers(0, 50, n)
    first = np.where(nl, np.array(cat.NL_FIRST, dtype=object)[first_i], np.array(cat.EN_FIRST, dtype=object)[first_i])
    last = np.where(nl, np.array(cat.NL_LAST, dtype=object)[last_i], np.array(cat.EN_LAST, dtype=object)[last_i])

    nl_dom = rng.choice(len(cat.NL_DOMAINS), n, p=_p(cat.NL_DOMAIN_WEIGHTS))
    uk_dom = rng.choice(len(cat.UK_DOMAINS), n, p=_p(cat.UK_DOMAIN_WEIGHTS))
    domain = np.where(nl, np.array(cat.NL_DOMAINS, dtype=object)[nl_dom], np.array(cat.UK_DOMAINS, dtype=object)[uk_dom])
    style = rng.integers(0, 3, n)
    invalid = rng.random(n) < INVALID_SYNTAX
    email = []
    # The customer number in the address keeps every address unique.
    for k in range(n):
        f, s, num = _ascii(first[k]), _ascii(last[k]), start + k + 1
        local = (f"{f}.{s}{num}", f"{f[0]}{s}{num}", f"{f}{num}")[style[k]]
        addr = f"{local}@{domain[k]}"
        if invalid[k]:
            # Typical checkout-form typos: a doubled @, a comma, a missing dot.
            addr = (f"{local}@@{domain[k]}", f"{local}@{domain[k]}".replace(".", ",", 1), f"{local}{domain[k]}")[num % 3]
        email.append(addr)

    tenure = MAX_TENURE_DAYS * rng.random(n) ** TENURE_SKEW * DAY
    created = as_of - np.maximum(tenure.astype(np.int64), HOUR_MIN)

    inactive = rng.random(n) < INACTIVE_SHARE
    activity = np.where(inactive, 0.03, rng.lognormal(0.0, 1.1, n))
    # Engagement follows activity loosely: buyers read mail, but not only they.
    engagement = 1 / (1 + np.exp(-(rng.normal(-1.1, 1.0, n) + 0.6 * np.log(activity + 0.05))))
    favourite = rng.choice(len(cat.CATEGORIES), n, p=_p(cat.CATEGORY_WEIGHTS))
    birth_year = (1970 + np.clip(rng.normal(12, 15, n), -45, 45)).astype(np.int64)
    birth_year = np.minimum(birth_year, _year(as_of) - 16)

    nl_city = rng.choice(len(cat.NL_CITIES), n, p=_p(cat.NL_CITY_WEIGHTS))
    uk_city = rng.choice(len(cat.UK_CITIES), n, p=_p(cat.UK_CITY_WEIGHTS))
    city = np.where(london, np.array(cat.UK_CITIES, dtype=object)[uk_city], np.array(cat.NL_CITIES, dtype=object)[nl_city])

    opted_in = rng.random((n, len(cat.TOPICS))) < np.array(TOPIC_OPT_IN)
    opt_time = np.repeat(created[:, None], len(cat.TOPICS), axis=1)
    opt_source = np.full((n, len(cat.TOPICS)), "signup-form", dtype=object)
    global_out = rng.random(n) < GLOBAL_UNSUBSCRIBED
    global_time = created + ((as_of - created) * rng.random(n) * 0.7).astype(np.int64)
    wish = (rng.random(n) < FREQUENCY_WISH) & ~global_out
    max_per_week = np.where(wish, rng.choice([1, 1, 2, 3], n), 0)

    return Population(
        start=start,
        ids=[customer_id(i) for i in range(start, start + n)],
        first=first.tolist(),
        last=last.tolist(),
        email=email,
        nl=nl,
        london=london,
        created=created,
        activity=activity,
        engagement=engagement,
        favourite=favourite,
        birth_year=birth_year,
        city=city.tolist(),
        dead_mailbox=rng.random(n) < DEAD_MAILBOX,
        invalid=invalid,
        opted_in=opted_in,
        opt_time=opt_time,
        opt_source=opt_source,
        global_out=global_out,
        global_time=global_time,
        global_source=np.full(n, "preference-center", dtype=object),
        max_per_week=max_per_week,
    )


def loyalty_tier(created: np.ndarray, purchases: np.ndarray, spend: np.ndarray, as_of: int) -> np.ndarray:
    """``new`` / ``regular`` / ``loyal`` from tenure and last year's purchases."""
    tenure_days = (as_of - created) / DAY
    loyal = ((tenure_days >= 730) & (purchases >= 2)) | ((tenure_days >= 1460) & (purchases >= 1)) | (
        (tenure_days >= 365) & (spend >= 1500)
    )
    tier = np.where(loyal, "loyal", "regular").astype(object)
    tier[tenure_days < 90] = "new"
    return tier


def segment_hint(favourite: np.ndarray) -> np.ndarray:
    return np.array(HINTS, dtype=object)[favourite]


def _p(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return w / w.sum()


def _year(epoch: int) -> int:
    return int(str(np.datetime64(int(epoch), "s"))[:4])
