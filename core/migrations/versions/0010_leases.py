"""Leases for the duties that must run once in the whole center, each with its fencing token.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 11:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'leases',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('holder', sa.String(length=128), nullable=False),
        sa.Column('token', sa.BigInteger(), nullable=False),
        sa.Column('acquired_at_us', sa.BigInteger(), nullable=False),
        sa.Column('expires_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_leases')),
    )


def downgrade() -> None:
    op.drop_table('leases')
