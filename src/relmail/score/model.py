"""The plan's score when a message has a trained model: probabilities, uplift and expected value.

For every message with a model (``models/<message>/``, see
:mod:`relmail.learn`) :class:`ModelScorer` predicts, per customer,

* ``model_p_positive`` — P(positive outcome | sent) (the policy's
  ``model_outcome``, default the model's primary outcome),
* ``model_uplift`` — P(outcome | sent) − P(outcome | not sent); NaN when the
  model had no hold-outs, or when its uplift gives every customer the sign of
  a training lift that cannot be told from zero
  (:meth:`~relmail.learn.TrainedModel.uplift_unfounded`): then nothing is
  suppressed on uplift,
* ``model_p_irritation`` — P(unsubscribe or complaint | sent),

and the **expected value** of the send::

    expected_value = model_p_positive × message value
                     − model_p_irritation × irritation_cost − contact_cost

where ``irritation_cost`` is the policy's number or, by default, the
customer's ``clv`` feature (what losing them costs). These go into the frame
as ``<message>.<name>`` columns: the rules ``NEGATIVE_UPLIFT`` and
``NOT_WORTH_IT`` read them, arbitration ranks by ``expected_value``, and the
decision logs them. The top feature contributions to the uplift (or to
P(positive) when uplift is unknown) are logged as ``u.<feature>`` (or
``p.<feature>``) so ``relmail why`` explains from the ledger alone.

The model is handed exactly what a decision logs, because that is what it
was trained on (:mod:`relmail.learn.dataset`): the logged name of each
feature (``category_affinity``, not ``promo.category_affinity``), numbers
rounded to 4 decimals, and zeros as missing (the ledger leaves zero values
out, so training saw them as missing too).

The relevance score (``score``, what ``LOW_RELEVANCE`` compares) stays the
transparent one unless ``scoring.model_weight`` blends P(positive) into it.
A message without a model is scored by the base scorer alone, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..features.columns import own
from ..learn import store
from .outputs import OUTPUT_COLUMNS, is_model_output

if TYPE_CHECKING:
    from ..campaigns.model import Campaign, Message
    from ..features.frame import FeatureFrame
    from ..project import Project

#: Contributions logged per decision (the largest by size).
TOP = 5
#: Keys logged with full precision even when zero (see ``plan._decide``).
_KEEP_ZERO = frozenset({"score"})


def find_models(project: Project, campaign: Campaign) -> dict[str, Any]:
    """The trained model of each message whose policy allows one (``model: auto``) and that has one.

    Checks the models folder before importing scikit-learn, so a project
    without models pays nothing. Raises :class:`~relmail.errors.ModelError`
    when a model exists but cannot be trusted (changed file, unknown types):
    better to stop than to plan silently without it.
    """
    root = store.models_dir(project)
    if not root.is_dir():
        return {}
    wanted = [m.id for m in campaign.messages if m.policy.model != "off" and store.versions(root, m.id)]
    if not wanted:
        return {}
    # Loading a model imports scikit-learn, slow to import and large in
    # memory: only for a project that has one.
    from ..learn.model import load_models

    return load_models(project, wanted)


def _as_logged(values: np.ndarray, keep_zero: bool) -> np.ndarray:
    out = np.round(np.asarray(values, dtype=np.float64), 4)
    if not keep_zero:
        out = np.where(out == 0.0, np.nan, out)
    return out


class ModelScorer:
    """A :class:`~relmail.score.transparent.Scorer` that adds model predictions for the messages that have a model.

    ``base`` scores every message as before (the transparent or blended
    score); ``models`` maps message id → :class:`~relmail.learn.TrainedModel`;
    ``model_weight`` blends P(positive) into the relevance score (0 keeps it).
    """

    def __init__(self, base, models: Mapping[str, Any], model_weight: float = 0.0):
        if not 0.0 <= model_weight <= 1.0:
            raise ValueError("model_weight must be in [0, 1]")
        self.base, self.models, self.w = base, dict(models), float(model_weight)
        #: Per message: the model's input columns as logged (name → array over the frame).
        self._inputs: dict[str, dict[str, np.ndarray]] = {}
        #: Per message: frame columns (Scorer naming) the model read; logged with decisions.
        self._read: dict[str, list[str]] = {}
        #: Per message: model features the plan cannot provide (left missing, imputed by the model).
        self.missing: dict[str, list[str]] = {}
        self._outcome: dict[str, str] = {}
        #: Per message whose uplift the plan does not use: why (see TrainedModel.uplift_unfounded).
        self.uplift_unused: dict[str, str] = {}

    def columns(self, message: Message) -> tuple[str, ...]:
        cols = list(self.base.columns(message))
        if message.id in self.models:
            cols += self._read.get(message.id, []) + [own(c) for c in OUTPUT_COLUMNS]
        return tuple(dict.fromkeys(cols))

    def outcome(self, message: Message) -> str:
        """The outcome whose probability is P(positive) for ``message``."""
        if message.id not in self._outcome:
            model = self.models[message.id]
            try:
                self._outcome[message.id] = model.primary_outcome(message.policy.model_outcome)
            except KeyError as exc:
                raise ConfigError(f"message '{message.id}': policy model_outcome: {exc.args[0]}") from None
        return self._outcome[message.id]

    def info(self) -> dict[str, dict[str, Any]]:
        """Per message with a model: version, outcome, features the plan could not provide, why its uplift is unused."""
        return {
            key: {"version": model.version, "outcome": self._outcome.get(key), "missing_features": self.missing.get(key, []),
                  "uplift_unused": self.uplift_unused.get(key)}
            for key, model in self.models.items()
        }

    def _model_inputs(self, frame, message, base_score, base_contrib) -> dict[str, np.ndarray]:
        model = self.models[message.id]
        constants = {"topic": message.topic, "products": ", ".join(message.products)}
        n = len(frame)
        cols: dict[str, np.ndarray] = {}
        read: list[str] = []
        missing: list[str] = []
        categorical = set(model.spec.categorical)
        for name in model.columns:
            mine = f"{message.id}.{name}"  # the message's own column, logged as ``name``
            if name in categorical:
                if name in constants:
                    cols[name] = np.full(n, constants[name], dtype=object)
                else:
                    missing.append(name)
                continue
            if is_model_output(name):
                # A previous model plan's outputs: not known before this model predicts.
                missing.append(name)
                continue
            if name == "score":
                values = base_score
            elif name.startswith("c.") and name[2:] in base_contrib:
                # Logged contributions are the base's, scaled as the blend scales them.
                values = (1.0 - self.w) * np.asarray(base_contrib[name[2:]])
            elif mine in frame:
                values = frame[mine]
                read.append(own(name))
            elif "." not in name and name in frame:
                values = frame[name]
                read.append(name)
            else:
                missing.append(name)
                continue
            cols[name] = _as_logged(values, name in _KEEP_ZERO)
        if not cols:
            cols[model.columns[0]] = np.full(n, np.nan)  # encode needs one column to know the row count
        self._read[message.id], self.missing[message.id] = read, missing
        return cols

    def score(self, frame: FeatureFrame, message: Message) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        score, contrib = self.base.score(frame, message)
        model = self.models.get(message.id)
        if model is None:
            return score, contrib
        inputs = self._model_inputs(frame, message, score, contrib)
        self._inputs[message.id] = inputs
        outcome = self.outcome(message)
        pred = model.predict(inputs, outcome)
        p_pos, uplift, p_irr = pred["p_positive_sent"], pred["uplift"], pred["p_irritation"]
        unfounded = model.uplift_unfounded(outcome)
        if unfounded:
            self.uplift_unused[message.id] = unfounded
            uplift = np.full(len(frame), np.nan)
        policy = message.policy
        if policy.irritation_cost is not None:
            cost = np.full(len(frame), float(policy.irritation_cost))
        else:
            cost = np.maximum(np.nan_to_num(np.asarray(frame["clv"], dtype=np.float64), nan=0.0), 0.0)
        ev = p_pos * message.value - p_irr * cost - policy.contact_cost
        for name, values in zip(OUTPUT_COLUMNS, (p_pos, uplift, p_irr, cost, ev)):
            frame.columns[f"{message.id}.{name}"] = np.asarray(values, dtype=np.float64)
        if self.w <= 0.0:
            return score, contrib
        blended = {k: (1.0 - self.w) * np.asarray(v) for k, v in contrib.items()}
        blended["model"] = self.w * p_pos
        return np.clip((1.0 - self.w) * score + self.w * p_pos, 0.0, 1.0), blended

    def logged(self, frame: FeatureFrame, message: Message, rows: np.ndarray) -> dict[str, Any]:
        """Extra per-decision features for ``rows`` (frame rows): the model's version, outcome and top contributions.

        Values are arrays aligned with ``rows`` (zeros are left out of the
        log), or one string for all. Called by the plan for the decisions
        whose score counted (no hard rule fired), so the cost of the
        contributions is paid only where ``why`` can show them.
        """
        model = self.models.get(message.id)
        if model is None or message.id not in self._inputs or len(rows) == 0:
            return {}
        inputs = {k: v[rows] for k, v in self._inputs[message.id].items()}
        outcome = self.outcome(message)
        used = outcome in model.uplift and message.id not in self.uplift_unused
        target, prefix = ("uplift", "u.") if used else ("p_positive_sent", "p.")
        contrib = model.contributions(inputs, outcome, target=target)
        values = np.nan_to_num(contrib["values"], nan=0.0)
        out: dict[str, Any] = {"model_version": np.full(len(rows), float(model.version)), "model_outcome": outcome}
        if message.id in self.uplift_unused:
            out["model_uplift_unused"] = np.ones(len(rows))
        if values.shape[1] > TOP:
            # Keep the TOP largest per row; the rest are left out of the log.
            cut = np.partition(np.abs(values), -TOP, axis=1)[:, -TOP][:, None]
            values = np.where(np.abs(values) >= cut, values, 0.0)
        for j, name in enumerate(contrib["columns"]):
            if values[:, j].any():
                out[f"{prefix}{name}"] = values[:, j]
        return out
