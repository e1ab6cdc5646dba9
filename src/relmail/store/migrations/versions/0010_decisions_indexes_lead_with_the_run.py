"""decisions: every index leads with the run; a partial index of the sends

The index on ``decisions.customer_id`` alone put each new decision on
another page of an index as large as the whole ledger, so writing a plan
cost more with every week the ledger held, and a plan read every decision
of the last month's runs to find their pending sends. Now a plan's rows
land at the end of indexes that lead with the run, and the pending sends
are read from a partial index holding only the sends, by customer range.
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

SEND_ONLY = sa.text("action = 'send'")


def upgrade() -> None:
    op.drop_index('ix_decisions_customer', table_name='decisions')
    op.create_index('ix_decisions_sends', 'decisions', ['run_id', 'customer_id'],
                    sqlite_where=SEND_ONLY, postgresql_where=SEND_ONLY)


def downgrade() -> None:
    op.drop_index('ix_decisions_sends', table_name='decisions')
    op.create_index('ix_decisions_customer', 'decisions', ['customer_id'])
