"""deliveries.answer: the provider's answer, written the moment it arrives

The send recorded answers a batch at a time, so a sender killed mid-batch
left every e-mail of the batch that had passed its point of no return
``committing``, and recovery settled them all as delivered without a reply:
a deferral was never retried, a refused address never suppressed. Each
answer is now written as it arrives, while its delivery is still
``committing``, and recovery settles by it.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 19:50:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.add_column(sa.Column('answer', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_column('answer')
