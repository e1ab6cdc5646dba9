"""Named customers with a known story, for demos, docs and tests.

The first customers of every demo shop are written by hand instead of
drawn, so ``relmail why C0000003`` shows a hard bounce on every machine.
Their stories are the cases relmail must handle well: a bounced address, a
complainer, an unsubscribed customer, an open service ticket, an owner of
the featured e-bike, a loyal customer next to a brand-new one, an invalid
address, and a lock owner who never tried the feature the usage tip is about.
"""

from __future__ import annotations

import numpy as np

from . import catalog as cat
from .behaviour import PRICES, PRODUCT_IDS
from .frames import DAY, HOUR, EventFrame
from .mailings import MESSAGES, NEWS_TOPIC, PROMO_TOPIC, PROMOTIONS, PastRun
from .population import Population

#: role -> customer index (0 = C0000001).  The ids are documented.
ROLES = {
    "loyal": 0,
    "new": 1,
    "hard_bounce": 2,
    "complainer": 3,
    "unsubscribed": 4,
    "open_ticket": 5,
    "owns_eb200": 6,
    "invalid_email": 7,
    "lock_unused_feature": 8,
}

DESCRIPTIONS = {
    "loyal": "customer for six years, loyal tier, buys every few months",
    "new": "signed up two days ago, only browsed",
    "hard_bounce": "address hard-bounced on the first weekly send",
    "complainer": "marked a newsletter as spam",
    "unsubscribed": "unsubscribed from all e-mail",
    "open_ticket": "service ticket about an e-bike still open",
    "owns_eb200": "owns the featured EB-200 e-bike and uses its app",
    "invalid_email": "address with invalid syntax (double @)",
    "lock_unused_feature": "owns the LOCK-S1 smart lock, never used share-access",
}

# (first, last, email, nl, london, city, birth_year, tenure days, favourite category)
_PEOPLE = {
    "loyal": ("Johanna", "de Vries", "johanna.devries@ziggo.example", True, False, "Utrecht", 1961, 6 * 365 - 20, "city-bikes"),
    "new": ("Oliver", "Smith", "oliver.smith@btinternet.example", False, True, "London", 1994, 2, "e-bikes"),
    "hard_bounce": ("Kees", "Bakker", "kees.bakker@kpnmail.example", True, False, "Zwolle", 1958, 3 * 365, "maintenance"),
    "complainer": ("Laura", "Hughes", "laura.hughes@outlook.example", False, False, "Amsterdam", 1988, 2 * 365, "clothing"),
    "unsubscribed": ("Daan", "Mulder", "daan.mulder@gmail.example", True, False, "Groningen", 1990, 540, "accessories"),
    "open_ticket": ("Fatima", "El Amrani", "fatima.elamrani@hotmail.example", True, False, "Rotterdam", 1983, 900, "e-bikes"),
    "owns_eb200": ("Willem", "Jansen", "willem.jansen@xs4all.example", True, False, "Haarlem", 1972, 4 * 365, "e-bikes"),
    "invalid_email": ("Sanne", "Visser", "sanne.visser@@ziggo.example", True, False, "Leiden", 1997, 365, "kids-bikes"),
    "lock_unused_feature": ("Charlotte", "Green", "charlotte.green@gmail.example", False, False, "Delft", 1985, 700, "accessories"),
}


def apply(pop: Population, runs: list[PastRun], as_of: int, events: EventFrame) -> EventFrame:
    """Overwrite the specials in the first chunk; returns the chunk's events with theirs replaced."""
    n = min(len(ROLES), pop.n)
    for role, i in ROLES.items():
        if i >= n:
            continue
        first, last, email, nl, london, city, born, tenure, fav = _PEOPLE[role]
        pop.first[i], pop.last[i], pop.email[i], pop.city[i] = first, last, email, city
        pop.nl[i], pop.london[i], pop.birth_year[i] = nl, london, born
        pop.created[i] = as_of - tenure * DAY - 9 * HOUR
        pop.favourite[i] = cat.CATEGORIES.index(fav)
        pop.invalid[i] = role == "invalid_email"
        pop.dead_mailbox[i] = role == "hard_bounce"
        pop.opted_in[i, :] = True
        pop.opt_time[i, :] = pop.created[i]
        pop.opt_source[i, :] = "signup-form"
        pop.global_out[i] = False
        pop.max_per_week[i] = 0
    keep = events.cust >= n
    story = _Story(runs, as_of)
    for role, i in ROLES.items():
        if i < n:
            getattr(story, role)(i, pop)
    return EventFrame.concat([events.take(np.flatnonzero(keep)), *story.frames])


