"""ADDRESS_SUPPRESSED (hard): the address is on the suppression list (erased, cleaned by a mailing tool, or blocked)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Rule, RuleFindings

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame

#: A suppression's stored reason -> what it means, for ``relmail why``. The reasons are what imports
#: (a mapping's ``suppress`` field: Mailchimp's and Klaviyo's) and erasure write; another is shown as it is.
REASONS = {
    "cleaned": "cleaned by the mailing tool (a hard bounce or an invalid address)",
    "spam_complaint": "marked as spam",
    "user_suppressed": "suppressed by the shop in the mailing tool",
    "erased": "erased on request (relmail customers forget)",
}


class AddressSuppressed(Rule):
    code = "ADDRESS_SUPPRESSED"
    hard = True
    summary = "the address is on the suppression list"
    columns = ("address_suppressed",)

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> RuleFindings:
        return RuleFindings(self.is_one(self.col(frame, message, "address_suppressed")))

    def explain(self, logged) -> str:
        """With ``suppression`` (``relmail why`` asked the store: ``{"at", "source"}``), why and since when."""
        found = logged.get("suppression")
        if found is None:
            return "the address is on the suppression list (erased on request, cleaned by a mailing tool, or blocked)"
        if found.get("source") is None:
            return "the address was on the suppression list (it is not on it now)"
        since = f" since {found['at']:%Y-%m-%d %H:%M} UTC" if found.get("at") is not None else ""
        return f"the address is on the suppression list{since}: {found['source']}"
