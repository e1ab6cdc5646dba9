"""deliveries.return_path_tagged: whether an e-mail left with a signed VERP return path

With ``[delivery.smtp] verp_required`` a bounce is applied only when it
carries its e-mail's return-path tag; an e-mail sent before verp was on,
or through another adapter, has no tag to carry, and its bounces were
listed as unverified for ever. Each claim now records whether its adapter
tags the return path. Deliveries claimed before this revision are not
known (NULL) and are treated as tagged.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 10:15:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.add_column(sa.Column('return_path_tagged', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('deliveries') as batch:
        batch.drop_column('return_path_tagged')
