"""A database made by the release before the migrations (7fd36c7), with rows in it, for the upgrade tests.

The schema is that release's real DDL, dumped once from a database its ``jiejing serve`` start-up
(``create_all``) had made: ``tests/fixtures/schema_7fd36c7.sqlite.sql`` (SQLite's ``.schema``) and
``tests/fixtures/schema_7fd36c7.postgresql.sql`` (``pg_dump --schema-only``). ``tests/fixtures/dump_schema.py``
made them, and says how to make them again. The rows are written as plain SQL against that release's
columns, so later models do not change what the test puts in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SQLITE_DDL = FIXTURES / "schema_7fd36c7.sqlite.sql"
POSTGRESQL_DDL = FIXTURES / "schema_7fd36c7.postgresql.sql"

T = 1_795_951_800_000_000  # 2026-11-29 11:30:00 UTC in microseconds
HASH_A, HASH_B, HASH_C = "a" * 64, "b" * 64, "c" * 64

# Rows a center running that release has: tickets with steps, recordings, incidents and query copies,
# users with a token, journal entries, stations, officers and their shifts, alerts, SMS, counts.
ROWS = [
    "INSERT INTO stations (id, name, bureau, duty_desk, superior, answer_timeout_s, ladder) VALUES "
    "('S01', '东城派出所', '东城分局', 'PJSIP/desk-s01', 'PJSIP/sup-s01', 20.0, '[\"officer\", \"desk\"]')",
    "INSERT INTO cell_stations (cell, station_id) VALUES ('8a31aa5a1a57fff', 'S01')",
    "INSERT INTO officers (id, badge, name, station_id, endpoint, status, status_changed_at_us, ticket, lat, lon, "
    "cell, located_at_us) VALUES (1, '010001', '王警官', 'S01', 'PJSIP/officer-1', 'on_duty', "
    f"{T}, NULL, 39.91, 116.40, '8a31aa5a1a57fff', {T})",
    f"INSERT INTO roster_shifts (id, officer_id, start_us, end_us) VALUES (1, 1, {T}, {T + 8 * 3600 * 10**6})",
    "INSERT INTO tickets (id, number, uniqueid, caller_id, caller_name, state, queue, priority, seat, created_at_us, "
    f"updated_at_us) VALUES (1, '110-20261129-000001', '1795951800.1', '13800138000', '张三', 'closed', "
    f"'emergency-110', 1, 'seat001', {T}, {T + 90 * 10**6})",
    "INSERT INTO tickets (id, number, uniqueid, caller_id, caller_name, state, queue, priority, seat, created_at_us, "
    f"updated_at_us) VALUES (2, '110-20261129-000002', '1795951860.2', '13900139000', NULL, 'queued', "
    f"'emergency-110', NULL, NULL, {T + 60 * 10**6}, {T + 61 * 10**6})",
    "INSERT INTO ticket_counters (day, last) VALUES ('20261129', 2)",
    "INSERT INTO ticket_steps (id, ticket_id, seq, step, state_after, at_us, source, detail) VALUES "
    f"(1, 1, 1, 'received', 'received', {T}, 'agi', '{{\"caller_id\": \"13800138000\"}}')",
    "INSERT INTO ticket_steps (id, ticket_id, seq, step, state_after, at_us, source, detail) VALUES "
    f"(2, 1, 2, 'answered', 'answered', {T + 5 * 10**6}, 'ami', '{{\"seat\": \"seat001\"}}')",
    "INSERT INTO ticket_steps (id, ticket_id, seq, step, state_after, at_us, source, detail) VALUES "
    f"(3, 1, 3, 'closed', 'closed', {T + 90 * 10**6}, 'api', '{{\"disposition\": \"已出警\"}}')",
    "INSERT INTO ticket_steps (id, ticket_id, seq, step, state_after, at_us, source, detail) VALUES "
    f"(4, 2, 1, 'received', 'received', {T + 60 * 10**6}, 'agi', '{{}}')",
    "INSERT INTO recordings (id, ticket_id, path, duration_s, size_bytes, sha256, bound_at_us) VALUES "
    f"(1, 1, '/var/spool/asterisk/monitor/110-20261129-000001.wav', 85.5, 1368044, '{HASH_A}', {T + 91 * 10**6})",
    "INSERT INTO incidents (number, address, lat, lon, cell, station_id, located_at_us) VALUES "
    f"('110-20261129-000001', '东城区东直门内大街 1 号', 39.91, 116.40, '8a31aa5a1a57fff', 'S01', {T + 30 * 10**6})",
    "INSERT INTO ticket_triage (number, created_at_us, type, priority, station_id, cell, updated_at_us) VALUES "
    f"('110-20261129-000001', {T}, 'property', 1, 'S01', '8a31aa5a1a57fff', {T + 40 * 10**6})",
    "INSERT INTO ticket_daily_counts (day_us, type, station, h03) VALUES "
    f"({T - 11 * 3600 * 10**6 - 30 * 60 * 10**6}, 'property', 'S01', 1)",
    "INSERT INTO users (id, username, role, station_id, password_hash, disabled, created_at_us) VALUES "
    f"(1, 'wang', 'supervisor', NULL, 'scrypt$16384$8$1$c2FsdA$aGFzaA', FALSE, {T})",
    "INSERT INTO users (id, username, role, station_id, password_hash, disabled, created_at_us) VALUES "
    f"(2, 's01', 'station', 'S01', 'scrypt$16384$8$1$c2FsdA$aGFzaB', TRUE, {T})",
    "INSERT INTO auth_tokens (token_sha256, user_id, created_at_us, expires_at_us) VALUES "
    f"('{HASH_B}', 1, {T}, {T + 12 * 3600 * 10**6})",
    "INSERT INTO audit_log (id, at_us, who, role, method, path, status, body_sha256) VALUES "
    f"(1, {T}, 'wang', 'supervisor', 'POST', '/api/tickets/110-20261129-000001/close', 200, NULL)",
    "INSERT INTO journal_entries (seq, kind, ref_id, payload, prev_hash, hash, at_us) VALUES "
    f"(1, 'step', 1, '{{\"step\": \"received\"}}', '{'0' * 64}', '{HASH_A}', {T})",
    "INSERT INTO journal_entries (seq, kind, ref_id, payload, prev_hash, hash, at_us) VALUES "
    f"(2, 'recording', 1, '{{\"sha256\": \"{HASH_A}\"}}', '{HASH_A}', '{HASH_C}', {T + 91 * 10**6})",
    "INSERT INTO alerts (id, kind, ref, message, created_at_us, resolved_at_us) VALUES "
    f"(1, 'dispatch', '110-20261129-000002', 'nobody answered the dispatch ladder', {T + 70 * 10**6}, NULL)",
    "INSERT INTO outbox_messages (id, idempotency_key, kind, ticket_number, \"to\", body, tag, state, attempts, "
    "next_attempt_at_us, provider_id, last_error, created_at_us, sent_at_us) VALUES (1, 'survey:110-20261129-000001', "
    f"'survey', '110-20261129-000001', '+8613800138000', '请为本次接警打分 1-5', 'K7Q2', 'sent', 1, {T}, 'SM123', "
    f"NULL, {T}, {T + 10**6})",
]

# Every table with rows above; each is compared row for row before and after the upgrade.
TABLES = sorted({re.match(r"INSERT INTO (\w+)", row).group(1) for row in ROWS})  # type: ignore[union-attr]


_LEFT_OUT = ("CREATE SCHEMA public", "COMMENT ON SCHEMA public", "SELECT pg_catalog.set_config('search_path'")


def sqlite_ddl() -> str:
    return SQLITE_DDL.read_text()


def postgresql_statements(schema: str) -> list[str]:
    """The dump's statements, with its ``public`` schema made ``schema`` (a test's own schema).

    psql's meta-commands (``\\restrict``), the public schema's own creation and comment, and the
    dump's emptying of ``search_path`` are left out.
    """
    body = "\n".join(
        line for line in POSTGRESQL_DDL.read_text().splitlines()
        if not line.startswith(("\\", "--")) and line.strip()
    )
    statements = []
    for statement in body.split(";\n"):
        statement = statement.strip().rstrip(";")
        if not statement or statement.startswith(_LEFT_OUT):
            continue
        statements.append(statement.replace("public.", f"{schema}."))
    return statements


async def insert_rows(conn: AsyncConnection) -> None:
    for row in ROWS:
        await conn.execute(text(row))


async def snapshot(conn: AsyncConnection, columns: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Every row of ``TABLES``: {table: (columns, sorted rows)}; ``columns`` picks the columns to read."""
    found = {}
    for table in TABLES:
        names = columns[table] if columns else None
        select = f"SELECT {', '.join(_quote(n) for n in names)} FROM {table}" if names else f"SELECT * FROM {table}"
        result = await conn.execute(text(select))
        found[table] = (list(result.keys()), sorted(tuple(map(repr, row)) for row in result))
    return found


def _quote(name: str) -> str:
    return f'"{name}"'
