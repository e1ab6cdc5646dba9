"""The peers relmail is judged against, fitted on the same training rows and scored on the same test rows.

scikit-uplift's textbook learners (Shevchenko et al., scikit-uplift 0.5):

* ``TwoModels`` (``method="vanilla"``): one classifier on sends, one on
  hold-outs; uplift is the difference (the T-learner);
* ``ClassTransformation``: Jaskowski & Jaroszewicz's class variable
  ``Z = y t + (1 - y)(1 - t)``, uplift ``2 P(Z = 1 | x) - 1``;
* ``SoloModel`` (``method="dummy"``): one classifier with the sent flag as
  a feature; uplift is the difference of its two predictions (Lo's model
  without interaction terms);

each on a logistic regression and on gradient boosting (scikit-learn's
``HistGradientBoostingClassifier`` with its defaults), behind the textbook
preprocessing (numbers imputed and scaled, categories one-hot encoded).
And the **response model**: a logistic regression on sends only, ranking
by ``P(outcome | sent)`` — what a marketer without hold-outs would do.

scikit-uplift and matplotlib are the ``bench`` extra (``pip install -e
'.[bench]'``), never dependencies of relmail itself.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from relmail.learn.bases import Layout

try:
    from sklift.models import ClassTransformation, SoloModel, TwoModels
except ImportError as exc:  # pragma: no cover - the message is the point
    raise SystemExit("the peers need scikit-uplift: pip install -e '.[bench]'") from exc

BASES = {"logistic": lambda seed: LogisticRegression(max_iter=2000), "gb": lambda seed: HistGradientBoostingClassifier(random_state=seed)}
LEARNERS = ("two_models", "class_transformation", "solo_model")
#: Every peer's name, as the tables print it.
PEERS = tuple(f"{learner}/{base}" for learner in LEARNERS for base in BASES)


def _learner(name: str, base: str, seed: int):
    make = BASES[base]
    if name == "two_models":
        return TwoModels(estimator_trmnt=make(seed), estimator_ctrl=make(seed), method="vanilla")
    if name == "class_transformation":
        return ClassTransformation(estimator=make(seed))
    return SoloModel(estimator=make(seed), method="dummy")


def peer_scores(layout: Layout, X_fit: np.ndarray, y: np.ndarray, t: np.ndarray, X_score: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Uplift scores of every peer and the response model's ``P(outcome | sent)`` (key ``response``) on ``X_score``."""
    prep = layout.preprocessor(curves=False).fit(X_fit)
    Z_fit, Z_score = _dense(prep.transform(X_fit)), _dense(prep.transform(X_score))
    y, t = np.asarray(y, dtype=int), np.asarray(t, dtype=int)
    out = {}
    with warnings.catch_warnings():
        # ClassTransformation warns unless sends and hold-outs are exactly balanced.
        warnings.simplefilter("ignore")
        for learner in LEARNERS:
            for base in BASES:
                model = _learner(learner, base, seed).fit(Z_fit, y, t)
                out[f"{learner}/{base}"] = np.asarray(model.predict(Z_score), dtype=float).ravel()
    sent = t == 1
    out["response"] = LogisticRegression(max_iter=2000).fit(Z_fit[sent], y[sent]).predict_proba(Z_score)[:, 1]
    return out


def _dense(Z) -> np.ndarray:
    return Z.toarray() if hasattr(Z, "toarray") else np.asarray(Z, dtype=float)
