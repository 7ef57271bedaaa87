"""A local stand-in for Twilio's Messages API, for the real ``twilio`` client to talk HTTP to.

Speaks the shape of ``/2010-04-01/Accounts/{sid}/Messages.json``: form-encoded
create (201 + message JSON), filtered list (a page with ``messages``), HTTP
basic auth with the account sid and token. Runs its own event loop in a thread,
since the twilio client blocks. Failures are scripted per request:

- ``"ok"``: create the message, answer 201;
- ``"500"``: answer 500 without creating anything;
- ``"400"``: refuse the number (as Twilio's error 21211) without creating anything;
- ``"500_after_create"``: create, then answer 500;
- ``"hang_after_create"``: create, then answer only after ``hang_s`` (the client times out);
- ``"drop_after_create"``: create, then close the connection without an answer.

``stop_listening``/``start_listening`` close and reopen the port, so the
client meets "connection refused".
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "standin-token"


@dataclass
class StandinMessage:
    sid: str
    to: str
    from_: str
    body: str
    created: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": ACCOUNT_SID,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": "queued",
            "direction": "outbound-api",
            "num_segments": "1",
            "date_created": format_datetime(self.created, usegmt=True),
            "date_updated": format_datetime(self.created, usegmt=True),
            "date_sent": None,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{self.sid}.json",
        }


@dataclass
class TwilioStandin:
    hang_s: float = 2.0
    created: list[StandinMessage] = field(default_factory=list)
    posts: int = 0
    lists: int = 0
    script: deque[str] = field(default_factory=deque)  # per POST; "ok" once empty
    list_script: deque[str] = field(default_factory=deque)  # per GET: "ok" or "500"
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="twilio-standin", daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    # -- lifecycle (called from the test's thread) ----------------------------------------

    def start(self) -> str:
        self._thread.start()
        self._call(self._start())
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._call(self._cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def stop_listening(self) -> None:
        self._call(self._stop_site())

    def start_listening(self) -> None:
        self._call(self._start_site())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{account}/Messages.json", self._list)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await self._start_site()

    async def _start_site(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- the API -----------------------------------------------------------------------------

    def _authorised(self, request: web.Request, account: str) -> bool:
        expected = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        return account == ACCOUNT_SID and request.headers.get("Authorization") == expected

    async def _create(self, request: web.Request) -> web.StreamResponse:
        account = request.match_info["account"]
        if not self._authorised(request, account):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        form = await request.post()
        with self._lock:
            self.posts += 1
            mode = self.script.popleft() if self.script else "ok"
        if mode == "500":
            return web.json_response({"code": 20500, "message": "Internal Server Error", "status": 500}, status=500)
        if mode == "400" or not form.get("To") or not form.get("From") or "Body" not in form:
            return web.json_response({"code": 21211, "message": "Invalid 'To' Phone Number",
                                      "status": 400}, status=400)
        message = StandinMessage("SM" + secrets.token_hex(16), str(form["To"]), str(form["From"]),
                                 str(form["Body"]), datetime.now(UTC))
        with self._lock:
            self.created.append(message)
        if mode == "500_after_create":
            return web.json_response({"code": 20500, "message": "Internal Server Error", "status": 500}, status=500)
        if mode == "hang_after_create":
            await asyncio.sleep(self.hang_s)
        if mode == "drop_after_create":
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError  # nothing more is written on a closed connection
        return web.json_response(message.to_json(), status=201)

    async def _list(self, request: web.Request) -> web.Response:
        account = request.match_info["account"]
        if not self._authorised(request, account):
            return web.json_response({"code": 20003, "message": "Authenticate", "status": 401}, status=401)
        with self._lock:
            self.lists += 1
            mode = self.list_script.popleft() if self.list_script else "ok"
            messages = list(self.created)
        if mode == "500":
            return web.json_response({"code": 20500, "message": "Internal Server Error", "status": 500}, status=500)
        to, from_ = request.query.get("To"), request.query.get("From")
        page_size = int(request.query.get("PageSize", "50"))
        chosen = [m for m in reversed(messages) if (to is None or m.to == to) and (from_ is None or m.from_ == from_)]
        page = chosen[:page_size]
        uri = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?PageSize={page_size}&Page=0"
        return web.json_response({
            "messages": [m.to_json() for m in page],
            "end": max(0, len(page) - 1),
            "first_page_uri": uri,
            "next_page_uri": None,
            "previous_page_uri": None,
            "page": 0,
            "page_size": page_size,
            "start": 0,
            "uri": uri,
        })

    def bodies_to(self, to: str) -> list[str]:
        with self._lock:
            return [m.body for m in self.created if m.to == to]
