"""Shared pieces of the triage tests: a recording hand-over port, a push stand-in, the desk and its app."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from core.alerts.board import AlertBoard
from core.calls.events import StepBroadcaster
from core.calls.tickets import TicketService
from core.config import RULE_FILES
from core.dispatch.officers import OfficerService
from core.dispatch.planner import DispatchPlanner
from core.tasks import Overflow
from core.triage.desk import TriageDesk, default_files
from core.triage.keywords import parse_keywords
from core.triage.push import Poster
from core.triage.routing import HandoverFailed, RuleBook, parse_rules
from core.triage.surge import SurgeConfig, SurgeSettings
from core.web.app import make_app
from tests.unit.conftest import FakeClock

REPO = Path(__file__).resolve().parent.parent

RULES = """
boundary_m = 150

[[rule]]
type = "fraud"
target = "anti_fraud"
mode = "conference"
endpoint = "PJSIP/antifraud-desk"
push = "{fraud_url}"

[[rule]]
type = "public_service"
target = "hotline_12345"
mode = "transfer"
endpoint = "PJSIP/hotline-12345"
push = "{hotline_url}"

[[rule]]
type = "*"
when = {{ jurisdiction = "unclear" }}
target = "local_station"
"""

KEYWORDS = """
[major]
zh = ["杀人", "抢劫", "绑架", "爆炸"]
en = ["murder", "robbery", "kidnap*", "explosion"]
"""


class RecordingPort:
    """The telephony side as the tests see it: remembers each hand-over, fails on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.fail: str | None = None

    async def conference(self, number: str, endpoint: str) -> None:
        self.calls.append(("conference", number, endpoint))
        if self.fail:
            raise HandoverFailed(self.fail)

    async def transfer(self, number: str, endpoint: str) -> None:
        self.calls.append(("transfer", number, endpoint))
        if self.fail:
            raise HandoverFailed(self.fail)


class PushStandIn:
    """The anti-fraud center's and the hotline's receivers: an aiohttp app on port 0 that records POSTs."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.answers: list[int] = []  # statuses to answer, in order; then 200
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((request.path, await request.json(), dict(request.headers)))
        status = self.answers.pop(0) if self.answers else 200
        return web.json_response({"id": f"R{len(self.received)}"}, status=status)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[PushStandIn]:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        self.url = str(server.make_url("")).rstrip("/")
        try:
            yield self
        finally:
            await server.close()


def make_desk(
    service: TicketService, planner: DispatchPlanner, clock: FakeClock, *, base_url: str = "http://127.0.0.1:9",
    poster: Poster | None = None, surge: SurgeConfig | None = None,
) -> TriageDesk:
    rules = RuleBook(parse_rules(RULES.format(fraud_url=f"{base_url}/fraud", hotline_url=f"{base_url}/12345")))
    return TriageDesk(
        service, planner.officers, AlertBoard(service.engine, clock), rules=rules, keywords=parse_keywords(KEYWORDS),
        surge=surge or SurgeConfig(SurgeSettings(), {}), poster=poster, clock=clock, owns_alerts=True,
        files=default_files(),
    )


def polling_desk(service: TicketService, clock: FakeClock, live: Path) -> tuple[TriageDesk, DispatchPlanner]:
    """A backend's triage desk polling the shipped rule files, copied into ``live`` (the caller makes the desk
    poll fast: ``monkeypatch.setattr(core.triage.desk, "RULES_POLL_S", 0.05)``)."""
    live.mkdir()
    for name in RULE_FILES:
        shutil.copy2(REPO / "dialplan" / name, live / name)
    planner = planner_for(service, clock)
    desk = TriageDesk(service, planner.officers, AlertBoard(service.engine, clock), owns_alerts=True,
                      files=default_files(live), clock=clock)
    return desk, planner


def planner_for(service: TicketService, clock: FakeClock) -> DispatchPlanner:
    return DispatchPlanner(service, OfficerService(service.engine, clock), clock=clock)


@asynccontextmanager
async def desk_client(
    service: TicketService, planner: DispatchPlanner, desk: TriageDesk, broadcaster: StepBroadcaster | None = None
) -> AsyncIterator[TestClient]:
    app = make_app(service, health={}, dispatch=planner, triage=desk)
    if broadcaster is not None:
        from core.dispatch.views import BROADCASTER

        # The stream the desk publishes on must be the one the test subscribes to.
        app[BROADCASTER].close_all()
        desk.set_publisher(broadcaster.publish)
    async with TestClient(TestServer(app)) as client:
        yield client


async def repaired(overflow: Overflow, timeout_s: float = 2.0) -> None:
    """Until the worker has drained its queue and run the one repair its overflow asked for."""
    for _ in range(round(timeout_s / 0.01)):
        if overflow.repairs == 1 and not overflow.pending:
            return
        await asyncio.sleep(0.01)
