"""Spot checks: stratified sampling reproducible from its seed, scoring through the API, reports."""

from __future__ import annotations

import random
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService
from core.quality import views as web_quality
from core.quality.spot_checks import CRITERIA, Call, SpotChecks, draw_sample, shift_of
from core.web.app import make_app
from tests.web_login import login_headers

T0 = 1_795_951_800.0  # 19:30 in Shanghai on 2026-11-29


def _population() -> list[Call]:
    calls = []
    for n in range(300):
        seat = f"seat-{n % 7:02d}"
        shift = ("00-08", "08-16", "16-24")[n % 3]
        calls.append(Call(f"110-20261129-{n + 1:06d}", seat, shift))
    return calls


def test_shift_of_center_hours() -> None:
    assert [shift_of(h, (0, 8, 16)) for h in (0, 7, 8, 15, 16, 23)] == [
        "00-08", "00-08", "08-16", "08-16", "16-24", "16-24"
    ]
    # Shifts need not start at midnight: 02:00 belongs to the night shift that began at 20:00.
    assert shift_of(2, (8, 20)) == "20-08" and shift_of(9, (8, 20)) == "08-20"


def test_sample_is_reproducible_from_its_seed_and_order_independent() -> None:
    population = _population()
    first = draw_sample(population, 30, seed=20261129)
    shuffled = population[:]
    random.Random(1).shuffle(shuffled)
    assert draw_sample(shuffled, 30, seed=20261129) == first
    assert draw_sample(population, 30, seed=20261130) != first
    assert len(first) == len(set(first)) == 30


def test_sample_is_stratified_by_shift_and_seat() -> None:
    population = _population()  # 21 strata (3 shifts x 7 seats), 14-15 calls each
    sample = draw_sample(population, 42, seed=7)
    strata = {(c.shift, c.seat) for c in population}
    counts = {s: sum(1 for c in sample if (c.shift, c.seat) == s) for s in strata}
    assert set(counts.values()) == {2}  # equal strata share equally
    small = draw_sample(population, 5, seed=7)
    assert len({(c.shift, c.seat) for c in small}) == 5  # fewer calls than strata: one from each of five
    assert draw_sample(population[:3], 10, seed=1) == sorted(population[:3])  # never more than there is


async def _answered(service: TicketService, uid: str, seat: str, at: float) -> str:
    ticket = await service.open_call(uniqueid=uid, caller_id="13800000000", at=at, source="agi")
    await service.record_step(uid, Step.QUEUED, at=at + 1, source="ami")
    await service.record_step(uid, Step.ANSWERED, at=at + 2, source="ami", seat=seat)
    return ticket.number


async def test_draw_score_and_report_through_the_api(service: TicketService, engine: AsyncEngine, clock: Any) -> None:
    for n in range(12):
        await _answered(service, f"1.{n}", f"seat-{n % 3:02d}", T0 + n)
    await service.open_call(uniqueid="2.0", caller_id="1", at=T0, source="agi")  # never answered: not sampled
    checks = SpotChecks(engine, clock=clock, default_size=4)
    app = make_app(service, health={})
    web_quality.add_routes(app, spot_checks=checks)
    async with TestClient(TestServer(app), headers=await login_headers(service.engine, Role.SUPERVISOR)) as client:
        resp = await client.post("/api/quality/draws", json={"day": "20261129", "by": "督察-王", "seed": 42})
        assert resp.status == 201
        sample = await resp.json()
        assert sample["seed"] == 42 and sample["population"] == 12 and len(sample["calls"]) == 4
        assert {c["shift"] for c in sample["calls"]} == {"16-24"}
        assert len({c["seat"] for c in sample["calls"]}) == 3  # every seat represented
        assert (await client.post("/api/quality/draws", json={"day": "20261129", "by": "x"})).status == 409
        assert await checks.redraw_matches("20261129")

        first = sample["calls"][0]
        good = {c: 5 for c in CRITERIA}
        resp = await client.post("/api/quality/draws/20261129/scores",
                                 json={"ticket": first["ticket"], "by": "督察-王", "scores": good, "comment": "规范"})
        assert resp.status == 200 and (await resp.json())["total"] == 5.0
        for bad in ({**good, "speed": 6}, {**good, "speed": True}, {"speed": 5}, {**good, "mood": 3}):
            resp = await client.post("/api/quality/draws/20261129/scores",
                                     json={"ticket": first["ticket"], "by": "x", "scores": bad})
            assert resp.status == 400, bad
        resp = await client.post("/api/quality/draws/20261129/scores",
                                 json={"ticket": "110-20261129-999999", "by": "x", "scores": good})
        assert resp.status == 404
        assert (await client.get("/api/quality/draws/20261128")).status == 404
        assert (await client.get("/api/quality/draws/2026-11-29")).status == 400

        report = await (await client.get("/api/quality/reports/20261129")).json()
        assert report["published"] is False
        assert report["center"]["scored"] == 1 and report["center"]["sampled"] == 4
        assert report["seats"][first["seat"]]["average"]["speed"] == 5.0
        assert report["stations"]["unassigned"]["sampled"] == 4
        resp = await client.post("/api/quality/reports/20261129/publish", json={"by": "督察-王"})
        assert resp.status == 201
        assert (await client.post("/api/quality/reports/20261129/publish", json={"by": "x"})).status == 409
        # Scores after publication do not change what the stations were shown.
        second = sample["calls"][1]
        await client.post("/api/quality/draws/20261129/scores",
                          json={"ticket": second["ticket"], "by": "x", "scores": {c: 1 for c in CRITERIA}})
        published = await (await client.get("/api/quality/reports/20261129")).json()
    assert published["published"] is True and published["center"]["scored"] == 1
