"""consent_changes: every change of a preference row with where it came from

``preferences`` keeps one row per (customer, topic), overwritten by each
change, with a coarse ``source``. ``relmail why`` must say when and from
where an opt-out came (which file was imported, which provider event, the
one-click unsubscribe or the confirmation page), so every writer of
preferences also appends a row here. Changes made before this revision are
not known: their explanations say "source not recorded".

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 01:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'consent_changes',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('customer_id', sa.String(length=64), nullable=False),
        sa.Column('topic', sa.String(length=100), nullable=False),
        sa.Column('opted_in', sa.Boolean(), nullable=False),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('source', sa.String(length=100), nullable=False),
        sa.Column('detail', sa.String(length=300), nullable=True),
        sa.Column('event_id', sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_consent_changes_customer_topic', 'consent_changes', ['customer_id', 'topic', 'id'])


def downgrade() -> None:
    op.drop_index('ix_consent_changes_customer_topic', table_name='consent_changes')
    op.drop_table('consent_changes')
