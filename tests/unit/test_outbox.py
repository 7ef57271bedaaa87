"""The SMS outbox against a local Twilio stand-in: outages and unknown outcomes, every message sent once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from core.quality.outbox import FAILED, PENDING, SENDING, SENT, UNKNOWN, Outbox
from core.quality.tables import OutboxMessage
from core.quality.twilio_sms import RelayHttpClient, TwilioMessenger
from tests.twilio_standin import ACCOUNT_SID, AUTH_TOKEN, TwilioStandin

FROM = "+8610000110"


@pytest.fixture
def standin() -> Iterator[TwilioStandin]:
    server = TwilioStandin(hang_s=1.0)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def messenger(standin: TwilioStandin) -> Iterator[TwilioMessenger]:
    m = TwilioMessenger(ACCOUNT_SID, AUTH_TOKEN, FROM, base_url=f"http://127.0.0.1:{standin.port}", timeout_s=0.3)
    yield m
    m.close()


async def _rows(engine: AsyncEngine) -> list[OutboxMessage]:
    async with async_sessionmaker(engine)() as session:
        return list((await session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))).all())


async def _drain(outbox: Outbox, clock: object, rounds: int = 30) -> int:
    for n in range(1, rounds + 1):
        await outbox.run_once()
        counts = await outbox.counts()
        if set(counts) <= {SENT, FAILED}:
            return n
        clock.now += 1000  # type: ignore[attr-defined]  # past every back-off
    raise AssertionError(f"outbox did not settle: {await outbox.counts()}")


def test_relay_client_rewrites_only_scheme_and_host() -> None:
    sent: list[str] = []

    class Recording(RelayHttpClient):
        def request(self, method: str, url: str, *args: object, **kwargs: object) -> object:
            return super().request(method, url, *args, **kwargs)

    client = Recording("http://127.0.0.1:9/prefix/")
    # Intercept below the rewrite: the parent's request would open a socket.
    from twilio.http.http_client import TwilioHttpClient

    original = TwilioHttpClient.request
    try:
        TwilioHttpClient.request = lambda self, method, url, *a, **k: sent.append(url)  # type: ignore[method-assign]
        client.request("GET", "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?To=%2B86")
    finally:
        TwilioHttpClient.request = original  # type: ignore[method-assign]
        client.session.close()
    assert sent == ["http://127.0.0.1:9/prefix/2010-04-01/Accounts/AC1/Messages.json?To=%2B86"]
    with pytest.raises(ValueError):
        RelayHttpClient("ftp://example")


async def test_enqueue_is_idempotent_by_key(engine: AsyncEngine, clock: object) -> None:
    outbox = Outbox(engine, None, clock=clock)  # type: ignore[arg-type]
    first = await outbox.enqueue(key="survey:110-20261129-000001", kind="survey", to="+8613800000000",
                                 body="请评价", ticket_number="110-20261129-000001")
    again = await outbox.enqueue(key="survey:110-20261129-000001", kind="survey", to="+8613800000000",
                                 body="请评价")
    assert again == first
    assert first.state == PENDING and first.body == f"请评价 [{first.tag}]"
    assert len(await _rows(engine)) == 1
    assert await outbox.run_once() == 0  # no messenger: messages wait, nothing is lost


async def test_every_message_sent_exactly_once_through_outage_and_unknown_outcomes(
    engine: AsyncEngine, clock: object, standin: TwilioStandin, messenger: TwilioMessenger
) -> None:
    outbox = Outbox(engine, messenger, clock=clock)  # type: ignore[arg-type]
    recipients = [f"+86138000000{n:02d}" for n in range(8)]
    for n, to in enumerate(recipients):
        await outbox.enqueue(key=f"m{n}", kind="survey", to=to, body=f"消息{n}")

    standin.stop_listening()  # Twilio unreachable: connection refused
    await outbox.run_once()
    assert {r.state for r in await _rows(engine)} == {PENDING}
    assert all(r.attempts == 1 and "unreachable" in (r.last_error or "") for r in await _rows(engine))
    assert standin.posts == 0

    standin.start_listening()
    standin.script.extend([
        "500",                # refused before creating: the outcome is unknown to us, looked up, then resent
        "hang_after_create",  # created, answer never arrives in time
        "drop_after_create",  # created, connection dropped
        "500_after_create",   # created, yet answered 500
        "ok",
    ])
    standin.list_script.append("500")  # the first lookup fails too: stays unknown
    clock.now += 1000  # type: ignore[attr-defined]
    await outbox.run_once()
    states = [r.state for r in await _rows(engine)]
    assert states[:4] == [UNKNOWN] * 4 and states[4:] == [SENT] * 4
    assert len(standin.created) == 3 + 4  # three unknown ones did reach the provider

    rounds = await _drain(outbox, clock)
    rows = await _rows(engine)
    assert [r.state for r in rows] == [SENT] * 8, [(r.state, r.last_error) for r in rows]
    assert rounds >= 2
    by_sid = {m.sid: m for m in standin.created}
    for row in rows:
        bodies = standin.bodies_to(row.to)
        assert bodies == [row.body], f"{row.to} got {bodies}"  # exactly one message, this one
        assert by_sid[row.provider_id].body == row.body
    assert len(standin.created) == 8
    assert standin.posts == 8 + 1  # only the plain 500 led to a second POST
    assert standin.lists >= 5  # every unknown outcome was looked up before anything else


async def test_message_left_sending_by_a_crash_is_found_not_resent(
    engine: AsyncEngine, clock: object, standin: TwilioStandin, messenger: TwilioMessenger
) -> None:
    outbox = Outbox(engine, messenger, clock=clock, lease_s=120)  # type: ignore[arg-type]
    view = await outbox.enqueue(key="crash", kind="survey", to="+8613800000001", body="请评价")
    # The process sent it and died before recording the answer.
    sid = await messenger.send(view.to, view.body)
    now_us = round(clock.now * 1_000_000)  # type: ignore[attr-defined]
    async with async_sessionmaker(engine)() as session, session.begin():
        await session.execute(
            update(OutboxMessage).values(state=SENDING, attempts=1, next_attempt_at_us=now_us + 120_000_000)
        )
    assert await outbox.run_once() == 0  # the lease still runs: maybe another worker is on it
    clock.now += 121  # type: ignore[attr-defined]
    assert await outbox.run_once() == 1
    row = (await _rows(engine))[0]
    assert (row.state, row.provider_id, row.attempts) == (SENT, sid, 2)
    assert standin.bodies_to(view.to) == [view.body]


async def test_refused_number_fails_without_retry(
    engine: AsyncEngine, clock: object, standin: TwilioStandin, messenger: TwilioMessenger
) -> None:
    outbox = Outbox(engine, messenger, clock=clock)  # type: ignore[arg-type]
    await outbox.enqueue(key="bad", kind="survey", to="+860", body="x")
    standin.script.append("400")
    await _drain(outbox, clock)
    row = (await _rows(engine))[0]
    assert row.state == FAILED and row.attempts == 1 and "21211" in (row.last_error or "")
    assert standin.created == []


async def test_gives_up_after_max_attempts_on_definite_failures(
    engine: AsyncEngine, clock: object, standin: TwilioStandin, messenger: TwilioMessenger
) -> None:
    outbox = Outbox(engine, messenger, clock=clock, max_attempts=3)  # type: ignore[arg-type]
    await outbox.enqueue(key="down", kind="survey", to="+8613800000002", body="x")
    standin.stop_listening()
    await _drain(outbox, clock)
    row = (await _rows(engine))[0]
    assert (row.state, row.attempts) == (FAILED, 3)


async def test_background_worker_sends_on_enqueue(
    engine: AsyncEngine, standin: TwilioStandin, messenger: TwilioMessenger
) -> None:
    import asyncio

    outbox = Outbox(engine, messenger, poll_s=30)
    await outbox.start()
    try:
        await outbox.enqueue(key="bg", kind="survey", to="+8613800000003", body="x")
        for _ in range(300):
            if (await outbox.counts()).get(SENT) == 1:
                break
            await asyncio.sleep(0.01)
    finally:
        await outbox.stop()
    assert (await outbox.counts()) == {SENT: 1}
    assert len(standin.created) == 1
