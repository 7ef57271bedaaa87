"""Asterisk Manager Interface protocol, client side, with no I/O (sans-IO).

Bytes from Asterisk go in through :meth:`AMIProtocol.receive_data`; parsed
messages come out of :meth:`AMIProtocol.next_event`. Actions become bytes through
:func:`encode_action`. Nothing here touches a socket, a clock or the event loop,
so every edge case is testable by feeding bytes.

Wire format (Asterisk 22): the first line is a banner such as
``Asterisk Call Manager/9.0.0``; after it every message is ``Key: Value`` lines
closed by a blank line. Lines end with ``\\r\\n`` (a bare ``\\n`` is tolerated,
as Asterisk itself tolerates it). Keys may repeat (``Output`` in Command
responses, ``ChanVariable`` in channel events), so a message keeps its headers
as an ordered list of pairs.

Caller-controlled text (caller ID, names typed by a call-taker) reaches AMI
actions. Two layers protect Asterisk from it:

* :func:`encode_action` never lets CR, LF or NUL reach the wire, so a value
  cannot add a header or end an action early;
* :func:`dialplan_escape` neutralises what Asterisk's argument parser and
  variable substitution would interpret inside application data or
  ``Originate`` variables.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

__all__ = [
    "AMIProtocol",
    "AMIProtocolError",
    "Banner",
    "Closed",
    "Event",
    "LocalProtocolError",
    "MAX_ACTION_HEADERS",
    "MAX_ACTION_LINE",
    "MAX_LINE",
    "MAX_MESSAGE",
    "Message",
    "NEED_DATA",
    "RemoteProtocolError",
    "Response",
    "dialplan_escape",
    "encode_action",
    "variable_headers",
]

# What we accept from Asterisk. Its own messages are far smaller; the caps only
# bound the memory a broken or hostile peer can make us hold.
MAX_LINE = 64 * 1024
MAX_MESSAGE = 1024 * 1024

# What Asterisk accepts from us (main/manager.c): a 1024-byte input buffer that
# must hold the line plus CRLF, and at most 128 header lines per action. Longer
# lines are discarded by Asterisk, so we refuse them here with a clear error.
MAX_ACTION_LINE = 1022
MAX_ACTION_HEADERS = 128


class AMIProtocolError(Exception):
    """Base class of every protocol error raised by this module."""


class LocalProtocolError(AMIProtocolError):
    """We were asked to send something AMI cannot carry safely."""


class RemoteProtocolError(AMIProtocolError):
    """Asterisk (or whatever is on the socket) sent something that is not AMI."""


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
"""Returned by :meth:`AMIProtocol.next_event` when more bytes are needed."""


class Banner:
    """The greeting line Asterisk sends once, before any message."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Banner) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Banner({self.text!r})"


class Closed:
    """The peer closed the connection; nothing more will come."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Closed)

    def __hash__(self) -> int:
        return hash(Closed)

    def __repr__(self) -> str:
        return "Closed()"


class Message:
    """One AMI message: an ordered list of ``(key, value)`` pairs.

    Look-ups by key are case-insensitive because Asterisk itself is
    (``astman_get_header``) and some modules spell keys differently
    (``ActionID`` vs ``ActionId``).
    """

    __slots__ = ("headers",)

    def __init__(self, headers: Iterable[tuple[str, str]]) -> None:
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key``, or ``default``."""
        wanted = key.lower()
        for k, v in self.headers:
            if k.lower() == wanted:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key``, in arrival order."""
        wanted = key.lower()
        return [v for k, v in self.headers if k.lower() == wanted]

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)

    def as_dict(self) -> dict[str, str]:
        """Keys as spelt on the wire; for a repeated key the first value wins
        (same as :meth:`get`); use :meth:`get_all` for the others."""
        out: dict[str, str] = {}
        seen: set[str] = set()
        for k, v in self.headers:
            if k.lower() not in seen:
                seen.add(k.lower())
                out[k] = v
        return out

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.headers == self.headers  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self.headers))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.headers)!r})"


class Response(Message):
    """The answer to one action, matched to it by ``ActionID``."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        # "Follows" is what Asterisk before 14 answered to Command; accepting it
        # costs nothing and keeps older recorded transcripts readable.
        return (self.get("Response") or "").lower() in ("success", "goodbye", "follows")

    @property
    def message(self) -> str | None:
        return self.get("Message")


