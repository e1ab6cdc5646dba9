"""customers and products as shop exports bring them

* ``customers.created_at`` may be unknown (a Shopify customers export has no
  sign-up date): NULL, and the features date the customer from the first
  order instead, never from the import.
* ``customers.email_valid``: an address that is not a valid address is
  imported and flagged (the INVALID_ADDRESS rule never mails it) instead of
  refusing the whole file.
* ``products.image_url`` and ``products.attributes`` (any further columns of
  a catalogue export, like a customer's attributes).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 09:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.alter_column('created_at', existing_type=sa.DateTime(timezone=True), nullable=True)
        batch_op.add_column(sa.Column('email_valid', sa.Boolean(), nullable=False, server_default=sa.true()))
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_url', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('attributes', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.drop_column('attributes')
        batch_op.drop_column('image_url')
    # Customers without a sign-up date get the oldest one a store can hold back, not a made-up recent one.
    op.execute(sa.text("UPDATE customers SET created_at = '1970-01-01 00:00:00' WHERE created_at IS NULL"))
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_column('email_valid')
        batch_op.alter_column('created_at', existing_type=sa.DateTime(timezone=True), nullable=False)
