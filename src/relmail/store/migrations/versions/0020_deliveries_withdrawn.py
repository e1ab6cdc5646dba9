"""deliveries: 'withdrawn', the e-mails a send did not send because the customer opted out after the plan

A send re-reads consent just before each batch and does not send to a
customer who opted out, complained or hard-bounced since the plan. It
recorded those deliveries ``failed``, their reason starting ``OPTED_OUT:``
or ``SUPPRESSED:``, and every count of failed deliveries (the send's
summary, ``relmail runs``, the run report, a pipeline alerting on them)
read an opt-out honoured as a fault. They now have their own final state,
``withdrawn``; this converts the rows an earlier send recorded.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 23:45:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

# The reason prefixes the send wrote (relmail.sending.ledger.OPTED_OUT / SUPPRESSED), as LIKE patterns
# with '_' escaped; written out, since a migration must mean what it meant the day it was written.
_WITHDRAWN = "(last_error LIKE 'OPTED!_OUT:%' ESCAPE '!' OR last_error LIKE 'SUPPRESSED:%')"


def upgrade() -> None:
    op.execute(sa.text(f"UPDATE deliveries SET status = 'withdrawn' WHERE status = 'failed' AND {_WITHDRAWN}"))


def downgrade() -> None:
    # The code before knows no 'withdrawn': every such delivery goes back to what it recorded then.
    op.execute(sa.text("UPDATE deliveries SET status = 'failed' WHERE status = 'withdrawn'"))
