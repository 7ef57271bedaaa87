"""Alerts are acknowledged and resolved by someone, with what was done.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('acknowledged_at_us', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('acknowledged_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('resolved_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('resolution', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_column('resolution')
        batch_op.drop_column('resolved_by')
        batch_op.drop_column('acknowledged_by')
        batch_op.drop_column('acknowledged_at_us')
