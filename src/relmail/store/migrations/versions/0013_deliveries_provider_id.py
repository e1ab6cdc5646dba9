"""deliveries found by the provider's id of the e-mail: an index for SES identity notifications

An SES bounce or complaint sent for the identity (not through a
configuration set) carries no message tags, only ``mail.messageId``, the
id SES answered the send with; the feedback looks it up in
``deliveries.provider_id``, which without this index reads the whole ledger
for every chunk of events.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 01:00:00.000000
"""
from alembic import op

from relmail.store.migrations.online_index import create_index_online

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Concurrently on PostgreSQL: sends and webhooks go on writing the ledger while it is built.
    create_index_online('ix_deliveries_provider_id', 'deliveries', 'provider_id')


def downgrade() -> None:
    op.drop_index('ix_deliveries_provider_id', table_name='deliveries')
