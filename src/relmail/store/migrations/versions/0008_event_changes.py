"""the change log of events: what a columnar copy of the events must re-read

``event_changes`` gets a row for every event updated (only when a column
changed) or deleted, naming its customer (both, when an update moved the
event to another customer), written by triggers
on ``events`` so nothing that changes an event (a re-import, a voided order,
an erasure, a statement behind relmail's back) can pass unnoticed; on
PostgreSQL a TRUNCATE adds one row without a customer (everything changed).
``relmail.store.columnar`` reads the rows after the last one it has seen.
The meta row ``columns_token`` names this store, so a copy of another store
(a database rebuilt at the same path) is never read as this one's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 22:00:00.000000
"""
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

#: The columns whose change changes a feature (``event_id`` and ``run_id`` do not).
COLUMNS = ('id', 'customer_id', 'type', 'occurred_at', 'product_id', 'value', 'message_id', 'topic', 'feature')


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    op.create_table(
        'event_changes',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True, autoincrement=True),
        sa.Column('customer_id', sa.String(length=64), nullable=True),
        # AUTOINCREMENT: a row id is never reused, so "after the last row seen" never skips one.
        sqlite_autoincrement=True,
    )
    changed = ' OR '.join(f'OLD.{c} IS DISTINCT FROM NEW.{c}' if postgres else f'OLD.{c} IS NOT NEW.{c}' for c in COLUMNS)
    if postgres:
        op.execute(sa.text("""
            CREATE FUNCTION relmail_event_changed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'TRUNCATE' THEN
                    INSERT INTO event_changes (customer_id) VALUES (NULL);
                    RETURN NULL;
                END IF;
                INSERT INTO event_changes (customer_id) VALUES (OLD.customer_id);
                IF TG_OP = 'UPDATE' AND NEW.customer_id IS DISTINCT FROM OLD.customer_id THEN
                    INSERT INTO event_changes (customer_id) VALUES (NEW.customer_id);
                END IF;
                RETURN NULL;
            END $$"""))
        op.execute(sa.text(f"CREATE TRIGGER events_changed AFTER UPDATE ON events FOR EACH ROW WHEN ({changed}) "
                           "EXECUTE FUNCTION relmail_event_changed()"))
        op.execute(sa.text("CREATE TRIGGER events_deleted AFTER DELETE ON events FOR EACH ROW "
                           "EXECUTE FUNCTION relmail_event_changed()"))
        op.execute(sa.text("CREATE TRIGGER events_truncated AFTER TRUNCATE ON events FOR EACH STATEMENT "
                           "EXECUTE FUNCTION relmail_event_changed()"))
    else:
        op.execute(sa.text(f"""
            CREATE TRIGGER events_changed AFTER UPDATE ON events WHEN {changed}
            BEGIN
                INSERT INTO event_changes (customer_id) VALUES (OLD.customer_id);
                INSERT INTO event_changes (customer_id) SELECT NEW.customer_id WHERE NEW.customer_id IS NOT OLD.customer_id;
            END"""))
        op.execute(sa.text("""
            CREATE TRIGGER events_deleted AFTER DELETE ON events
            BEGIN
                INSERT INTO event_changes (customer_id) VALUES (OLD.customer_id);
            END"""))
    op.execute(sa.text("INSERT INTO meta (key, value) VALUES ('columns_token', :token)").bindparams(token=secrets.token_hex(8)))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM meta WHERE key = 'columns_token'"))
    op.execute(sa.text("DROP TRIGGER IF EXISTS events_deleted" + (" ON events" if op.get_bind().dialect.name == 'postgresql' else "")))
    op.execute(sa.text("DROP TRIGGER IF EXISTS events_changed" + (" ON events" if op.get_bind().dialect.name == 'postgresql' else "")))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(sa.text("DROP TRIGGER IF EXISTS events_truncated ON events"))
        op.execute(sa.text("DROP FUNCTION IF EXISTS relmail_event_changed()"))
    op.drop_table('event_changes')