class Event(Message):
    """An unsolicited event, or one item of an EventList answering an action."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return self.get("Event") or ""

    @property
    def timestamp(self) -> float | None:
        """Asterisk's own time of the event (``timestampevents = yes``)."""
        raw = self.get("Timestamp")
        if raw is None:
            return None
        try:
            return float(raw)
        except ValueError:
            return None


class _State(enum.Enum):
    AWAIT_BANNER = "await-banner"
    BETWEEN = "between-messages"
    IN_MESSAGE = "in-message"
    CLOSED = "closed"
    ERROR = "error"


class _Input(enum.Enum):
    TEXT = "line without ':'"
    HEADER = "header line"
    BLANK = "blank line"
    EOF = "end of stream"
    EOF_PARTIAL = "end of stream inside a message"


# Every legal (state, input) -> next state. Anything missing is a protocol error.
_TRANSITIONS: dict[tuple[_State, _Input], _State] = {
    (_State.AWAIT_BANNER, _Input.TEXT): _State.BETWEEN,  # the banner
    (_State.AWAIT_BANNER, _Input.HEADER): _State.IN_MESSAGE,  # peer sent no banner
    (_State.AWAIT_BANNER, _Input.BLANK): _State.AWAIT_BANNER,
    (_State.AWAIT_BANNER, _Input.EOF): _State.CLOSED,
    (_State.BETWEEN, _Input.HEADER): _State.IN_MESSAGE,
    (_State.BETWEEN, _Input.BLANK): _State.BETWEEN,  # stray blank lines are harmless
    (_State.BETWEEN, _Input.EOF): _State.CLOSED,
    (_State.IN_MESSAGE, _Input.HEADER): _State.IN_MESSAGE,
    (_State.IN_MESSAGE, _Input.BLANK): _State.BETWEEN,  # message complete
}


