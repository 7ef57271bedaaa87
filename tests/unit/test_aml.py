"""Handset location (AML): the codec, the binding rules, the HTTPS door and the SMS door through Twilio's webhook."""

from __future__ import annotations

import random
import string
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from core.auth.users import Role
from core.calls.lifecycle import State, Step
from core.calls.tables import Ticket
from core.calls.tickets import TicketService, TicketView
from core.dispatch.planner import DispatchPlanner
from core.quality import views as web_quality
from core.quality.complaints import Complaints
from core.quality.outbox import Outbox
from core.quality.survey import Survey
from core.quality.tables import SurveyResponse, WebhookReceipt
from core.triage.aml import (
    AmlError,
    AmlFix,
    Method,
    number_forms,
    parse_https,
    parse_sms,
)
from core.triage.aml_service import (
    AmlMessageRow,
    AmlRefused,
    AmlService,
    AmlSettings,
    Verdict,
)
from core.web.app import make_app
from tests.dispatch_city import CENTER, load, officer, point_in
from tests.triage_setup import make_desk, planner_for
from tests.unit.conftest import T0, FakeClock
from tests.unit.test_survey import TOKEN, URL, _closed_call, _reply, _signed
from tests.web_login import login_headers

CALLER = "13800138000"  # as the network presents the call
HANDSET = "+8613800138000"  # as the handset's SMS comes from it
LAT, LON = 31.23041, 121.47372


