"""An in-process fake Asterisk Manager server for unit tests of the AMI client.

It plays Asterisk 22's side of AMI on 127.0.0.1 (port chosen by the OS): sends
the banner, checks Login, answers Ping, answers other actions from a table,
emits events, and records every action it receives. Tests can make it drop
connections, stop answering pings, hold back answers to chosen actions, or go
down and come back on the same port.

It parses actions with its own few lines of code rather than the codec under
test, so a bug in the codec cannot hide itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

Pairs = list[tuple[str, str]]
# A handler gets the action and returns the messages to send back, the first
# normally the Response. The fake adds ActionID to a Response that lacks one.
Handler = Callable[["FakeAction"], "Iterable[Pairs] | Awaitable[Iterable[Pairs]]"]

BANNER = "Asterisk Call Manager/9.0.0"


class FakeAction:
    """One action as received: ordered header pairs."""

    def __init__(self, headers: Pairs, raw: bytes) -> None:
        self.headers = headers
        self.raw = raw

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.headers:
            if k.lower() == key.lower():
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == key.lower()]

    @property
    def name(self) -> str:
        return self.get("Action") or ""

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def __repr__(self) -> str:
        return f"FakeAction({self.headers!r})"


def encode(pairs: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in pairs) + b"\r\n"


def list_reply(
    action: FakeAction, items: list[Pairs], complete_event: str, message: str = "Events will follow"
) -> list[Pairs]:
    """Response, item events and Complete event of an EventList action, as Asterisk sends them."""
    aid = action.action_id or ""
    out: list[Pairs] = [[("Response", "Success"), ("ActionID", aid), ("EventList", "start"), ("Message", message)]]
    for item in items:
        out.append([item[0], ("ActionID", aid), *item[1:]])
    out.append(
        [("Event", complete_event), ("ActionID", aid), ("EventList", "Complete"), ("ListItems", str(len(items)))]
    )
    return out


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.logged_in = False


class FakeAsterisk:
    def __init__(self, *, username: str = "jiejing", secret: str = "s3cret", timestamps: bool = True) -> None:
        self.username = username
        self.secret = secret
        self.timestamps = timestamps
        self.answer_pings = True
        self.hold: set[str] = set()  # action names received and recorded but never answered
        self.handlers: dict[str, Handler] = {}
        self.actions: list[FakeAction] = []
        self.login_attempts: list[float] = []  # monotonic times
        self.logins = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._serving: set[asyncio.Task[None]] = set()  # one per connection, ends when it closes
        self._replies: set[asyncio.Task[None]] = set()  # slow answers in flight
        self._action_seen = asyncio.Condition()

    # -- control -------------------------------------------------------------

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def go_down(self) -> None:
        """Stop listening and drop every connection, as when Asterisk stops."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_connections()

    async def come_back(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def stop(self) -> None:
        await self.go_down()
        replies = list(self._replies)
        for task in replies:
            task.cancel()
        await asyncio.gather(*replies, return_exceptions=True)
        # Connection tasks end by themselves once their sockets are aborted;
        # cancelling them would upset asyncio's stream callback.
        async with asyncio.timeout(2.0):
            while self._serving:
                await asyncio.sleep(0.01)

    async def drop_connections(self) -> None:
        """Close every client connection abruptly, keep listening."""
        for conn in list(self._connections):
            conn.writer.transport.abort()
        # let the server-side readers notice
        await asyncio.sleep(0)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def emit(self, event: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Send an event to every logged-in connection."""
        pairs: Pairs = [("Event", event), ("Privilege", "call,all")]
        if self.timestamps:
            pairs.append(("Timestamp", f"{time.time():.6f}"))
        pairs.extend(headers)
        data = encode(pairs)
        for conn in self._connections:
            if conn.logged_in:
                conn.writer.write(data)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every logged-in connection."""
        for conn in self._connections:
            if conn.logged_in:
                conn.writer.write(data)

    def count(self, name: str) -> int:
        return sum(1 for a in self.actions if a.name.lower() == name.lower())

    def received(self, name: str) -> list[FakeAction]:
        return [a for a in self.actions if a.name.lower() == name.lower()]

    async def wait_for_action(self, name: str, count: int = 1, timeout: float = 2.0) -> FakeAction:
        """Wait until ``count`` actions called ``name`` have arrived; return the last."""
        async with asyncio.timeout(timeout):
            async with self._action_seen:
                await self._action_seen.wait_for(lambda: self.count(name) >= count)
        return self.received(name)[count - 1]

    # -- serving -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        conn = _Connection(reader, writer)
        self._connections.add(conn)
        try:
            writer.write(f"{BANNER}\r\n".encode())
            buf = b""
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    raw, buf = buf.split(b"\r\n\r\n", 1)
                    await self._on_action(conn, raw)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(conn)
            writer.transport.abort()
            self._serving.discard(task)

    async def _on_action(self, conn: _Connection, raw: bytes) -> None:
        headers: Pairs = []
        for line in raw.decode("utf-8", errors="replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers.append((key.strip(), value[1:] if value.startswith(" ") else value))
        action = FakeAction(headers, raw)
        self.actions.append(action)
        async with self._action_seen:
            self._action_seen.notify_all()
        aid = action.action_id or ""
        name = action.name.lower()

        if name == "login":
            self.login_attempts.append(time.monotonic())
            if action.get("Username") == self.username and action.get("Secret") == self.secret:
                conn.logged_in = True
                self.logins += 1
                conn.writer.write(
                    encode([("Response", "Success"), ("ActionID", aid), ("Message", "Authentication accepted")])
                )
                fully_booted = [("Event", "FullyBooted"), ("Privilege", "system,all")]
                if self.timestamps:
                    fully_booted.append(("Timestamp", f"{time.time():.6f}"))
                fully_booted.append(("Status", "Fully Booted"))
                conn.writer.write(encode(fully_booted))
            else:
                # Asterisk answers, then hangs up on a failed login.
                conn.writer.write(
                    encode([("Response", "Error"), ("ActionID", aid), ("Message", "Authentication failed")])
                )
                await conn.writer.drain()
                conn.writer.close()
            return
        if not conn.logged_in:
            conn.writer.write(encode([("Response", "Error"), ("ActionID", aid), ("Message", "Permission denied")]))
            return
        if action.name in self.hold:
            return
        if name == "ping":
            if self.answer_pings:
                pong = [("Response", "Success"), ("ActionID", aid), ("Ping", "Pong")]
                conn.writer.write(encode([*pong, ("Timestamp", f"{time.time():.6f}")]))
            return
        if name == "logoff":
            conn.writer.write(encode([("Response", "Goodbye"), ("ActionID", aid), ("Message", "Goodbye")]))
            conn.writer.close()
            return
        handler = self.handlers.get(action.name)
        if handler is None:
            conn.writer.write(
                encode([("Response", "Error"), ("ActionID", aid), ("Message", "Invalid/unknown command")])
            )
            return
        result = handler(action)
        if isinstance(result, Awaitable):
            # answered from its own task so that slow answers can overtake each other
            task = asyncio.create_task(self._answer_later(conn, action, result))
            self._replies.add(task)
            task.add_done_callback(self._replies.discard)
        else:
            self._write_reply(conn, action, result)

    async def _answer_later(self, conn: _Connection, action: FakeAction, result: Awaitable[Iterable[Pairs]]) -> None:
        messages = await result
        with contextlib.suppress(ConnectionError):
            self._write_reply(conn, action, messages)

    def _write_reply(self, conn: _Connection, action: FakeAction, messages: Iterable[Pairs]) -> None:
        if conn.writer.is_closing():
            return
        for pairs in messages:
            pairs = list(pairs)
            keys = {k.lower() for k, _ in pairs}
            if pairs and pairs[0][0].lower() == "response" and "actionid" not in keys:
                pairs.insert(1, ("ActionID", action.action_id or ""))
            if pairs and pairs[0][0].lower() == "event" and self.timestamps and "timestamp" not in keys:
                pairs.insert(1, ("Timestamp", f"{time.time():.6f}"))
            conn.writer.write(encode(pairs))
