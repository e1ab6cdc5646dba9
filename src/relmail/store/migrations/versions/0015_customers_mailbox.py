"""customers found by mailbox: an index on lower(trim(email))

A plan reads what one mailbox said or received under every customer id
with its address (relmail.planning.shared_mailbox), and ``relmail send``
checks those ids again just before each batch. Both find the customers of a
mailbox by the address trimmed and lower-cased; without this index each
such look-up read every customer.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_customers_mailbox', 'customers', [sa.text('lower(trim(email))')])


def downgrade() -> None:
    op.drop_index('ix_customers_mailbox', table_name='customers')