def top(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H%M%S")


def sms(lat: float = LAT, lon: float = LON, rd: str = "8", at: float = T0 + 10, pm: str = "G", lc: str = "68",
        *, ml: bool = True) -> str:
    """An AML SMS as a handset writes it, its ml counting the whole message."""
    body = (f'A"ML=1;lt={lat:+09.5f};lg={lon:+010.5f};rd={rd};top={top(at)};lc={lc};pm={pm};'
            "si=460001000000000;ei=356938035643809;mcc=460;mnc=00")
    if not ml:
        return body
    length = len(body) + len(";ml=") + 3
    return f"{body};ml={length}"


def form(lat: float = LAT, lon: float = LON, accuracy: str = "8", at: float = T0 + 10, number: str = HANDSET,
         **extra: str) -> dict[str, str]:
    """An AML (ELS) HTTPS message's fields."""
    return {"v": "1", "emergency_number": "110", "source": "CALL", "thunderbird_version": "2800",
            "time": str(round(T0 * 1000)), "location_latitude": f"{lat:.7f}", "location_longitude": f"{lon:.7f}",
            "location_time": str(round(at * 1000)), "location_source": "gps", "location_accuracy": accuracy,
            "location_certainty": "68", "device_number": number, "device_model": "Pixel 7", **extra}


# -- the codec ------------------------------------------------------------------------------


def test_the_published_examples_are_read() -> None:
    computed = ('A"ML=1;lt=+51.53321;lg=-0.12601;rd=14;top=20220131171748;lc=68;pm=W;si=234159000000000;'
                "ei=123456789012345;mcc=234;mnc=15;ml=127")  # published with ml=126, one short of its length
    with pytest.raises(AmlError) as short:
        parse_sms(computed.replace("ml=127", "ml=126"), sender="+447700900123")
    assert short.value.reason == "bad-ml"
    fix = parse_sms(computed, sender="+447700900123")
    assert (fix.lat, fix.lon, fix.radius_m, fix.confidence, fix.method) == (51.53321, -0.12601, 14.0, 68, Method.WIFI)
    assert fix.positioned_at == datetime(2022, 1, 31, 17, 17, 48, tzinfo=UTC).timestamp()
    assert (fix.msisdn, fix.channel, fix.raw) == ("+447700900123", "sms", computed)
    none = ('A"ML=1;lt=+00.00000;lg=+000.00000;rd=N;top=20220131173734;lc=0;pm=N;si=234159000000000;'
            "ei=123456789012345;mcc=234;mnc=15;ml=127")
    with pytest.raises(AmlError) as refused:
        parse_sms(none, sender="+447700900123")
    assert (refused.value.reason, refused.value.status, refused.value.error_id) == ("no-position", 422,
                                                                                     "aml-no-position")


def test_a_handsets_message_is_read_whole() -> None:
    fix = parse_sms(sms(), sender=HANDSET)
    assert fix == AmlFix("sms", HANDSET, LAT, LON, 8.0, T0 + 10, 68, Method.GNSS, sms())
    assert fix.to_json() == {"source": "aml", "channel": "sms", "method": "gnss", "radius_m": 8.0, "confidence": 68,
                             "positioned_at": "2026-11-29T11:30:10.000Z"}
    assert parse_sms(sms(ml=False), sender=HANDSET).lat == LAT  # ml is optional
    assert parse_sms(sms().replace("pm=G", "pm=C"), sender=None).method is Method.CELL  # the sender comes later


@pytest.mark.parametrize(("text", "reason"), [
    ("", "not-aml"),
    ("AML=1;lt=1", "not-aml"),
    ("a\"ML=1", "not-aml"),
    (sms(ml=False).replace('A"ML=1', 'A"ML=1.0'), "unknown-version"),
    (sms(ml=False).replace('A"ML=1', 'A"ML=2'), "unknown-version"),
    (sms(ml=False).replace("lt=+31.23041", "lt=+91.00000"), "bad-lt"),
    (sms(ml=False).replace("lg=+121.47372", "lg=-181.00000"), "bad-lg"),
    (sms(ml=False).replace("lt=+31.23041", "lt=31,23041"), "bad-lt"),
    (sms(ml=False).replace("lt=+31.23041", "lt=NaN"), "bad-lt"),
    (sms(ml=False).replace("lt=+31.23041", "lt=1e3"), "bad-lt"),
    (sms(ml=False).replace("rd=8;", "rd=-8;"), "bad-rd"),
    (sms(ml=False).replace("rd=8;", "rd=100001;"), "bad-rd"),
    (sms(ml=False).replace("rd=8;", "rd=N;"), "bad-rd"),
    (sms(ml=False).replace(f"top={top(T0 + 10)}", "top=20261131113010"), "bad-top"),  # 31 November
    (sms(ml=False).replace(f"top={top(T0 + 10)}", "top=2026112911301"), "bad-top"),
    (sms(ml=False).replace("lc=68", "lc=101"), "bad-lc"),
    (sms(ml=False).replace("pm=G", "pm=X"), "bad-pm"),
    (sms(ml=False).replace("pm=G", "pm=g"), "bad-pm"),
    (sms(ml=False).replace("mcc=460", "mcc=46a"), "bad-mcc"),
    (sms(ml=False).replace("ei=356938035643809", "ei=35"), "bad-ei"),
    (sms(ml=False).replace(";lc=68", ""), "missing-field"),
    (sms().replace(";ml=", ";ml=1"), "bad-ml"),
    (sms() + "x", "bad-ml"),
    (sms(ml=False).replace(";pm=G", ";pm=G;lt=+31.00000"), "repeated-field"),
    (sms(ml=False).replace(";pm=G", ";pm=G;;"), "bad-field"),
    (sms(ml=False).replace(";pm=G", ";pm=G;Bad=1"), "bad-field"),
    (sms(ml=False).replace(";pm=G", ";pm=G;nokey"), "bad-field"),
    (sms(ml=False).replace("lc=68", "lc=6\n8"), "control-character"),
    (sms(ml=False).replace("lc=68", "lc=6\x008"), "control-character"),
    (sms().replace("lt=+31.23041", "lt=+3.23041"), "bad-ml"),  # a character lost, the field still reads
    ('A"ML=1;' + "x=1;" * 300, "too-long"),
])
def test_what_is_refused_and_why(text: str, reason: str) -> None:
    with pytest.raises(AmlError) as refused:
        parse_sms(text, sender=HANDSET)
    assert refused.value.reason == reason, str(refused.value)
    assert str(refused.value)  # a sentence for the audit record


def test_unknown_keys_of_the_right_shape_are_passed_over() -> None:
    text = sms(ml=False) + ";hf=3;alt=12"
    assert parse_sms(text, sender=HANDSET).lat == LAT


def test_the_sender_must_be_a_number() -> None:
    for sender, reason in (("anonymous", "bad-sender"), ("+86 138x", "bad-sender"), ("1" * 21, "bad-sender"),
                           ("138\n00", "control-character")):
        with pytest.raises(AmlError) as refused:
            parse_sms(sms(), sender=sender)
        assert refused.value.reason == reason
    assert parse_sms(sms(), sender="+86 138-0013-8000").msisdn == HANDSET


def test_every_prefix_is_refused_or_reads_the_same_position() -> None:
    """A message cut anywhere (a lost SMS part) never gives another position than the whole one."""
    text = sms()
    whole = parse_sms(text, sender=HANDSET)
    read = 0
    for end in range(len(text) + 1):
        try:
            fix = parse_sms(text[:end], sender=HANDSET)
        except AmlError:
            continue
        read += 1
        assert (fix.lat, fix.lon, fix.radius_m, fix.positioned_at, fix.method) == (
            whole.lat, whole.lon, whole.radius_m, whole.positioned_at, whole.method)
    # The whole one, and the ones cut in or before the optional fields (no ml left to tell).
    assert read >= 1
    for end in range(len(text) - len("ml=000"), len(text)):  # with the ml cut, its length check refuses it
        with pytest.raises(AmlError):
            parse_sms(text[:end], sender=HANDSET)


def test_one_character_changed_anywhere_is_refused_or_read_within_the_rules() -> None:
    text = sms()
    for i in range(len(text)):
        for ch in "0+-;=.\"AGNx \x00é":
            mutated = text[:i] + ch + text[i + 1:]
            try:
                fix = parse_sms(mutated, sender=HANDSET)
            except AmlError:
                continue
            _within_rules(fix)


def _within_rules(fix: AmlFix) -> None:
    assert -90 <= fix.lat <= 90 and -180 <= fix.lon <= 180
    assert 0 <= fix.radius_m <= 100_000 and (fix.confidence is None or 0 <= fix.confidence <= 100)
    assert isinstance(fix.method, Method)


def test_random_garbage_is_refused_never_crashes() -> None:
    """A seeded fuzz loop: random text, random fields around the header, random forms."""
    rng = random.Random(103625)
    alphabet = string.printable + "\x00\x1b\u0085\u2028中文\"=;"
    keys = ["lt", "lg", "rd", "top", "lc", "pm", "si", "ei", "mcc", "mnc", "ml", "zz"]
    values = ["+31.2", "-181", "8", "N", "G", "W", "20261129113010", "99999999999999", "68", "", "1e5", "０"]
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.3:
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 200)))
        elif kind < 0.8:
            parts = [f"{rng.choice(keys)}={rng.choice(values)}" for _ in range(rng.randrange(0, 14))]
            text = 'A"ML=1;' + ";".join(parts)
        else:
            text = sms()
            cut = rng.randrange(len(text))
            text = text[:cut] + "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 5))) + text[cut + 1:]
        try:
            _within_rules(parse_sms(text, sender=HANDSET))
        except AmlError as exc:
            assert exc.reason and exc.status in (400, 422)
    https_keys = list(form()) + ["location_floor", "location_altitude", "location_confidence", "Bad Key", ""]
    for _ in range(2000):
        fields = {rng.choice(https_keys): rng.choice(values + ["1", "gps", "cell", HANDSET, "x" * 300])
                  for _ in range(rng.randrange(0, 20))}
        if rng.random() < 0.5:
            fields = {**form(), **fields}
        try:
            _within_rules(parse_https(fields))
        except AmlError as exc:
            assert exc.reason and exc.status in (400, 422)


