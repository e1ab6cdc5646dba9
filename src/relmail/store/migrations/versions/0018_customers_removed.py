"""customers.removed_at: the customers a complete export of the shop no longer lists

``relmail import customers --complete`` reads a file as every customer the
shop has. A stored customer it does not list (an account deleted or merged
in the shop) is kept, with its history, and dated here; the plan never mails
it from then on (REMOVED_FROM_SHOP). A partial index holds only those
customers: an import looks up the ones it names again without reading every
customer.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 23:35:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers') as batch:
        batch.add_column(sa.Column('removed_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_customers_removed', 'customers', ['id'], sqlite_where=sa.text('removed_at IS NOT NULL'),
                    postgresql_where=sa.text('removed_at IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_customers_removed', table_name='customers')
    with op.batch_alter_table('customers') as batch:
        batch.drop_column('removed_at')
