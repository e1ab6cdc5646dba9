"""Plan warnings about trained models that cannot do what the plan relies on them for.

Two mistakes leave every decision valid and the model quietly wrong:

* **different outcomes**: arbitration ranks a customer's messages by
  expected value, ``P(positive) × value``. When one message's model scores
  P(visit) and another's P(conversion) (one was trained on ``visit`` only,
  or a policy's ``model_outcome`` differs), the visit message wins nearly
  every customer because visits are more common, not because it is worth
  more;
* **features the plan lacks**: a model trained on an imported experiment's
  own columns (``spend_last_year``, ``store``) finds none of them among the
  features the plan computes, imputes them all, and gives every customer
  nearly the same prediction.

:func:`model_warnings` says each, as a :class:`PlanWarning`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from .consent_warning import PlanWarning

#: Share of a model's features the plan must lack for a warning.
MOSTLY_MISSING = 0.5


def model_warnings(models: Mapping[str, Mapping[str, Any]], widths: Mapping[str, int], summaries) -> list[PlanWarning]:
    """``models``: the plan's model facts per message (``outcome``, ``missing_features``); ``widths``: features per model."""
    audience = {s.message_id: s.audience for s in summaries}
    out: list[PlanWarning] = []
    outcomes = {key: facts.get("outcome") for key, facts in models.items() if facts.get("outcome")}
    if len(set(outcomes.values())) > 1:
        common = Counter(outcomes.values()).most_common(1)[0][0]
        scored = ", ".join(f"{key} on {outcome}" for key, outcome in outcomes.items())
        for key, outcome in outcomes.items():
            if outcome == common:
                continue
            text = (f"{key}: its model scores P({outcome}), the campaign's other models P({common}) ({scored}): "
                    f"arbitration compares expected values of different outcomes, so the message with the more common "
                    f"outcome wins; train every message on the same outcome (relmail model train --outcome ...) "
                    f"or set the messages' policy model_outcome to one they all learned")
            out.append(PlanWarning(key, "MODEL_OUTCOMES", 0, audience.get(key, 0), text))
    for key, facts in models.items():
        missing = list(facts.get("missing_features") or [])
        width = int(widths.get(key, 0))
        if width and len(missing) >= MOSTLY_MISSING * width:
            text = (f"{key}: the plan lacks {len(missing)} of the {width} features its model {facts.get('version')} "
                    f"learned from ({', '.join(missing)}); the model fills them in with training medians and "
                    f"unknown categories, so its predictions hardly differ between customers; train it on "
                    f"decisions whose features the plan logs (named as the plan names them: recency_days, ...), or set policy model: off")
            out.append(PlanWarning(key, "MODEL_FEATURES", 0, audience.get(key, 0), text))
    return out
