"""Reporters' status links (the SMS link to a dispatched ticket's live status); the accuracy of officers' fixes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'status_links',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('token_sha256', sa.CHAR(length=64), nullable=False),
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('phone', sa.String(length=32), nullable=False),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_status_links')),
        sa.UniqueConstraint('token_sha256', name=op.f('uq_status_links_token_sha256')),
        sa.UniqueConstraint('number', name=op.f('uq_status_links_number')),
    )
    with op.batch_alter_table('officers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('accuracy_m', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('officers', schema=None) as batch_op:
        batch_op.drop_column('accuracy_m')
    op.drop_table('status_links')
