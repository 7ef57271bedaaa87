"""asyncio client for the Asterisk Manager Interface, over the sans-IO codec.

One :class:`AMIClient` owns one connection to Asterisk and keeps it up: it
connects, logs in, pings, and on any failure closes the socket and reconnects
with back-off until :meth:`AMIClient.stop`.

Rules that matter for an emergency line:

* Never resend. When the connection drops, every action still waiting for its
  response fails with :class:`ConnectionLost`; nothing is replayed, because a
  replayed Originate would ring an officer twice. :meth:`AMIClient.originate`
  turns that into :class:`OriginateOutcomeUnknown`: look at channel state,
  do not retry blindly.
* No queuing while down: an action called while disconnected raises
  :class:`NotConnected` at once (nothing was sent, so retrying later is safe).
* Events missed while down are not recoverable from AMI itself, so connect
  hooks run after every login for the caller to resynchronise (CoreShowChannels,
  QueueStatus).
* The reader never waits on anyone: Asterisk drops a reader that stalls longer
  than its ``writetimeout`` (100 ms). Listeners are called synchronously and
  must be cheap; queues from :meth:`AMIClient.subscribe` are unbounded.
* Pings are checked: an unanswered Ping means the connection is dead even if
  TCP has not noticed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from .codec import (
    NEED_DATA,
    AMIProtocol,
    AMIProtocolError,
    Banner,
    Closed,
    Event,
    Headers,
    LocalProtocolError,
    Response,
    encode_action,
    variable_headers,
)

__all__ = [
    "AMIClient",
    "AMIClientError",
    "ActionTimeout",
    "ConnectionLost",
    "LoginFailed",
    "NotConnected",
    "OriginateOutcomeUnknown",
]

log = logging.getLogger(__name__)

# Unread events a subscriber queue holds at most (the oldest are dropped past it).
SUBSCRIBER_MAX = 100_000

EventListener = Callable[[Event], object]
ConnectHook = Callable[[], Awaitable[object]]


class AMIClientError(Exception):
    """Base class of the client's own errors."""


class NotConnected(AMIClientError):
    """The action was not sent: there is no logged-in connection right now."""


class ConnectionLost(AMIClientError):
    """The connection dropped after the action was written; Asterisk may or may
    not have run it."""


class OriginateOutcomeUnknown(ConnectionLost):
    """An Originate was written but its response never came (connection lost,
    or no response in time). Check channel state; do not simply retry."""


class ActionTimeout(AMIClientError, TimeoutError):
    """No response within the action's timeout; a late response is dropped."""


class LoginFailed(AMIClientError):
    """Asterisk refused our Login."""


class _PingTimeout(AMIClientError):
    pass


class _Pending:
    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Response]) -> None:
        self.future = future


class _ListCollector:
    """Gathers the events of one EventList action until its Complete event."""

    __slots__ = ("future", "response", "events", "complete")

    def __init__(self, future: asyncio.Future[tuple[Response, list[Event]]]) -> None:
        self.future = future
        self.response: Response | None = None
        self.events: list[Event] = []
        self.complete = False

    def on_response(self, response: Response) -> None:
        self.response = response
        if not response.ok:
            self.events.clear()  # Asterisk sends no list after an error
            self.complete = True
        self._maybe_finish()

    def on_event(self, event: Event) -> None:
        if _ends_list(event):
            self.complete = True
        else:
            self.events.append(event)
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.complete and self.response is not None and not self.future.done():
            self.future.set_result((self.response, self.events))


def _ends_list(event: Event) -> bool:
    flag = (event.get("EventList") or "").lower()
    return flag in ("complete", "cancelled") or event.name.endswith("Complete")


