"""How far the backend has replayed Asterisk's channel event log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06 02:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('log_checkpoints',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('inode', sa.BigInteger(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('updated_at_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_log_checkpoints'))
    )


def downgrade() -> None:
    op.drop_table('log_checkpoints')
