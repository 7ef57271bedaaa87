"""Attachments kept: a report's photos and videos fetched once from a real local gateway, checked, stored by their
sha256, recorded as steps in the journal's chain, and served only to the ticket's people, each serve journaled."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.lifecycle import Step
from core.calls.tickets import TicketService, TicketView
from core.quality.journal import KIND_ACCESS, JournalEntry, Journaler, verify
from core.quality.playback import record_access
from core.triage.attachments import (
    LIMITS,
    AttachmentKeeper,
    Limit,
    briefing_attachments,
    sniff,
)
from core.triage.attachments_http import HttpFetcher
from core.web.app import make_app
from tests.unit.conftest import T0, FakeClock
from tests.web_login import login_headers

# A minimal JPEG: start of image, a JFIF header, end of image.
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64 + b"\xff\xd9"
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 200
PHOTO_MAX = 256 * 1024  # the test's photo limit: the oversize stream passes it within a few chunks
CHUNK = 64 * 1024


@dataclass
class Gateway:
    """The report gateway's media server: a real aiohttp server on 127.0.0.1 that counts what it was asked."""

    url: str = ""
    hits: dict[str, int] = field(default_factory=dict)
    streamed: int = 0  # bytes the endless file got out before the client hung up
    stream_ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name == "photo.jpg":
            return web.Response(body=JPEG, content_type="image/jpeg")
        if name == "clip.mp4":
            return web.Response(body=MP4, content_type="video/mp4")
        if name == "page.jpg":  # an error page sent with the type of the photo it replaces
            return web.Response(body=b"<!doctype html><title>expired</title>", headers={"Content-Type": "image/jpeg"})
        if name == "page.html":
            return web.Response(text="<html></html>", content_type="text/html")
        if name == "flaky.jpg":
            if self.hits[name] == 1:
                return web.Response(status=500, text="busy")
            return web.Response(body=JPEG, content_type="image/jpeg")
        if name == "gone.jpg":
            return web.Response(status=404, text="no such media")
        if name == "moved.jpg":
            raise web.HTTPFound("/media/photo.jpg")
        if name == "loop.jpg":
            raise web.HTTPFound("/media/loop.jpg")
        if name == "ftp.jpg":
            raise web.HTTPFound("ftp://127.0.0.1/photo.jpg")
        if name == "announced.jpg":  # says at once that it is too big
            return web.Response(body=JPEG + b"\x00" * PHOTO_MAX, content_type="image/jpeg")
        if name == "endless.jpg":  # a JPEG that never ends, streamed without a length
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            await resp.prepare(request)
            try:
                await resp.write(JPEG[:-2])
                while True:
                    await resp.write(b"\x00" * CHUNK)
                    self.streamed += CHUNK
            except (ConnectionError, RuntimeError):
                pass  # the client hung up
            finally:
                self.stream_ended.set()
            return resp
        raise web.HTTPNotFound()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    gw = Gateway()
    app = web.Application()
    app.router.add_get("/media/{name}", gw.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    gw.url = str(server.make_url("/media/"))
    try:
        yield gw
    finally:
        await server.close()


@pytest.fixture
async def keeper(service: TicketService, clock: FakeClock, tmp_path: Path) -> AsyncIterator[AttachmentKeeper]:
    keeper = AttachmentKeeper(
        service, tmp_path / "attachments", HttpFetcher(timeout_s=10.0), clock=clock, max_attempts=3, backoff_s=5.0,
        access=lambda *a, **kw: record_access(service.engine, *a, clock=clock, **kw),
        limits={"photo": Limit(PHOTO_MAX, LIMITS["photo"].types), "video": LIMITS["video"]},
    )
    (tmp_path / "attachments").mkdir()
    keeper.attach()
    yield keeper
    await keeper.stop()


_refs = iter(range(1, 1000))


async def _report(service: TicketService, *attachments: tuple[str, str]) -> TicketView:
    return await service.open_report(channel="app", ref=f"r{next(_refs)}", sender="13800000000", at=T0,
                                     source="app", text="有人打架，见照片",
                                     attachments=[{"kind": kind, "url": url} for kind, url in attachments])


def _settled(ticket: TicketView) -> list[tuple[str, dict[str, Any]]]:
    return [(str(s.step), dict(s.detail)) for s in ticket.steps
            if s.step in (Step.ATTACHMENT_KEPT, Step.ATTACHMENT_REFUSED)]


async def _after(service: TicketService, number: str) -> list[tuple[str, dict[str, Any]]]:
    ticket = await service.get(number)
    assert ticket is not None
    return _settled(ticket)


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_the_first_bytes_say_what_a_file_is() -> None:
    assert sniff(JPEG) == "image/jpeg"
    assert sniff(b"\x89PNG\r\n\x1a\n" + b"\x00" * 8) == "image/png"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") == "image/heic"
    assert sniff(MP4) == "video/mp4"
    assert sniff(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00") == "video/quicktime"
    assert sniff(b"\x00\x00\x00\x14ftyp3gp4\x00\x00\x00\x00") == "video/3gpp"
    assert sniff(b"<!doctype html>") is None and sniff(b"") is None


async def test_a_photo_and_a_video_are_kept_once_with_their_step_in_the_journal(
    service: TicketService, engine: AsyncEngine, keeper: AttachmentKeeper, gateway: Gateway
) -> None:
    ticket = await _report(service, ("photo", gateway.url + "photo.jpg"), ("video", gateway.url + "clip.mp4"),
                           ("audio", gateway.url + "note.amr"))
    assert keeper.pending == 2  # the listener queued them; the voice note stays a link
    assert await keeper.keep_due() == 2
    photo_sha, video_sha = hashlib.sha256(JPEG).hexdigest(), hashlib.sha256(MP4).hexdigest()
    settled = sorted(await _after(service, ticket.number), key=lambda s: s[1]["index"])
    assert settled == [
        ("attachment_kept", {"index": 0, "kind": "photo", "url": gateway.url + "photo.jpg", "sha256": photo_sha,
                             "size": len(JPEG), "content_type": "image/jpeg"}),
        ("attachment_kept", {"index": 1, "kind": "video", "url": gateway.url + "clip.mp4", "sha256": video_sha,
                             "size": len(MP4), "content_type": "video/mp4"}),
    ]
    folder = keeper.folder
    assert folder is not None and _files(folder) == sorted([f"{photo_sha}.jpg", f"{video_sha}.mp4"])
    assert (folder / f"{photo_sha}.jpg").read_bytes() == JPEG
    assert stat.S_IMODE((folder / f"{photo_sha}.jpg").stat().st_mode) == 0o640
    # Fetched once: nothing is left to do, now or after a restart (what is kept is read from the steps).
    assert keeper.pending == 0 and await keeper.keep_due() == 0 and await keeper.catch_up() == 0
    assert gateway.hits == {"photo.jpg": 1, "clip.mp4": 1}
    # The steps are in the chain like every step; the report's state is untouched.
    assert (await service.get(ticket.number)).state == ticket.state
    assert await Journaler(engine).catch_up() == 3
    report = await verify(engine)
    assert report.ok, report.findings
    async with engine.connect() as conn:
        payloads = [json.loads(p) for p in (await conn.execute(select(JournalEntry.payload))).scalars()]
    assert [p["step"] for p in payloads] == ["reported", "attachment_kept", "attachment_kept"]
    assert {p["detail"]["sha256"] for p in payloads[1:]} == {photo_sha, video_sha}


async def test_an_endless_file_is_cut_at_the_limit_while_it_streams(
    service: TicketService, keeper: AttachmentKeeper, gateway: Gateway
) -> None:
    ticket = await _report(service, ("photo", gateway.url + "endless.jpg"), ("photo", gateway.url + "announced.jpg"))
    await keeper.keep_due()
    settled = sorted(await _after(service, ticket.number), key=lambda s: s[1]["index"])
    # An endless body can only end in "too big" if the fetch stopped by itself, at the limit.
    assert [(step, d["reason"], d["attempts"]) for step, d in settled] == [
        ("attachment_refused", "too_big", 1), ("attachment_refused", "too_big", 1)]
    assert "announced" in settled[1][1]["error"]  # refused on its Content-Length, before any byte was read
    await asyncio.wait_for(gateway.stream_ended.wait(), 5)
    # The server noticed the client had gone once the sockets' buffers (a few MiB on loopback) were full.
    assert gateway.streamed < 32 * 1024 * 1024
    assert _files(keeper.folder) == []  # no partial file left


async def test_an_error_page_sent_as_a_photo_is_refused_by_its_first_bytes(
    service: TicketService, keeper: AttachmentKeeper, gateway: Gateway
) -> None:
    ticket = await _report(service, ("photo", gateway.url + "page.jpg"), ("photo", gateway.url + "page.html"),
                           ("video", gateway.url + "photo.jpg"))
    await keeper.keep_due()
    settled = sorted(await _after(service, ticket.number), key=lambda s: s[1]["index"])
    assert [(d["index"], d["reason"]) for _, d in settled] == [(0, "wrong_type"), (1, "wrong_type"),
                                                              (2, "wrong_type")]
    assert "first bytes" in settled[0][1]["error"] and "text/html" in settled[1][1]["error"]
    assert _files(keeper.folder) == []


async def test_a_failing_gateway_is_retried_with_pauses_then_given_up(
    service: TicketService, keeper: AttachmentKeeper, gateway: Gateway, clock: FakeClock
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/media/photo.jpg"
    ticket = await _report(service, ("photo", gateway.url + "flaky.jpg"), ("photo", dead))
    assert await keeper.keep_due() == 2
    assert await _after(service, ticket.number) == []  # both failed once: retried later, nothing recorded yet
    assert await keeper.keep_due() == 0  # not before the pause
    clock.now += 5
    assert await keeper.keep_due() == 2
    [(step, kept)] = await _after(service, ticket.number)
    assert step == "attachment_kept" and kept["index"] == 0 and gateway.hits["flaky.jpg"] == 2
    clock.now += 9
    assert await keeper.keep_due() == 0  # the pause doubled
    clock.now += 1
    assert await keeper.keep_due() == 1
    [_, (step, refused)] = await _after(service, ticket.number)
    assert (step, refused["index"], refused["reason"], refused["attempts"]) == (
        "attachment_refused", 1, "unreachable", 3)
    assert "after 3 attempts" in refused["error"]
    assert keeper.pending == 0


async def test_a_report_closed_while_its_fetch_waits_for_a_retry_keeps_the_link(
    service: TicketService, keeper: AttachmentKeeper, gateway: Gateway, clock: FakeClock
) -> None:
    ticket = await _report(service, ("photo", gateway.url + "flaky.jpg"))
    await keeper.keep_due()
    await service.take(ticket.number, by="wang")
    await service.close(ticket.number, disposition="duplicate", by="wang")
    clock.now += 5
    assert keeper.pending == 0 and await keeper.keep_due() == 0
    assert gateway.hits == {"flaky.jpg": 1} and _files(keeper.folder) == []
    assert briefing_attachments(await service.get(ticket.number)) == [
        {"kind": "photo", "url": gateway.url + "flaky.jpg", "sha256": None, "kept": False}]


async def test_redirects_are_followed_within_limits_and_a_404_is_not_retried(
    service: TicketService, keeper: AttachmentKeeper, gateway: Gateway
) -> None:
    ticket = await _report(service, ("photo", gateway.url + "moved.jpg"), ("photo", gateway.url + "loop.jpg"),
                           ("photo", gateway.url + "ftp.jpg"), ("photo", gateway.url + "gone.jpg"))
    await keeper.keep_due()
    settled = {d["index"]: (step, d) for step, d in await _after(service, ticket.number)}
    assert settled[0][0] == "attachment_kept" and settled[0][1]["sha256"] == hashlib.sha256(JPEG).hexdigest()
    for index, words in ((1, "redirects"), (2, "http(s)"), (3, "HTTP 404")):
        step, detail = settled[index]
        assert (step, detail["reason"], detail["attempts"]) == ("attachment_refused", "unreachable", 1)
        assert words in detail["error"]
    assert gateway.hits["loop.jpg"] == 4  # the first ask and three redirects


async def test_reports_waiting_at_start_are_caught_up_and_the_owned_task_keeps_new_ones(
    service: TicketService, clock: FakeClock, gateway: Gateway, tmp_path: Path
) -> None:
    waiting = await _report(service, ("photo", gateway.url + "photo.jpg"))  # written while the keeper was down
    closed = await _report(service, ("photo", gateway.url + "clip.mp4"))
    await service.take(closed.number, by="wang")
    await service.close(closed.number, disposition="duplicate", by="wang")
    keeper = AttachmentKeeper(service, tmp_path / "kept", HttpFetcher(), clock=clock,
                              access=lambda *a, **kw: record_access(service.engine, *a, **kw))
    await keeper.start()
    try:
        fresh = await _report(service, ("video", gateway.url + "clip.mp4"))
        for _ in range(500):
            if all([await _after(service, t.number) for t in (waiting, fresh)]):
                break
            await asyncio.sleep(0.01)
        assert [s for s, _ in await _after(service, waiting.number)] == ["attachment_kept"]
        assert [s for s, _ in await _after(service, fresh.number)] == ["attachment_kept"]
        assert await _after(service, closed.number) == []  # closed is final: it stays a link
    finally:
        await keeper.stop()
    assert gateway.hits == {"photo.jpg": 1, "clip.mp4": 1}


async def test_without_a_folder_nothing_is_fetched(service: TicketService, gateway: Gateway) -> None:
    keeper = AttachmentKeeper(service, None, HttpFetcher(), access=lambda *a, **kw: None)
    keeper.attach()
    await keeper.start()
    ticket = await _report(service, ("photo", gateway.url + "photo.jpg"))
    assert keeper.pending == 0 and await keeper.keep_due() == 0
    await keeper.stop()
    assert gateway.hits == {}
    assert briefing_attachments(ticket) == [
        {"kind": "photo", "url": gateway.url + "photo.jpg", "sha256": None, "kept": False}]


# -- serving -------------------------------------------------------------------------------------------


async def _accesses(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(JournalEntry.payload).where(JournalEntry.kind == KIND_ACCESS))).scalars()
        return [json.loads(p) for p in rows]


async def test_a_kept_photo_is_served_to_the_tickets_people_only_each_serve_journaled(
    service: TicketService, engine: AsyncEngine, keeper: AttachmentKeeper, gateway: Gateway
) -> None:
    ticket = await _report(service, ("photo", gateway.url + "photo.jpg"), ("video", gateway.url + "gone.jpg"))
    await keeper.keep_due()
    await service.take(ticket.number, by="wang")
    for step, detail in ((Step.DISPATCH_REQUESTED, {"by": "wang"}), (Step.OFFICER_RINGING, {"badge": "007"}),
                         (Step.OFFICER_JOINED, {"badge": "007", "kind": "officer"})):
        await service.record_step(ticket.uniqueid, step, at=T0 + 10, source="ami", **detail)
    sha256 = hashlib.sha256(JPEG).hexdigest()
    url = f"/api/tickets/{ticket.number}/attachments/{sha256}"
    async with TestClient(TestServer(make_app(service, health={}, attachments=keeper))) as client:
        sent = await login_headers(engine, Role.OFFICER, username="007")
        other = await login_headers(engine, Role.OFFICER, username="008")
        west = await login_headers(engine, Role.STATION, station="west")
        taker = await login_headers(engine, Role.CALL_TAKER, username="wang")

        # The card names the kept photo by the center's URL, the refused video by its link.
        resp = await client.get(f"/api/tickets/{ticket.number}/briefing", headers=sent)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["attachments"] == [
            {"kind": "photo", "url": url, "sha256": sha256, "kept": True},
            {"kind": "video", "url": gateway.url + "gone.jpg", "sha256": None, "kept": False}]

        for headers in (sent, taker):
            resp = await client.get(url, headers=headers)
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"] == "image/jpeg" and resp.headers["Cache-Control"] == "no-store"
            assert await resp.read() == JPEG
        resp = await client.get(url, headers=other)
        assert resp.status == 403 and (await resp.json())["error_id"] == "not-your-ticket"
        assert (await client.get(url, headers=west)).status == 404  # another station's ticket is not there
        assert (await client.get(url)).status == 401
        for wrong in ("0" * 64, "../../etc/passwd", sha256.upper()):
            resp = await client.get(f"/api/tickets/{ticket.number}/attachments/{wrong}", headers=taker)
            assert resp.status == 404, wrong
        assert await _accesses(engine) == [
            {"kind": "access", "what": "attachment_viewed", "ticket": ticket.number, "by": by,
             "at_us": round(T0 * 1_000_000), "sha256": sha256, "index": 0, "media": "photo"}
            for by in ("007", "wang")]

        # An altered file is not served, and says why.
        (keeper.folder / f"{sha256}.jpg").write_bytes(JPEG + b"changed")
        resp = await client.get(url, headers=taker)
        assert resp.status == 409 and (await resp.json())["error_id"] == "attachment-altered"
        (keeper.folder / f"{sha256}.jpg").unlink()
        resp = await client.get(url, headers=taker)
        assert resp.status == 404 and (await resp.json())["error_id"] == "attachment-gone"
    assert len(await _accesses(engine)) == 2
    await Journaler(engine).catch_up()
    report = await verify(engine, recordings=False)
    assert report.ok, report.findings


async def test_a_center_without_a_keeper_serves_no_attachment(service: TicketService, engine: AsyncEngine) -> None:
    ticket = await _report(service, ("photo", "https://gw.example/p.jpg"))
    async with TestClient(TestServer(make_app(service, health={}))) as client:
        taker = await login_headers(engine, Role.CALL_TAKER)
        resp = await client.get(f"/api/tickets/{ticket.number}/attachments/{'a' * 64}", headers=taker)
        assert resp.status == 404 and (await resp.json())["error_id"] == "unknown-attachment"
