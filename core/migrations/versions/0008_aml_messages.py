"""Handset location (AML): every AML message that came in, with its verdict and the ticket it was bound to.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-07 16:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'aml_messages',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('received_at_us', sa.BigInteger(), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('msisdn', sa.String(length=32), nullable=True),
        sa.Column('raw', sa.String(length=2000), nullable=False),
        sa.Column('verdict', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.String(length=32), nullable=True),
        sa.Column('error', sa.String(length=500), nullable=True),
        sa.Column('ticket_number', sa.String(length=32), nullable=True),
        sa.Column('lat', sa.Float(), nullable=True),
        sa.Column('lon', sa.Float(), nullable=True),
        sa.Column('radius_m', sa.Float(), nullable=True),
        sa.Column('method', sa.String(length=16), nullable=True),
        sa.Column('positioned_at_us', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_aml_messages')),
    )
    with op.batch_alter_table('aml_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aml_messages_received_at_us'), ['received_at_us'], unique=False)
        batch_op.create_index(batch_op.f('ix_aml_messages_ticket_number'), ['ticket_number'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('aml_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aml_messages_ticket_number'))
        batch_op.drop_index(batch_op.f('ix_aml_messages_received_at_us'))
    op.drop_table('aml_messages')