def test_the_https_form_is_read() -> None:
    fix = parse_https(form(location_floor="3", location_altitude="21.5"))
    assert (fix.channel, fix.msisdn, fix.lat, fix.lon, fix.radius_m) == ("https", HANDSET, LAT, LON, 8.0)
    assert (fix.positioned_at, fix.confidence, fix.method, fix.floor, fix.altitude_m) == (
        T0 + 10, 68, Method.GNSS, "3", 21.5)
    assert fix.call_started_at == T0 and "device_number=+8613800138000" in fix.raw
    assert parse_https({**form(), "location_source": "wifi"}).method is Method.WIFI
    assert parse_https({k: v for k, v in form().items() if k != "location_source"}).method is Method.UNKNOWN


@pytest.mark.parametrize(("fields", "reason"), [
    ({**form(), "v": "2"}, "unknown-version"),
    ({k: v for k, v in form().items() if k != "v"}, "missing-field"),
    ({k: v for k, v in form().items() if k != "device_number"}, "missing-field"),
    ({k: v for k, v in form().items() if not k.startswith(("location_lat", "location_lon"))}, "no-position"),
    ({**form(), "location_latitude": "91"}, "bad-location_latitude"),
    ({**form(), "location_accuracy": "-3"}, "bad-location_accuracy"),
    ({**form(), "location_time": "2026-11-29"}, "bad-location_time"),
    ({**form(), "location_source": "magic"}, "bad-location_source"),
    ({**form(), "location_certainty": "200"}, "bad-location_certainty"),
    ({**form(), "device_number": "<script>"}, "bad-device_number"),
    ({**form(), "location_floor": "3; DROP"}, "bad-location_floor"),
    ({**form(), "Bad Key": "1"}, "bad-field"),
    ({**form(), "device_model": "x" * 257}, "too-long"),
    ({**form(), "device_model": "Pixel\r\n7"}, "control-character"),
    ({f"k{i}": "1" for i in range(65)}, "too-long"),
])
def test_what_the_https_form_refuses(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(AmlError) as refused:
        parse_https(fields)
    assert refused.value.reason == reason, str(refused.value)


def test_a_number_is_found_however_the_network_spells_it() -> None:
    assert set(number_forms(HANDSET)) >= {HANDSET, CALLER, "8613800138000", "008613800138000"}
    assert set(number_forms(CALLER)) >= {HANDSET, CALLER}
    assert set(number_forms("+447700900123")) == {"+447700900123", "447700900123", "00447700900123"}


# -- binding --------------------------------------------------------------------------------


@pytest.fixture
def planner(service: TicketService, clock: FakeClock) -> DispatchPlanner:
    return planner_for(service, clock)


@pytest.fixture
def aml(service: TicketService, planner: DispatchPlanner, clock: FakeClock) -> AmlService:
    return AmlService(service, planner, clock=clock)


async def call(service: TicketService, uid: str = "7.1", caller: str = CALLER, at: float = T0) -> TicketView:
    """An answered call of ``caller`` that began at ``at``."""
    await service.open_call(uniqueid=uid, caller_id=caller, at=at, source="agi")
    await service.record_step(uid, Step.QUEUED, at=at + 1, source="ami")
    return await service.record_step(uid, Step.ANSWERED, at=at + 2, source="ami", seat="seat-05")


async def rows(service: TicketService) -> list[AmlMessageRow]:
    async with service.engine.connect() as conn:
        return list((await conn.execute(select(AmlMessageRow).order_by(AmlMessageRow.id))).all())


async def test_a_fix_locates_the_callers_live_ticket(
    service: TicketService, planner: DispatchPlanner, aml: AmlService, clock: FakeClock
) -> None:
    ticket = await call(service)
    clock.now = T0 + 20
    outcome = await aml.receive_sms(sms(), sender=HANDSET)
    assert (outcome.verdict, outcome.ticket, outcome.reason) == (Verdict.LOCATED, ticket.number, None)
    after = await service.get(ticket.number)
    assert after is not None and after.state is State.ANSWERED
    step = after.steps[-1]
    assert (step.step, step.source, step.detail["lat"], step.detail["lon"]) == (Step.LOCATED, "aml", LAT, LON)
    assert step.detail["fix"] == {"source": "aml", "channel": "sms", "method": "gnss", "radius_m": 8.0,
                                  "confidence": 68, "positioned_at": "2026-11-29T11:30:10.000Z"}
    incident = await planner.incident(ticket.number)
    assert incident is not None and (incident.lat, incident.lon) == (LAT, LON)  # what dispatch uses
    [row] = await rows(service)
    assert (row.verdict, row.channel, row.msisdn, row.ticket_number, row.raw) == (
        "located", "sms", HANDSET, ticket.number, sms())


async def test_a_fix_replaces_the_networks_position_and_a_blurrier_fix(
    service: TicketService, planner: DispatchPlanner, aml: AmlService, clock: FakeClock
) -> None:
    ticket = await call(service)
    await planner.locate(ticket.number, lat=31.24, lon=121.48, address="network position (PIDF-LO)",
                         fix={"source": "network", "method": "pidf-lo"})
    clock.now = T0 + 20
    wifi = await aml.receive_sms(sms(rd="40", pm="W", at=T0 + 8), sender=HANDSET)
    assert wifi.verdict is Verdict.LOCATED
    gnss = await aml.receive_https(form(lat=31.23050, accuracy="6", at=T0 + 15))
    assert gnss.verdict is Verdict.LOCATED
    incident = await planner.incident(ticket.number)
    assert incident is not None and incident.lat == 31.23050
    # A blurrier fix afterwards does not move it back: it is kept beside, with the reason.
    cell = await aml.receive_sms(sms(rd="900", pm="C", at=T0 + 18), sender=HANDSET)
    assert (cell.verdict, cell.reason) == (Verdict.RECORDED, "less-precise")
    after = await service.get(ticket.number)
    assert after is not None and after.steps[-1].step is Step.HANDSET_LOCATED
    assert "±6 m" in after.steps[-1].detail["kept_aside"] and after.steps[-1].detail["fix"]["radius_m"] == 900
    assert (await planner.incident(ticket.number)).lat == 31.23050  # type: ignore[union-attr]


async def test_a_call_takers_position_stands_and_the_fix_is_kept_beside_it(
    service: TicketService, planner: DispatchPlanner, aml: AmlService, clock: FakeClock
) -> None:
    ticket = await call(service)
    await planner.locate(ticket.number, lat=31.2310, lon=121.4740, address="人民大道200号")  # by hand, on the desk
    clock.now = T0 + 20
    outcome = await aml.receive_sms(sms(), sender=HANDSET)
    assert (outcome.verdict, outcome.reason) == (Verdict.RECORDED, "person-stands")
    incident = await planner.incident(ticket.number)
    assert incident is not None and (incident.lat, incident.address) == (31.2310, "人民大道200号")
    after = await service.get(ticket.number)
    assert after is not None
    step = after.steps[-1]
    assert (step.step, step.source, step.state_after) == (Step.HANDSET_LOCATED, "aml", State.ANSWERED)
    assert (step.detail["lat"], step.detail["lon"], step.detail["station"]) == (LAT, LON, incident.station)
    assert step.detail["kept_aside"] == "the position a person gave stands"
    assert (await rows(service))[-1].reason == "person-stands"


async def test_a_text_report_is_located_and_an_incident_on_scene_is_not_moved(
    service: TicketService, planner: DispatchPlanner, aml: AmlService, clock: FakeClock
) -> None:
    report = await service.open_report(channel="app", ref="r1", sender=CALLER, at=T0, source="app", text="有人打架")
    clock.now = T0 + 20
    # A text report of that number is its ticket too (AML is also sent with an SMS to the emergency number).
    assert (await aml.receive_sms(sms(), sender=HANDSET)).ticket == report.number
    await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
    ticket = await call(service, "7.2", at=T0 + 30)
    await planner.locate(ticket.number, lat=LAT, lon=LON, address="人民大道200号")
    plan = await planner.begin(ticket.number)
    await planner.ringing(ticket.number, plan.rungs[0])
    await planner.joined(ticket.number, plan.rungs[0])
    await planner.arrived(ticket.number, badge="e1", lat=LAT, lon=LON)
    clock.now = T0 + 60
    outcome = await aml.receive_https(form(lat=31.2400, at=T0 + 50))
    assert (outcome.ticket, outcome.verdict, outcome.reason) == (ticket.number, Verdict.RECORDED, "not-locatable")
    after = await service.get(ticket.number)
    assert after is not None and after.state is State.ON_SCENE and after.steps[-1].step is Step.HANDSET_LOCATED
    assert (await planner.incident(ticket.number)).lat == LAT  # type: ignore[union-attr]


async def test_the_same_fix_by_sms_and_https_is_recorded_once(
    service: TicketService, aml: AmlService, clock: FakeClock
) -> None:
    ticket = await call(service)
    clock.now = T0 + 20
    assert (await aml.receive_https(form(lat=31.2304139, lon=121.4737172))).verdict is Verdict.LOCATED
    again = await aml.receive_sms(sms(), sender=HANDSET)  # five decimals of the same fix
    assert (again.verdict, again.ticket) == (Verdict.DUPLICATE, ticket.number)
    after = await service.get(ticket.number)
    assert after is not None and [s.step for s in after.steps].count(Step.LOCATED) == 1
    assert [r.verdict for r in await rows(service)] == ["located", "duplicate"]


@pytest.mark.parametrize(("positioned", "arrives", "reason"), [
    (T0 - 1900, T0 + 20, "stale"),  # the handset's last fix, 32 min before the call
    (T0 + 20, T0 + 1830, "stale"),  # a fresh fix delivered half an hour late
    (T0 + 200, T0 + 20, "future"),  # a handset clock three minutes ahead
])
async def test_stale_and_future_fixes_are_refused_and_kept(
    service: TicketService, aml: AmlService, clock: FakeClock, positioned: float, arrives: float, reason: str
) -> None:
    await call(service)
    clock.now = arrives
    with pytest.raises(AmlRefused) as refused:
        await aml.receive_sms(sms(at=positioned), sender=HANDSET)
    assert (refused.value.reason, refused.value.status, refused.value.error_id) == (reason, 422, f"aml-{reason}")
    [row] = await rows(service)
    assert (row.verdict, row.reason, row.lat, row.ticket_number) == ("refused", reason, LAT, None)
    assert row.positioned_at_us == round(positioned) * 1_000_000


async def test_a_number_without_a_ticket_is_refused_and_kept(
    service: TicketService, aml: AmlService, clock: FakeClock
) -> None:
    """Prank-safe: an AML message for a number that did not call locates nothing and opens no ticket."""
    await call(service, caller="13900000000")
    clock.now = T0 + 20
    with pytest.raises(AmlRefused) as refused:
        await aml.receive_https(form())
    assert (refused.value.reason, refused.value.error_id) == ("no-ticket", "aml-no-ticket")
    async with service.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(Ticket))).scalar_one() == 1
    [row] = await rows(service)
    assert (row.verdict, row.reason, row.msisdn, row.ticket_number) == ("refused", "no-ticket", HANDSET, None)


