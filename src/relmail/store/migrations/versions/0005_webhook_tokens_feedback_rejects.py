"""webhook_tokens and feedback_rejects: replayed webhooks refused, invalid provider events kept

``webhook_tokens`` remembers the one-time tokens of webhooks whose signature
does not cover the body (Mailgun) for the replay window, so a captured
signature cannot carry other event data. ``feedback_rejects`` keeps every
provider event that could not be used (position, field, reason and the raw
event), so a file or POST with one odd event applies the others and the odd
one is not lost.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_tokens',
        sa.Column('provider', sa.String(length=32), nullable=False),
        sa.Column('token', sa.String(length=128), nullable=False),
        sa.Column('body_sha256', sa.String(length=64), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('provider', 'token'),
    )
    op.create_index('ix_webhook_tokens_expires_at', 'webhook_tokens', ['expires_at'])
    op.create_table(
        'feedback_rejects',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('provider', sa.String(length=32), nullable=False),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('line', sa.Integer(), nullable=True),
        sa.Column('field', sa.String(length=200), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('raw_event', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_feedback_rejects_received_at', 'feedback_rejects', ['received_at'])


def downgrade() -> None:
    op.drop_index('ix_feedback_rejects_received_at', table_name='feedback_rejects')
    op.drop_table('feedback_rejects')
    op.drop_index('ix_webhook_tokens_expires_at', table_name='webhook_tokens')
    op.drop_table('webhook_tokens')
