"""`jiejing serve`: the backend process, assembled.

Owns, in start order: the ticket store, the AMI connection with the event
adapter, the FastAGI server, and the HTTP API. aiohttp's cleanup contexts stop
them in reverse order. This is the one place where telephony and core meet;
core never imports from here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from core.config import Settings
from core.quality_config import QualitySettings
from core.store import init_schema, make_engine
from core.supervision import build as build_supervision
from core.tickets import TicketService
from core.web import make_app
from telephony.agi.routes import intake
from telephony.agi.server import FastAGIServer
from telephony.ami.client import AMIClient
from telephony.call_events import CallEvents

log = logging.getLogger("jiejing.serve")


@dataclass
class Backend:
    settings: Settings
    service: TicketService
    ami: AMIClient
    events: CallEvents
    agi: FastAGIServer


def build(settings: Settings) -> Backend:
    engine = make_engine(settings.db_url)
    service = TicketService(engine, tz=settings.timezone, prefix=settings.ticket_prefix)
    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    events = CallEvents(
        service,
        intake_contexts=settings.intake_contexts,
        emergency_numbers=settings.emergency_numbers,
        recordings_dir=Path(settings.recordings_dir) if settings.recordings_dir else None,
    )
    ami.add_listener(events.on_event)
    ami.add_connect_hook(lambda: events.resync(ami))
    agi = FastAGIServer({"intake": intake.make_route(service)}, host=settings.agi_host, port=settings.agi_port)
    return Backend(settings, service, ami, events, agi)


def make_web_app(backend: Backend) -> web.Application:
    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        await init_schema(backend.service.engine)
        yield
        await backend.service.engine.dispose()

    async def ami_ctx(app: web.Application) -> AsyncIterator[None]:
        await backend.events.start()
        await backend.ami.start()
        yield
        await backend.ami.stop()
        await backend.events.drain()
        await backend.events.wait_recordings()
        await backend.events.stop()

    async def agi_ctx(app: web.Application) -> AsyncIterator[None]:
        await backend.agi.start()
        log.info("FastAGI listening on %s:%s", backend.settings.agi_host, backend.agi.port)
        yield
        await backend.agi.stop()

    def ami_health() -> dict:
        status = backend.ami.status()
        return {"ok": bool(status.get("connected")), **status}

    def agi_health() -> dict:
        stats = backend.agi.stats
        return {
            "ok": True, "port": backend.agi.port, "active_connections": backend.agi.active_connections,
            "connections": stats.connections, "bad_requests": stats.bad_requests,
            "routes": {
                name: {"requests": r.requests, "failures": r.failures, "timeouts": r.timeouts,
                       "le_ms": {str(b): n for b, n in r.durations.cumulative()}}
                for name, r in stats.routes.items()
            },
        }

    supervision = build_supervision(backend.service, backend.settings, QualitySettings.from_env())
    app = make_app(
        backend.service,
        health={"ami": ami_health, "agi": agi_health},
        cleanup_ctx=[store_ctx, supervision.cleanup_ctx, ami_ctx, agi_ctx],
    )
    supervision.add_routes(app)
    return app


def run(settings: Settings) -> None:
    backend = build(settings)
    app = make_web_app(backend)
    web.run_app(app, host=settings.http_host, port=settings.http_port, print=lambda msg: log.info("%s", msg))
