"""The score stage: relevance of a message to a customer.

:mod:`.transparent` is the weighted, explainable score every project starts
with; :mod:`.model` adds a trained model's probabilities, uplift and
expected value for the messages that have one (see :mod:`relmail.learn`).
"""

from .transparent import Scorer, TransparentScorer, make_scorer

__all__ = ["Scorer", "TransparentScorer", "make_scorer"]
