"""REMOVED_FROM_SHOP (hard): the shop no longer lists the customer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class RemovedFromShop(Rule):
    """A complete customers export (``relmail import customers --complete``) no longer listed the customer.

    An account deleted or merged in the shop: its history stays (for learning and the ledger), but a
    person who closed an account, or whose account lives on under another id, is not mailed under this one.
    """

    code = "REMOVED_FROM_SHOP"
    hard = True
    summary = "the shop's complete customers export no longer lists the customer"
    columns = ("in_shop",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.col(frame, message, "in_shop") < 0.5)

    def explain(self, logged) -> str:
        return ("the customer was not in the shop's last complete customers export (an account deleted or merged "
                "in the shop); an import that lists the customer again lifts this")
