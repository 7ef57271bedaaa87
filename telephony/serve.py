"""`jiejing serve`: the backend process, assembled.

Owns, in start order: the ticket store, the AMI connection with the event
adapter and the follower of Asterisk's log, the intake (what the dialplan's
CURL() asks: a process of its own, ``telephony/intake_process.py``), the
FastAGI server (the seats' feature codes), and the HTTP API (with the seat
board driving queue membership over AMI, and the AMI, intake and FastAGI
figures in /metrics). aiohttp's cleanup contexts stop
them in reverse order. This is the one place where telephony and core meet;
core never imports from here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from core.alerts.board import AlertBoard
from core.auth.users import AuthService
from core.calls.checkpoints import Checkpoints
from core.calls.metrics import buckets
from core.calls.tickets import TicketService
from core.config import Settings, refuse_lab_defaults
from core.dispatch.officers import OfficerService, load_city_file
from core.dispatch.planner import DispatchPlanner
from core.leases import Leases, hold
from core.migrate import State, ensure_ready
from core.quality.config import QualitySettings
from core.quality.playback import record_access
from core.quality.supervision import build as build_supervision
from core.seats.board import SeatBoard, SeatState
from core.seats.phones import PhoneBook
from core.situation.service import SituationService
from core.store import make_engine
from core.tasks import stop_task
from core.triage.aml_service import AmlService, AmlSettings
from core.triage.attachments import AttachmentKeeper
from core.triage.attachments_http import HttpFetcher
from core.triage.auto_callback import AutoCallbacks
from core.triage.desk import TriageDesk, default_files
from core.triage.major import MajorIncidents, MessageFiles
from core.triage.push_http import HttpPoster
from core.web.app import make_app, serve_options
from telephony import callback_api, dispatch_api, silent_api
from telephony.agi.routes import dispatch as dispatch_route
from telephony.agi.server import FastAGIServer, RouteStats
from telephony.ami.client import AMIClient
from telephony.auto_callback import AutoDialer
from telephony.call_events import CallEvents
from telephony.callback import Callbacks
from telephony.cel import CallLog, CelFollower
from telephony.dispatcher import Dispatcher
from telephony.handover import AsteriskHandover
from telephony.intake import Intake
from telephony.intake_http import make_intake_app
from telephony.intake_process import IntakeProcess
from telephony.major_incident import MajorIncidentLine
from telephony.seat_control import AMIQueuePort, pause_listener, sync_board
from telephony.silent_calls import SilentCalls

log = logging.getLogger("jiejing.serve")

# The automatic call-backs' lease: renewed every 5 s; another backend takes the duty over at most about 20 s after
# this one died or froze (a call-back waits 5 s after the hang-up, and the goal is 60 s).
AUTO_CALLBACK_LEASE_S = 15.0


@dataclass
class Backend:
    settings: Settings
    service: TicketService
    ami: AMIClient
    events: CallEvents
    agi: FastAGIServer
    officers: OfficerService
    planner: DispatchPlanner
    dispatcher: Dispatcher
    alerts: AlertBoard
    intake: Intake
    callbacks: Callbacks
    intake_stats: RouteStats  # the intake's figures when it answers in this process
    cel: CelFollower | None = None
    intake_process: IntakeProcess | None = None
    silent: SilentCalls | None = None  # silent callers: talk detection, keys, the prompt
    auto_callbacks: AutoCallbacks | None = None  # built with the web app (it needs the triage desk and the outbox)
    major: MajorIncidents | None = None  # the declared major incident; Asterisk's offer kept by major_line
    major_line: MajorIncidentLine | None = None

    def intake_figures(self) -> dict:
        if self.intake_process is not None:
            return self.intake_process.last_stats
        return self.intake_stats.summary()

    async def open_alerts(self) -> list[dict]:
        await self.alerts.flush()
        return await self.alerts.open_alerts()


def build(settings: Settings) -> Backend:
    engine = make_engine(settings.db_url)
    service = TicketService(engine, tz=settings.timezone, prefix=settings.ticket_prefix)
    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    events = CallEvents(
        service,
        intake_contexts=settings.intake_contexts,
        emergency_numbers=settings.emergency_numbers,
        recordings_dir=Path(settings.recordings_dir) if settings.recordings_dir else None,
        steps_from_ami=not settings.cel_file,
    )
    ami.add_listener(events.on_event)
    follower = None
    if settings.cel_file:
        follower = CelFollower(
            Path(settings.cel_file),
            CallLog(intake_contexts=settings.intake_contexts, emergency_numbers=settings.emergency_numbers),
            events.reconcile, Checkpoints(engine),
        )
        events.speaks_for = follower.speaks_for

    async def on_ami_connect() -> None:
        # Asterisk's log first (what was missed, at its true times; calls Asterisk lost without logging
        # their end are let go), then the snapshot for live state.
        if follower is not None:
            snapshot_at = time.time()
            live = await events.live_channels(ami)
            await follower.catch_up(live, snapshot_at)
        await events.resync(ami, speaks_for=follower.speaks_for if follower is not None else None)

    ami.add_connect_hook(on_ami_connect)
    officers = OfficerService(engine)
    alerts = AlertBoard(engine)

    def ladder_exhausted(ticket, detail) -> None:
        alerts.raise_alert("dispatch", ticket.number,
                           f"nobody answered the dispatch ladder ({detail.get('reason')}); the call-taker keeps the caller")

    planner = DispatchPlanner(service, officers, on_exhausted=ladder_exhausted)
    dispatcher = Dispatcher(ami, service, planner, events.legs)
    # Positions the network sends with the call (in Asterisk's log) become the incident location.
    events.locate = planner.locate
    ami.add_listener(dispatcher.on_event)
    callbacks = Callbacks(ami, service, bind_recording=events.bind_recording_of)
    ami.add_listener(callbacks.on_event)
    agi = FastAGIServer(
        {"dispatch": dispatch_route.make_route(service, dispatcher)},
        host=settings.agi_host, port=settings.agi_port,
    )
    intake = Intake()
    own = IntakeProcess(settings.intake_host, settings.intake_port, intake) if settings.intake_process else None
    silent = SilentCalls(ami, service, after_s=settings.silent_after_s)
    ami.add_listener(silent.on_event)
    # A declared major incident: Asterisk's offer to new callers, and callers who pressed 1 (from its log).
    major = MajorIncidents(service, locate=planner.locate)
    events.major_pressed = major.link_caller
    major_line = MajorIncidentLine(ami, major)
    major_line.attach()
    return Backend(settings, service, ami, events, agi, officers, planner, dispatcher, alerts, intake,
                   callbacks, RouteStats(), follower, own, silent, major=major, major_line=major_line)


class TelephonyMetrics:
    """The AMI connection and the FastAGI requests and latency in /metrics: a prometheus-client collector."""

    name = "telephony"  # in jiejing_metrics_collector_errors_total

    def __init__(self, ami: AMIClient, agi: FastAGIServer, intake: Callable[[], dict]) -> None:
        self._ami = ami
        self._agi = agi
        self._intake = intake

    def collect(self) -> Iterator[Metric]:
        status = self._ami.status()
        yield GaugeMetricFamily("jiejing_ami_connected", "1 while logged in to Asterisk's AMI.",
                                value=1 if status.get("connected") else 0)
        yield CounterMetricFamily("jiejing_ami_reconnects_total", "AMI log-ins after the first.",
                                  value=status.get("reconnects", 0))
        routes = self._agi.stats.routes
        requests = CounterMetricFamily("jiejing_fastagi_requests_total", "FastAGI requests by route and outcome.",
                                       labels=["route", "outcome"])
        durations = HistogramMetricFamily("jiejing_fastagi_duration_seconds", "FastAGI handler durations by route.",
                                          labels=["route"])
        for name, r in routes.items():
            # Disjoint outcomes: sum() over them is every request.
            for outcome, n in (("ok", r.requests - r.failures - r.timeouts), ("failed", r.failures),
                               ("timed_out", r.timeouts)):
                requests.add_metric([name, outcome], n)
            rows = [(bound / 1000, n) for bound, n in r.durations.cumulative()]
            durations.add_metric([name], buckets(rows), r.durations.sum_ms / 1000)
        yield requests
        yield durations
        r = self._intake()
        if not r:
            return  # the intake's own process has not answered yet
        requests = CounterMetricFamily("jiejing_intake_requests_total",
                                       "The dialplan's intake requests (CURL) by outcome.", labels=["outcome"])
        requests.add_metric(["ok"], r["requests"] - r["failures"] - r["timeouts"])
        for outcome, key in (("failed", "failures"), ("timed_out", "timeouts")):
            requests.add_metric([outcome], r[key])
        yield requests
        rows = [(float(bound) / 1000, n) for bound, n in r["le_ms"].items()]
        yield HistogramMetricFamily("jiejing_intake_duration_seconds", "Intake request durations.",
                                    buckets=buckets(rows), sum_value=r["sum_ms"] / 1000)


def empty_queue_alert(seats: SeatBoard, alerts: AlertBoard):
    """Seat listener: the last seat leaving the queue is an alert (calls go to the dialplan's overflow)."""

    def on_change(view) -> None:
        if view.state is SeatState.LOGGED_OUT and all(v.state is SeatState.LOGGED_OUT for v in seats.seats()):
            alerts.raise_alert("seats", "queue-empty", f"no seat is left in the 110 queue ({view.seat} logged out "
                               "last): calls ring the overflow (JIEJING_OVERFLOW) until a seat logs in")

    return on_change


def make_web_app(backend: Backend) -> web.Application:
    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        # Before anything listens: an empty database gets the schema, an older one stops the start
        # (SchemaError, which `jiejing serve` reports with what to run).
        try:
            found = await ensure_ready(backend.service.engine)
        except BaseException:
            await backend.service.engine.dispose()
            raise
        if found.state is State.EMPTY:
            log.info("empty database: schema created by the migrations")
        if backend.settings.city_file:
            city = load_city_file(backend.settings.city_file)
            counts = await backend.officers.load_city(city)
            counts["places"] = await backend.planner.places.replace(city.places)
            log.info("city loaded from %s: %s", backend.settings.city_file, counts)
        await backend.alerts.start()
        yield
        await backend.dispatcher.stop()
        await backend.callbacks.stop()
        await backend.silent.stop()
        await backend.alerts.stop()
        await backend.service.engine.dispose()

    async def ami_ctx(app: web.Application) -> AsyncIterator[None]:
        await backend.events.start()
        if backend.cel is not None:
            await backend.cel.start()
        await backend.ami.start()
        backend.major_line.start()
        yield
        await backend.major_line.stop()
        await backend.ami.stop()
        if backend.cel is not None:
            await backend.cel.stop()
        await backend.events.drain()
        await backend.events.wait_recordings()
        await backend.events.stop()

    async def intake_ctx(app: web.Application) -> AsyncIterator[None]:
        if backend.intake_process is not None:
            # Its own process: the answer never waits for the CPU this one yields to Asterisk.
            await backend.intake_process.start()
            yield
            await backend.intake_process.stop()
            return
        # Its own listener, no access log: the intake never queues behind the web API.
        runner = web.AppRunner(make_intake_app(backend.intake, backend.intake_stats), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, backend.settings.intake_host, backend.settings.intake_port).start()
        log.info("intake listening on http://%s:%s/intake", backend.settings.intake_host,
                 backend.settings.intake_port)
        yield
        await runner.cleanup()

    async def agi_ctx(app: web.Application) -> AsyncIterator[None]:
        await backend.agi.start()
        log.info("FastAGI listening on %s:%s", backend.settings.agi_host, backend.agi.port)
        yield
        await backend.agi.stop()

    def ami_health() -> dict:
        status = backend.ami.status()
        return {"ok": bool(status.get("connected")), **status, "events_left_out": backend.events.dropped_events}

    def cel_health() -> dict:
        if backend.cel is None:
            return {"ok": True, "configured": False}
        return {"configured": True, **backend.cel.health()}

    def intake_health() -> dict:
        found = (backend.intake_process.health() if backend.intake_process is not None
                 else {"ok": True, "process": "this", **backend.intake_stats.summary()})
        fallback = backend.events.fallback_health()
        if not fallback["ok"]:
            found["ok"] = False
            found["reason"] = "; ".join(r for r in (found.get("reason"), fallback["reason"]) if r)
        return {**found, "fallbacks": fallback["fallbacks"], "port": backend.settings.intake_port}

    def agi_health() -> dict:
        stats = backend.agi.stats
        return {
            "ok": True, "port": backend.agi.port, "active_connections": backend.agi.active_connections,
            "connections": stats.connections, "bad_requests": stats.bad_requests,
            "routes": {name: r.summary() for name, r in stats.routes.items()},
        }

    settings = backend.settings
    queue_port = AMIQueuePort(backend.ami, settings.seat_queue)
    seats = SeatBoard(backend.service.engine, queue_port, wrap_up_s=settings.wrap_up_s)
    # After every AMI log-in (restarts of either side): the board is what Asterisk's queue is.
    backend.ami.add_connect_hook(lambda: sync_board(queue_port, seats))
    backend.ami.add_listener(pause_listener(seats, settings.seat_queue))
    seats.add_listener(empty_queue_alert(seats, backend.alerts))
    quality = QualitySettings.from_env()
    supervision = build_supervision(backend.service, settings, quality, planner=backend.planner)
    # Routing rules, keywords and surge settings from the dialplan folder;
    # hand-overs (anti-fraud desk, 12345) go through Asterisk.
    triage = TriageDesk(backend.service, backend.officers, backend.alerts, poster=HttpPoster(),
                        files=default_files(settings.rules_dir))
    triage.set_handover_port(AsteriskHandover(backend.ami, backend.service, backend.dispatcher, backend.events.legs))
    # The reports' photos and videos, fetched once into attachments_dir; each serve journaled like a playback.
    attachments = AttachmentKeeper(backend.service, quality.attachments_dir or None, HttpFetcher(),
                                   access=functools.partial(record_access, backend.service.engine))
    attachments.attach()
    # Lost 110 callers called back (core.triage.auto_callback); rules from the triage desk's callback.toml.
    auto_callbacks = AutoCallbacks(backend.service, rules=lambda: triage.callback_rules, alerts=backend.alerts,
                                   is_prank=triage.repeat.is_prank, send_sms=supervision.outbox.enqueue,
                                   planner=backend.planner, tz=settings.timezone)
    dialer = AutoDialer(backend.ami, backend.service, trunk=settings.auto_callback_trunk,
                        cli=settings.auto_callback_cli, bind_recording=backend.events.bind_recording_of)
    backend.ami.add_listener(dialer.on_event)
    auto_callbacks.set_dialer(dialer)
    backend.auto_callbacks = auto_callbacks
    app = make_app(
        backend.service,
        health={"ami": ami_health, "intake": intake_health, "agi": agi_health, "cel": cel_health,
                "alerts": backend.alerts.health, "triage": triage.health, "auto_callback": auto_callbacks.health},
        cleanup_ctx=[store_ctx, supervision.cleanup_ctx, attachments.cleanup_ctx, ami_ctx, intake_ctx, agi_ctx],
        auth=AuthService(backend.service.engine, token_ttl_s=settings.token_ttl_s),
        seats=seats,
        metrics=[TelephonyMetrics(backend.ami, backend.agi, backend.intake_figures), supervision.metrics()],
        dispatch=backend.planner,
        timezone=settings.timezone,
        triage=triage,
        phones=PhoneBook(settings.phones_file),
        web_vendor=settings.web_vendor,
        trusted_proxies=settings.trusted_proxies,
        wechat=quality.wechat_account(),
        attachments=attachments,
        aml=AmlService(backend.service, backend.planner, settings=AmlSettings(
            ticket_window_s=settings.aml_ticket_window_s, max_age_s=settings.aml_max_age_s)),
        major=backend.major, major_messages=MessageFiles(settings.major_message_dir or None),
        # The day's hot-spot forecast: fitted in a task of its own, in a worker thread, never on a call's path.
        situation=SituationService(backend.service.engine, tz=settings.timezone),
    )
    supervision.add_routes(app)
    dispatch_api.add_routes(app, backend.dispatcher)
    callback_api.add_routes(app, backend.callbacks)
    silent_api.add_routes(app, backend.silent)
    if settings.auto_callback:
        async def auto_callback_ctx(app: web.Application) -> AsyncIterator[None]:
            # Last to start (the store, AMI and the triage desk are up), first to stop. A duty for one backend
            # of the center at a time: it runs where its lease is held (two backends would call a caller back
            # twice), and on a take-over the new holder reads what is owed from the store.
            leases = Leases(backend.service.engine, f"{socket.gethostname()}:{os.getpid()}")
            task = asyncio.create_task(hold(leases, "auto-callback", ttl_s=AUTO_CALLBACK_LEASE_S,
                                            start=auto_callbacks.start, stop=auto_callbacks.stop),
                                       name="auto-callback-lease")
            yield
            await stop_task(task)
            await dialer.stop()

        app.cleanup_ctx.append(auto_callback_ctx)
    return app


AUTOGROUP = Path("/proc/self/autogroup")


def yield_cpu(nice: int, *, autogroup: Path = AUTOGROUP) -> str:
    """Asterisk first: this process's CPU priority ``nice`` steps below what it was started with.

    On Linux with autogroups (``kernel.sched_autogroup_enabled``) the scheduler first shares the CPU between
    sessions, equally whatever their processes' nice values; a process's nice counts only inside its session.
    Measured in the lab: a process spinning at nice 19 in its starter's session took Asterisk's answer p99 at
    40 calls/s from 1.09 s to 22 s; in a session of its own with the session's nice at 19, 1.11 s. So the
    backend leads a session of its own (when it can: not when it already leads a process group, as under a
    shell's job control) and sets that session's nice as well. What it did, for the log.
    """
    if not nice:
        return "CPU priority left as started"
    os.nice(nice)
    if not autogroup.exists():
        return f"nice +{nice}"
    if os.getsid(0) != os.getpid():
        try:
            os.setsid()
        except OSError:
            return (f"nice +{nice} inside the session it was started in (it leads a process group, so it cannot "
                    "lead a session of its own): the session's other processes share its CPU")
    try:
        autogroup.write_text(str(nice))
    except OSError as exc:
        return f"nice +{nice}; its session's nice could not be set ({exc})"
    return f"nice +{nice}, in a session of its own at nice {nice}"


def run(settings: Settings, source: Mapping[str, str]) -> None:
    """``jiejing serve``: ``source`` is what ``settings`` were read from (it tells a value set from a default)."""
    refuse_lab_defaults(settings, source)
    # Asterisk first: an overloaded machine serves the callers, and the record catches up from the log.
    log.info("CPU: %s", yield_cpu(settings.nice))
    backend = build(settings)
    app = make_web_app(backend)
    web.run_app(app, host=settings.http_host, port=settings.http_port, print=lambda msg: log.info("%s", msg),
                **serve_options())
