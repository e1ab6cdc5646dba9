"""the change log kept to one row per customer: an index to find a customer's rows, and the log compacted once

Every reader of ``event_changes`` takes from it the set of customers named
after its position, so a row with a later row of the same customer (or a
later ``TRUNCATE`` row, which names everyone) tells no reader anything:
``relmail.store.changes.compact`` deletes those rows as the aggregates
consume them. It looks up each customer's latest row through the index on
(customer_id, id) added here. The upgrade compacts what a store already
holds; the latest row stays, so every aggregate and columnar copy that was
current stays current.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 01:30:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_event_changes_customer_id_id', 'event_changes', ['customer_id', 'id'])
    op.execute(sa.text("DELETE FROM event_changes "
                       "WHERE id < (SELECT coalesce(max(id), 0) FROM event_changes WHERE customer_id IS NULL)"))
    op.execute(sa.text("DELETE FROM event_changes WHERE id IN (SELECT e.id FROM event_changes AS e JOIN "
                       "(SELECT customer_id, max(id) AS m FROM event_changes WHERE customer_id IS NOT NULL GROUP BY customer_id) AS l "
                       "ON e.customer_id = l.customer_id AND e.id < l.m)"))


def downgrade() -> None:
    op.drop_index('ix_event_changes_customer_id_id', table_name='event_changes')
