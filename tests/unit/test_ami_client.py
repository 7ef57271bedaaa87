"""The asyncio AMI client against the in-process fake Asterisk: login, actions,
event lists, events, ping checks, reconnects, and never resending."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest

from telephony import channel_vars
from telephony.ami.client import (
    ActionTimeout,
    AMIClient,
    ConnectionLost,
    NotConnected,
    OriginateOutcomeUnknown,
)
from telephony.ami.codec import Event, LocalProtocolError
from tests.ami_fake import FakeAction, list_reply

PING_INTERVAL = 0.2
PING_TIMEOUT = 0.15
RECONNECT = (0.05, 0.2)


async def wait_until(predicate, timeout: float = 2.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def make_client(fake):
    clients: list[AMIClient] = []

    def make(*, secret: str | None = None, **overrides) -> AMIClient:
        params = dict(
            ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, connect_timeout=0.5, reconnect_delay=RECONNECT
        )
        params.update(overrides)
        client = AMIClient("127.0.0.1", fake.port, fake.username, secret or fake.secret, **params)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.stop()


@pytest.fixture
async def client(make_client):
    c = make_client()
    await c.start()
    await c.wait_connected(2.0)
    return c


def channels_handler(action: FakeAction):
    return list_reply(
        action,
        [[("Event", "CoreShowChannel"), ("Channel", f"PJSIP/trunk-0000000{i}")] for i in range(3)],
        "CoreShowChannelsComplete",
        "Channels will follow",
    )


# -- login -------------------------------------------------------------------


async def test_login_and_status(client, fake):
    login = fake.received("Login")[0]
    assert login.get("Username") == "jiejing" and login.get("Secret") == "s3cret" and login.get("Events") == "on"
    assert login.action_id.startswith("jj-")
    status = client.status()
    assert status["connected"] is True and status["reconnects"] == 0 and status["last_error"] is None
    assert status["since"] <= time.time()
    await wait_until(lambda: client.status()["last_ping_ms"] is not None, what="a ping")
    assert 0 < client.status()["last_ping_ms"] < PING_TIMEOUT * 1000


async def test_login_failure_retries_with_backoff_then_recovers(make_client, fake):
    c = make_client(secret="wrong")
    await c.start()
    await wait_until(lambda: len(fake.login_attempts) >= 5, what="five login attempts")
    assert not c.connected
    assert "Authentication failed" in c.status()["last_error"] and "jiejing" in c.status()["last_error"]
    with pytest.raises(NotConnected):
        await c.action("Ping")
    gaps = [b - a for a, b in zip(fake.login_attempts, fake.login_attempts[1:])]
    assert gaps[0] < RECONNECT[1] * 0.8  # starts short
    assert gaps[-1] >= RECONNECT[1] * 0.9  # grows to the ceiling
    fake.secret = "wrong"  # manager.conf now matches what the client sends
    await c.wait_connected(2.0)
    assert c.status()["last_error"] is None and fake.logins == 1


async def test_action_while_down_raises_not_connected_then_recovers(make_client, fake):
    await fake.go_down()
    c = make_client()
    await c.start()
    await wait_until(lambda: c.status()["last_error"] is not None, what="a connect failure")
    assert c.status()["last_error"] == "connection refused"
    started = time.monotonic()
    with pytest.raises(NotConnected):
        await c.action("Ping")
    assert time.monotonic() - started < 0.05  # immediate, not queued
    await fake.come_back()
    await c.wait_connected(2.0)
    response = await c.action("Ping")
    assert response.ok and response["Ping"] == "Pong"
    assert fake.count("Ping") >= 1 and all(a.name != "" for a in fake.actions)


# -- actions -------------------------------------------------------------------


async def test_concurrent_actions_are_correlated(client, fake):
    rng = random.Random(7)

    async def getvar(action: FakeAction):
        await asyncio.sleep(rng.uniform(0, 0.1))  # answers overtake each other
        name = action.get("Variable")
        return [[("Response", "Success"), ("Variable", name), ("Value", f"value-of-{name}")]]

    fake.handlers["Getvar"] = getvar
    names = [f"VAR{i}" for i in range(30)]
    responses = await asyncio.gather(*(client.action("Getvar", {"Variable": n}) for n in names))
    assert [r["Value"] for r in responses] == [f"value-of-{n}" for n in names]
    ids = [a.action_id for a in fake.received("Getvar")]
    assert len(set(ids)) == 30


async def test_error_response_is_returned_not_raised(client):
    response = await client.action("NoSuchAction")
    assert not response.ok and response.message == "Invalid/unknown command"


async def test_action_timeout_and_late_response_dropped(client, fake):
    async def slow(action: FakeAction):
        await asyncio.sleep(0.3)
        return [[("Response", "Success"), ("Value", "late")]]

    fake.handlers["Getvar"] = slow
    with pytest.raises(ActionTimeout):
        await client.action("Getvar", {"Variable": "X"}, timeout=0.1)
    await asyncio.sleep(0.3)  # the late answer arrives and is dropped
    fake.handlers["Getvar"] = lambda a: [[("Response", "Success"), ("Value", "fresh")]]
    assert (await client.action("Getvar", {"Variable": "Y"}))["Value"] == "fresh"
    assert client.connected and fake.logins == 1


async def test_local_protocol_error_sends_nothing(client, fake):
    before = len(fake.actions)
    with pytest.raises(LocalProtocolError):
        await client.action("UserEvent", [("Bad Name", "x")])
    with pytest.raises(LocalProtocolError):
        await client.originate(Channel="PJSIP/officer-7", Async="false")
    assert len([a for a in fake.actions[before:] if a.name != "Ping"]) == 0
    assert client.connected


async def test_header_injection_does_not_reach_the_server(client, fake):
    fake.handlers["UserEvent"] = lambda a: [[("Response", "Success")]]
    body = "x\r\nAction: Originate\r\nChannel: PJSIP/attacker\r\n\r\nAction: Originate\x00"
    response = await client.action("UserEvent", {"UserEvent": "Note", "Body": body})
    assert response.ok
    assert fake.count("Originate") == 0
    (received,) = fake.received("UserEvent")
    assert [k for k, _ in received.headers] == ["Action", "ActionID", "UserEvent", "Body"]


# -- event lists ------------------------------------------------------------------


async def test_list_action_collects_items_and_hides_them_from_subscribers(client, fake):
    def handler(action: FakeAction):
        messages = channels_handler(action)
        # a live event in the middle of the list must still reach subscribers
        messages.insert(2, [("Event", "Newchannel"), ("Channel", "PJSIP/trunk-00000009")])
        return messages

    fake.handlers["CoreShowChannels"] = handler
    queue = client.subscribe()
    response, items = await client.list_action("CoreShowChannels")
    assert response.ok and response.get("EventList") == "start"
    assert [e.name for e in items] == ["CoreShowChannel"] * 3
    assert [e["Channel"] for e in items] == [f"PJSIP/trunk-0000000{i}" for i in range(3)]
    assert all(e.action_id == response.action_id for e in items)
    await asyncio.sleep(0.05)
    seen = [queue.get_nowait().name for _ in range(queue.qsize())]
    assert seen == ["Newchannel"]


async def test_queue_status_list(client, fake):
    fake.handlers["QueueStatus"] = lambda a: list_reply(
        a,
        [
            [("Event", "QueueParams"), ("Queue", "intake"), ("Calls", "1")],
            [("Event", "QueueMember"), ("Queue", "intake"), ("Name", "seat-01")],
            [("Event", "QueueEntry"), ("Queue", "intake"), ("Position", "1")],
        ],
        "QueueStatusComplete",
        "Queue status will follow",
    )
    response, items = await client.list_action("QueueStatus", {"Queue": "intake"})
    assert response.ok
    assert [e.name for e in items] == ["QueueParams", "QueueMember", "QueueEntry"]
    assert fake.received("QueueStatus")[0].get("Queue") == "intake"


async def test_list_action_error_gives_empty_list(client, fake):
    fake.handlers["QueueStatus"] = lambda a: [[("Response", "Error"), ("Message", "No such queue")]]
    response, items = await client.list_action("QueueStatus", {"Queue": "nope"})
    assert not response.ok and response.message == "No such queue" and items == []


async def test_list_action_timeout_leftovers_stay_hidden(client, fake):
    async def slow(action: FakeAction):
        await asyncio.sleep(0.2)
        return channels_handler(action)

    fake.handlers["CoreShowChannels"] = slow
    queue = client.subscribe()
    with pytest.raises(ActionTimeout):
        await client.list_action("CoreShowChannels", timeout=0.05)
    await asyncio.sleep(0.3)
    leftovers = [queue.get_nowait() for _ in range(queue.qsize())]
    assert not [e for e in leftovers if e.name.startswith("CoreShowChannel")]
    assert client.connected


# -- events -------------------------------------------------------------------------


async def test_events_reach_subscribers_and_listeners(client, fake, caplog):
    queue = client.subscribe()
    heard: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    client.add_listener(broken)
    client.add_listener(heard.append)
    fake.emit("Newchannel", [("Channel", "PJSIP/trunk-00000001"), ("CallerIDName", "张三")])
    fake.emit("Hangup", [("Channel", "PJSIP/trunk-00000001"), ("Cause", "16")])
    first = await asyncio.wait_for(queue.get(), 1.0)
    second = await asyncio.wait_for(queue.get(), 1.0)
    assert (first.name, second.name) == ("Newchannel", "Hangup")
    assert first["CallerIDName"] == "张三"
    assert abs(first.timestamp - time.time()) < 5
    assert [e.name for e in heard] == ["Newchannel", "Hangup"]
    assert "listener bug" in caplog.text or any("listener" in r.getMessage() for r in caplog.records)
    assert client.connected and fake.logins == 1  # the reader survived

    client.unsubscribe(queue)
    client.remove_listener(heard.append)
    fake.emit("Hangup")
    await client.action("Ping")  # round trip: the event was processed before the answer
    assert queue.empty() and len(heard) == 2


async def test_async_listener_refused(client):
    async def listener(event: Event) -> None:
        pass

    with pytest.raises(TypeError):
        client.add_listener(listener)


# -- failures and reconnects -----------------------------------------------------------


async def test_unanswered_ping_is_noticed_and_connection_renewed(client, fake):
    await wait_until(lambda: client.status()["last_ping_ms"] is not None, what="a ping")
    fake.answer_pings = False
    started = time.monotonic()
    await wait_until(lambda: not client.connected, timeout=2.0, what="the drop")
    elapsed = time.monotonic() - started
    assert elapsed <= PING_INTERVAL + PING_TIMEOUT + 0.15, elapsed
    assert "Ping" in client.status()["last_error"]
    fake.answer_pings = True
    await client.wait_connected(2.0)
    assert fake.logins == 2 and client.status()["reconnects"] == 1


async def test_garbage_from_server_drops_and_reconnects(client, fake):
    fake.send_raw(b"this is not AMI\r\n\r\n")
    await wait_until(lambda: fake.logins == 2 and client.connected, what="reconnect")
    assert client.status()["reconnects"] == 1
    assert (await client.action("Ping")).ok


async def test_pending_originate_on_drop_is_unknown_and_never_resent(client, fake):
    fake.hold.update({"Originate", "Getvar"})
    task = asyncio.create_task(
        client.originate(Channel="PJSIP/officer-7", Application="ConfBridge", Data="1732870001.1")
    )
    await fake.wait_for_action("Originate")
    other = asyncio.create_task(client.action("Getvar", {"Variable": "X"}))
    await fake.wait_for_action("Getvar")
    fake.hold.clear()
    fake.handlers["Originate"] = lambda a: [[("Response", "Success"), ("Message", "Originate successfully queued")]]
    pings_before = fake.count("Ping")
    await fake.drop_connections()

    with pytest.raises(OriginateOutcomeUnknown) as info:
        await task
    assert isinstance(info.value, ConnectionLost)
    with pytest.raises(ConnectionLost) as other_info:
        await other
    assert not isinstance(other_info.value, OriginateOutcomeUnknown)

    await client.wait_connected(2.0)
    # two pings answered on the new connection: any replay would have gone first
    await fake.wait_for_action("Ping", pings_before + 2, timeout=2.0)
    assert fake.count("Originate") == 1
    assert fake.count("Getvar") == 1


async def test_originate_sends_async_and_escaped_variables(client, fake):
    def originate(action: FakeAction):
        return [
            [("Response", "Success"), ("Message", "Originate successfully queued")],
            [("Event", "OriginateResponse"), ("ActionID", action.action_id), ("Response", "Success"),
             ("Channel", "PJSIP/officer-7-00000002")],
        ]

    fake.handlers["Originate"] = originate
    queue = client.subscribe()
    response = await client.originate(
        Channel="PJSIP/officer-7",
        Application="ConfBridge",
        Data="1732870001.1,officer",
        Timeout=30000,
        CallerID='"张三\r\nAction: Originate" <13800138000>',
        Variable={channel_vars.TICKET: "110-20261129-000042", "TEST_CALLER_NAME": '张三",X=1,${SHELL(id)}'},
    )
    assert response.ok
    (sent,) = fake.received("Originate")
    assert sent.get("Async") == "true" and sent.get("Timeout") == "30000"
    assert sent.get_all("Variable") == [
        f"{channel_vars.TICKET}=110-20261129-000042",
        'TEST_CALLER_NAME=张三\\"\\,X=1\\,$\\{SHELL\\(id\\)\\}',
    ]
    assert sent.get("CallerID") == '"张三  Action: Originate" <13800138000>'
    outcome = await asyncio.wait_for(queue.get(), 1.0)
    while outcome.name != "OriginateResponse":
        outcome = await asyncio.wait_for(queue.get(), 1.0)
    assert outcome.action_id == response.action_id


async def test_originate_timeout_is_outcome_unknown(client, fake):
    fake.hold.add("Originate")
    with pytest.raises(OriginateOutcomeUnknown, match="no response"):
        await client.originate(Channel="PJSIP/officer-7", Application="ConfBridge", response_timeout=0.1)
    assert fake.count("Originate") == 1


async def test_connect_hooks_after_every_login(make_client, fake, caplog):
    fake.handlers["CoreShowChannels"] = channels_handler
    snapshots: list[int] = []

    async def failing_hook() -> None:
        raise RuntimeError("hook bug")

    async def resync() -> None:
        _, items = await c.list_action("CoreShowChannels")
        snapshots.append(len(items))

    c = make_client()
    c.add_connect_hook(failing_hook)
    c.add_connect_hook(resync)
    await c.start()
    await wait_until(lambda: snapshots == [3], what="first resync")

    await fake.drop_connections()
    await wait_until(lambda: snapshots == [3, 3], what="resync after a drop")

    await fake.go_down()
    await wait_until(lambda: not c.connected, what="the outage")
    await fake.come_back()
    await wait_until(lambda: snapshots == [3, 3, 3], what="resync after Asterisk came back")
    assert fake.logins == 3 and c.status()["reconnects"] == 2
    assert sum("connect hook" in r.getMessage() for r in caplog.records) == 3


async def test_stop_is_clean(client, fake):
    fake.hold.add("Getvar")
    pending = asyncio.create_task(client.action("Getvar", {"Variable": "X"}))
    await fake.wait_for_action("Getvar")
    await client.stop()
    with pytest.raises(ConnectionLost):
        await pending
    assert not client.connected
    with pytest.raises(NotConnected):
        await client.action("Ping")
    await wait_until(lambda: fake.connection_count == 0, what="the server to see the close")
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("ami-")] == []
    await client.stop()  # idempotent
    logins = fake.logins
    await asyncio.sleep(RECONNECT[1] * 2)
    assert fake.logins == logins  # nothing reconnects after stop


async def test_start_twice_refused(client):
    with pytest.raises(RuntimeError):
        await client.start()
    assert client.connected


async def test_bad_reconnect_delay_refused():
    with pytest.raises(ValueError):
        AMIClient("127.0.0.1", 5038, "u", "s", reconnect_delay=(2.0, 0.2))


async def test_logs_do_not_leak_the_secret(make_client, fake, caplog):
    caplog.set_level(logging.DEBUG, logger="telephony.ami")
    c = make_client(secret="wrong-secret-value")
    await c.start()
    await wait_until(lambda: len(fake.login_attempts) >= 2, what="two login attempts")
    await c.stop()
    assert "wrong-secret-value" not in caplog.text
    assert "Authentication failed" in caplog.text


async def test_a_subscriber_that_does_not_read_loses_its_oldest_events_not_the_reader(client, fake):
    queue = client.subscribe(maxsize=2)
    for n in range(5):
        fake.emit("UserEvent", [("UserEvent", f"n{n}")])
    await client.action("Ping")  # round trip: every event was dispatched before the answer
    assert [queue.get_nowait()["UserEvent"] for _ in range(queue.qsize())] == ["n3", "n4"]
    assert client.status()["dropped_events"] == 3 and client.connected
