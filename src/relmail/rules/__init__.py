"""Suppression rules: one file per rule, registered here in evaluation order.

Every rule is evaluated for every (customer, message) in bulk and every rule
that fires is recorded with the decision, not only the first. Adding a rule
is one file (a :class:`~relmail.rules.base.Rule` subclass) and one line in
:data:`_ORDER`; a campaign switches switchable rules with
``policy.rules: {CODE: false}``.

Hard rules (:data:`HARD`) are the law and the sender's reputation: consent,
unsubscribe, hard bounce, repeated soft bounces, invalid or suppressed address, a customer the shop removed,
spam complaint, and
the opt-outs, hard bounces and complaints of the same address under another customer id. No
campaign or message policy can turn them off.

Four more reason codes come from later stages, not from rules:
``ARBITRATION_LOST`` (another message was worth more to this customer in this
run, or the frequency budget left no room), ``SHARED_ADDRESS`` (another
customer with the same address gets the message, see
:mod:`relmail.planning.addresses`), ``SHARED_BUDGET`` (the run's budget of the
address went to other messages under another customer id with it, see
:mod:`relmail.planning.mailbox_budget`) and ``HOLDOUT`` (kept back at random to
measure the true effect).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .address_suppressed import AddressSuppressed
from .already_sent import AlreadySent
from .base import Rule, RuleFindings
from .complained import Complained
from .consent import NoConsent
from .fatigue import Fatigue
from .frequency_cap import FrequencyCap
from .hard_bounce import HardBounce
from .held_out import HeldOut
from .invalid_address import InvalidAddress
from .low_relevance import LowRelevance
from .negative_uplift import NegativeUplift
from .not_new_customer import NotNewCustomer
from .not_worth_it import NotWorthIt
from .open_ticket import OpenTicket
from .owns_product import OwnsProduct
from .recent_complaint import RecentComplaint
from .removed_from_shop import RemovedFromShop
from .repeated_soft_bounce import RepeatedSoftBounce
from .shared_complaint import SharedComplaint
from .shared_hard_bounce import SharedHardBounce
from .shared_opt_out import SharedOptOut
from .topic_frequency_cap import TopicFrequencyCap
from .unsubscribed import Unsubscribed

if TYPE_CHECKING:
    from ..campaigns.model import Message
    from ..features.frame import FeatureFrame

_ORDER: tuple[type[Rule], ...] = (
    NoConsent,
    Unsubscribed,
    HardBounce,
    RepeatedSoftBounce,
    InvalidAddress,
    AddressSuppressed,
    RemovedFromShop,
    Complained,
    # The same facts recorded under another customer id with the same address (relmail.planning.shared_mailbox).
    SharedOptOut,
    SharedHardBounce,
    SharedComplaint,
    FrequencyCap,
    TopicFrequencyCap,
    AlreadySent,
    HeldOut,
    OpenTicket,
    RecentComplaint,
    OwnsProduct,
    NotNewCustomer,
    Fatigue,
    LowRelevance,
    # Only with a trained model for the message (see relmail.score.model).
    NegativeUplift,
    NotWorthIt,
)

#: Code → rule instance, in evaluation (and reporting) order.
RULES: dict[str, Rule] = {cls.code: cls() for cls in _ORDER}
#: Codes no policy may turn off.
HARD: frozenset[str] = frozenset(code for code, rule in RULES.items() if rule.hard)

ARBITRATION_LOST = "ARBITRATION_LOST"
SHARED_ADDRESS = "SHARED_ADDRESS"
SHARED_BUDGET = "SHARED_BUDGET"
HOLDOUT = "HOLDOUT"
#: Added by ``relmail send`` to a send whose e-mail failed to render for its customer (nothing was sent).
RENDER_ERROR = "RENDER_ERROR"

#: Every reason code relmail writes, with its meaning (the README table).
REASON_CODES: dict[str, str] = {
    **{code: rule.summary for code, rule in RULES.items()},
    ARBITRATION_LOST: "another message was worth more to this customer, or the run's budget was used up",
    SHARED_ADDRESS: "another customer with the same address gets this message in this run",
    SHARED_BUDGET: "the address's budget of this run went to other messages, under another customer id with the address",
    HOLDOUT: "held out at random to measure the true effect (would have been sent)",
    RENDER_ERROR: "the e-mail failed to render for this customer when it was sent, so nothing was sent",
}

#: What a reason code protects or records, so a report groups them by what they mean: the law and the
#: sender's reputation, the customer's patience, the experiment's control group, the shop's money, the
#: choice between messages or between customers at one address, or a failure at send time.
KINDS: dict[str, str] = {
    "compliance": "the law and the sender's reputation (consent, opt-outs, bounces, complaints)",
    "irritation": "the customer's patience (caps, fatigue, relevance, service first)",
    "experiment": "the control group that measures the effect (hold-outs)",
    "value": "the shop's money (expected value of the send)",
    "arbitration": "another message or another customer at the address got the place",
    "failure": "the e-mail failed when it was sent",
}


def _kind(rule: Rule) -> str:
    return "compliance" if rule.hard else rule.kind


#: Reason code → its kind (a key of :data:`KINDS`).
REASON_KINDS: dict[str, str] = {
    **{code: _kind(rule) for code, rule in RULES.items()},
    ARBITRATION_LOST: "arbitration", SHARED_ADDRESS: "arbitration", SHARED_BUDGET: "arbitration", HOLDOUT: "experiment", RENDER_ERROR: "failure",
}


def register(rule: Rule) -> Rule:
    """Add a rule at run time (plug-ins); its code must be new."""
    if not rule.code or rule.code in REASON_CODES:
        raise ValueError(f"rule code {rule.code!r} is empty or taken")
    if rule.kind not in KINDS:
        raise ValueError(f"rule kind {rule.kind!r} is not one of {', '.join(KINDS)}")
    RULES[rule.code] = rule
    REASON_CODES[rule.code] = rule.summary
    REASON_KINDS[rule.code] = _kind(rule)
    return rule


def rules_for(message: Message, frame: FeatureFrame | None = None) -> list[Rule]:
    """The rules that apply to ``message`` and are switched on by its policy.

    With ``frame``, rules whose :attr:`~Rule.requires` columns the frame lacks
    (the model rules, when the message has no trained model) are left out.
    """
    return [
        r for r in RULES.values()
        if r.applies(message) and (r.hard or message.policy.rule_on(r.code)) and (frame is None or r.available(frame, message))
    ]


__all__ = ["ARBITRATION_LOST", "HARD", "HOLDOUT", "KINDS", "REASON_CODES", "REASON_KINDS", "RULES", "Rule", "RuleFindings",
           "SHARED_ADDRESS", "SHARED_BUDGET", "register", "rules_for"]
