"""NEGATIVE_UPLIFT: the message's trained model predicts the e-mail makes the customer less likely to act.

Applies only when the plan used a trained model for the message (the frame
has ``<message>.model_uplift``). An unknown uplift (the model had no
hold-outs to learn it from, NaN) never suppresses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Outcome, Rule, num

if TYPE_CHECKING:
    from ..campaigns.model import Message, Policy
    from ..features.frame import FeatureFrame


class NegativeUplift(Rule):
    code = "NEGATIVE_UPLIFT"
    summary = "the trained model predicts the e-mail lowers the chance the customer acts (negative uplift)"
    # The model's whole verdict is logged, so why can show it beside the uplift.
    columns = ("k.model_uplift", "k.model_p_positive", "k.model_p_irritation", "k.irritation_cost", "k.expected_value")
    requires = ("k.model_uplift",)
    logs_score_inputs = True

    def evaluate(self, frame: FeatureFrame, message: Message, policy: Policy) -> Outcome:
        uplift = self.col(frame, message, "k.model_uplift")
        # NaN < 0 is False: no uplift model means no suppression on uplift.
        return Outcome(np.less(uplift, 0.0, where=~np.isnan(uplift), out=np.zeros(len(uplift), dtype=bool)))

    def explain(self, logged) -> str:
        uplift = num(logged, "model_uplift")
        outcome = logged.get("model_outcome") or "a positive outcome"
        version = logged.get("model_version")
        model = f"model v{int(version)}" if version is not None else "the model"
        return (
            f"{model} predicts this e-mail lowers the chance of {outcome} by {abs(uplift) * 100:.1f} points "
            f"(uplift {uplift:+.4f}): better not to send"
        )