async def test_a_recent_ended_call_binds_an_old_or_closed_one_does_not(
    service: TicketService, aml: AmlService, clock: FakeClock
) -> None:
    ticket = await call(service)
    await service.record_step("7.1", Step.HUNG_UP, at=T0 + 30, source="ami")
    clock.now = T0 + 50 * 60
    late = await aml.receive_sms(sms(at=T0 + 49 * 60), sender=HANDSET)  # the handset sent it late
    assert (late.verdict, late.ticket) == (Verdict.LOCATED, ticket.number)
    clock.now = T0 + 61 * 60
    with pytest.raises(AmlRefused) as refused:
        await aml.receive_sms(sms(at=T0 + 60 * 60), sender=HANDSET)
    assert refused.value.reason == "no-ticket"
    await service.close(ticket.number, disposition="求助", by="seat-05")
    clock.now = T0 + 50 * 60
    with pytest.raises(AmlRefused) as closed:
        await aml.receive_sms(sms(at=T0 + 49 * 60 + 5), sender=HANDSET)
    assert (closed.value.reason, closed.value.ticket) == ("ticket-closed", ticket.number)


async def test_an_unreadable_message_is_kept_with_its_reason(
    service: TicketService, aml: AmlService, clock: FakeClock
) -> None:
    with pytest.raises(AmlError):
        await aml.receive_sms('A"ML=1;lt=+91.0', sender=HANDSET)
    with pytest.raises(AmlError):
        await aml.receive_https({"v": "1", "device_number": HANDSET, "location_latitude": "x"})
    kept = await aml.messages()
    assert [(m["channel"], m["verdict"], m["reason"], m["msisdn"]) for m in kept] == [
        ("https", "refused", "missing-field", HANDSET), ("sms", "refused", "missing-field", HANDSET)]
    assert kept[1]["raw"] == 'A"ML=1;lt=+91.0' and kept[1]["error"]


