"""Tables of supervision and quality: the journal, the SMS outbox, surveys, spot checks, follow-ups.

Kept apart from the ticket tables but on the same metadata, so they are part of the
center's schema (``core.tables``, the migrations) like every other table. Ticket numbers
are plain strings here, not foreign keys: retention deletes expired tickets,
while their survey answers, scores and follow-ups stay as statistics.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CHAR, JSON, BigInteger, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.store import TEXT_MAX, Base, _Id

NUMBER_MAX = 32  # ticket numbers, as in ``tickets.number``


class JournalEntry(Base):
    """One link of the append-only hash chain; see ``core.quality.journal``."""

    __tablename__ = "journal_entries"
    # Each step or recording is journaled once; two appenders that read the same
    # head cannot both link to it (the loser retries on the new head).
    __table_args__ = (UniqueConstraint("kind", "ref_id"), UniqueConstraint("prev_hash"))

    seq: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))  # step / recording / expiry / anchor
    ref_id: Mapped[int | None] = mapped_column(BigInteger)  # ticket_steps.id or recordings.id
    # The canonical JSON text itself, not a JSON column: the hash covers these exact bytes.
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(CHAR(64))
    hash: Mapped[str] = mapped_column(CHAR(64))
    at_us: Mapped[int] = mapped_column(BigInteger)  # when it was journaled (not covered by the hash)


class OutboxMessage(Base):
    """An SMS to send exactly once; see ``core.quality.outbox``."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # survey / complaint_answer …
    ticket_number: Mapped[str | None] = mapped_column(String(NUMBER_MAX), index=True)
    to: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    tag: Mapped[str] = mapped_column(String(16), unique=True)  # printed in the body; finds it at the provider
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending/sending/unknown/sent/failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at_us: Mapped[int] = mapped_column(BigInteger, index=True)
    provider_id: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    sent_at_us: Mapped[int | None] = mapped_column(BigInteger)


class WebhookReceipt(Base):
    """Every provider message id a webhook accepted, so a replay is refused."""

    __tablename__ = "webhook_receipts"

    message_sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at_us: Mapped[int] = mapped_column(BigInteger)


class SurveyResponse(Base):
    __tablename__ = "survey_responses"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    ticket_number: Mapped[str] = mapped_column(String(NUMBER_MAX), unique=True)
    message_sid: Mapped[str] = mapped_column(String(64), unique=True)
    day: Mapped[str] = mapped_column(String(8), index=True)  # the call's day, center time
    seat: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    station: Mapped[str | None] = mapped_column(String(TEXT_MAX))  # filled once dispatch exists
    intake_rating: Mapped[int | None] = mapped_column(Integer)
    officer_rating: Mapped[int | None] = mapped_column(Integer)
    complaint: Mapped[bool] = mapped_column(default=False)
    body: Mapped[str] = mapped_column(Text)
    received_at_us: Mapped[int] = mapped_column(BigInteger)


class SpotCheckDraw(Base):
    __tablename__ = "spot_check_draws"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    day: Mapped[str] = mapped_column(String(8), unique=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)
    population: Mapped[int] = mapped_column(Integer)
    # Digest of the ordered population, so a redraw from the seed can show it saw the same calls.
    population_sha256: Mapped[str] = mapped_column(CHAR(64))
    drawn_by: Mapped[str] = mapped_column(String(TEXT_MAX))
    drawn_at_us: Mapped[int] = mapped_column(BigInteger)


class SpotCheckItem(Base):
    __tablename__ = "spot_check_items"
    __table_args__ = (UniqueConstraint("draw_id", "ticket_number"),)

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    draw_id: Mapped[int] = mapped_column(BigInteger, index=True)
    ticket_number: Mapped[str] = mapped_column(String(NUMBER_MAX))
    shift: Mapped[str] = mapped_column(String(16))
    seat: Mapped[str] = mapped_column(String(TEXT_MAX))
    station: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    scores: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    total: Mapped[float | None] = mapped_column()
    comment: Mapped[str | None] = mapped_column(Text)
    scored_by: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    scored_at_us: Mapped[int | None] = mapped_column(BigInteger)


class PublishedReport(Base):
    """A day's spot-check report as published to the stations: frozen, not recomputed."""

    __tablename__ = "spot_check_reports"

    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_by: Mapped[str] = mapped_column(String(TEXT_MAX))
    published_at_us: Mapped[int] = mapped_column(BigInteger)


class FollowUp(Base):
    """A complaint or unsatisfied rating that the local bureau must answer by a deadline."""

    __tablename__ = "follow_ups"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    ticket_number: Mapped[str] = mapped_column(String(NUMBER_MAX), index=True)
    origin: Mapped[str] = mapped_column(String(16))  # survey / complaint
    reason: Mapped[str] = mapped_column(Text)
    station: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
    deadline_us: Mapped[int] = mapped_column(BigInteger, index=True)
    answer: Mapped[str | None] = mapped_column(Text)
    answered_by: Mapped[str | None] = mapped_column(String(TEXT_MAX))
    answered_at_us: Mapped[int | None] = mapped_column(BigInteger)


class StatusLinkRow(Base):
    """A reporter's link to a dispatched ticket's status (``core.quality.reporter_links``): only the token's
    sha256 is kept."""

    __tablename__ = "status_links"

    id: Mapped[int] = mapped_column(_Id, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(CHAR(64), unique=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    phone: Mapped[str] = mapped_column(String(32))
    created_at_us: Mapped[int] = mapped_column(BigInteger)
