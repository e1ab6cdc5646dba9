"""The learning loop: outcomes of past decisions → models → better decisions.

Public API:

* :func:`load_model` / :class:`TrainedModel` — what the plan and ``why`` use;
* :func:`train` / :class:`TrainOptions` — ``relmail model train``;
* :func:`evaluate` — ``relmail model evaluate``;
* :func:`import_history` — ``relmail runs import``;
* :func:`incrementality` — ``relmail report incrementality``;
* :func:`predict` / :func:`predict_table` — ``relmail model predict``;
* :func:`split_mask` — which customers a model's split holds back for testing;
* :func:`load_outcomes` — decisions with their outcomes, for analysis;
* :class:`UpliftEstimator` / :class:`ProbabilityModel` — what an estimator
  provides (the protocols every estimator in :mod:`.estimators` follows).

A model's test customers, as ``relmail model evaluate`` scores them::

    import relmail
    from relmail.learn import load_model, load_outcomes, split_mask
    project = relmail.Project.load("shop")
    engine = relmail.connect(project.database_url)
    model = load_model(project, "womens")
    table = load_outcomes(engine, messages=["womens"])
    seed, share = model.meta["training"]["split_seed"], model.meta["training"]["test_share"]
    test = table.subset(split_mask(table.mailbox, seed, share))
    p = model.predict(test.features, outcome="visit")

Heavy modules (scikit-learn) load on first use, so importing this package
stays cheap for the plan when no model exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .model import TrainedModel

__all__ = [
    "ProbabilityModel",
    "TrainedModel",
    "TrainOptions",
    "UpliftEstimator",
    "evaluate",
    "import_history",
    "incrementality",
    "load_model",
    "load_outcomes",
    "models_dir",
    "predict",
    "predict_table",
    "split_mask",
    "train",
]

_WHERE = {
    "TrainedModel": "model",
    "load_model": "model",
    "TrainOptions": "train",
    "train": "train",
    "evaluate": "evaluate",
    "import_history": "history",
    "incrementality": "incrementality",
    "load_outcomes": "outcomes",
    "models_dir": "store",
    "predict": "predict",
    "predict_table": "predict",
    "split_mask": "dataset",
    "UpliftEstimator": "estimators",
    "ProbabilityModel": "estimators",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
