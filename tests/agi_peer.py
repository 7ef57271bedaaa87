"""Asterisk's side of FastAGI, over a real TCP socket, for tests.

``AGIPeer`` sends the ``agi_*`` header block the way Asterisk 22 does and
lets a test read each command and write each reply by hand. ``run_call``
plays a whole call: it answers GET VARIABLE from a dict, records SET VARIABLE
and returns what was set. ``parse_agi_args`` splits a command line exactly as
Asterisk's res_agi does, so tests check what Asterisk would really see.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from types import TracebackType

__all__ = ["AGIPeer", "asterisk_headers", "parse_agi_args", "run_call"]

_uniqueids = itertools.count(1)


def asterisk_headers(
    script: str,
    args: Iterable[str] = (),
    *,
    uniqueid: str | None = None,
    callerid: str = "13800138000",
    **extra: str,
) -> dict[str, str]:
    """The header block Asterisk 22 writes for ``AGI(agi://127.0.0.1:4573/<script>,args…)``."""
    uniqueid = uniqueid or f"1764400000.{next(_uniqueids)}"
    headers = {
        "agi_network": "yes",
        "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}",
        "agi_channel": "PJSIP/carrier-00000001",
        "agi_language": "en",
        "agi_type": "PJSIP",
        "agi_uniqueid": uniqueid,
        "agi_version": "22.10.1",
        "agi_callerid": callerid,
        "agi_calleridname": "unknown",
        "agi_callingpres": "0",
        "agi_callingani2": "0",
        "agi_callington": "0",
        "agi_callingtns": "0",
        "agi_dnid": "110",
        "agi_rdnis": "unknown",
        "agi_context": "from-carrier",
        "agi_extension": "110",
        "agi_priority": "4",
        "agi_enhanced": "0.0",
        "agi_accountcode": "",
        "agi_threadid": "140241823938240",
    }
    for n, arg in enumerate(args, start=1):
        headers[f"agi_arg_{n}"] = arg
    headers.update(extra)
    return headers


def parse_agi_args(line: str) -> list[str]:
    """Split a command line into words the way Asterisk's parse_args() does.

    Double quotes group words (and may start mid-word), a backslash makes the
    next character literal, unquoted spaces and tabs separate words.
    """
    words: list[str] = []
    current: list[str] | None = None  # None: between words
    quoted = escaped = False
    for char in line:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
            continue
        elif char == '"':
            quoted = not quoted
            if quoted and current is None:
                current = []
                words.append("")
            continue
        elif char in " \t" and not quoted:
            if current is not None:
                words[-1] = "".join(current)
                current = None
            continue
        if current is None:
            current = []
            words.append("")
        current.append(char)
    if current is not None:
        words[-1] = "".join(current)
    return words


class AGIPeer:
    """One FastAGI connection as Asterisk holds it."""

    def __init__(self, host: str, port: int, *, timeout: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> AGIPeer:
        async with asyncio.timeout(self.timeout):
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def reader(self) -> asyncio.StreamReader:
        assert self._reader is not None, "use AGIPeer as an async context manager"
        return self._reader

    @property
    def writer(self) -> asyncio.StreamWriter:
        assert self._writer is not None, "use AGIPeer as an async context manager"
        return self._writer

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_headers(self, headers: Mapping[str, str], *, end: bool = True) -> None:
        """Write the header block; ``end=False`` leaves out the closing blank line."""
        block = "".join(f"{name}: {value}\n" for name, value in headers.items())
        await self.send_raw((block + ("\n" if end else "")).encode())

    async def read_command(self) -> str:
        """The next command line, without its newline. EOFError if the server closed."""
        async with asyncio.timeout(self.timeout):
            line = await self.reader.readline()
        if not line.endswith(b"\n"):
            raise EOFError(f"server closed the connection (partial line {line!r})")
        return line[:-1].decode()

    async def reply(self, line: str) -> None:
        await self.send_raw(line.encode() + b"\n")

    async def hangup_notice(self) -> None:
        """What Asterisk writes when the channel hangs up (unless AGISIGHUP=no)."""
        await self.send_raw(b"HANGUP\n")

    async def read_until_closed(self) -> bytes:
        """Everything the server still sends before it closes; TimeoutError if it does not."""
        async with asyncio.timeout(self.timeout):
            return await self.reader.read()

    async def close(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass  # the server may already have reset the connection


async def run_call(
    host: str,
    port: int,
    script: str,
    variables_in: Mapping[str, str],
    *,
    args: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    timeout: float = 2.0,
) -> dict[str, str]:
    """Play one call to the end and return the variables the server set.

    GET VARIABLE is answered from ``variables_in`` (``200 result=0`` when
    absent), SET VARIABLE is recorded, VERBOSE accepted, anything else gets
    ``510``. The call ends when the server closes the connection.
    """
    variables_set: dict[str, str] = {}
    async with AGIPeer(host, port, timeout=timeout) as peer:
        await peer.send_headers(headers if headers is not None else asterisk_headers(script, args))
        while True:
            try:
                line = await peer.read_command()
            except EOFError:
                return variables_set
            words = parse_agi_args(line)
            verb = [word.upper() for word in words[:2]]
            if verb == ["SET", "VARIABLE"] and len(words) == 4:
                variables_set[words[2]] = words[3]
                await peer.reply("200 result=1")
            elif verb == ["GET", "VARIABLE"] and len(words) == 3:
                value = variables_in.get(words[2])
                await peer.reply("200 result=0" if value is None else f"200 result=1 ({value})")
            elif verb[:1] == ["VERBOSE"]:
                await peer.reply("200 result=1")
            else:
                await peer.reply("510 Invalid or unknown command")
