"""events: the (type, time) index also covers customer and product

Segment conditions such as "purchased in category X within 90 days" read the
matching events once through this index and keep their customers. With the
customer and product in the index that read never touches the table: on the
1M-customer demo shop "viewed a bike in the last year" takes 1.6 s instead of
66 s (a random table lookup per matching view).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 15:00:00.000000
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_events_type_time_customer', 'events', ['type', 'occurred_at', 'customer_id', 'product_id'])
    op.drop_index('ix_events_type_time', table_name='events')
    # The new index has no statistics yet; without them SQLite takes it for
    # queries the customer index serves far better (a batch of customers'
    # events read through a year of views). Seconds per million customers.
    op.execute('ANALYZE events')


def downgrade() -> None:
    op.create_index('ix_events_type_time', 'events', ['type', 'occurred_at'])
    op.drop_index('ix_events_type_time_customer', table_name='events')