def test_settings_are_checked() -> None:
    for bad in ({"ticket_window_s": 0}, {"max_age_s": -1}, {"max_age_s": 8 * 86400}, {"future_skew_s": -1},
                {"ticket_window_s": True}, {"future_skew_s": "60"}):
        with pytest.raises(ValueError):
            AmlSettings(**bad)  # type: ignore[arg-type]


# -- the doors ------------------------------------------------------------------------------


@asynccontextmanager
async def center(service: TicketService, clock: FakeClock) -> AsyncIterator[tuple[TestClient, Survey]]:
    """The API as ``serve`` mounts it for this: dispatch, triage (text reports), the AML routes, Twilio's webhook."""
    planner = planner_for(service, clock)
    complaints = Complaints(service.engine, clock=clock)
    survey = Survey(service.engine, Outbox(service.engine, None, clock=clock), complaints, auth_token=TOKEN,
                    webhook_url=URL, clock=clock)
    app = make_app(service, health={}, dispatch=planner, triage=make_desk(service, planner, clock))
    web_quality.add_routes(app, survey=survey, complaints=complaints)
    async with TestClient(TestServer(app)) as client:
        yield client, survey


async def test_the_relay_posts_fixes_and_gets_each_verdict(service: TicketService, clock: FakeClock) -> None:
    ticket = await call(service)
    clock.now = T0 + 20
    async with center(service, clock) as (client, _survey):
        gateway = await login_headers(service.engine, Role.GATEWAY)
        located = await client.post("/api/aml", data=form(), headers=gateway)
        assert located.status == 200, await located.text()
        body = await located.json()
        assert (body["verdict"], body["ticket"], body["applied"]) == ("located", ticket.number, True)
        again = await client.post("/api/aml", data=form(), headers=gateway)
        assert (again.status, (await again.json())["verdict"]) == (200, "duplicate")
        garbled = await client.post("/api/aml", data={**form(), "location_latitude": "north"}, headers=gateway)
        assert garbled.status == 400
        answer = await garbled.json()
        assert (answer["error_id"], answer["details"]["reason"]) == ("aml-malformed", "bad-location_latitude")
        stranger = await client.post("/api/aml", data=form(number="+8613900000001"), headers=gateway)
        assert (stranger.status, (await stranger.json())["error_id"]) == (422, "aml-no-ticket")
        as_json = await client.post("/api/aml", json=form(), headers=gateway)
        assert as_json.status == 400 and (await as_json.json())["details"]["reason"] == "not-a-form"
        twice = await client.post("/api/aml", data="v=1&v=1", headers={
            **gateway, "Content-Type": "application/x-www-form-urlencoded"})
        assert twice.status == 400 and (await twice.json())["details"]["reason"] == "repeated-field"
        huge = await client.post("/api/aml", data={**form(), "x": "y" * 9000}, headers=gateway)
        assert huge.status == 400 and (await huge.json())["details"]["reason"] == "too-long"
        taker = await login_headers(service.engine, Role.CALL_TAKER)
        assert (await client.post("/api/aml", data=form(), headers=taker)).status == 403
        assert (await client.post("/api/aml", data=form())).status == 401
        supervisor = await login_headers(service.engine, Role.SUPERVISOR)
        audit = await client.get("/api/aml/messages", headers=supervisor)
        kept = (await audit.json())["messages"]
        assert [m["verdict"] for m in kept] == ["refused"] * 5 + ["duplicate", "located"]
        assert [m["reason"] for m in kept[:5]] == ["too-long", "repeated-field", "not-a-form", "no-ticket",
                                                   "bad-location_latitude"]
        mine = await client.get("/api/aml/messages", params={"ticket": ticket.number, "limit": "1"},
                                headers=supervisor)
        assert [m["verdict"] for m in (await mine.json())["messages"]] == ["duplicate"]
        assert (await client.get("/api/aml/messages", headers=taker)).status == 403
        assert (await client.get("/api/aml/messages", params={"limit": "0"}, headers=supervisor)).status == 400
        shown = await client.get(f"/api/tickets/{ticket.number}", headers=supervisor)
        steps = (await shown.json())["steps"]
        assert steps[-1]["step"] == "located" and steps[-1]["detail"]["fix"]["source"] == "aml"


