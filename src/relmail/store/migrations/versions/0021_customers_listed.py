"""customers.listed_at: when a complete customers export of the shop first listed the customer

A store holds people the shop's customers export never lists: a newsletter
form's subscribers, a mailing list's members. A complete export removes only
customers a complete export listed before (after the first one), so those
people are not taken for accounts the shop deleted. Set once, by the first
complete export that lists the customer; no index: the complete import
reads it once, in the statement that removes the customers it does not list.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-08 00:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('listed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('listed_at')
