"""A small real store and a one-message campaign for the send tests."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from relmail.db import make_engine
from relmail.demo import generate

AS_OF = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
WINDOW = "2026-W48"

CAMPAIGN = """\
title: Send test
policy:
  min_relevance: 0
  holdout_share: 0
  max_messages_per_run: 1
messages:
  - id: sendtest-news
    template: newsletter
    topic: newsletter
    segments: [everyone]
    offer: loyalty
    value: 10
"""


def build(project, customers: int = 150):
    """Fill the project's store with a demo shop and add the ``sendtest`` campaign."""
    Path(project.root, "campaigns", "sendtest.yml").write_text(CAMPAIGN)
    engine = make_engine(project.database_url)
    generate(engine, customers=customers, seed=3, as_of=AS_OF)
    return engine