class AMIProtocol:
    """Incremental AMI parser for the client side of one connection.

    Feed bytes with :meth:`receive_data` (``b""`` means EOF), then call
    :meth:`next_event` until it returns :data:`NEED_DATA`. It returns
    :class:`Banner`, :class:`Response`, :class:`Event`, a generic
    :class:`Message` (neither ``Response`` nor ``Event`` key) or
    :class:`Closed`.

    After a :class:`RemoteProtocolError` the stream cannot be trusted (we no
    longer know where a message starts), so every later call raises again: the
    owner must drop the connection. The one exception is EOF inside a message:
    it raises once, then reports :class:`Closed`.
    """

    def __init__(self, *, expect_banner: bool = True) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes at the head of _buf known to hold no newline
        self._eof = False
        self._state = _State.AWAIT_BANNER if expect_banner else _State.BETWEEN
        self._headers: list[tuple[str, str]] = []
        self._message_bytes = 0
        self._error: str | None = None

    @property
    def state(self) -> str:
        return self._state.value

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the socket; ``b""`` signals EOF."""
        if self._eof:
            if data:
                raise RuntimeError("received data after end of stream")
            return
        if not data:
            self._eof = True
            return
        if self._state is _State.ERROR:
            return  # the owner is about to drop the connection anyway
        self._buf += data

    def next_event(self) -> object:
        """The next parsed item, :data:`NEED_DATA`, or raise RemoteProtocolError."""
        while True:
            if self._state is _State.ERROR:
                raise RemoteProtocolError(self._error or "protocol error")
            if self._state is _State.CLOSED:
                return Closed()
            line = self._next_line()
            if line is None:
                if not self._eof:
                    return NEED_DATA
                partial = bool(self._buf) or self._state is _State.IN_MESSAGE
                if partial:
                    # Report the truncated message once, then behave as closed.
                    self._buf.clear()
                    self._headers = []
                    self._state = _State.CLOSED
                    raise RemoteProtocolError("connection closed in the middle of a message")
                self._transition(_Input.EOF)
                return Closed()
            result = self._handle_line(line)
            if result is not None:
                return result

    # -- internals -------------------------------------------------------

    def _fail(self, reason: str) -> RemoteProtocolError:
        self._state = _State.ERROR
        self._error = reason
        self._buf.clear()
        self._headers = []
        return RemoteProtocolError(reason)

    def _transition(self, kind: _Input) -> None:
        new = _TRANSITIONS.get((self._state, kind))
        if new is None:
            raise self._fail(f"unexpected {kind.value} in state {self._state.value}")
        self._state = new

    def _next_line(self) -> bytes | None:
        idx = self._buf.find(b"\n", self._scanned)
        if idx < 0:
            self._scanned = len(self._buf)
            if len(self._buf) > MAX_LINE:
                raise self._fail(f"line longer than {MAX_LINE} bytes")
            return None
        if idx > MAX_LINE:
            raise self._fail(f"line longer than {MAX_LINE} bytes")
        line = bytes(self._buf[:idx])
        del self._buf[: idx + 1]  # CPython makes head deletion cheap
        self._scanned = 0
        self._message_bytes += idx + 1
        if self._message_bytes > MAX_MESSAGE:
            raise self._fail(f"message larger than {MAX_MESSAGE} bytes")
        if line.endswith(b"\r"):
            line = line[:-1]
        return line

    def _handle_line(self, raw: bytes) -> object | None:
        text = raw.decode("utf-8", errors="replace")
        if not text:
            before = self._state
            self._transition(_Input.BLANK)
            self._message_bytes = 0
            if before is _State.IN_MESSAGE:
                headers, self._headers = self._headers, []
                return _classify(headers)
            return None
        key, sep, value = text.partition(":")
        if not sep:
            if self._state is _State.AWAIT_BANNER:
                self._transition(_Input.TEXT)
                self._message_bytes = 0
                return Banner(text)
            raise self._fail(f"line without ':' inside a message: {text[:80]!r}")
        key = key.strip()
        if not key:
            raise self._fail(f"header line without a name: {text[:80]!r}")
        # Asterisk writes "Key: Value"; drop exactly that one space so that
        # indentation in Command output lines survives.
        if value.startswith(" "):
            value = value[1:]
        self._transition(_Input.HEADER)
        self._headers.append((key, value))
        return None


def _classify(headers: list[tuple[str, str]]) -> Message:
    # The first key decides: OriginateResponse is an Event that also carries a
    # "Response" header.
    first = headers[0][0].lower()
    if first == "response":
        return Response(headers)
    if first == "event":
        return Event(headers)
    keys = {k.lower() for k, _ in headers}
    if "event" in keys:
        return Event(headers)
    if "response" in keys:
        return Response(headers)
    return Message(headers)


# -- encoding actions ----------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_VARIABLE_NAME = re.compile(r"[A-Za-z0-9_]+")
_UNSAFE = re.compile(r"[\r\n\0]")
_RESERVED = frozenset({"action", "actionid"})

HeaderValue = str | int | float | bool
Headers = Iterable[tuple[str, HeaderValue]] | Mapping[str, HeaderValue]


def _value_text(name: str, value: HeaderValue) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    raise LocalProtocolError(f"value of header {name!r} must be str, int or bool, not {type(value).__name__}")


def _line(name: str, value: str, unsafe: str) -> bytes:
    if not _NAME.fullmatch(name):
        raise LocalProtocolError(f"invalid AMI header name {name!r}")
    if _UNSAFE.search(value):
        if unsafe == "reject":
            raise LocalProtocolError(f"value of header {name!r} contains CR, LF or NUL")
        value = _UNSAFE.sub(" ", value)
    line = f"{name}: {value}".encode("utf-8", errors="replace")
    if len(line) > MAX_ACTION_LINE:
        raise LocalProtocolError(
            f"header {name!r} is {len(line)} bytes; Asterisk discards lines over {MAX_ACTION_LINE}"
        )
    return line + b"\r\n"


def encode_action(
    action: str,
    action_id: str,
    headers: Headers = (),
    *,
    unsafe: Literal["replace", "reject"] = "replace",
) -> bytes:
    """Bytes of one AMI action.

    ``headers`` is a mapping or an iterable of pairs; use pairs to repeat a
    header (``Variable``). CR, LF and NUL in values are replaced by a space
    (``unsafe="replace"``) or refused (``unsafe="reject"``): either way they
    never reach the wire, so a hostile caller ID cannot inject a header or end
    the action early. Names are checked against ``[A-Za-z0-9_-]+``. Raises
    :class:`LocalProtocolError` for anything Asterisk would misread or discard.
    """
    if unsafe not in ("replace", "reject"):
        raise ValueError("unsafe must be 'replace' or 'reject'")
    if not _NAME.fullmatch(action):
        raise LocalProtocolError(f"invalid AMI action name {action!r}")
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    lines = [_line("Action", action, unsafe), _line("ActionID", action_id, unsafe)]
    for name, value in pairs:
        if name.lower() in _RESERVED:
            raise LocalProtocolError(f"header {name!r} is set by encode_action itself")
        lines.append(_line(name, _value_text(name, value), unsafe))
    if len(lines) > MAX_ACTION_HEADERS:
        raise LocalProtocolError(f"{len(lines)} header lines; Asterisk accepts at most {MAX_ACTION_HEADERS}")
    lines.append(b"\r\n")
    return b"".join(lines)


# -- data for the dialplan ------------------------------------------------

# Why backslash-escaping rather than replacing: the caller's text must arrive
# unchanged (it is shown to officers and kept in the record), and Asterisk's
# argument splitter (__ast_app_separate_args with remove_chars, used by
# AST_STANDARD_APP_ARGS and by the parser of Originate's Variable header) takes
# "\x" as a literal x and drops the backslash. Escaped characters:
#   ,          the argument separator
#   |          the separator of Asterisk 1.4; harmless to escape, guards old habits
#   " \        quote toggling and the escape itself
#   ( ) [ ]    nesting counters: an unbalanced "(" glues later arguments together
#   { }        breaks "${" and "$[" into "$\{" / "$\[": variable substitution does
#              not honour backslashes, but it only fires on "$" directly followed
#              by "{" or "[", so the split pair is never evaluated, and the
#              argument splitter afterwards restores the original text.
_DIALPLAN_SPECIAL = frozenset(',|"\\()[]{}')


def dialplan_escape(value: str) -> str:
    """Make ``value`` one literal argument for Asterisk's dialplan.

    For caller-controlled text placed in application data (Originate
    ``Data``) or in ``Originate``'s ``Variable`` header. After one pass of
    Asterisk's argument splitter (with or without variable substitution before
    it) the result is exactly ``value``: it is never split, never evaluated
    (``${SHELL(...)}`` stays text), never merged with its neighbours.

    Use the result as a whole argument or a whole variable value. It protects
    one parsing pass: a dialplan that later puts the stored variable into
    another application's arguments must quote it there (``${QUOTE()}``), and
    must never ``EVAL()`` it. CR/LF/NUL are the encoder's business.
    """
    return "".join("\\" + c if c in _DIALPLAN_SPECIAL else c for c in value)


def variable_headers(variables: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``Variable`` header pairs for Originate, one per channel variable.

    Names must be plain channel-variable names (``[A-Za-z0-9_]+``, leading
    underscores allowed for inheritance); values go through
    :func:`dialplan_escape`, because Asterisk splits this header on commas
    before it sets the variables.
    """
    pairs = variables.items() if isinstance(variables, Mapping) else variables
    out = []
    for name, value in pairs:
        if not _VARIABLE_NAME.fullmatch(name):
            raise LocalProtocolError(f"invalid channel variable name {name!r}")
        out.append(("Variable", f"{name}={dialplan_escape(value)}"))
    return out
