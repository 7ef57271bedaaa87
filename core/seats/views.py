"""HTTP API of seats and the wallboard: log-in, pause and wrap-up of seats, the wallboard figures and their WebSocket.

The room's posture (``core.seats.posture``) is evaluated here from the
wallboard's figures; a change suspends or resumes wrap-up on the seat board
and opens or resolves the supervisors' alert.

The wallboard socket sends a snapshot at each change and every second for the
wait clocks; sockets are kept in a registry and closed when the application
shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from core.auth.users import Principal, Role
from core.calls.views import SERVICE
from core.errors import BadRequest, DomainError
from core.http.replies import (
    PRINCIPAL,
    WS_PROTOCOLS,
    dumps,
    error_reply,
    json_body,
    json_reply,
)
from core.http.routes import DESK, SUPERVISORS, RouteTable
from core.seats.board import (
    QueueControlError,
    SeatBoard,
    SeatState,
    UnknownSeat,
    check_seat,
)
from core.seats.phones import PhoneBook
from core.seats.posture import (
    Change,
    Posture,
    last_change,
    record_alert,
    run_posture,
    save_change,
)
from core.seats.wallboard import Wallboard

log = logging.getLogger(__name__)

SEATS = web.AppKey("seats", SeatBoard)
WALLBOARD = web.AppKey("wallboard", Wallboard)
WALLBOARD_SOCKETS = web.AppKey("wallboard_sockets", set[web.WebSocketResponse])
PHONES = web.AppKey("phones", PhoneBook)
POSTURE = web.AppKey("posture", Posture)

PUSH_EVERY_S = 1.0
HEARTBEAT_S = 30.0

routes = RouteTable("seats")

EMPTY_BODY: dict[str, Any] = {"type": "object"}
SEAT_LOGIN_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {"operator": {"type": "string", "minLength": 1, "maxLength": 64}},
}
PAUSE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": r"\S"}},
}
POSTURE_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["surge", "reason"],
    "properties": {"surge": {"type": "boolean"},
                   "reason": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"\S"}},
}


# -- seats ---------------------------------------------------------------------------------


async def own_seat(request: web.Request, principal: Principal) -> web.Response | None:
    """Scope: a call-taker logs in for themselves, to one seat at a time, and changes only the seat they hold."""
    if principal.role is not Role.CALL_TAKER:
        return None
    board = request.app[SEATS]
    try:
        seat = check_seat(request.match_info.get("seat"))
    except UnknownSeat:
        return None  # the view answers the unknown seat
    held = [v.seat for v in board.seats() if v.operator == principal.username and v.state is not SeatState.LOGGED_OUT]
    if request.path.endswith("/login"):
        if held and seat not in held:
            return error_reply(409, f"you are logged in to seat {held[0]}; log out there first",
                               error_id="already-on-a-seat", details={"seat": held[0]})
        return None
    current = board.get(seat)
    if current.state is not SeatState.LOGGED_OUT and current.operator != principal.username:
        return error_reply(403, f"seat {seat} is held by another call-taker", error_id="not-your-seat",
                           details={"seat": seat})
    return None


def _seat(request: web.Request) -> str:
    try:
        return check_seat(request.match_info["seat"])
    except UnknownSeat:
        raise UnknownSeat("no such seat") from None


@routes.get("/api/seats", DESK, "Every seat's state")
async def list_seats(request: web.Request) -> web.Response:
    board = request.app[SEATS]
    return json_reply({"seats": [s.to_json() for s in board.seats()], "by_state": board.by_state(),
                  "wrap_up_s": board.wrap_up_s})


async def _seat_change(request: web.Request, change: Any) -> web.Response:
    try:
        view = await change
    except DomainError:
        raise
    except ValueError as exc:
        raise BadRequest(str(exc), error_id="invalid-seat-change") from None
    except Exception as exc:
        # The queue (AMI) refused or is unreachable: nothing changed.
        log.warning("seat change %s failed: %s", request.path, exc)
        return error_reply(503, f"the queue did not confirm: {type(exc).__name__}",
                           error_id=QueueControlError.error_id)
    return json_reply(view.to_json())


@routes.post("/api/seats/{seat}/login", DESK, "Log a call-taker into a seat (joins the queue)", body=SEAT_LOGIN_BODY, scope=own_seat)
async def seat_login(request: web.Request) -> web.Response:
    seat = _seat(request)
    body = await json_body(request)
    principal = request[PRINCIPAL]
    operator = body.get("operator") or principal.username
    if principal.role is Role.CALL_TAKER and operator != principal.username:
        raise BadRequest("a call-taker logs in to a seat as themselves", error_id="own-login-only")
    return await _seat_change(request, request.app[SEATS].login(seat, operator))


@routes.post("/api/seats/{seat}/logout", DESK, "Log a seat out (leaves the queue)", body=EMPTY_BODY, scope=own_seat)
async def seat_logout(request: web.Request) -> web.Response:
    seat = _seat(request)
    await json_body(request)
    return await _seat_change(request, request.app[SEATS].logout(seat))


@routes.post("/api/seats/{seat}/pause", DESK, "Pause a seat with a reason", body=PAUSE_BODY, scope=own_seat)
async def seat_pause(request: web.Request) -> web.Response:
    seat = _seat(request)
    body = await json_body(request)
    return await _seat_change(request, request.app[SEATS].pause(seat, body["reason"], by=request[PRINCIPAL].username))


@routes.post("/api/seats/{seat}/unpause", DESK, "End a seat's pause", body=EMPTY_BODY, scope=own_seat)
async def seat_unpause(request: web.Request) -> web.Response:
    seat = _seat(request)
    await json_body(request)
    return await _seat_change(request, request.app[SEATS].unpause(seat))


@routes.get("/api/seats/{seat}/pauses", SUPERVISORS, "A seat's pauses with reasons and durations")
async def seat_pauses(request: web.Request) -> web.Response:
    seat = _seat(request)
    return json_reply({"seat": seat, "pauses": await request.app[SEATS].pauses(seat)})


# -- the browser as the seat's phone -------------------------------------------------------


@routes.get("/api/phone", DESK, "WebSocket URL and SIP credentials of a browser seat's phone (?seat=wseat01)",
            query={"seat": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"}})
async def phone_account(request: web.Request) -> web.Response:
    seat = request.query.get("seat")
    if seat is None:
        raise BadRequest("name the seat: ?seat=…", error_id="invalid-seat")
    seat = check_seat(seat)
    principal = request[PRINCIPAL]
    held = request.app[SEATS].get(seat)
    if principal.role is Role.CALL_TAKER and (held.state is SeatState.LOGGED_OUT or held.operator != principal.username):
        # A seat's SIP password goes only to the call-taker logged in to that seat.
        return error_reply(403, f"log in to seat {seat} first: its phone is the seat holder's",
                           error_id="not-your-seat", details={"seat": seat})
    account = request.app[PHONES].account(seat)
    log.info("phone credentials of seat %s given to %s", seat, request[PRINCIPAL].username)
    return web.json_response(account.to_json(), headers={"Cache-Control": "no-store"})


# -- posture -------------------------------------------------------------------------------


def _posture_json(request: web.Request) -> dict[str, Any]:
    posture = request.app[POSTURE]
    return {**posture.to_json(), "wrap_up_suspended": request.app[SEATS].wrap_up_suspended,
            "rules": {k: getattr(posture.rules, k) for k in posture.rules.__dataclass_fields__},
            "history": [c.to_json() for c in posture.history[-20:]]}


@routes.get("/api/posture", DESK, "The room's posture: normal, or surge (wrap-up suspended)", tag="wallboard")
async def posture_get(request: web.Request) -> web.Response:
    return json_reply(_posture_json(request))


@routes.post("/api/posture", SUPERVISORS, "Declare the surge posture, or end it (a declared surge ends only so)",
             tag="wallboard", body=POSTURE_BODY)
async def posture_post(request: web.Request) -> web.Response:
    body = await json_body(request)
    request.app[POSTURE].declare(body["surge"], by=request[PRINCIPAL].username, reason=body["reason"].strip())
    return json_reply(_posture_json(request))


# -- wallboard -----------------------------------------------------------------------------


@routes.get("/api/wallboard", DESK, "The wallboard figures, once", tag="wallboard")
async def wallboard_once(request: web.Request) -> web.Response:
    return json_reply(request.app[WALLBOARD].snapshot())


@routes.get("/api/wallboard/ws", DESK, "WebSocket of wallboard figures (token: subprotocol jiejing.bearer.<token>)", tag="wallboard",
            websocket=True)
async def wallboard_ws(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, protocols=WS_PROTOCOLS)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this endpoint is a WebSocket; send an Upgrade request", error_id="websocket-only")
    await ws.prepare(request)
    board = request.app[WALLBOARD]
    sockets = request.app[WALLBOARD_SOCKETS]
    changed = board.waiter()
    sockets.add(ws)
    reader = asyncio.create_task(_drain(ws), name="wallboard-read")
    try:
        while not ws.closed and not reader.done():
            changed.clear()
            await ws.send_str(dumps({"type": "wallboard", **board.snapshot()}))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), PUSH_EVERY_S)
    except ConnectionError:
        pass  # the screen went away between two pushes
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        board.forget(changed)
        sockets.discard(ws)
        await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    # Screens have nothing to say; reading lets aiohttp answer pings and see the close.
    async for message in ws:
        if message.type is WSMsgType.ERROR:
            return


# -- registration --------------------------------------------------------------------------


def add_seat_routes(app: web.Application, *, seats: SeatBoard | None = None, timezone: str = "Asia/Shanghai",
                    phones: PhoneBook | None = None, posture: Posture | None = None) -> None:
    """Seats and the wallboard; without a seat board, one that drives no queue. The wallboard's day is ``timezone``'s.

    ``phones`` holds the browser seats' WebRTC credentials (without it, ``/api/phone`` says none are configured);
    ``posture`` the room's posture (by default one with the default thresholds; ``set_rules`` gives it others).
    """
    service = app[SERVICE]
    app[PHONES] = phones if phones is not None else PhoneBook()
    board = seats if seats is not None else SeatBoard(service.engine)
    posture = posture if posture is not None else Posture(clock=service.clock)
    wallboard = Wallboard(service.engine, board, tz=timezone, posture=posture)
    app[SEATS] = board
    app[WALLBOARD] = wallboard
    app[WALLBOARD_SOCKETS] = set()
    app[POSTURE] = posture
    changes: asyncio.Queue[Change] = asyncio.Queue()

    async def apply_changes() -> None:
        # One owner applies the changes in order: a surge left then entered again ends suspended.
        while True:
            change = await changes.get()
            try:
                await board.suspend_wrap_up(change.mode == "surge")
            except Exception:
                log.exception("wrap-up not %s", "suspended" if change.mode == "surge" else "resumed")
            try:
                await record_alert(service.engine, change)
            except Exception:
                log.exception("the posture's alert was not written")
            try:
                await save_change(service.engine, change)  # what a restarted backend takes up again
            except Exception:
                log.exception("the posture change was not kept")
            changes.task_done()

    async def seats_ctx(app: web.Application) -> AsyncIterator[None]:
        removers = [service.add_listener(board.on_step), service.add_listener(wallboard.on_step)]
        try:
            await wallboard.prime()
        except Exception:
            # A store not ready must not keep the API down; steps fill the board as they come.
            log.exception("could not read today's calls for the wallboard")
        try:
            # The posture before a restart (a declared surge stays declared); kept already, so not saved again.
            kept = await last_change(service.engine)
            if kept is not None:
                posture.restore(kept)
                await board.suspend_wrap_up(posture.surge)
        except Exception:
            log.exception("the posture kept before the restart was not restored")
        removers.append(posture.add_listener(changes.put_nowait))
        changed = wallboard.waiter()
        tasks = [asyncio.create_task(wallboard.run(), name="wallboard-alerts"),
                 asyncio.create_task(apply_changes(), name="posture-apply"),
                 asyncio.create_task(run_posture(posture, wallboard.queued_figures, changed, clock=service.clock),
                                     name="posture")]
        yield
        for remove in removers:
            remove()
        wallboard.forget(changed)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await board.stop()

    async def close_sockets(app: web.Application) -> None:
        for ws in list(app[WALLBOARD_SOCKETS]):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"server shutting down"), 2.0)

    app.cleanup_ctx.append(seats_ctx)
    app.on_shutdown.append(close_sockets)
    routes.add_to(app)
