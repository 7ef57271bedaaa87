"""FastAGI, server side, as a sans-IO protocol: bytes from Asterisk in, events out.

Asterisk opens one TCP connection per ``AGI(agi://host/NAME)`` call, writes a
block of ``agi_*: value`` header lines ended by a blank line, then waits for
commands; it answers each command with one reply line (or a ``520-`` block),
and may write a bare ``HANGUP`` line at any time after the headers when the
channel hangs up. This module turns that byte stream into events
(``Request``, ``Reply``, ``HangupNotice``, ``Closed``) and turns commands into
bytes. It does no I/O, so every edge case is a plain unit test; the asyncio
server in ``telephony.agi.server`` drives it.

    proto = AGIProtocol()
    proto.receive_data(chunk)          # b"" means the peer closed
    event = proto.next_event()         # NEED_DATA until a whole event is in
    wire = proto.set_variable("JIEJING_QUEUE", "emergency-110")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "AGIProtocol",
    "AGIProtocolError",
    "Closed",
    "Event",
    "HangupNotice",
    "LocalProtocolError",
    "NEED_DATA",
    "RemoteProtocolError",
    "Reply",
    "Request",
    "State",
]

# Caps on what an incomplete message may buffer: a broken or hostile peer
# must not be able to make us hold unbounded memory.
MAX_LINE_BYTES: Final = 8 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 256
MAX_REPLY_BYTES: Final = 64 * 1024
# Asterisk reads a command with fgets() into a 2048-byte buffer and executes
# whatever fills it, then reads the rest of the line as a *second* command.
# A longer line would therefore split into two commands and two replies.
MAX_COMMAND_BYTES: Final = 2047

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_REPLY_LINE = re.compile(r"(\d{3})(?:([ -])(.*))?", re.DOTALL)
# CR and LF end an AGI command line and NUL ends it inside Asterisk (C string):
# none of them may reach the wire inside a value.
_LINE_BREAKERS = str.maketrans({"\r": " ", "\n": " ", "\x00": " "})
_NEEDS_QUOTES = frozenset(' \t"\\')


class AGIProtocolError(Exception):
    """The FastAGI conversation cannot go on."""


class LocalProtocolError(AGIProtocolError):
    """Our own code misused the protocol (wrong state, bad variable name, …)."""


class RemoteProtocolError(AGIProtocolError):
    """The peer sent something that is not FastAGI (or too much of it)."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Returned by ``next_event`` when more bytes are needed for the next event."""


@dataclass(frozen=True, slots=True)
class Request:
    """The header block Asterisk sends when the dialplan runs ``AGI()``."""

    headers: dict[str, str]
    script: str  # route name: "intake" for agi://host:port/intake?x=y
    args: list[str]  # agi_arg_1 … agi_arg_N, in order

    @property
    def uniqueid(self) -> str:
        return self.headers.get("agi_uniqueid", "")

    @property
    def channel(self) -> str:
        return self.headers.get("agi_channel", "")

    @property
    def callerid(self) -> str:
        return self.headers.get("agi_callerid", "")


@dataclass(frozen=True, slots=True)
class Reply:
    """Asterisk's answer to one command, e.g. ``200 result=1 (value)``."""

    code: int
    result: str | None  # the part after "result=", if any
    data: str | None  # the parenthesised part after the result, if any
    text: str  # everything after the code; lines of a 520 block joined by "\n"

    @property
    def ok(self) -> bool:
        return self.code == 200


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """The channel hung up; Asterisk still answers commands (in dead mode)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer closed the connection; no more events will come."""


Event = Request | Reply | HangupNotice | Closed


class State(Enum):
    """Where the conversation stands, from our (the server's) side."""

    HEADERS = "reading headers"
    IDLE = "idle"  # request in hand, no command outstanding
    AWAITING_REPLY = "awaiting reply"
    CLOSED = "closed"
    ERROR = "error"  # the peer broke the protocol; nothing more is parsed


class _Send:
    """Trigger for the state table: we wrote a command."""


