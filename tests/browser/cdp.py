"""Headless Chromium driven over the Chrome DevTools Protocol, with aiohttp's WebSocket client.

Enough of CDP for our page tests: open a page, evaluate JavaScript, wait for
a condition, type into inputs, and save a screenshot. No Selenium or
Playwright: Debian's ``chromium`` package is all the browser tests need.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One headless Chromium process and one page of it."""

    def __init__(self, width: int = 1400, height: int = 1000, *, extra_args: Sequence[str] = ()) -> None:
        """``extra_args``: more Chromium switches, e.g. a fake microphone for WebRTC pages."""
        self.width, self.height = width, height
        self.extra_args = tuple(extra_args)
        self._proc: asyncio.subprocess.Process | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.console: list[str] = []

    async def __aenter__(self) -> Browser:
        path = chromium_path()
        assert path is not None, "chromium is not installed"
        self._profile = tempfile.TemporaryDirectory(prefix="jiejing-chromium-")
        self._proc = await asyncio.create_subprocess_exec(
            path, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--window-size={self.width},{self.height}",
            f"--user-data-dir={self._profile.name}", "--remote-debugging-port=0", *self.extra_args, "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        browser_url = await asyncio.wait_for(self._devtools_url(), 30)
        self._session = aiohttp.ClientSession()
        http = browser_url.replace("ws://", "http://").split("/devtools/")[0]
        async with self._session.get(f"{http}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t["type"] == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read(), name="cdp-read")
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                        deviceScaleFactor=1, mobile=False)
        return self

    async def _devtools_url(self) -> str:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            found = _LISTENING.search(line)
            if found:
                return found.group(1).decode()
        raise RuntimeError("chromium exited before DevTools listened")

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in data["params"]["args"]))
            elif data.get("method") == "Runtime.exceptionThrown":
                self.console.append("exception: " + json.dumps(data["params"]["exceptionDetails"])[:500])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        assert self._ws is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, 30)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def grant(self, origin: str, *permissions: str) -> None:
        """Grant ``permissions`` (e.g. "geolocation") to ``origin``, as a person answering the prompt would."""
        await self.send("Browser.grantPermissions", origin=origin, permissions=list(permissions))

    async def phone(self, lat: float, lon: float, accuracy: float = 10.0) -> None:
        """A phone's screen and touch, and its position (the geolocation the page reads)."""
        await self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                        deviceScaleFactor=1, mobile=True)
        await self.send("Emulation.setTouchEmulationEnabled", enabled=True)
        await self.move(lat, lon, accuracy)

    async def move(self, lat: float, lon: float, accuracy: float = 10.0) -> None:
        await self.send("Emulation.setGeolocationOverride", latitude=lat, longitude=lon, accuracy=accuracy)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if loop.time() > deadline:
                raise TimeoutError(f"not true within {timeout} s: {expression}; console: {self.console[-5:]}")
            await asyncio.sleep(interval)

    async def type_into(self, selector: str, text: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def press(self, key: str, *, ctrl: bool = False) -> None:
        """One key as a person presses it: keydown (with its text, so fields receive it) and keyup."""
        special = {"Enter": ("Enter", 13, "\r"), "Escape": ("Escape", 27, ""), "Tab": ("Tab", 9, "")}
        if key in special:
            code, vk, text = special[key]
        else:
            code, vk, text = f"Key{key.upper()}", ord(key.upper()), key
        modifiers = 2 if ctrl else 0  # CDP's bit for Ctrl
        down: dict[str, Any] = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk,
                                "modifiers": modifiers}
        if text and not ctrl:
            down["text"] = text
        await self.send("Input.dispatchKeyEvent", **down)
        await self.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, windowsVirtualKeyCode=vk,
                        modifiers=modifiers)

    async def click(self, selector: str) -> None:
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 10)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._profile is not None:
            self._profile.cleanup()
