"""products.sale_price, sale_starts_at, sale_ends_at: a sale and when it runs

A shop's export says a product's sale price and the days it runs
(WooCommerce), or the price to strike through (Shopify's compare-at price).
Kept in columns, not attributes: a re-import replaces them (attributes
merge, so a sale the shop ended would linger), and the catalogue prices each
product as of the moment its e-mail is rendered.

The WooCommerce mapping used to keep the sale price, without its dates, as
``attributes.sale_price``; it is taken out, or it would stay after the
shop's next export (attributes merge): the next import fills the columns.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 23:40:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('products') as batch:
        batch.add_column(sa.Column('sale_price', sa.Float(), nullable=True))
        batch.add_column(sa.Column('sale_starts_at', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('sale_ends_at', sa.DateTime(timezone=True), nullable=True))
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("UPDATE products SET attributes = (attributes::jsonb - 'sale_price')::json "
                   "WHERE (attributes::jsonb) ? 'sale_price'")
    else:
        op.execute("UPDATE products SET attributes = json_remove(attributes, '$.sale_price') "
                   "WHERE json_extract(attributes, '$.sale_price') IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('products') as batch:
        batch.drop_column('sale_ends_at')
        batch.drop_column('sale_starts_at')
        batch.drop_column('sale_price')
