"""The SMS outbox: messages are stored first and sent by a worker, each exactly once.

A message is a row before it is anything else, so a provider outage loses
nothing. Twilio takes no idempotency key, so "exactly once" rests on three rules:

1. A message is marked ``sending`` (with its attempt counted) in a committed
   transaction before the HTTP request, so a crash mid-request is visible.
2. Only an outcome that proves nothing was created (connection refused, a 4xx
   answer) allows a plain resend. A timeout, a dropped connection or a 5xx
   answer leave the outcome ``unknown``.
3. An ``unknown`` message (or a ``sending`` one whose lease ran out: the
   process died) is first looked up at the provider by the unique tag printed
   in its body; it is resent only if the provider has no such message.

The remaining window — the provider created the message but does not list it
yet when we look — is narrowed by waiting ``reconcile_after_s`` before looking.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.quality.tables import OutboxMessage
from core.store import TEXT_MAX
from core.tasks import stop_task

log = logging.getLogger(__name__)

PENDING = "pending"
SENDING = "sending"
UNKNOWN = "unknown"
SENT = "sent"
FAILED = "failed"


class DefiniteFailure(Exception):
    """The provider certainly did not create the message; ``permanent`` ones are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class UnknownOutcome(Exception):
    """The provider may or may not have created the message (timeout, dropped connection, 5xx)."""


