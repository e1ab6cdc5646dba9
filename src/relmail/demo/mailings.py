"""Several weeks of past campaign sends, week by week.

Each past week a ``weekly-history`` run sent the newsletter to everyone
opted in to it and a promotion to half of those opted in to promotions.
What happened next follows the customer's engagement: most mail is
delivered and ignored, some opened, a little clicked; dead mailboxes
hard-bounce once and are never mailed again, a complaint or an
unsubscribe stops the mail the old system would have sent after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from ..planning.result import run_id_for
from . import catalog as cat
from .behaviour import PRODUCT_IDS
from .frames import HOUR, EventFrame
from .population import Population

WEEKS = 6
CAMPAIGN = "weekly-history"

#: Past promotions, one per week (oldest first), each featuring a product.
#: Deliberately none of the current weekly campaign's promotions: "already
#: received this offer" rules start clean on the demo.
PROMOTIONS = (
    ("autumn-lights", "LIGHT-SET"),
    ("rain-gear-sale", "RAIN-JKT"),
    ("kids-bike-days", "KB-20"),
    ("helmet-week", "HELMET-U"),
    ("winter-service", "SERVICE-BASIC"),
    ("cargo-bike-test-ride", "CB-450"),
)
MESSAGES = ["newsletter"] + [name for name, _ in PROMOTIONS]
NEWSLETTER, PROMO_TOPIC, NEWS_TOPIC = 0, cat.TOPICS.index("promotions"), cat.TOPICS.index("newsletter")

PROMO_REACH = 0.5
SOFT_BOUNCE = 0.008


@dataclass(frozen=True)
class PastRun:
    id: str
    window: str
    at: int  # epoch seconds: the send started here


def past_runs(as_of: int) -> list[PastRun]:
    """The ``WEEKS`` ISO weeks before ``as_of``'s week, sends on Monday 08:00 UTC."""
    now = datetime.fromtimestamp(as_of, UTC)
    monday = (now - timedelta(days=now.weekday())).replace(hour=8, minute=0, second=0, microsecond=0)
    runs = []
    for k in range(WEEKS, 0, -1):
        at = monday - timedelta(weeks=k)
        year, week, _ = at.isocalendar()
        window = f"{year}-W{week:02d}"
        # Named as relmail names a run (campaign:window), so `received_email: {campaign: weekly-history}` finds them.
        runs.append(PastRun(id=run_id_for(CAMPAIGN, window), window=window, at=int(at.timestamp())))
    return runs


def generate(rng: np.random.Generator, pop: Population, runs: list[PastRun], as_of: int) -> EventFrame:
    """E-mail events of one chunk; updates ``pop``'s consent for unsubscribes."""
    idx = pop.index
    n = pop.n
    bounced = np.zeros(n, dtype=bool)
    complained = np.zeros(n, dtype=bool)
    sends_so_far = np.zeros(n)
    frames: list[EventFrame] = []
    for r, run in enumerate(runs):
        reachable = (pop.created < run.at) & ~pop.invalid & ~bounced & ~complained
        reachable &= ~(pop.global_out & (pop.global_time < run.at))
        news = reachable & pop.opted_in[:, NEWS_TOPIC]
        promo = reachable & pop.opted_in[:, PROMO_TOPIC] & (rng.random(n) < PROMO_REACH)
        # A wish of one mail a week gets the newsletter only.
        promo &= ~((pop.max_per_week == 1) & news)
        promo_name, promo_product = PROMOTIONS[r % len(PROMOTIONS)]
        for m, mask, topic, product in (
            (NEWSLETTER, news, NEWS_TOPIC, -1),
            (MESSAGES.index(promo_name), promo, PROMO_TOPIC, PRODUCT_IDS.index(promo_product)),
        ):
            who = np.flatnonzero(mask)
            frames.append(_send(rng, pop, idx, who, run, r, m, topic, product, as_of, bounced, complained, sends_so_far))
    return EventFrame.concat(frames)


def _send(rng, pop, idx, who, run, r, m, topic, product, as_of, bounced, complained, sends_so_far) -> EventFrame:
    k = len(who)
    tag = dict(message=m, run=r, topic=topic)
    sent_t = run.at + (rng.random(k) * HOUR).astype(np.int64)
    out = [EventFrame.make(idx[who], "email_sent", sent_t, **tag)]

    hard = pop.dead_mailbox[who]
    soft = ~hard & (rng.random(k) < SOFT_BOUNCE)
    bounced[who[hard]] = True
    out.append(EventFrame.make(idx[who[hard]], "email_bounced_hard", sent_t[hard] + 5, **tag))
    out.append(EventFrame.make(idx[who[soft]], "email_bounced_soft", sent_t[soft] + 30, **tag))

    ok = ~hard & ~soft
    d_who, d_t = who[ok], sent_t[ok] + 1 + (rng.random(ok.sum()) * 60).astype(np.int64)
    out.append(EventFrame.make(idx[d_who], "email_delivered", d_t, **tag))

    # Fatigue: every earlier send lowers the chance to open a little.
    eng = pop.engagement[d_who] * 0.97 ** sends_so_far[d_who]
    sends_so_far[who] += 1
    opened = rng.random(len(d_who)) < eng
    o_who = d_who[opened]
    o_t = np.minimum(d_t[opened] + rng.lognormal(np.log(3 * HOUR), 1.3, len(o_who)).astype(np.int64), as_of - 1)
    out.append(EventFrame.make(idx[o_who], "email_opened", o_t, **tag))

    clicked = rng.random(len(o_who)) < 0.1 + 0.3 * pop.engagement[o_who]
    c_t = np.minimum(o_t[clicked] + 5 + (rng.random(clicked.sum()) * 600).astype(np.int64), as_of - 1)
    out.append(EventFrame.make(idx[o_who[clicked]], "email_clicked", c_t, product=product, **tag))

    # Unsubscribes come from the link in an opened mail, more often from the disengaged.
    unsub = rng.random(len(o_who)) < 0.004 + 0.02 * (1 - pop.engagement[o_who])
    u_who, u_t = o_who[unsub], np.minimum(o_t[unsub] + 20, as_of - 1)
    out.append(EventFrame.make(idx[u_who], "email_unsubscribed", u_t, **tag))
    pop.opted_in[u_who, topic] = False
    pop.opt_time[u_who, topic] = u_t
    pop.opt_source[u_who, topic] = "unsubscribe-link"

    # Complaints ("this is spam") come from delivered mail, opened or not.
    comp = rng.random(len(d_who)) < 0.0001 + 0.0004 * (1 - pop.engagement[d_who])
    comp &= ~np.isin(d_who, u_who)
    c_who = d_who[comp]
    out.append(EventFrame.make(idx[c_who], "email_complained", np.minimum(d_t[comp] + 2 * HOUR, as_of - 1), **tag))
    complained[c_who] = True
    return EventFrame.concat(out)
