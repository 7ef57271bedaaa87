"""The asyncio FastAGI server over real sockets on 127.0.0.1, with a scripted Asterisk peer."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

import pytest

from telephony import channel_vars
from telephony.agi.codec import RemoteProtocolError, Reply, Request
from telephony.agi.server import (
    AGICommandError,
    AGISession,
    FastAGIServer,
    LatencyHistogram,
    Route,
)
from tests.agi_peer import AGIPeer, asterisk_headers, run_call

HOST = "127.0.0.1"


@asynccontextmanager
async def serving(routes: Mapping[str, Route], **options: float) -> AsyncIterator[FastAGIServer]:
    server = FastAGIServer(routes, host=HOST, port=0, **options)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@contextmanager
def loop_watchdog(seconds: float) -> Iterator[None]:
    """Fail instead of hanging when the event loop stops yielding.

    A task that spins without awaiting blocks the loop itself, so no timeout
    inside it could fire; a signal still interrupts the spinning code.
    """
    fired: list[bool] = []

    def on_alarm(signum: int, frame: object) -> None:
        fired.append(True)
        raise RuntimeError(f"event loop blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if fired:
            raise AssertionError("a connection task spun and blocked the event loop")


def agi_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "jiejing.agi"]


async def set_ticket(request: Request, session: AGISession) -> None:
    await session.set_variable(channel_vars.TICKET, "110-20261129-000042")


async def test_route_sets_a_variable_and_the_peer_sees_the_exact_line() -> None:
    async with serving({"intake": set_ticket}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("intake"))
            assert await peer.read_command() == 'SET VARIABLE JIEJING_TICKET "110-20261129-000042"'
            await peer.reply("200 result=1")
            assert await peer.read_until_closed() == b""  # route done: the server hangs up the AGI
        await until(lambda: server.active_connections == 0)
        stats = server.stats.routes["intake"]
        assert (stats.requests, stats.failures, stats.timeouts) == (1, 0, 0)
        assert stats.durations.count == 1 and stats.durations.sum_ms > 0


async def test_run_call_reads_and_sets_variables_with_hostile_text() -> None:
    seen: dict[str, object] = {}

    async def intake(request: Request, session: AGISession) -> None:
        seen["args"] = request.args
        seen["arrived"] = await session.get_variable("JIEJING_ARRIVED")
        seen["missing"] = await session.get_variable("JIEJING_NOT_SET")
        await session.set_variables(
            {
                channel_vars.TICKET: "110-20261129-000042",
                channel_vars.QUEUE: 'emergency "110"\r\nEXEC System reboot',
                channel_vars.PRIORITY: 10,
                channel_vars.RECORDING: "报警 ${EVIL}",
            }
        )

    async with serving({"intake": intake}) as server:
        result = await run_call(
            HOST, server.port, "intake", {"JIEJING_ARRIVED": "1764400000.123"}, args=["1764400000.123"]
        )
    assert seen == {"args": ["1764400000.123"], "arrived": "1764400000.123", "missing": None}
    assert result == {
        channel_vars.TICKET: "110-20261129-000042",
        channel_vars.QUEUE: 'emergency "110"  EXEC System reboot',
        channel_vars.PRIORITY: "10",
        channel_vars.RECORDING: "报警 ${EVIL}",
    }


async def test_unknown_route_closes_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    async with serving({"intake": set_ticket}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("no-such-route", uniqueid="1764400000.9"))
            assert await peer.read_until_closed() == b""  # closed without a single command
        await until(lambda: server.active_connections == 0)
        assert server.stats.unknown_routes == 1
        assert "no-such-route" not in server.stats.routes
    lines = [m for m in agi_log(caplog) if "unknown route" in m]
    assert len(lines) == 1 and "'no-such-route'" in lines[0] and "1764400000.9" in lines[0]


async def test_handler_error_closes_the_call_and_the_next_call_is_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: Request, session: AGISession) -> None:
        raise RuntimeError("ticket store unreachable")

    async with serving({"broken": broken, "intake": set_ticket}) as server:
        assert await run_call(HOST, server.port, "broken", {}) == {}
        assert await run_call(HOST, server.port, "intake", {}) == {channel_vars.TICKET: "110-20261129-000042"}
        assert server.stats.routes["broken"].failures == 1
        assert server.stats.routes["intake"].failures == 0
    errors = [r for r in caplog.records if r.name == "jiejing.agi" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "RuntimeError: ticket store unreachable" in errors[0].getMessage()
    assert errors[0].exc_info is None  # one line: the traceback only goes to debug


async def test_failed_command_raises_in_the_route() -> None:
    caught: list[Exception] = []

    async def intake(request: Request, session: AGISession) -> None:
        try:
            await session.set_variable(channel_vars.QUEUE, "q")
        except AGICommandError as exc:
            caught.append(exc)
        reply = await session.command("NO", "SUCH", "COMMAND")
        caught.append(reply)  # type: ignore[arg-type]

    async with serving({"intake": intake}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("intake"))
            await peer.read_command()
            await peer.reply("511 Command Not Permitted on a dead channel or intercept routine")
            assert await peer.read_command() == "NO SUCH COMMAND"
            await peer.reply("510 Invalid or unknown command")
            assert await peer.read_until_closed() == b""
    assert isinstance(caught[0], AGICommandError) and caught[0].reply.code == 511
    assert caught[1] == Reply(510, None, None, "Invalid or unknown command")


async def test_slow_handler_is_cut_at_the_deadline() -> None:
    cancelled = asyncio.Event()

    async def slow(request: Request, session: AGISession) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serving({"slow": slow}, request_deadline=0.2) as server:
        async with AGIPeer(HOST, server.port) as peer:
            started = time.monotonic()
            await peer.send_headers(asterisk_headers("slow"))
            assert await peer.read_until_closed() == b""
            elapsed = time.monotonic() - started
        assert 0.15 <= elapsed < 0.6
        assert cancelled.is_set()
        stats = server.stats.routes["slow"]
        assert (stats.requests, stats.timeouts, stats.failures) == (1, 1, 0)
        # The cut shows in the histogram at the deadline (200–250 ms bucket).
        assert dict(stats.durations.cumulative())[250] == 1
        assert dict(stats.durations.cumulative())[100] == 0


async def test_route_own_timeout_counts_as_failure_not_deadline() -> None:
    async def times_out(request: Request, session: AGISession) -> None:
        raise TimeoutError("database pool exhausted")

    async with serving({"intake": times_out}) as server:
        assert await run_call(HOST, server.port, "intake", {}) == {}
        stats = server.stats.routes["intake"]
        assert (stats.failures, stats.timeouts) == (1, 0)


async def test_silent_client_is_cut_at_the_deadline() -> None:
    async with serving({"intake": set_ticket}, request_deadline=0.2) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers({"agi_network": "yes"}, end=False)
            assert await peer.read_until_closed() == b""
        await until(lambda: server.active_connections == 0)
        assert server.stats.bad_requests == 1


@pytest.mark.parametrize("sent", [b"", b"agi_network: yes\nagi_network_script: intake\n", b"agi_netw"])
async def test_client_closing_before_the_blank_line_does_not_spin(sent: bytes) -> None:
    with loop_watchdog(5.0):
        await _close_before_blank_line(sent)


async def _close_before_blank_line(sent: bytes) -> None:
    async with serving({"intake": set_ticket}, request_deadline=5.0) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_raw(sent)
        await until(lambda: server.active_connections == 0, timeout=1.0)
        assert server.stats.bad_requests == (1 if sent else 0)

        # A spinning connection task would burn the CPU and delay every timer.
        cpu_before = time.process_time()
        lateness = []
        for _ in range(10):
            t0 = time.monotonic()
            await asyncio.sleep(0.05)
            lateness.append(time.monotonic() - t0 - 0.05)
        assert time.process_time() - cpu_before < 0.2
        assert max(lateness) < 0.05

        assert await run_call(HOST, server.port, "intake", {}) == {channel_vars.TICKET: "110-20261129-000042"}


async def test_hangup_line_before_the_reply_is_not_taken_for_it() -> None:
    results: dict[str, object] = {}

    async def intake(request: Request, session: AGISession) -> None:
        await session.set_variable(channel_vars.QUEUE, "emergency-110")
        results["hung_up_after_set"] = session.hung_up
        results["arrived"] = await session.get_variable("JIEJING_ARRIVED")
        results["reply"] = await session.command("GET", "VARIABLE", "CHANNEL(state)")

    async with serving({"intake": intake}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("intake"))
            assert await peer.read_command() == 'SET VARIABLE JIEJING_QUEUE "emergency-110"'
            await peer.send_raw(b"HANGUP\n200 result=1\n")
            assert await peer.read_command() == "GET VARIABLE JIEJING_ARRIVED"
            await peer.reply("200 result=1 (1764400000.123)")
            assert await peer.read_command() == "GET VARIABLE CHANNEL(state)"
            await peer.reply("200 result=1 (Up)")
            assert await peer.read_until_closed() == b""
        assert server.stats.routes["intake"].failures == 0
    assert results == {
        "hung_up_after_set": True,
        "arrived": "1764400000.123",
        "reply": Reply(200, "1", "Up", "result=1 (Up)"),
    }


async def test_asterisk_closing_mid_command_is_a_route_failure_and_server_goes_on() -> None:
    errors: list[Exception] = []

    async def intake(request: Request, session: AGISession) -> None:
        try:
            await session.set_variable(channel_vars.QUEUE, "q")
        except RemoteProtocolError as exc:
            errors.append(exc)
            raise

    async with serving({"intake": intake}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("intake"))
            await peer.read_command()
        await until(lambda: server.active_connections == 0)
        assert len(errors) == 1 and "closed the connection" in str(errors[0])
        assert server.stats.routes["intake"].failures == 1
        assert (await run_call(HOST, server.port, "intake", {}))[channel_vars.QUEUE] == "q"


async def test_garbage_instead_of_headers_is_logged_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    async with serving({"intake": set_ticket}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await peer.read_until_closed() == b""
        assert server.stats.bad_requests == 1
    assert any("malformed AGI header line" in m for m in agi_log(caplog))


async def test_stop_with_connections_open_returns_promptly() -> None:
    entered = asyncio.Event()

    async def forever(request: Request, session: AGISession) -> None:
        entered.set()
        await asyncio.Event().wait()

    server = FastAGIServer({"intake": forever}, host=HOST, port=0, request_deadline=30.0)
    await server.start()
    port = server.port
    async with AGIPeer(HOST, port) as busy, AGIPeer(HOST, port) as half, AGIPeer(HOST, port) as idle:
        await busy.send_headers(asterisk_headers("intake"))
        await half.send_headers({"agi_network": "yes"}, end=False)
        await entered.wait()
        await until(lambda: server.active_connections == 3)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 0.5
        assert server.active_connections == 0
        for peer in (busy, half, idle):
            assert await peer.read_until_closed() == b""
    with pytest.raises(OSError):
        await asyncio.open_connection(HOST, port)


async def test_stop_grace_lets_a_running_call_finish() -> None:
    async def slowish(request: Request, session: AGISession) -> None:
        await asyncio.sleep(0.1)
        await set_ticket(request, session)

    server = FastAGIServer({"intake": slowish}, host=HOST, port=0)
    await server.start()
    call = asyncio.create_task(run_call(HOST, server.port, "intake", {}))
    await until(lambda: server.stats.routes["intake"].requests == 1)
    await server.stop(grace=1.0)
    assert await call == {channel_vars.TICKET: "110-20261129-000042"}


async def test_connections_over_the_limit_are_turned_away() -> None:
    release = asyncio.Event()

    async def held(request: Request, session: AGISession) -> None:
        await release.wait()

    async with serving({"intake": held}, max_connections=1) as server:
        async with AGIPeer(HOST, server.port) as first:
            await first.send_headers(asterisk_headers("intake"))
            await until(lambda: server.stats.routes["intake"].requests == 1)
            async with AGIPeer(HOST, server.port) as second:
                try:
                    assert await second.read_until_closed() == b""
                except ConnectionResetError:
                    pass  # refused with a reset: equally closed
            assert server.stats.rejected == 1
            release.set()
            assert await first.read_until_closed() == b""


async def test_many_concurrent_calls() -> None:
    async def intake(request: Request, session: AGISession) -> None:
        arrived = await session.get_variable("JIEJING_ARRIVED")
        await session.set_variable(channel_vars.TICKET, f"T-{arrived}")

    async with serving({"intake": intake}) as server:
        results = await asyncio.gather(
            *(run_call(HOST, server.port, "intake", {"JIEJING_ARRIVED": str(n)}) for n in range(50))
        )
        assert results == [{channel_vars.TICKET: f"T-{n}"} for n in range(50)]
        assert server.stats.routes["intake"].requests == 50
        assert server.stats.routes["intake"].durations.count == 50
        await until(lambda: server.active_connections == 0)


async def test_async_context_manager_and_route_name_with_slash() -> None:
    async with FastAGIServer({"/intake": set_ticket}, host=HOST, port=0) as server:
        assert server.port != 0
        headers = asterisk_headers("intake", agi_network_script="/intake?from=carrier")
        result = await run_call(HOST, server.port, "intake", {}, headers=headers)
        assert result == {channel_vars.TICKET: "110-20261129-000042"}


def test_latency_histogram_buckets() -> None:
    histogram = LatencyHistogram()
    for ms in (0.1, 0.5, 0.51, 3, 2500, 9000):
        histogram.observe(ms)
    rows = dict(histogram.cumulative())
    assert rows[0.5] == 2  # a value on a bound counts as "≤ bound"
    assert rows[1] == 3 and rows[5] == 4 and rows[2500] == 5 and rows[float("inf")] == 6
    assert histogram.count == 6 and histogram.sum_ms == pytest.approx(11504.11)
    assert len(histogram.counts) == len(histogram.bounds_ms) + 1


def test_constructor_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        FastAGIServer({}, request_deadline=0)
    with pytest.raises(ValueError):
        FastAGIServer({}, max_connections=0)


async def set_four(request: Request, session: AGISession) -> None:
    await session.set_variables({channel_vars.QUEUE: "emergency-110", channel_vars.PRIORITY: 10,
                                 channel_vars.RECORDING: "110-20261129-000042_1795951337.0",
                                 channel_vars.TICKET: "110-20261129-000042"})


async def test_plain_values_are_set_in_one_round_trip_with_mset() -> None:
    async with serving({"intake": set_four}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("intake"))
            assert await peer.read_command() == (
                "EXEC MSet JIEJING_QUEUE=emergency-110,JIEJING_PRIORITY=10,"
                "JIEJING_RECORDING=110-20261129-000042_1795951337.0,JIEJING_TICKET=110-20261129-000042")
            await peer.reply("200 result=0")
            assert await peer.read_until_closed() == b""


async def test_mset_missing_falls_back_to_set_variable_one_by_one() -> None:
    async with serving({"intake": set_four}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("intake"))
            assert (await peer.read_command()).startswith("EXEC MSet ")
            await peer.reply("200 result=-2")  # no such application
            lines = []
            for _ in range(4):
                lines.append(await peer.read_command())
                await peer.reply("200 result=1")
            assert lines[-1] == 'SET VARIABLE JIEJING_TICKET "110-20261129-000042"'
            assert [line.split()[2] for line in lines] == [
                channel_vars.QUEUE, channel_vars.PRIORITY, channel_vars.RECORDING, channel_vars.TICKET]


async def set_hostile(request: Request, session: AGISession) -> None:
    await session.set_variables({channel_vars.QUEUE: "a,b", channel_vars.TICKET: "x=${EVIL}"})


async def test_values_needing_quotes_never_go_through_mset() -> None:
    async with serving({"intake": set_hostile}) as server:
        async with AGIPeer(HOST, server.port) as peer:
            await peer.send_headers(asterisk_headers("intake"))
            first = await peer.read_command()
            assert first == 'SET VARIABLE JIEJING_QUEUE "a,b"'
            await peer.reply("200 result=1")
            assert await peer.read_command() == 'SET VARIABLE JIEJING_TICKET "x=${EVIL}"'
            await peer.reply("200 result=1")