class _Story:
    """Builds each special customer's events."""

    def __init__(self, runs: list[PastRun], as_of: int):
        self.runs, self.as_of = runs, as_of
        self.frames: list[EventFrame] = []

    def _ev(self, i, type_name, t, **kw):
        self.frames.append(EventFrame.make([i], type_name, [int(t)], **kw))

    def buy(self, i, product_id, days_ago):
        p = PRODUCT_IDS.index(product_id)
        t = self.as_of - days_ago * DAY + 14 * HOUR
        self._ev(i, "view", t - 2 * DAY, product=p)
        self._ev(i, "view", t - 20 * 60, product=p)
        self._ev(i, "purchase", t, product=p, value=float(PRICES[p]))
        return p, t

    def use(self, i, p, feature, since, every_days, amount=3):
        for t in range(int(since) + DAY, self.as_of, every_days * DAY):
            self._ev(i, "usage", t, product=p, feature=feature, value=float(amount))

    def mail(self, i, r, outcome=("delivered",), promo=False):
        run = self.runs[r]
        if promo:
            name, product = PROMOTIONS[r % len(PROMOTIONS)]
            tag = dict(message=MESSAGES.index(name), run=r, topic=PROMO_TOPIC)
        else:
            tag = dict(message=0, run=r, topic=NEWS_TOPIC)
        t = run.at + 600
        self._ev(i, "email_sent", t, **tag)
        for k, what in enumerate(outcome, start=1):
            self._ev(i, f"email_{what}", t + k * 1800, **tag)

    # -- the stories --------------------------------------------------------
    def loyal(self, i, pop):
        for product_id, days in (("SERVICE-PLUS", 250), ("LIGHT-SET", 120), ("HELMET-U", 40)):
            self.buy(i, product_id, days)
        for r in range(len(self.runs)):
            self.mail(i, r, ("delivered", "opened") + (("clicked",) if r % 2 else ()))

    def new(self, i, pop):
        for k, product_id in enumerate(("EB-100", "EB-200", "EB-200")):
            self._ev(i, "view", self.as_of - DAY - k * HOUR, product=PRODUCT_IDS.index(product_id))

    def hard_bounce(self, i, pop):
        self.mail(i, 0, ("bounced_hard",))

    def complainer(self, i, pop):
        for r in range(3):
            self.mail(i, r)
        self.mail(i, 3, ("delivered", "complained"))

    def unsubscribed(self, i, pop):
        self.buy(i, "LOCK-CH", 300)
        self.mail(i, 0)
        self.mail(i, 1, ("delivered", "opened", "unsubscribed"))
        pop.global_out[i] = True
        pop.global_time[i] = self.runs[1].at + 600 + 3 * 1800
        pop.global_source[i] = "unsubscribe-link"

    def open_ticket(self, i, pop):
        p, _ = self.buy(i, "EB-300", 100)
        self._ev(i, "ticket_opened", self.as_of - 200 * DAY, feature="T0000006-1")
        self._ev(i, "ticket_closed", self.as_of - 198 * DAY, feature="T0000006-1")
        self._ev(i, "ticket_opened", self.as_of - 2 * DAY, product=p, feature="T0000006-2")
        for r in range(len(self.runs)):
            self.mail(i, r, ("delivered", "opened"))

    def owns_eb200(self, i, pop):
        p, t = self.buy(i, "EB-200", 150)
        self.buy(i, "SERVICE-EBIKE", 30)
        self.use(i, p, "app", t, 3, 5)
        self.use(i, p, "gps-tracking", t, 7, 2)
        for r in range(len(self.runs)):
            self.mail(i, r, ("delivered", "opened") if r % 2 else ("delivered",))

    def invalid_email(self, i, pop):
        self._ev(i, "view", self.as_of - 40 * DAY, product=PRODUCT_IDS.index("KB-20"))

    def lock_unused_feature(self, i, pop):
        p, t = self.buy(i, "LOCK-S1", 80)
        self.use(i, p, "auto-unlock", t, 2, 4)
        for r in range(len(self.runs)):
            self.mail(i, r, ("delivered", "opened"))
            self.mail(i, r, ("delivered",), promo=True)
