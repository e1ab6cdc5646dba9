"""OWNS_PRODUCT: no advert for a product the customer already bought.

Bought under any customer id of the address: a guest checkout's purchase is
the registered account's too (:mod:`relmail.planning.shared_mailbox`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings, whole_mailbox

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class OwnsProduct(Rule):
    code = "OWNS_PRODUCT"
    summary = "already owns the featured product"
    columns = ("k.owns_product", "address_shared")

    def applies(self, message: Message) -> bool:
        # A usage tip is *for* owners; a service message is about what they own.
        return bool(message.products) and message.offer not in ("usage-tip", "service")

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.is_one(self.col(frame, message, "k.owns_product")))

    def explain(self, logged) -> str:
        products = logged.get("products") or "the featured product"
        return f"already owns {products}" + whole_mailbox(logged)
