"""decisions: every index leads with the run; a partial index of the sends and hold-outs

The index on ``decisions.customer_id`` alone put each new decision on
another page of an index as large as the whole ledger, so writing a plan
cost more with every week the ledger held, and a plan read every decision
of the last month's runs to find their pending sends. Now a plan's rows
land at the end of indexes that lead with the run, and the pending sends
are read from a partial index holding only the sends and hold-outs (a
tenth of the rows), by customer range; ``relmail runs list`` counts each
run's actions from the indexes.
A customer's decisions (``relmail why``, export, erasure) are found run by
run through the unique (run, customer, message) index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 07:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

NOT_SUPPRESSED = sa.text("action IN ('send', 'holdout')")


def upgrade() -> None:
    op.drop_index('ix_decisions_customer', table_name='decisions')
    op.create_index('ix_decisions_not_suppressed', 'decisions', ['run_id', 'action', 'customer_id'],
                    sqlite_where=NOT_SUPPRESSED, postgresql_where=NOT_SUPPRESSED)


def downgrade() -> None:
    op.drop_index('ix_decisions_not_suppressed', table_name='decisions')
    op.create_index('ix_decisions_customer', 'decisions', ['customer_id'])
