"""The store: the declarative base every capability's tables register on, the async engine, the health probe.

Portable across SQLite (aiosqlite, the lab and small sites) and PostgreSQL
(asyncpg): no dialect-specific SQL, times kept as integer epoch microseconds so
both keep the same precision, JSON through SQLAlchemy's generic type.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    MetaData,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

log = logging.getLogger(__name__)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
_Id = BigInteger().with_variant(Integer(), "sqlite")

# Stable constraint names, so later migrations can refer to them.
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Asterisk's AST_MAX_UNIQUEID.
UNIQUEID_MAX = 150
# Free text that comes from carriers (caller name) or configuration.
TEXT_MAX = 255


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers (the web API) never block the writer
    "PRAGMA synchronous=NORMAL",  # safe with WAL; a power cut loses at most the last commits
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",  # off by default in SQLite
)


class _SqliteConnection(sqlite3.Connection):
    """A connection that gives its write lock back when it is closed, whatever state it is in.

    A task cancelled while its write runs (a request that timed out, a shutdown) gets its connection
    invalidated and closed by SQLAlchemy. But SQLite closes a connection with a statement still referenced
    only lazily (``sqlite3_close_v2``), and its open transaction then kept the database's write lock for
    the process's whole life: every later write failed with "database is locked". Rolling back first
    ends the transaction at once.
    """

    def close(self) -> None:
        try:
            if self.in_transaction:
                self.rollback()
        except sqlite3.Error:
            log.warning("rollback before closing a store connection failed", exc_info=True)
        super().close()


def _json_dumps(value: Any) -> str:
    # Keep Chinese text readable in the database instead of \\u escapes.
    return json.dumps(value, ensure_ascii=False)


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for any SQLAlchemy async URL; extra arguments go to create_async_engine."""
    parsed = make_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or "mode=memory" in database
        if not in_memory and not parsed.query.get("uri"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    else:
        # A restarted database server must not leave dead connections in the pool.
        kwargs.setdefault("pool_pre_ping", True)
    if is_sqlite:
        kwargs["connect_args"] = {"factory": _SqliteConnection, **kwargs.get("connect_args", {})}
    engine = create_async_engine(parsed, json_serializer=_json_dumps, **kwargs)
    if is_sqlite:

        @event.listens_for(engine.sync_engine, "connect")
        def _set_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                for pragma in _SQLITE_PRAGMAS:
                    cursor.execute(pragma)
            finally:
                cursor.close()

    return engine


async def check(engine: AsyncEngine) -> dict[str, Any]:
    """Health probe: ``SELECT 1`` and its round trip. Never raises; failures are reported."""
    started = time.perf_counter()
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - the probe reports every failure
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}"[:300],
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
    return {
        "ok": True,
        "backend": engine.dialect.name,
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }
