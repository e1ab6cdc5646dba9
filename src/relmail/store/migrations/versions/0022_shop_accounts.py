"""shop_accounts: a shop's account number and the customer its orders named by address

An order export carries the shop's account number (WooCommerce's
customer_id) and the billing address the order was placed with; the
customers export lists the account's latest address. An old order whose
address no customer has any more is its account's customer, which the
import found through another order of the same account in the same file.
A weekly import of last week's orders has the account's other orders in
earlier files: the link is now kept here, per source (the mapping that read
the number), so a later file finds it.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08 00:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'shop_accounts',
        sa.Column('source', sa.String(length=100), nullable=False),
        sa.Column('account', sa.String(length=100), nullable=False),
        sa.Column('customer_id', sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint('source', 'account', 'customer_id'),
    )
    op.create_index('ix_shop_accounts_customer', 'shop_accounts', ['customer_id'])


def downgrade() -> None:
    op.drop_index('ix_shop_accounts_customer', table_name='shop_accounts')
    op.drop_table('shop_accounts')
