"""deliveries: the claim reads (run_id, status) in id order

A sender claims the next batch with ``WHERE run_id = ? AND status = ?
ORDER BY id LIMIT n``. With ``id`` as the index's last column that is a
read of n index entries; with (run_id, status) alone PostgreSQL sorts every
matching delivery of the run for every batch (SQLite keeps the rowid in
each index entry, so only the claim's form mattered there).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:00:00.000000
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_deliveries_run_status_id', 'deliveries', ['run_id', 'status', 'id'])
    op.drop_index('ix_deliveries_status', table_name='deliveries')


def downgrade() -> None:
    op.create_index('ix_deliveries_status', 'deliveries', ['run_id', 'status'])
    op.drop_index('ix_deliveries_run_status_id', table_name='deliveries')
