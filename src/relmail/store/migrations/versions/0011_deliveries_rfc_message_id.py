"""deliveries found by their Message-ID: an index for matching bounces to the e-mail they answer

A delivery status notification returns the headers of the e-mail that
bounced; ``relmail feedback bounces`` looks its Message-ID up in
``deliveries.rfc_message_id``, which without this index reads the whole
ledger for every chunk of bounces.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 07:00:00.000000
"""
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_deliveries_rfc_message_id', 'deliveries', ['rfc_message_id'])


def downgrade() -> None:
    op.drop_index('ix_deliveries_rfc_message_id', table_name='deliveries')
