"""customers found by address in any case: an index on lower(email)

An import that names people by address (a mailing tool's activity
export, an orders export, a customers file read with ``match: email``)
finds a customer whose address is stored in another case through
``lower(email)``; without this index each such look-up read every
customer.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 00:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_customers_email_lower', 'customers', [sa.text('lower(email)')])


def downgrade() -> None:
    op.drop_index('ix_customers_email_lower', table_name='customers')
