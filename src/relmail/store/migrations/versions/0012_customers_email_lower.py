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
from alembic import op

from relmail.store.migrations.online_index import create_index_online

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Concurrently on PostgreSQL: imports, sends and webhooks go on writing customers while it is built.
    create_index_online('ix_customers_email_lower', 'customers', 'lower(email)')


def downgrade() -> None:
    op.drop_index('ix_customers_email_lower', table_name='customers')
