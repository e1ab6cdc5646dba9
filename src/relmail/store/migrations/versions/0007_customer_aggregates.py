"""per-customer aggregates of the events: the feature store

``customer_totals`` (purchases, money, first and last purchase, last open
and click), ``customer_products`` (purchases per product) and
``customer_messages`` (the last send of each message) hold what the features
read over a customer's whole history, kept exact by the writers of events
(``relmail.store.aggregates``). The tables start empty and without the
``feature_store`` meta row: ``relmail db upgrade`` builds them from the
events right after this migration, and until then plans read raw events.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 23:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'customer_totals',
        sa.Column('customer_id', sa.String(length=64), nullable=False),
        sa.Column('purchases', sa.Integer(), nullable=False),
        sa.Column('spend', sa.Float(), nullable=True),
        sa.Column('first_purchase_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_purchase_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_open_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_click_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('customer_id'),
    )
    op.create_table(
        'customer_products',
        sa.Column('customer_id', sa.String(length=64), nullable=False),
        sa.Column('product_id', sa.String(length=64), nullable=False),
        sa.Column('purchases', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('customer_id', 'product_id'),
    )
    op.create_table(
        'customer_messages',
        sa.Column('customer_id', sa.String(length=64), nullable=False),
        sa.Column('message_id', sa.String(length=100), nullable=False),
        sa.Column('last_sent_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('customer_id', 'message_id'),
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM meta WHERE key = 'feature_store'"))
    op.drop_table('customer_messages')
    op.drop_table('customer_products')
    op.drop_table('customer_totals')