async def test_an_aml_sms_through_twilio_locates_and_is_never_a_report_nor_an_answer(
    service: TicketService, planner: DispatchPlanner, clock: FakeClock
) -> None:
    # The caller was surveyed on an earlier call: a reply from that number would be taken as an answer.
    await _closed_call(service, "1.1", caller=HANDSET)
    ticket = await call(service, "7.1", caller=CALLER, at=T0 + 100)
    clock.now = T0 + 120
    async with center(service, clock) as (client, survey):
        await survey.catch_up()
        params = _reply("SM" + "a" * 32, sms(at=T0 + 110), HANDSET)
        resp = await client.post("/api/twilio/sms", data=params, headers=_signed(params))
        assert resp.status == 200, await resp.text()
        replay = await client.post("/api/twilio/sms", data=params, headers=_signed(params))
        assert replay.status == 409
        garbled = _reply("SM" + "b" * 32, 'A"ML=1;lt=+31.2;lg=5', HANDSET)
        assert (await client.post("/api/twilio/sms", data=garbled, headers=_signed(garbled))).status == 200
        stranger = _reply("SM" + "c" * 32, sms(at=T0 + 110), "+8613700000000")
        assert (await client.post("/api/twilio/sms", data=stranger, headers=_signed(stranger))).status == 200
        forged = _reply("SM" + "d" * 32, sms(at=T0 + 110), HANDSET)
        assert (await client.post("/api/twilio/sms", data=forged, headers=_signed(params))).status == 403
    after = await service.get(ticket.number)
    assert after is not None and after.steps[-1].step is Step.LOCATED
    assert after.steps[-1].detail["fix"]["channel"] == "sms"
    async with service.engine.connect() as conn:
        tickets = (await conn.execute(select(func.count()).select_from(Ticket))).scalar_one()
        answers = (await conn.execute(select(func.count()).select_from(SurveyResponse))).scalar_one()
        receipts = (await conn.execute(select(func.count()).select_from(WebhookReceipt))).scalar_one()
    assert (tickets, answers, receipts) == (2, 0, 3)  # no text report, no survey answer; three genuine messages
    assert [(r.verdict, r.reason) for r in await rows(service)] == [
        ("located", None), ("refused", "missing-field"), ("refused", "no-ticket")]