class Messenger(Protocol):
    """A way to send SMS; ``TwilioMessenger`` is the real one."""

    async def send(self, to: str, body: str) -> str:
        """The provider's message id; raises DefiniteFailure or UnknownOutcome."""
        ...

    async def find(self, to: str, tag: str) -> str | None:
        """The id of a message to ``to`` whose body holds ``tag``, if the provider has one."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxView:
    id: int
    key: str
    kind: str
    ticket_number: str | None
    to: str
    body: str
    tag: str
    state: str
    attempts: int
    provider_id: str | None
    last_error: str | None

    @classmethod
    def of(cls, row: OutboxMessage) -> OutboxView:
        return cls(row.id, row.idempotency_key, row.kind, row.ticket_number, row.to, row.body, row.tag,
                   row.state, row.attempts, row.provider_id, row.last_error)


def _new_tag() -> str:
    # Eight characters a caller can read back; 40 bits make a collision in the
    # provider's recent list of one number practically impossible.
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


class Outbox:
    """Stores messages and sends the due ones; owns its background task."""

    def __init__(
        self,
        engine: AsyncEngine,
        messenger: Messenger | None,
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 10,
        backoff_s: float = 5.0,
        max_backoff_s: float = 900.0,
        reconcile_after_s: float = 30.0,
        lease_s: float = 120.0,
        poll_s: float = 5.0,
        batch: int = 50,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._messenger = messenger
        self._clock = clock
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.reconcile_after_s = reconcile_after_s
        self.lease_s = lease_s  # longer than any provider request may take
        self._poll_s = poll_s
        self._batch = batch
        self._wake = asyncio.Event()
        self.settled: dict[str, int] = {}  # attempts by their outcome (sent, failed, pending, unknown): /metrics
        self._task: asyncio.Task[None] | None = None

    def _now_us(self) -> int:
        return round(self._clock() * 1_000_000)

    # -- enqueueing -----------------------------------------------------------------

    async def enqueue(
        self, *, key: str, kind: str, to: str, body: str, ticket_number: str | None = None
    ) -> OutboxView:
        """Store a message; a second call with the same ``key`` returns the first message unchanged."""
        if not key or len(key) > 128:
            raise ValueError("idempotency key must be 1-128 characters")
        if not to:
            raise ValueError("a message needs a recipient")
        for _attempt in range(3):
            async with self._sessions() as session:
                existing = await session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
                if existing is not None:
                    return OutboxView.of(existing)
                tag = _new_tag()
                row = OutboxMessage(
                    idempotency_key=key, kind=kind, ticket_number=ticket_number, to=to,
                    body=f"{body} [{tag}]", tag=tag, state=PENDING, attempts=0,
                    next_attempt_at_us=self._now_us(), created_at_us=self._now_us(),
                )
                session.add(row)
                try:
                    await session.commit()
                except IntegrityError:
                    continue  # same key from another writer, or a tag collision: look again
                self._wake.set()
                return OutboxView.of(row)
        raise RuntimeError(f"could not enqueue message {key!r}")

    async def get(self, key: str) -> OutboxView | None:
        async with self._sessions() as session:
            row = await session.scalar(select(OutboxMessage).where(OutboxMessage.idempotency_key == key))
            return None if row is None else OutboxView.of(row)

    async def counts(self) -> dict[str, int]:
        async with self._sessions() as session:
            rows = (await session.execute(select(OutboxMessage.state, OutboxMessage.id))).all()
        result: dict[str, int] = {}
        for state, _id in rows:
            result[state] = result.get(state, 0) + 1
        return result

    # -- sending ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None and self._messenger is not None:
            self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while True:
            try:
                while await self.run_once() == self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox round failed; retrying in %.0f s", self._poll_s)
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def run_once(self) -> int:
        """Handle every message that is due now; returns how many were handled."""
        if self._messenger is None:
            return 0
        now = self._now_us()
        async with self._sessions() as session:
            due = (
                await session.execute(
                    select(OutboxMessage.id, OutboxMessage.state, OutboxMessage.next_attempt_at_us)
                    .where(OutboxMessage.state.in_((PENDING, SENDING, UNKNOWN)), OutboxMessage.next_attempt_at_us <= now)
                    .order_by(OutboxMessage.next_attempt_at_us, OutboxMessage.id)
                    .limit(self._batch)
                )
            ).all()
        handled = 0
        for message_id, state, next_at in due:
            if await self._handle(message_id, state, next_at):
                handled += 1
        return handled

    async def _claim(self, message_id: int, state: str, next_at: int) -> OutboxMessage | None:
        # Compare-and-set on (state, next_attempt_at_us): of two workers, one wins.
        now = self._now_us()
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message_id,
                    OutboxMessage.state == state,
                    OutboxMessage.next_attempt_at_us == next_at,
                )
                .values(
                    state=SENDING,
                    attempts=OutboxMessage.attempts + 1,
                    next_attempt_at_us=now + round(self.lease_s * 1_000_000),
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                return None
            return await session.get(OutboxMessage, message_id)

    async def _handle(self, message_id: int, state: str, next_at: int) -> bool:
        assert self._messenger is not None
        row = await self._claim(message_id, state, next_at)
        if row is None:
            return False
        if state in (UNKNOWN, SENDING):
            # The last attempt may have reached the provider: look before sending again.
            try:
                found = await self._messenger.find(row.to, row.tag)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the outcome unknown
                await self._settle(row, UNKNOWN, error=f"lookup failed: {_describe(exc)}")
                return True
            if found is not None:
                log.info("outbox message %d was delivered by an earlier attempt (%s)", row.id, found)
                await self._settle(row, SENT, provider_id=found)
                return True
            if row.attempts > self.max_attempts:
                await self._settle(row, FAILED, error=f"not delivered after {self.max_attempts} attempts")
                return True
        try:
            provider_id = await self._messenger.send(row.to, row.body)
        except DefiniteFailure as exc:
            permanent = exc.permanent or row.attempts >= self.max_attempts
            await self._settle(row, FAILED if permanent else PENDING, error=str(exc))
        except UnknownOutcome as exc:
            await self._settle(row, UNKNOWN, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - an unforeseen error may have happened after sending
            log.exception("outbox message %d: unexpected error from the messenger", row.id)
            await self._settle(row, UNKNOWN, error=_describe(exc))
        else:
            await self._settle(row, SENT, provider_id=provider_id)
        return True

    async def _settle(
        self, row: OutboxMessage, state: str, *, provider_id: str | None = None, error: str | None = None
    ) -> None:
        now = self._now_us()
        self.settled[state] = self.settled.get(state, 0) + 1
        values: dict[str, Any] = {"state": state}
        if state == SENT:
            values.update(provider_id=provider_id, sent_at_us=now, last_error=None)
        else:
            values["last_error"] = (error or "")[:TEXT_MAX]
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, row.attempts - 1))
            if state == UNKNOWN:
                delay = max(delay, self.reconcile_after_s)
                if row.attempts >= self.max_attempts:
                    # Still looked up (never resent) at the slowest pace, so a late
                    # provider listing can settle it; an operator sees it as unknown.
                    delay = self.max_backoff_s
            values["next_attempt_at_us"] = now + round(delay * 1_000_000)
            log.warning("outbox message %d attempt %d: %s (%s)", row.id, row.attempts, state, error)
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values)
                .execution_options(synchronize_session=False)
            )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:TEXT_MAX]
