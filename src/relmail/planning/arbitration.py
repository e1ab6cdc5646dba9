"""Choosing among messages per customer, and the random hold-outs.

Arbitration: when a customer qualifies for several messages in one run, keep
the ones with the highest expected value (``score × value − contact cost``)
up to the customer's budget: the run's ``max_messages_per_run`` and what is
left of the frequency caps (global and per topic) after the e-mails already
sent or planned in other runs. The others lose with ``ARBITRATION_LOST``.
It is vectorised: one lexsort by (customer, −EV, −priority, campaign order)
and ranks within groups, never a loop over customers.

Hold-outs: of the (customer, message) pairs that would be sent, a
deterministic share is held back (``HOLDOUT``). The draw is a hash of (run
seed, customer, message) mapped to [0, 1), so a re-run of the same window
holds out the same people and different messages draw independently. A
customer whose address other customers share draws as the address's lowest
customer id, so the mailbox is in one arm (:mod:`relmail.planning.partition`).
"""

from __future__ import annotations

import hashlib

import numpy as np

#: A budget or room without a limit (no cap): large, yet far from overflowing when counts are added to it.
NO_LIMIT = np.iinfo(np.int64).max // 4

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective, well-mixing 64-bit hash (vectorised)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


def stable_hash(text: str) -> int:
    """64 bits of BLAKE2b of ``text``; stable across processes and machines."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def customer_hashes(customer_ids) -> np.ndarray:
    """BLAKE2b-64 of every customer id (computed once per run, reused for every message)."""
    return np.fromiter((stable_hash(c) for c in customer_ids), dtype=np.uint64, count=len(customer_ids))


def holdout_draw(seed: int, customer_hash: np.ndarray, message_id: str) -> np.ndarray:
    """Uniform [0, 1) per customer for one message: ``mix(h(customer) ^ mix(seed ^ h(message)))``."""
    key = np.uint64(stable_hash(f"{seed}:{message_id}"))
    with np.errstate(over="ignore"):
        mixed = _mix(np.asarray(customer_hash, dtype=np.uint64) ^ _mix(np.array([key]) + _GOLDEN)[0])
    # Top 53 bits → a double in [0, 1), exactly as random generators do it.
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """Position of each element inside its run of equal ``groups`` values (input already sorted by group)."""
    size = len(groups)
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(groups[1:] != groups[:-1]) + 1]
    lengths = np.diff(np.r_[starts, size])
    return np.arange(size) - np.repeat(starts, lengths)


def arbitrate(
    customer: np.ndarray,
    topic: np.ndarray,
    ev: np.ndarray,
    priority: np.ndarray,
    order: np.ndarray,
    budget: np.ndarray,
    topic_budget: np.ndarray,
) -> np.ndarray:
    """Which candidate (customer, message) pairs win; all arrays are per candidate.

    ``customer`` and ``topic`` are integer codes; ``budget`` is the customer's
    remaining number of e-mails in this run (same value on each of the
    customer's candidates) and ``topic_budget`` the remaining number on the
    candidate's topic. Greedy by expected value, which this reproduces
    exactly: a candidate wins if fewer than ``topic_budget`` better candidates
    share its topic and, among candidates that pass that test, fewer than
    ``budget`` better ones belong to the customer.
    """
    size = len(customer)
    win = np.zeros(size, dtype=bool)
    if size == 0:
        return win
    # Best first: higher EV, then higher priority, then the campaign's order.
    by_topic = np.lexsort((order, -priority, -ev, topic, customer))
    rank_t = np.empty(size, dtype=np.int64)
    rank_t[by_topic] = _rank_within(customer[by_topic] * (int(topic.max()) + 1) + topic[by_topic])
    feasible = rank_t < topic_budget
    idx = np.flatnonzero(feasible)
    by_customer = idx[np.lexsort((order[idx], -priority[idx], -ev[idx], customer[idx]))]
    rank_c = _rank_within(customer[by_customer])
    win[by_customer[rank_c < budget[by_customer]]] = True
    return win


def best_winner(customer: np.ndarray, message: np.ndarray, ev: np.ndarray, win: np.ndarray, n_customers: int) -> np.ndarray:
    """Per customer code: the message code of their highest-EV winner, or -1."""
    best = np.full(n_customers, -1, dtype=np.int64)
    idx = np.flatnonzero(win)
    if len(idx):
        # Sorted ascending by EV, so the last write per customer is the best.
        idx = idx[np.argsort(ev[idx], kind="stable")]
        best[customer[idx]] = message[idx]
    return best
