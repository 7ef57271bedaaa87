"""Surge posture and declared major incidents kept across restarts: every posture change, every declaration.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'posture_changes',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('mode', sa.String(length=16), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=True),
        sa.Column('reason', sa.String(length=255), nullable=False),
        sa.Column('by', sa.String(length=64), nullable=True),
        sa.Column('at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_posture_changes')),
    )
    op.create_table(
        'major_incidents',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('ticket_number', sa.String(length=32), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('address', sa.String(length=255), nullable=True),
        sa.Column('lat', sa.Float(), nullable=True),
        sa.Column('lon', sa.Float(), nullable=True),
        sa.Column('reason', sa.String(length=255), nullable=False),
        sa.Column('declared_by', sa.String(length=64), nullable=False),
        sa.Column('declared_at_us', sa.BigInteger(), nullable=False),
        sa.Column('message_sha256', sa.CHAR(length=64), nullable=True),
        sa.Column('ended_by', sa.String(length=64), nullable=True),
        sa.Column('ended_at_us', sa.BigInteger(), nullable=True),
        sa.Column('end_reason', sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_major_incidents')),
    )
    with op.batch_alter_table('major_incidents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_major_incidents_ended_at_us'), ['ended_at_us'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('major_incidents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_major_incidents_ended_at_us'))
    op.drop_table('major_incidents')
    op.drop_table('posture_changes')
