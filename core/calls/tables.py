"""The call tables: tickets, their steps, their recordings and the daily number counters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.store import TEXT_MAX, UNIQUEID_MAX, Base, _Id


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


class LogCheckpoint(Base):
    """How far the backend has replayed a log Asterisk writes (CEL): the file's inode and a byte offset."""

    __tablename__ = "log_checkpoints"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    inode: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger)
    updated_at_us: Mapped[int] = mapped_column(BigInteger)
