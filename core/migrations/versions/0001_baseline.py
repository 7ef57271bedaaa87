"""Baseline: the schema of the releases before the migrations, as their ``create_all`` made it.

Revision ID: 0001
Revises:
Create Date: 2026-12-05 15:15:07.799973

Written by ``alembic revision --autogenerate`` against an empty database, then reviewed: every table,
constraint name and index as the previous release (7fd36c7) creates them on SQLite and PostgreSQL
(``tests/fixtures/schema_7fd36c7.*.sql``). It stays as it is when the models change: changes are later
revisions. An unversioned database of that release is compared with what this revision creates and
recorded as being at it (``core.migrate``), so this revision may only create tables and indexes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('alerts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('ref', sa.String(length=255), nullable=False),
        sa.Column('message', sa.Text(), nullable=False),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('resolved_at_us', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts')),
        sa.UniqueConstraint('kind', 'ref', name=op.f('uq_alerts_kind_ref'))
    )

    op.create_table('audit_log',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at_us', sa.BigInteger(), nullable=False),
        sa.Column('who', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=True),
        sa.Column('method', sa.String(length=8), nullable=False),
        sa.Column('path', sa.String(length=255), nullable=False),
        sa.Column('status', sa.Integer(), nullable=False),
        sa.Column('body_sha256', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_index(op.f('ix_audit_log_at_us'), 'audit_log', ['at_us'])

    op.create_table('danger_warnings',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('cell', sa.String(length=16), nullable=True),
        sa.Column('address', sa.String(length=500), nullable=True),
        sa.Column('phone', sa.String(length=32), nullable=True),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('created_by', sa.String(length=255), nullable=False),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_danger_warnings'))
    )
    op.create_index('ix_danger_warnings_address', 'danger_warnings', ['address'])
    op.create_index('ix_danger_warnings_cell', 'danger_warnings', ['cell'])
    op.create_index('ix_danger_warnings_phone', 'danger_warnings', ['phone'])

    op.create_table('follow_ups',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('ticket_number', sa.String(length=32), nullable=False),
        sa.Column('origin', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('station', sa.String(length=255), nullable=True),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('deadline_us', sa.BigInteger(), nullable=False),
        sa.Column('answer', sa.Text(), nullable=True),
        sa.Column('answered_by', sa.String(length=255), nullable=True),
        sa.Column('answered_at_us', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_follow_ups'))
    )
    op.create_index(op.f('ix_follow_ups_deadline_us'), 'follow_ups', ['deadline_us'])
    op.create_index(op.f('ix_follow_ups_ticket_number'), 'follow_ups', ['ticket_number'])

    op.create_table('journal_entries',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('ref_id', sa.BigInteger(), nullable=True),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('prev_hash', sa.CHAR(length=64), nullable=False),
        sa.Column('hash', sa.CHAR(length=64), nullable=False),
        sa.Column('at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('seq', name=op.f('pk_journal_entries')),
        sa.UniqueConstraint('kind', 'ref_id', name=op.f('uq_journal_entries_kind_ref_id')),
        sa.UniqueConstraint('prev_hash', name=op.f('uq_journal_entries_prev_hash'))
    )

    op.create_table('outbox_messages',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('idempotency_key', sa.String(length=128), nullable=False),
        sa.Column('kind', sa.String(length=32), nullable=False),
        sa.Column('ticket_number', sa.String(length=32), nullable=True),
        sa.Column('to', sa.String(length=64), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('tag', sa.String(length=16), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at_us', sa.BigInteger(), nullable=False),
        sa.Column('provider_id', sa.String(length=64), nullable=True),
        sa.Column('last_error', sa.String(length=255), nullable=True),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('sent_at_us', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages')),
        sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_messages_idempotency_key')),
        sa.UniqueConstraint('tag', name=op.f('uq_outbox_messages_tag'))
    )
    op.create_index(op.f('ix_outbox_messages_next_attempt_at_us'), 'outbox_messages', ['next_attempt_at_us'])
    op.create_index(op.f('ix_outbox_messages_state'), 'outbox_messages', ['state'])
    op.create_index(op.f('ix_outbox_messages_ticket_number'), 'outbox_messages', ['ticket_number'])

    op.create_table('prank_numbers',
        sa.Column('phone', sa.String(length=32), nullable=False),
        sa.Column('reason', sa.String(length=500), nullable=False),
        sa.Column('added_by', sa.String(length=255), nullable=False),
        sa.Column('added_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('phone', name=op.f('pk_prank_numbers'))
    )

    op.create_table('seat_pauses',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('seat', sa.String(length=64), nullable=False),
        sa.Column('reason', sa.String(length=100), nullable=False),
        sa.Column('by', sa.String(length=64), nullable=True),
        sa.Column('started_at_us', sa.BigInteger(), nullable=False),
        sa.Column('ended_at_us', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_seat_pauses'))
    )
    op.create_index(op.f('ix_seat_pauses_seat'), 'seat_pauses', ['seat'])
    op.create_index(op.f('ix_seat_pauses_started_at_us'), 'seat_pauses', ['started_at_us'])

    op.create_table('spot_check_draws',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('day', sa.String(length=8), nullable=False),
        sa.Column('seed', sa.BigInteger(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
        sa.Column('population', sa.Integer(), nullable=False),
        sa.Column('population_sha256', sa.CHAR(length=64), nullable=False),
        sa.Column('drawn_by', sa.String(length=255), nullable=False),
        sa.Column('drawn_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_spot_check_draws')),
        sa.UniqueConstraint('day', name=op.f('uq_spot_check_draws_day'))
    )

    op.create_table('spot_check_items',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('draw_id', sa.BigInteger(), nullable=False),
        sa.Column('ticket_number', sa.String(length=32), nullable=False),
        sa.Column('shift', sa.String(length=16), nullable=False),
        sa.Column('seat', sa.String(length=255), nullable=False),
        sa.Column('station', sa.String(length=255), nullable=True),
        sa.Column('scores', sa.JSON(), nullable=True),
        sa.Column('total', sa.Double(), nullable=True),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('scored_by', sa.String(length=255), nullable=True),
        sa.Column('scored_at_us', sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_spot_check_items')),
        sa.UniqueConstraint('draw_id', 'ticket_number', name=op.f('uq_spot_check_items_draw_id_ticket_number'))
    )
    op.create_index(op.f('ix_spot_check_items_draw_id'), 'spot_check_items', ['draw_id'])

    op.create_table('spot_check_reports',
        sa.Column('day', sa.String(length=8), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('published_by', sa.String(length=255), nullable=False),
        sa.Column('published_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('day', name=op.f('pk_spot_check_reports'))
    )

    op.create_table('stations',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('bureau', sa.String(length=255), nullable=False),
        sa.Column('duty_desk', sa.String(length=128), nullable=True),
        sa.Column('superior', sa.String(length=128), nullable=True),
        sa.Column('answer_timeout_s', sa.Float(), nullable=False),
        sa.Column('ladder', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_stations'))
    )

    op.create_table('survey_responses',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('ticket_number', sa.String(length=32), nullable=False),
        sa.Column('message_sid', sa.String(length=64), nullable=False),
        sa.Column('day', sa.String(length=8), nullable=False),
        sa.Column('seat', sa.String(length=255), nullable=True),
        sa.Column('station', sa.String(length=255), nullable=True),
        sa.Column('intake_rating', sa.Integer(), nullable=True),
        sa.Column('officer_rating', sa.Integer(), nullable=True),
        sa.Column('complaint', sa.Boolean(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('received_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_survey_responses')),
        sa.UniqueConstraint('message_sid', name=op.f('uq_survey_responses_message_sid')),
        sa.UniqueConstraint('ticket_number', name=op.f('uq_survey_responses_ticket_number'))
    )
    op.create_index(op.f('ix_survey_responses_day'), 'survey_responses', ['day'])

    op.create_table('ticket_counters',
        sa.Column('day', sa.String(length=8), nullable=False),
        sa.Column('last', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', name=op.f('pk_ticket_counters'))
    )

    op.create_table('ticket_daily_counts',
        sa.Column('day_us', sa.BigInteger(), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=False),
        sa.Column('station', sa.String(length=32), nullable=False),
        sa.Column('h00', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h01', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h02', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h03', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h04', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h05', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h06', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h07', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h08', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h09', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h10', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h11', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h12', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h13', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h14', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h15', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h16', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h17', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h18', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h19', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h20', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h21', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h22', sa.Integer(), server_default='0', nullable=False),
        sa.Column('h23', sa.Integer(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('day_us', 'type', 'station', name=op.f('pk_ticket_daily_counts')),
        sqlite_with_rowid=False
    )

    op.create_table('ticket_pushes',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('target', sa.String(length=32), nullable=False),
        sa.Column('url', sa.String(length=1000), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_at_us', sa.BigInteger(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('sent_at_us', sa.BigInteger(), nullable=True),
        sa.Column('answer', sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ticket_pushes'))
    )
    op.create_index(op.f('ix_ticket_pushes_number'), 'ticket_pushes', ['number'])
    op.create_index('ix_ticket_pushes_state_next', 'ticket_pushes', ['state', 'next_at_us'])

    op.create_table('tickets',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('uniqueid', sa.String(length=150), nullable=False),
        sa.Column('caller_id', sa.String(length=255), nullable=False),
        sa.Column('caller_name', sa.String(length=255), nullable=True),
        sa.Column('state', sa.String(length=32), nullable=False),
        sa.Column('queue', sa.String(length=255), nullable=True),
        sa.Column('priority', sa.Integer(), nullable=True),
        sa.Column('seat', sa.String(length=255), nullable=True),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('updated_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets')),
        sa.UniqueConstraint('number', name=op.f('uq_tickets_number')),
        sa.UniqueConstraint('uniqueid', name=op.f('uq_tickets_uniqueid'))
    )
    op.create_index('ix_tickets_caller_created', 'tickets', ['caller_id', 'created_at_us'])
    op.create_index(op.f('ix_tickets_created_at_us'), 'tickets', ['created_at_us'])
    op.create_index(op.f('ix_tickets_state'), 'tickets', ['state'])
    op.create_index('ix_tickets_state_created', 'tickets', ['state', 'created_at_us'])

    op.create_table('users',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('username', sa.String(length=64), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('station_id', sa.String(length=32), nullable=True),
        sa.Column('password_hash', sa.String(length=255), nullable=False),
        sa.Column('disabled', sa.Boolean(), nullable=False),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
        sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )

    op.create_table('webhook_receipts',
        sa.Column('message_sid', sa.String(length=64), nullable=False),
        sa.Column('received_at_us', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('message_sid', name=op.f('pk_webhook_receipts'))
    )

    op.create_table('auth_tokens',
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('expires_at_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_auth_tokens_user_id_users')),
        sa.PrimaryKeyConstraint('token_sha256', name=op.f('pk_auth_tokens'))
    )
    op.create_index(op.f('ix_auth_tokens_expires_at_us'), 'auth_tokens', ['expires_at_us'])
    op.create_index(op.f('ix_auth_tokens_user_id'), 'auth_tokens', ['user_id'])

    op.create_table('cell_stations',
        sa.Column('cell', sa.String(length=16), nullable=False),
        sa.Column('station_id', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['station_id'], ['stations.id'], name=op.f('fk_cell_stations_station_id_stations')),
        sa.PrimaryKeyConstraint('cell', name=op.f('pk_cell_stations'))
    )
    op.create_index(op.f('ix_cell_stations_station_id'), 'cell_stations', ['station_id'])

    op.create_table('incidents',
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('address', sa.String(length=500), nullable=True),
        sa.Column('lat', sa.Float(), nullable=False),
        sa.Column('lon', sa.Float(), nullable=False),
        sa.Column('cell', sa.String(length=16), nullable=False),
        sa.Column('station_id', sa.String(length=32), nullable=True),
        sa.Column('located_at_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['number'], ['tickets.number'], name=op.f('fk_incidents_number_tickets')),
        sa.PrimaryKeyConstraint('number', name=op.f('pk_incidents'))
    )
    op.create_index('ix_incidents_address', 'incidents', ['address'])
    op.create_index('ix_incidents_cell_located', 'incidents', ['cell', 'located_at_us'])
    op.create_index(op.f('ix_incidents_station_id'), 'incidents', ['station_id'])

    op.create_table('officers',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('badge', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('station_id', sa.String(length=32), nullable=False),
        sa.Column('endpoint', sa.String(length=128), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('status_changed_at_us', sa.BigInteger(), nullable=False),
        sa.Column('ticket', sa.String(length=32), nullable=True),
        sa.Column('lat', sa.Float(), nullable=True),
        sa.Column('lon', sa.Float(), nullable=True),
        sa.Column('cell', sa.String(length=16), nullable=True),
        sa.Column('located_at_us', sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(['station_id'], ['stations.id'], name=op.f('fk_officers_station_id_stations')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_officers')),
        sa.UniqueConstraint('badge', name=op.f('uq_officers_badge'))
    )
    op.create_index(op.f('ix_officers_station_id'), 'officers', ['station_id'])
    op.create_index('ix_officers_status_cell', 'officers', ['status', 'cell'])
    op.create_index(op.f('ix_officers_ticket'), 'officers', ['ticket'])

    op.create_table('recordings',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('path', sa.String(length=1024), nullable=False),
        sa.Column('duration_s', sa.Float(), nullable=True),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('sha256', sa.CHAR(length=64), nullable=False),
        sa.Column('bound_at_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_recordings_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_recordings')),
        sa.UniqueConstraint('ticket_id', 'path', name=op.f('uq_recordings_ticket_id_path'))
    )

    op.create_table('ticket_links',
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('linked_to', sa.String(length=32), nullable=False),
        sa.Column('linked_at_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['number'], ['tickets.number'], name=op.f('fk_ticket_links_number_tickets')),
        sa.PrimaryKeyConstraint('number', name=op.f('pk_ticket_links'))
    )
    op.create_index(op.f('ix_ticket_links_linked_to'), 'ticket_links', ['linked_to'])

    op.create_table('ticket_steps',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('ticket_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('step', sa.String(length=32), nullable=False),
        sa.Column('state_after', sa.String(length=32), nullable=False),
        sa.Column('at_us', sa.BigInteger(), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('detail', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_ticket_steps_ticket_id_tickets')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ticket_steps')),
        sa.UniqueConstraint('ticket_id', 'seq', name=op.f('uq_ticket_steps_ticket_id_seq'))
    )

    op.create_table('ticket_triage',
        sa.Column('number', sa.String(length=32), nullable=False),
        sa.Column('created_at_us', sa.BigInteger(), nullable=False),
        sa.Column('type', sa.String(length=32), nullable=True),
        sa.Column('priority', sa.Integer(), nullable=True),
        sa.Column('station_id', sa.String(length=32), nullable=True),
        sa.Column('cell', sa.String(length=16), nullable=True),
        sa.Column('updated_at_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['number'], ['tickets.number'], name=op.f('fk_ticket_triage_number_tickets')),
        sa.PrimaryKeyConstraint('number', name=op.f('pk_ticket_triage'))
    )
    op.create_index('ix_ticket_triage_cell_created', 'ticket_triage', ['cell', 'created_at_us'])
    op.create_index('ix_ticket_triage_created_type_station', 'ticket_triage', ['created_at_us', 'type', 'station_id'])
    op.create_index('ix_ticket_triage_priority_created', 'ticket_triage', ['priority', 'created_at_us'])
    op.create_index('ix_ticket_triage_station_created', 'ticket_triage', ['station_id', 'created_at_us'])
    op.create_index('ix_ticket_triage_type_created', 'ticket_triage', ['type', 'created_at_us'])
    op.create_index('ix_ticket_triage_type_priority', 'ticket_triage', ['type', 'priority', 'created_at_us'])

    op.create_table('roster_shifts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('officer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('start_us', sa.BigInteger(), nullable=False),
        sa.Column('end_us', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['officer_id'], ['officers.id'], name=op.f('fk_roster_shifts_officer_id_officers')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_roster_shifts'))
    )
    op.create_index(op.f('ix_roster_shifts_officer_id'), 'roster_shifts', ['officer_id'])


def downgrade() -> None:
    # Back to an empty database: every table goes, with its rows.
    op.drop_table('roster_shifts')
    op.drop_table('ticket_triage')
    op.drop_table('ticket_steps')
    op.drop_table('ticket_links')
    op.drop_table('recordings')
    op.drop_table('officers')
    op.drop_table('incidents')
    op.drop_table('cell_stations')
    op.drop_table('auth_tokens')
    op.drop_table('webhook_receipts')
    op.drop_table('users')
    op.drop_table('tickets')
    op.drop_table('ticket_pushes')
    op.drop_table('ticket_daily_counts')
    op.drop_table('ticket_counters')
    op.drop_table('survey_responses')
    op.drop_table('stations')
    op.drop_table('spot_check_reports')
    op.drop_table('spot_check_items')
    op.drop_table('spot_check_draws')
    op.drop_table('seat_pauses')
    op.drop_table('prank_numbers')
    op.drop_table('outbox_messages')
    op.drop_table('journal_entries')
    op.drop_table('follow_ups')
    op.drop_table('danger_warnings')
    op.drop_table('audit_log')
    op.drop_table('alerts')
