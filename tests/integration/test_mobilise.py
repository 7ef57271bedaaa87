"""Support mobilised through the lab Asterisk: officers of two stations rung at once, each alone on his ladder."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from core.auth.users import AuthService, Role
from core.dispatch.heatmap import HeatmapQuery, heatmap
from siplab.asterisk import CITY_FILE
from tests.web_login import PASSWORD, TEST_SCRYPT_N

from .conftest import start_backend
from .test_dispatch import CENTER, wait_for

pytestmark = pytest.mark.lab

# East keeps two officers on duty; officer013's phone never answers, so his ladder goes to east's duty desk.
EAST_ON_DUTY = {"officer001", "officer013"}


def city(tmp_path: Path) -> str:
    data = json.loads(CITY_FILE.read_text())
    for station in data["stations"]:
        station["answer_timeout_s"] = 5  # the shortest a station may set
    for officer in data["officers"]:
        if officer["station"] == "east" and officer["badge"] not in EAST_ON_DUTY:
            officer["status"] = "off_duty"
        if officer["badge"] == "officer013":
            officer["endpoint"] = "PJSIP/silent004"
    path = tmp_path / "city.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    return str(path)


@pytest.fixture
async def running(backend_settings, tmp_path):
    running = await start_backend(replace(backend_settings, city_file=city(tmp_path)))
    yield running
    await running.runner.cleanup()


async def test_support_from_two_stations_every_officer_rung_each_joined_or_escalated(running) -> None:
    auth = AuthService(running.service.engine, scrypt_n=TEST_SCRYPT_N)
    await auth.add_user("app-gateway", PASSWORD, Role.GATEWAY)
    await auth.add_user("taker-m", PASSWORD, Role.CALL_TAKER)
    await auth.add_user("sup-m", PASSWORD, Role.SUPERVISOR)
    base = f"http://127.0.0.1:{running.settings.http_port}"
    async with aiohttp.ClientSession() as http:
        async def token(user: str) -> dict[str, str]:
            async with http.post(f"{base}/api/login", json={"username": user, "password": PASSWORD}) as r:
                return {"Authorization": f"Bearer {(await r.json())['token']}"}

        gateway, taker, sup = await token("app-gateway"), await token("taker-m"), await token("sup-m")
        report = {"ref": f"app-{random.randrange(10**9)}", "sender": f"136{random.randrange(10**8):08d}",
                  "text": "仓库起火，浓烟很大", "lat": CENTER[0], "lon": CENTER[1], "address": "人民大道200号"}
        async with http.post(f"{base}/api/reports", json=report, headers=gateway) as r:
            assert r.status in (200, 201), await r.text()
            number = (await r.json())["number"]
        async with http.post(f"{base}/api/tickets/{number}/take", json={}, headers=taker) as r:
            assert r.status == 200, await r.text()
        async with http.put(f"{base}/api/tickets/{number}/location", json={"lat": CENTER[0], "lon": CENTER[1]},
                            headers=taker) as r:
            assert r.status == 200, await r.text()
        # a call-taker may not mobilise; a supervisor may
        async with http.post(f"{base}/api/tickets/{number}/mobilise", json={"officers": 4}, headers=taker) as r:
            assert r.status == 403, await r.text()
        async with http.post(f"{base}/api/tickets/{number}/mobilise", json={"officers": 4}, headers=sup) as r:
            assert r.status == 202, await r.text()
            plan = await r.json()
        picks = {p["badge"]: p for p in plan["picks"]}
        assert [p["tier"] for p in plan["picks"]] == ["station", "station", "neighbour", "neighbour"]
            # the nearest station bordering east's area gives the other two
        assert set(picks) >= EAST_ON_DUTY and plan["tiers"]["station"] == ["east"]
        neighbour = plan["tiers"]["neighbour"][0]
        assert {p["station"] for p in plan["picks"]} == {"east", neighbour}

        async def done():
            async with http.get(f"{base}/api/tickets/{number}/mobilisation", headers=sup) as r:
                status = await r.json()
            return status if not status["running"] and "ringing" not in status["counts"] else None

        status = await wait_for(done, 30, "every pick's ladder to end")
    states = {p["badge"]: p["state"] for p in status["picks"]}
    assert states.pop("officer013") == "escalated"  # his phone did not answer; east's duty desk did
    assert set(states.values()) == {"on_the_way"} and len(states) == 3

    ticket = await running.service.get(number)
    assert ticket is not None and str(ticket.state) == "taken"  # support runs beside the ticket's own handling
    rung = [s.detail["endpoint"] for s in ticket.steps if s.step == "support_ringing"]
    assert sorted(rung) == sorted([f"PJSIP/{b}" for b in picks if b != "officer013"] + ["PJSIP/silent004",
                                                                                        "PJSIP/desk-east"])
    late = [s for s in ticket.steps if s.step == "support_no_answer"]
    assert [(s.detail["pick"], s.detail["kind"], s.detail["outcome"]) for s in late] == [
        ("officer013", "officer", "no_answer")]
    joined = {s.detail["pick"]: s.detail["kind"] for s in ticket.steps if s.step == "support_joined"}
    assert joined == {**{b: "officer" for b in picks if b != "officer013"}, "officer013": "duty_desk"}
    # the four rang together: the last officer's ring began before the first answer came back
    starts = [s.at_us for s in ticket.steps if s.step == "support_ringing" and s.detail["kind"] == "officer"]
    first_answer = min(s.at_us for s in ticket.steps if s.step == "support_joined")
    assert max(starts) < first_answer

    officers = running.backend.officers
    on_the_way = {b for b, state in states.items()}
    for badge in on_the_way:
        officer = await officers.get(badge)
        assert (str(officer.status), officer.ticket) == ("dispatched", number)
    assert str((await officers.get("officer013")).status) == "available"
    # The heat map counts the officers who left as mobilised, and none of them as covering their cells.
    now = officers.now()
    mapped = await heatmap(running.service.engine, officers,
                           HeatmapQuery(round((now - 3600) * 1e6), round((now + 60) * 1e6), cold_km=0.5), now)
    assert set(mapped["mobilised"]) == on_the_way
    assert mapped["left_by_support"] >= 1
