"""A real call-taker softphone for the lab: baresip, headless, driven over ctrl_tcp.

baresip registers with a user name and password (as seats do in a real center),
auto-answers, sends a 440 Hz tone as its voice, and takes commands (DTMF,
hang-up) as netstring JSON on a local TCP port, which also pushes its events
(CALL_ESTABLISHED, CALL_CLOSED): tests wait on those, not on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

MODULES = "/usr/lib/baresip/modules"


def _netstring(payload: dict) -> bytes:
    data = json.dumps(payload).encode()
    return str(len(data)).encode() + b":" + data + b","


class Softphone:
    def __init__(self, user: str, password: str, *, sip_port: int = 5095, ctrl_port: int = 4444,
                 registrar: str = "127.0.0.1:5060") -> None:
        self.user, self.password = user, password
        self.sip_port, self.ctrl_port, self.registrar = sip_port, ctrl_port, registrar
        self.dir = Path(tempfile.mkdtemp(prefix="jiejing-baresip-"))
        self.proc: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue = asyncio.Queue()
        self._reader_task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None

    def _write_config(self) -> None:
        (self.dir / "config").write_text("\n".join([
            f"module_path {MODULES}",
            "module g711.so", "module ausine.so", "module account.so", "module menu.so", "module ctrl_tcp.so",
            "audio_source ausine,440", "ausrc_srate 48000", "ausrc_channels 2",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            "sip_trans_def udp", "",
        ]))
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@{self.registrar};transport=udp>;auth_pass={self.password};"
            "answermode=auto;regint=600\n")

    async def start(self, timeout: float = 10) -> None:
        if shutil.which("baresip") is None:
            raise RuntimeError("baresip is missing: run sip-lab/bootstrap.sh (Debian package baresip-core)")
        self._write_config()
        with open(self.dir / "baresip.log", "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                "baresip", "-f", str(self.dir), stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=asyncio.subprocess.STDOUT)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"baresip control port never opened; see {self.dir / 'baresip.log'}")
                await asyncio.sleep(0.1)
        self._reader_task = asyncio.create_task(self._read(reader))
        # Registration usually completes before the control port is even open,
        # so its event is gone: ask for the registration state instead.
        while True:
            await self.command("reginfo")
            reply = await self.wait_for_response("reginfo", timeout)
            if "OK" in str(reply.get("data", "")):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"baresip did not register: {reply.get('data')!r}")
            await asyncio.sleep(0.1)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        buf = b""
        while True:
            chunk = await reader.read(4096)
            if not chunk:
                return
            buf += chunk
            while b":" in buf:
                length, _, rest = buf.partition(b":")
                if not length.isdigit() or len(rest) < int(length) + 1:
                    break
                n = int(length)
                try:
                    await self.events.put(json.loads(rest[:n]))
                except ValueError:
                    pass
                buf = rest[n + 1:]

    async def wait_for(self, event_type: str, timeout: float = 10) -> dict:
        async def _wait():
            while True:
                msg = await self.events.get()
                if msg.get("type") == event_type:
                    return msg
        return await asyncio.wait_for(_wait(), timeout)

    async def wait_for_response(self, token: str, timeout: float = 10) -> dict:
        async def _wait():
            while True:
                msg = await self.events.get()
                if msg.get("response") and msg.get("token") == token:
                    return msg
        return await asyncio.wait_for(_wait(), timeout)

    async def command(self, command: str, params: str = "") -> None:
        assert self._writer is not None
        self._writer.write(_netstring({"command": command, "params": params, "token": command}))
        await self._writer.drain()

    async def stop(self) -> None:
        if self._writer is not None:
            try:
                await self.command("quit")
            except (ConnectionError, RuntimeError):
                pass
            self._writer.close()
        if self._reader_task:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if self.proc and self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
