"""Asyncio FastAGI server: answers the dialplan's ``AGI(agi://127.0.0.1:4573/NAME)``.

One connection is one ``AGI()`` call. The server reads the request, hands it
to the route registered under NAME together with an ``AGISession`` (to get and
set channel variables), and closes the connection when the route returns.

Asterisk waits for every AGI command forever, so the whole request — headers
and route — runs under ``request_deadline``. Whatever goes wrong (unknown
route, route error, deadline, garbage on the wire) costs one log line on
"jiejing.agi" and a closed connection: the dialplan then finds no ticket
number and queues the call with its defaults. An emergency call is never
held up by this server.

    async def intake(request: Request, session: AGISession) -> None:
        ticket = await session.get_variable(channel_vars.TICKET)
        await session.set_variable(channel_vars.QUEUE, "emergency-110")

    server = FastAGIServer({"intake": intake})
    await server.start()
    …
    await server.stop()
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from telephony.agi.codec import (
    NEED_DATA,
    AGIProtocol,
    AGIProtocolError,
    Closed,
    HangupNotice,
    RemoteProtocolError,
    Reply,
    Request,
)

__all__ = [
    "AGICommandError",
    "AGISession",
    "FastAGIServer",
    "LatencyHistogram",
    "Route",
    "RouteStats",
    "ServerStats",
]

log = logging.getLogger("jiejing.agi")

# Values MSet can take without any quoting or escaping of the dialplan parser.
_PLAIN = re.compile(r"[A-Za-z0-9._-]{1,200}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,79}")

READ_CHUNK: Final = 4096
# Upper bounds (ms) of the handler-duration buckets; the last bucket is +Inf.
LATENCY_BUCKETS_MS: Final = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
# A closed socket normally finishes at once; this only guards a peer that
# stopped reading while our last command was still in the send buffer.
_CLOSE_GRACE: Final = 0.5


class AGICommandError(Exception):
    """Asterisk answered a command with something other than 200."""

    def __init__(self, command: str, reply: Reply) -> None:
        super().__init__(f"{command} answered {reply.code} {reply.text}")
        self.command = command
        self.reply = reply


class AGISession:
    """The route's handle on one call: commands go out, replies come back in order."""

    def __init__(
        self,
        request: Request,
        protocol: AGIProtocol,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.request = request
        self.hung_up = False  # Asterisk wrote HANGUP: the caller is gone, commands still work
        self._protocol = protocol
        self._reader = reader
        self._writer = writer

    async def command(self, *words: str) -> Reply:
        """Send one command and return Asterisk's reply as is (any code)."""
        return await self._exchange(self._protocol.send_command(*words))

    async def set_variable(self, name: str, value: str | int) -> None:
        """Set a channel variable; CR/LF/NUL in the value become spaces."""
        reply = await self._exchange(self._protocol.set_variable(name, value))
        if not reply.ok:
            raise AGICommandError(f"SET VARIABLE {name}", reply)

    async def set_variables(self, variables: Mapping[str, str | int]) -> None:
        """Set several channel variables, in the mapping's order.

        Plain values (letters, digits, ``.``, ``_``, ``-``) go in ONE command,
        ``EXEC MSet(a=1,b=2)``: each AGI round trip waits for Asterisk's channel
        thread and for our event loop, and Asterisk reads commands through a
        stdio buffer, so pipelining several commands would stall it. Anything
        else is set one by one with SET VARIABLE, which quotes the value.
        """
        items = [(name, str(value)) for name, value in variables.items()]
        if len(items) > 1 and all(_PLAIN.fullmatch(v) and _NAME.fullmatch(n) for n, v in items):
            reply = await self._exchange(
                self._protocol.send_command("EXEC", "MSet", ",".join(f"{n}={v}" for n, v in items)))
            if reply.ok and reply.result == "0":  # MSet ran (-2 would be "no such application")
                return
        for name, value in items:
            await self.set_variable(name, value)

    async def get_variable(self, name: str) -> str | None:
        """A channel variable's value, or None when it is not set."""
        reply = await self._exchange(self._protocol.get_variable(name))
        if not reply.ok:
            raise AGICommandError(f"GET VARIABLE {name}", reply)
        if reply.result != "1":
            return None
        return reply.data if reply.data is not None else ""

    async def verbose(self, message: str, level: int = 1) -> None:
        """Write a line into Asterisk's own log, next to the call's other lines."""
        await self._exchange(self._protocol.verbose(message, level))

    async def _exchange(self, data: bytes) -> Reply:
        self._writer.write(data)
        await self._writer.drain()
        while True:
            event = self._protocol.next_event()
            if event is NEED_DATA:
                self._protocol.receive_data(await self._reader.read(READ_CHUNK))
            elif isinstance(event, Reply):
                return event
            elif isinstance(event, HangupNotice):
                self.hung_up = True  # not the reply: keep waiting for it
            elif isinstance(event, Closed):
                raise RemoteProtocolError("Asterisk closed the connection before replying")


Route = Callable[[Request, AGISession], Awaitable[None]]


@dataclass
class LatencyHistogram:
    """Handler durations in fixed buckets: bounded memory, ready for /metrics."""

    bounds_ms: tuple[float, ...] = LATENCY_BUCKETS_MS
    counts: list[int] = field(default_factory=list)  # per bucket, last one is +Inf
    count: int = 0
    sum_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds_ms) + 1)

    def observe(self, ms: float) -> None:
        # bisect_left puts a value equal to a bound into that bound's bucket (le).
        self.counts[bisect.bisect_left(self.bounds_ms, ms)] += 1
        self.count += 1
        self.sum_ms += ms

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound in ms, observations ≤ bound), ending with +Inf."""
        running, rows = 0, []
        for bound, n in zip((*self.bounds_ms, float("inf")), self.counts):
            running += n
            rows.append((bound, running))
        return rows


@dataclass
class RouteStats:
    """Counters for one route. A timeout is not also counted as a failure."""

    requests: int = 0
    failures: int = 0
    timeouts: int = 0
    durations: LatencyHistogram = field(default_factory=LatencyHistogram)

    def summary(self) -> dict[str, Any]:
        """The counters and the cumulative histogram (bound in ms → count), as /healthz and /metrics read them."""
        return {"requests": self.requests, "failures": self.failures, "timeouts": self.timeouts,
                "le_ms": {str(b): n for b, n in self.durations.cumulative()}, "sum_ms": self.durations.sum_ms}


@dataclass
class ServerStats:
    """Counters for the whole server; per-route entries exist only for known routes."""

    routes: dict[str, RouteStats] = field(default_factory=dict)
    connections: int = 0  # accepted
    rejected: int = 0  # turned away at max_connections
    bad_requests: int = 0  # garbage, EOF or deadline before the request was complete
    unknown_routes: int = 0  # kept out of `routes` so callers cannot grow it


class FastAGIServer:
    """Listens for Asterisk's FastAGI connections and runs one route per call."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        host: str = "127.0.0.1",
        port: int = 4573,
        request_deadline: float = 1.5,
        max_connections: int = 512,
    ) -> None:
        if request_deadline <= 0:
            raise ValueError("request_deadline must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._routes = {name.strip("/"): route for name, route in routes.items()}
        self._host = host
        self._port = port
        self._deadline = request_deadline
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.stats = ServerStats(routes={name: RouteStats() for name in self._routes})

    @property
    def port(self) -> int:
        """The port actually bound (useful with port=0)."""
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    @property
    def active_connections(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FastAGI server already started")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, reuse_address=True
        )
        log.info("FastAGI listening on %s:%d, routes: %s", self._host, self.port, ", ".join(self._routes))

    async def stop(self, grace: float = 0.0) -> None:
        """Stop listening, give running calls up to `grace` seconds, then cut the rest."""
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = set(self._tasks)
        if tasks and grace > 0:
            _, tasks = await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FastAGIServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, so that the connection's task is ours: tracked,
        # awaited on stop, never left for the loop to drop.
        if self._stopping or len(self._tasks) >= self._max_connections:
            self.stats.rejected += 1
            log.warning(
                "FastAGI connection from %s refused: %s",
                writer.get_extra_info("peername"),
                "server stopping" if self._stopping else f"{self._max_connections} connections open",
            )
            writer.transport.abort()
            return
        self.stats.connections += 1
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._forget, writer))

    def _forget(self, writer: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # A task cancelled before its first step never ran its own close.
        if not writer.transport.is_closing():
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        protocol = AGIProtocol()
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    request = await _read_request(protocol, reader)
            except TimeoutError:
                self.stats.bad_requests += 1
                log.warning("FastAGI %s: no complete request within %.2f s; closing", peer, self._deadline)
                return
            except (AGIProtocolError, OSError) as exc:
                self.stats.bad_requests += 1
                log.warning("FastAGI %s: %s; closing", peer, exc)
                return
            if request is None:
                return  # connected and closed without a word
            route = self._routes.get(request.script)
            if route is None:
                self.stats.unknown_routes += 1
                log.warning(
                    "FastAGI %s: unknown route %r for call %s; closing",
                    peer,
                    request.script,
                    request.uniqueid,
                )
                return
            await self._run_route(request, route, AGISession(request, protocol, reader, writer), deadline)
        finally:
            await _close(writer)

    async def _run_route(self, request: Request, route: Route, session: AGISession, deadline: float) -> None:
        stats = self.stats.routes[request.script]
        stats.requests += 1
        started = time.perf_counter()
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                await route(request, session)
        except TimeoutError as exc:
            if not timeout.expired():
                self._route_failed(stats, request, exc)  # the route's own timeout, not ours
            else:
                stats.timeouts += 1
                log.warning(
                    "FastAGI route %r for call %s cut at the %.2f s deadline; closing",
                    request.script,
                    request.uniqueid,
                    self._deadline,
                )
        except Exception as exc:
            self._route_failed(stats, request, exc)
        finally:
            stats.durations.observe((time.perf_counter() - started) * 1000.0)

    @staticmethod
    def _route_failed(stats: RouteStats, request: Request, exc: Exception) -> None:
        stats.failures += 1
        log.error(
            "FastAGI route %r failed for call %s: %s: %s; closing",
            request.script,
            request.uniqueid,
            type(exc).__name__,
            exc,
        )
        log.debug("FastAGI route %r traceback", request.script, exc_info=exc)


async def _read_request(protocol: AGIProtocol, reader: asyncio.StreamReader) -> Request | None:
    """The request, or None if the peer closed before sending anything."""
    while True:
        event = protocol.next_event()
        if event is NEED_DATA:
            protocol.receive_data(await reader.read(READ_CHUNK))
        elif isinstance(event, Request):
            return event
        else:
            # Only Closed can come before the request: after EOF the codec
            # answers Closed for ever, so returning here is what stops a spin.
            return None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_GRACE):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
