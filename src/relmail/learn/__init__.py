"""The learning loop: outcomes of past decisions → models → better decisions.

Public API:

* :func:`load_model` / :class:`TrainedModel` — what the plan and ``why`` use;
* :func:`train` / :class:`TrainOptions` — ``relmail model train``;
* :func:`evaluate` — ``relmail model evaluate``;
* :func:`import_history` — ``relmail runs import``;
* :func:`incrementality` — ``relmail report incrementality``;
* :func:`load_outcomes` — decisions with their outcomes, for analysis.

Heavy modules (scikit-learn) load on first use, so importing this package
stays cheap for the plan when no model exists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .model import TrainedModel

__all__ = [
    "TrainedModel",
    "TrainOptions",
    "evaluate",
    "import_history",
    "incrementality",
    "load_model",
    "load_outcomes",
    "models_dir",
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
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