class AMIClient:
    """A self-healing AMI connection. See the module docstring for the rules.

    ``reconnect_delay`` is ``(first, most)``: the wait after a failure doubles
    from ``first`` up to ``most`` and returns to ``first`` after a successful
    login.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        ping_interval: float = 2.0,
        ping_timeout: float = 1.5,
        connect_timeout: float = 2.0,
        reconnect_delay: tuple[float, float] = (0.2, 2.0),
        event_mask: str = "on",
    ) -> None:
        if reconnect_delay[0] <= 0 or reconnect_delay[1] < reconnect_delay[0]:
            raise ValueError("reconnect_delay must be (first, most) with 0 < first <= most")
        self._host = host
        self._port = port
        self._username = username
        self._secret = secret
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_delay = reconnect_delay
        self._event_mask = event_mask

        self._id_counter = itertools.count(1)
        self._id_token = secrets.token_hex(4)

        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

        self._writer: asyncio.StreamWriter | None = None
        self._authenticated = False  # login answered; internal actions may flow
        self._connected = False  # login succeeded; public actions may flow
        self._connected_event = asyncio.Event()
        self._banner: asyncio.Future[str] | None = None
        self._pending: dict[str, _Pending] = {}
        self._lists: dict[str, _ListCollector] = {}
        self._abandoned_lists: set[str] = set()

        self._queues: list[asyncio.Queue[Event]] = []
        self.dropped_events = 0  # dropped from full subscriber queues
        self._listeners: list[EventListener] = []
        self._connect_hooks: list[ConnectHook] = []

        self._since: float | None = None
        self._logins = 0
        self._last_error: str | None = None
        self._last_ping_ms: float | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the owned task that connects and keeps the connection."""
        if self._runner is not None:
            raise RuntimeError("AMIClient already started")
        self._stopping = False
        self._since = time.time()
        self._runner = asyncio.create_task(self._run(), name=f"ami-client-{self._host}:{self._port}")

    async def stop(self) -> None:
        """Close the connection and cancel and await every owned task."""
        self._stopping = True
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._teardown("client stopped")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until logged in (raises TimeoutError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            await self._connected_event.wait()

    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict[str, Any]:
        """Health summary. ``since`` is the epoch time the current state
        (connected or not) began; ``reconnects`` counts logins after the first."""
        return {
            "connected": self._connected,
            "since": self._since,
            "reconnects": max(0, self._logins - 1),
            "last_error": self._last_error,
            "last_ping_ms": self._last_ping_ms,
            "dropped_events": self.dropped_events,
        }

    # -- events ------------------------------------------------------------

    def subscribe(self, maxsize: int = SUBSCRIBER_MAX) -> asyncio.Queue[Event]:
        """A new queue that receives every ordinary event, at most ``maxsize`` unread.

        The reader never waits for a subscriber: past ``maxsize`` the oldest unread event is dropped
        and counted in ``status()["dropped_events"]``.
        """
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self._queues.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        with contextlib.suppress(ValueError):
            self._queues.remove(queue)

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener(event)`` for every ordinary event, inside the reader.

        It must return quickly; exceptions are logged and ignored. Coroutine
        functions are refused: nobody would await them.
        """
        if inspect.iscoroutinefunction(listener):
            raise TypeError("listeners are called synchronously; use subscribe() for async consumers")
        self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def add_connect_hook(self, hook: ConnectHook) -> None:
        """Await ``hook()`` after every successful login, reconnects included.

        Hooks run one after another in an owned task, so the reader keeps
        going while they issue actions; exceptions are logged.
        """
        self._connect_hooks.append(hook)

    # -- actions -----------------------------------------------------------

    async def action(self, name: str, headers: Headers | None = None, *, timeout: float = 5.0) -> Response:
        """Send one action and return its response (``ok`` may be False).

        Raises NotConnected (nothing sent), ConnectionLost (sent, outcome
        unknown), ActionTimeout, or LocalProtocolError (refused before sending).
        """
        return await self._request(name, headers or (), timeout, require_login=True)

    async def list_action(
        self, name: str, headers: Headers | None = None, *, timeout: float = 10.0
    ) -> tuple[Response, list[Event]]:
        """Send an EventList action; return its response and its item events.

        Items are the events carrying this action's ActionID, in order, up to
        and excluding the ``...Complete`` event. They go only to this call, not
        to subscribers: they describe a snapshot, not something that happened,
        and a consumer seeing them mixed with live events would double-count.
        """
        writer = self._writer_for(require_login=True)
        action_id = self._new_action_id()
        data = encode_action(name, action_id, headers or ())
        future: asyncio.Future[tuple[Response, list[Event]]] = asyncio.get_running_loop().create_future()
        self._lists[action_id] = _ListCollector(future)
        writer.write(data)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            # Its remaining events may still arrive; keep them from subscribers.
            self._abandoned_lists.add(action_id)
            raise ActionTimeout(f"{name}: list not complete within {timeout} s") from None
        finally:
            self._lists.pop(action_id, None)
            _mark_retrieved(future)

    async def originate(self, *, response_timeout: float = 5.0, **fields: Any) -> Response:
        """Send Originate with ``Async: true`` and return Asterisk's response.

        ``fields`` are Originate headers (``Channel``, ``Application``,
        ``Data``, ``Context``, ``Exten``, ``Priority``, ``Timeout`` in ms,
        ``CallerID`` ...). ``Variable`` may be a mapping or pairs of channel
        variables; their values are escaped for the dialplan. ``Data`` is sent
        as given: escape caller text in it with ``dialplan_escape``. The
        outcome of the call arrives later as an ``OriginateResponse`` event with
        the same ActionID as the returned response.

        Raises OriginateOutcomeUnknown if the Originate was written but its
        response never came; NotConnected if it was not sent at all.
        """
        if any(key.lower() in ("async", "actionid", "action") for key in fields):
            raise LocalProtocolError("originate sets Async and ActionID itself")
        variables = fields.pop("Variable", None)
        headers: list[tuple[str, Any]] = list(fields.items())
        headers.append(("Async", "true"))
        if variables is not None:
            headers.extend(variable_headers(variables))
        try:
            return await self._request("Originate", headers, response_timeout, require_login=True)
        except ActionTimeout as exc:
            raise OriginateOutcomeUnknown(f"no response to Originate within {response_timeout} s") from exc
        except OriginateOutcomeUnknown:
            raise
        except ConnectionLost as exc:
            raise OriginateOutcomeUnknown(f"connection lost before the Originate response: {exc}") from exc

    # -- internals: requests -----------------------------------------------

    def _new_action_id(self) -> str:
        return f"jj-{next(self._id_counter)}-{self._id_token}"

    def _writer_for(self, *, require_login: bool) -> asyncio.StreamWriter:
        ready = self._connected if require_login else self._writer is not None
        if not ready or self._writer is None or self._writer.is_closing():
            raise NotConnected(f"AMI not connected to {self._host}:{self._port}")
        return self._writer

    async def _request(
        self, name: str, headers: Headers | Iterable[tuple[str, Any]], timeout: float, *, require_login: bool
    ) -> Response:
        writer = self._writer_for(require_login=require_login)
        action_id = self._new_action_id()
        data = encode_action(name, action_id, headers)  # may refuse before anything is sent
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = _Pending(future)
        writer.write(data)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise ActionTimeout(f"{name}: no response within {timeout} s") from None
        finally:
            self._pending.pop(action_id, None)
            _mark_retrieved(future)

    # -- internals: connection ---------------------------------------------

    async def _run(self) -> None:
        delay = self._reconnect_delay[0]
        previous_error: str | None = None
        while not self._stopping:
            logged_in_before = self._logins
            try:
                await self._serve_connection()
                reason = "connection ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure means: drop and reconnect
                reason = _describe(exc)
            self._teardown(reason)
            self._last_error = reason
            if self._logins != logged_in_before:
                delay = self._reconnect_delay[0]
                log.warning("AMI connection to %s:%s lost: %s", self._host, self._port, reason)
            elif reason != previous_error:
                log.warning("AMI connection to %s:%s failed: %s", self._host, self._port, reason)
            else:
                log.debug("AMI connection to %s:%s failed again: %s", self._host, self._port, reason)
            previous_error = reason
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._reconnect_delay[1])

    async def _serve_connection(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(self._host, self._port)
        except TimeoutError:
            raise AMIClientError(f"no TCP connection within {self._connect_timeout} s") from None
        self._writer = writer
        self._banner = asyncio.get_running_loop().create_future()
        reader_task = asyncio.create_task(self._read_loop(reader), name="ami-reader")
        pinger: asyncio.Task[None] | None = None
        try:
            await self._login()
            pinger = asyncio.create_task(self._ping_loop(), name="ami-pinger")
            done, _ = await asyncio.wait({reader_task, pinger}, return_when=asyncio.FIRST_COMPLETED)
            # The reader's reason (EOF, bad bytes) explains more than the pinger's.
            (reader_task if reader_task in done else pinger).result()
        finally:
            self._mark_down()
            for task in (pinger, reader_task):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (pinger, reader_task) if t is not None), return_exceptions=True)

    async def _login(self) -> None:
        assert self._banner is not None
        try:
            async with asyncio.timeout(self._connect_timeout):
                banner = await self._banner
        except TimeoutError:
            raise AMIClientError(f"no AMI banner within {self._connect_timeout} s") from None
        log.debug("AMI banner: %s", banner)
        response = await self._request(
            "Login",
            (("Username", self._username), ("Secret", self._secret), ("Events", self._event_mask)),
            self._connect_timeout,
            require_login=False,
        )
        if not response.ok:
            raise LoginFailed(
                f"login refused for user {self._username!r}: {response.message or response.get('Response')}"
            )
        self._connected = True
        self._connected_event.set()
        self._since = time.time()
        self._logins += 1
        self._last_error = None
        log.info("AMI logged in to %s:%s as %s", self._host, self._port, self._username)
        if self._connect_hooks:
            self._spawn(self._run_connect_hooks(), name="ami-connect-hooks")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        protocol = AMIProtocol()
        try:
            while True:
                data = await reader.read(65536)
                protocol.receive_data(data)
                while True:
                    item = protocol.next_event()
                    if item is NEED_DATA:
                        break
                    if isinstance(item, Closed):
                        raise ConnectionLost("connection closed by Asterisk")
                    self._dispatch(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Fail waiters now, not when the connection unwinds: a Login or banner
            # wait must not sit out its timeout on a dead socket.
            self._mark_down()
            self._fail_waiters(_describe(exc))
            raise

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval)
            started = time.monotonic()
            try:
                await self._request("Ping", (), self._ping_timeout, require_login=True)
            except ActionTimeout:
                raise _PingTimeout(f"no answer to Ping within {self._ping_timeout} s") from None
            self._last_ping_ms = (time.monotonic() - started) * 1000.0

    def _dispatch(self, item: object) -> None:
        if isinstance(item, Event):
            self._dispatch_event(item)
        elif isinstance(item, Response):
            action_id = item.action_id or ""
            collector = self._lists.get(action_id)
            if collector is not None:
                collector.on_response(item)
                return
            pending = self._pending.get(action_id)
            if pending is not None and not pending.future.done():
                pending.future.set_result(item)
            else:
                log.debug("AMI response for no waiting action: %r", item)
        elif isinstance(item, Banner):
            if self._banner is not None and not self._banner.done():
                self._banner.set_result(item.text)
        else:
            log.debug("AMI message with neither Response nor Event: %r", item)

    def _dispatch_event(self, event: Event) -> None:
        action_id = event.action_id
        if action_id:
            collector = self._lists.get(action_id)
            if collector is not None:
                collector.on_event(event)
                return
            if action_id in self._abandoned_lists:
                if _ends_list(event):
                    self._abandoned_lists.discard(action_id)
                return
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
                self.dropped_events += 1
            queue.put_nowait(event)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("AMI event listener %r failed on %s", listener, event.name)

    def _fail_waiters(self, reason: str) -> None:
        if self._banner is not None and not self._banner.done():
            self._banner.set_exception(ConnectionLost(reason))
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(ConnectionLost(reason))
        lists, self._lists = self._lists, {}
        for collector in lists.values():
            if not collector.future.done():
                collector.future.set_exception(ConnectionLost(reason))

    def _mark_down(self) -> None:
        # From here on new actions get NotConnected instead of a doomed write.
        if self._connected or self._since is None:
            self._since = time.time()
        self._connected = False
        self._connected_event.clear()

    def _teardown(self, reason: str) -> None:
        self._mark_down()
        writer, self._writer = self._writer, None
        if writer is not None:
            # abort, not close: bytes still buffered must not reach Asterisk
            # after we have told their callers the connection is gone.
            writer.transport.abort()
        self._fail_waiters(reason)
        self._abandoned_lists.clear()
        if self._banner is not None:
            _mark_retrieved(self._banner)
        self._banner = None

    async def _run_connect_hooks(self) -> None:
        for hook in list(self._connect_hooks):
            try:
                await hook()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("AMI connect hook %r failed", hook)

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _mark_retrieved(future: asyncio.Future[Any]) -> None:
    # An exception set by _fail_waiters just as the waiter gave up would
    # otherwise be reported as "never retrieved" when the future is collected.
    if future.done() and not future.cancelled():
        future.exception()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, (AMIClientError, AMIProtocolError)):
        text = str(exc) or type(exc).__name__
        return text if isinstance(exc, AMIClientError) else f"protocol error: {text}"
    if isinstance(exc, TimeoutError):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