# Every legal move, in one place. A pair missing here is a protocol error:
# ours (sending) → LocalProtocolError; the parser never produces the others.
# Any RemoteProtocolError moves to ERROR (or CLOSED after EOF mid-headers).
_TRANSITIONS: Final[dict[tuple[State, type], State]] = {
    (State.HEADERS, Request): State.IDLE,
    (State.HEADERS, Closed): State.CLOSED,
    (State.IDLE, _Send): State.AWAITING_REPLY,
    (State.IDLE, HangupNotice): State.IDLE,
    (State.IDLE, Closed): State.CLOSED,
    (State.AWAITING_REPLY, HangupNotice): State.AWAITING_REPLY,
    (State.AWAITING_REPLY, Reply): State.IDLE,
    (State.AWAITING_REPLY, Closed): State.CLOSED,
}


def _clean(text: str) -> str:
    return text.translate(_LINE_BREAKERS)


def _quote(word: str, *, always: bool = False) -> str:
    """One argument as Asterisk's parse_args() reads it back, on one line."""
    word = _clean(word)
    if always or not word or not _NEEDS_QUOTES.isdisjoint(word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _check_variable_name(name: object) -> str:
    if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
        raise LocalProtocolError(f"invalid channel variable name: {name!r}")
    return name


def _parse_reply(code: int, text: str) -> Reply:
    result = data = None
    if text.startswith("result="):
        result, _, rest = text[len("result=") :].partition(" ")
        if rest.startswith("("):
            # GET VARIABLE writes "(value)" with the value verbatim, parentheses
            # included, so the data runs to the last ")" on the line.
            close = rest.rfind(")")
            if close > 0:
                data = rest[1:close]
    return Reply(code=code, result=result, data=data, text=text)


def _excerpt(line: str) -> str:
    return repr(line if len(line) <= 60 else line[:60] + "…")


class AGIProtocol:
    """One FastAGI connection, seen from the server. Not thread-safe; no I/O."""

    def __init__(self) -> None:
        self._state = State.HEADERS
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already searched for "\n"
        self._eof = False
        self._error: str | None = None
        self._headers: dict[str, str] = {}
        self._header_lines = 0
        self._header_bytes = 0
        self._received_any = False
        self._multiline_code: int | None = None
        self._multiline_text: list[str] = []
        self._reply_bytes = 0
        self._last_line_bytes = 0  # wire size of the line _next_line() returned last

    @property
    def state(self) -> State:
        return self._state

    # ---------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the socket; ``b""`` means the peer closed."""
        if self._state is State.ERROR:
            return  # nothing after a protocol error is ever parsed
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after end of stream")
        self._buffer += data
        self._received_any = True

    def next_event(self) -> Event | _NeedData:
        """The next complete event, or ``NEED_DATA``."""
        if self._state is State.ERROR:
            raise RemoteProtocolError(f"connection already failed: {self._error}")
        if self._state is State.CLOSED:
            return Closed()
        try:
            if self._state is State.HEADERS:
                event = self._next_request()
            elif self._state is State.IDLE:
                event = self._next_unsolicited()
            else:
                event = self._next_reply()
        except RemoteProtocolError as exc:
            if self._state is not State.CLOSED:
                self._state = State.ERROR
                self._error = str(exc)
                self._buffer.clear()
            raise
        if event is not NEED_DATA:
            self._state = _TRANSITIONS[(self._state, type(event))]
        return event

    def _next_line(self) -> str | None:
        end = self._buffer.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buffer)
            # +1: a line of exactly the maximum may still be waiting for "\r\n".
            if len(self._buffer) > MAX_LINE_BYTES + 1:
                raise RemoteProtocolError(f"line longer than {MAX_LINE_BYTES} bytes")
            return None
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > MAX_LINE_BYTES:
            raise RemoteProtocolError(f"line longer than {MAX_LINE_BYTES} bytes")
        self._last_line_bytes = end + 1
        return raw.decode("utf-8", errors="replace")

    def _next_request(self) -> Request | Closed | _NeedData:
        while True:
            line = self._next_line()
            if line is None:
                if not self._eof:
                    return NEED_DATA
                if not self._received_any:
                    return Closed()  # connected and closed: a port probe, not an error
                self._state = State.CLOSED
                raise RemoteProtocolError("connection closed before the AGI headers ended")
            self._header_bytes += self._last_line_bytes
            if self._header_bytes > MAX_HEADER_BYTES:
                raise RemoteProtocolError(f"AGI header block longer than {MAX_HEADER_BYTES} bytes")
            if line == "":
                if not self._headers:
                    raise RemoteProtocolError("empty AGI header block")
                return self._build_request()
            self._header_lines += 1
            if self._header_lines > MAX_HEADERS:
                raise RemoteProtocolError(f"more than {MAX_HEADERS} AGI header lines")
            name, sep, value = line.partition(": ")
            if not sep or not _HEADER_NAME.fullmatch(name):
                raise RemoteProtocolError(f"malformed AGI header line: {_excerpt(line)}")
            self._headers[name] = value

    def _build_request(self) -> Request:
        headers, self._headers = self._headers, {}
        script = headers.get("agi_network_script", "").partition("?")[0].strip("/")
        args = []
        while (arg := headers.get(f"agi_arg_{len(args) + 1}")) is not None:
            args.append(arg)
        return Request(headers=headers, script=script, args=args)

    def _next_unsolicited(self) -> HangupNotice | Closed | _NeedData:
        line = self._next_line()
        if line is None:
            return Closed() if self._eof else NEED_DATA
        if line == "HANGUP":
            return HangupNotice()
        raise RemoteProtocolError(f"unexpected line while no command is outstanding: {_excerpt(line)}")

    def _next_reply(self) -> Reply | HangupNotice | Closed | _NeedData:
        while True:
            line = self._next_line()
            if line is None:
                return Closed() if self._eof else NEED_DATA
            code = self._multiline_code
            if code is not None:
                self._reply_bytes += self._last_line_bytes
                if self._reply_bytes > MAX_REPLY_BYTES:
                    raise RemoteProtocolError(f"AGI reply longer than {MAX_REPLY_BYTES} bytes")
                prefix = f"{code} "
                if line.startswith(prefix) or line == str(code):
                    self._multiline_text.append(line[len(prefix) :])
                    text = "\n".join(self._multiline_text)
                    self._multiline_code, self._multiline_text = None, []
                    return Reply(code=code, result=None, data=None, text=text)
                self._multiline_text.append(line)  # usage text, taken verbatim
                continue
            # Only whole lines count: "HANGUP" is not a reply (taking it for one
            # would shift every later reply by one command).
            if line == "HANGUP":
                return HangupNotice()
            match = _REPLY_LINE.fullmatch(line)
            if match is None:
                raise RemoteProtocolError(f"malformed AGI reply line: {_excerpt(line)}")
            code = int(match.group(1))
            if match.group(2) == "-":
                self._multiline_code = code
                self._multiline_text = [match.group(3)]
                self._reply_bytes = self._last_line_bytes
                continue
            return _parse_reply(code, match.group(3) or "")

    # --------------------------------------------------------------- output

    def send_command(self, *words: str) -> bytes:
        """Bytes for one command; each word is quoted when it needs to be."""
        if not words:
            raise LocalProtocolError("an AGI command needs at least one word")
        for word in words:
            if not isinstance(word, str):
                raise LocalProtocolError(f"AGI command words must be str, got {word!r}")
        return self._send(" ".join(_quote(word) for word in words))

    def set_variable(self, name: str, value: str | int) -> bytes:
        """``SET VARIABLE name "value"``; the value is always quoted."""
        name = _check_variable_name(name)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise LocalProtocolError(f"channel variable values must be str or int, got {value!r}")
        return self._send(f"SET VARIABLE {name} {_quote(str(value), always=True)}")

    def get_variable(self, name: str) -> bytes:
        """``GET VARIABLE name``; the reply's ``data`` holds the value."""
        return self._send(f"GET VARIABLE {_check_variable_name(name)}")

    def verbose(self, message: str, level: int = 1) -> bytes:
        """``VERBOSE "message" level``: a line in Asterisk's own log."""
        if not isinstance(message, str):
            raise LocalProtocolError(f"VERBOSE needs a str message, got {message!r}")
        if isinstance(level, bool) or not isinstance(level, int):
            raise LocalProtocolError(f"VERBOSE level must be an int, got {level!r}")
        return self._send(f"VERBOSE {_quote(message, always=True)} {level}")

    def _send(self, line: str) -> bytes:
        next_state = _TRANSITIONS.get((self._state, _Send))
        if next_state is None:
            raise LocalProtocolError(f"cannot send an AGI command while {self._state.value}")
        # Lone surrogates cannot be encoded; a replacement keeps the line intact.
        data = (line + "\n").encode("utf-8", errors="replace")
        if len(data) > MAX_COMMAND_BYTES:
            raise LocalProtocolError(
                f"AGI command of {len(data)} bytes; Asterisk splits lines over {MAX_COMMAND_BYTES}"
            )
        self._state = next_state
        return data
