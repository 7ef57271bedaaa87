"""Situation assessment: each day's hot-spot forecast per model, kept to set the day's incidents against it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'situation_forecasts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('day', sa.String(length=10), nullable=False),
        sa.Column('model', sa.String(length=8), nullable=False),
        sa.Column('made_at_us', sa.BigInteger(), nullable=False),
        sa.Column('from_us', sa.BigInteger(), nullable=False),
        sa.Column('to_us', sa.BigInteger(), nullable=False),
        sa.Column('events', sa.Integer(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('expected', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_situation_forecasts')),
        sa.UniqueConstraint('day', 'model', name=op.f('uq_situation_forecasts_day_model')),
    )


def downgrade() -> None:
    op.drop_table('situation_forecasts')
