"""relmail: campaign relevance and e-mail personalisation.

The pipeline is store → features → score → rules → arbitration → render →
deliver → feedback. The ``relmail`` command line is a thin layer over this
library; the names below are its public API::

    import relmail

    project = relmail.Project.load("shop")
    engine = relmail.connect(project.database_url)
    result = relmail.plan(project, engine, "weekly", "this-week", dry_run=True)
    for e in relmail.explain(engine, "C0000007", "weekly:2026-W49")[1]:
        print(e.message_id, e.action, e.reasons)

Names are imported when first used, so ``import relmail`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name → the module that defines it.
_API = {
    "Project": "relmail.project",
    "connect": "relmail.store.db",
    "make_engine": "relmail.store.db",
    "upgrade": "relmail.store.db",
    "load_campaign": "relmail.campaigns",
    "plan": "relmail.planning.run",
    "PlanResult": "relmail.planning.run",
    "PlanOptions": "relmail.planning.run",
    "send": "relmail.sending.run",
    "SendOptions": "relmail.sending.run",
    "SendResult": "relmail.sending.loop",
    "explain": "relmail.planning.why",
    "resolve_window": "relmail.windows",
    "RelmailError": "relmail.errors",
    "ConfigError": "relmail.errors",
    "ValidationError": "relmail.errors",
    "DatabaseError": "relmail.errors",
    "NotFound": "relmail.errors",
    "Conflict": "relmail.errors",
    "DeliveryError": "relmail.errors",
    "TemplateError": "relmail.errors",
    "Problem": "relmail.errors",
}

__all__ = [
    "ConfigError", "Conflict", "DatabaseError", "DeliveryError", "NotFound", "PlanOptions", "PlanResult", "Problem", "Project",
    "RelmailError", "SendOptions", "SendResult", "TemplateError", "ValidationError", "connect", "explain", "load_campaign",
    "make_engine", "plan", "resolve_window", "send", "upgrade",
]

if TYPE_CHECKING:
    from .campaigns import load_campaign
    from .errors import (
        ConfigError,
        Conflict,
        DatabaseError,
        DeliveryError,
        NotFound,
        Problem,
        RelmailError,
        TemplateError,
        ValidationError,
    )
    from .planning.run import PlanOptions, PlanResult, plan
    from .planning.why import explain
    from .project import Project
    from .sending.loop import SendResult
    from .sending.run import SendOptions, send
    from .store.db import connect, make_engine, upgrade
    from .windows import resolve_window


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'relmail' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
