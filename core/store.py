"""The ticket store: tables, the async engine, and the health probe.

Portable across SQLite (aiosqlite, the lab and small sites) and PostgreSQL
(asyncpg): no dialect-specific SQL, times kept as integer epoch microseconds so
both keep the same precision, JSON through SQLAlchemy's generic type.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    uniqueid: Mapped[str] = mapped_column(String(UNIQUEID_MAX), unique=True)
    caller_id: Mapped[str] = mapped_column(String(TEXT_MAX))
    caller_name: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    # Plain strings, not a database enum: new lifecycle states need no migration.
    state: Mapped[str] = mapped_column(String(32), index=True)
    queue: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    priority: Mapped[int | None] = mapped_column(Integer)
    seat: Mapped[str | None] = mapped_column(String(TEXT_MAX))  # the seat that answered
    created_at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)

    # lazy="raise": under asyncio an implicit lazy load would fail far from its cause.
    steps: Mapped[list[TicketStep]] = relationship(
        back_populates="ticket", order_by="TicketStep.seq", lazy="raise"
    )
    recordings: Mapped[list[Recording]] = relationship(
        back_populates="ticket", order_by="Recording.id", lazy="raise"
    )


class TicketStep(Base):
    __tablename__ = "ticket_steps"
    # The unique index on (ticket_id, seq) also serves lookups by ticket_id.
    __table_args__ = (UniqueConstraint("ticket_id", "seq"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    seq: Mapped[int] = mapped_column(Integer)  # 1..n within the ticket
    step: Mapped[str] = mapped_column(String(32))
    state_after: Mapped[str] = mapped_column(String(32))
    at_us: Mapped[int] = mapped_column(BigInteger)  # epoch microseconds
    source: Mapped[str] = mapped_column(String(16))  # agi / ami / api / resync
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)

    ticket: Mapped[Ticket] = relationship(back_populates="steps", lazy="raise")


class Recording(Base):
    __tablename__ = "recordings"
    __table_args__ = (UniqueConstraint("ticket_id", "path"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))
    path: Mapped[str] = mapped_column(String(1024))
    duration_s: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(CHAR(64))
    bound_at_us: Mapped[int] = mapped_column(BigInteger)

    ticket: Mapped[Ticket] = relationship(back_populates="recordings", lazy="raise")


class TicketCounter(Base):
    __tablename__ = "ticket_counters"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)  # YYYYMMDD, center time
    last: Mapped[int] = mapped_column(Integer)


_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers (the web API) never block the writer
    "PRAGMA synchronous=NORMAL",  # safe with WAL; a power cut loses at most the last commits
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",  # off by default in SQLite
)


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


async def init_schema(engine: AsyncEngine) -> None:
    """Create missing tables and indexes; existing ones are left as they are."""
    # Modules that keep their own tables on Base register them when imported;
    # importing them here, not at the top, keeps store free of import cycles.
    from core import auth, dispatch, keywords, officers, push, quality_store, queries, repeat, seats, triage  # noqa: F401

    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)


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
