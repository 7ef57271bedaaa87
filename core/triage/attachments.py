"""Attachments kept: a text report's photos and videos, fetched from its gateway once and bound by their sha256.

A report's ``reported`` step lists its attachments as links (``{kind, url}``).
A gateway's media link does not live for ever and may show something else
later, so the keeper fetches each photo and video once, right after the
report, and stores the file as ``<folder>/<sha256>.<ext>``. What happened is
a ticket step, so the journal chains it like any other: ``attachment_kept``
(index, kind, url, sha256, size, content_type) or ``attachment_refused``
(index, kind, url, reason, error, attempts). Nothing else is stored: what is
kept, and what is still to fetch, is read from the ticket's steps.

Limits, per kind: a photo is at most 10 MiB of JPEG, PNG, WebP or HEIC, a
video at most 100 MiB of MP4, QuickTime or 3GPP. The gateway's Content-Type
must name one of those, and the file's first bytes must be what it claims
(an HTML error page sent as image/jpeg is refused); the size is counted while
the body streams in, and the fetch stops at the first byte over the limit.
Audio (an MMS voice note) stays a link.

An outage of the gateway loses nothing: a failed fetch is retried with
growing pauses, up to ``max_attempts``, then recorded as refused
(``unreachable``); a report waiting at a restart is fetched again by the
catch-up at start. A ticket closed before its attachments were settled keeps
them as links (closed is final). The fetch itself is injected
(``core.triage.attachments_http`` does it over HTTP), and so is the journaling
of each serve (``open`` records who saw which file, before it is served).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select

from core.calls.lifecycle import IllegalTransition, State, Step
from core.calls.recordings import file_sha256
from core.calls.tables import Ticket, TicketStep
from core.calls.tickets import StepView, TicketService, TicketView, UnknownTicket
from core.errors import DomainError
from core.tasks import stop_task

__all__ = ["AttachmentKeeper", "FetchFailed", "Fetcher", "KeptFile", "LIMITS", "briefing_attachments",
           "outstanding", "sniff"]

log = logging.getLogger(__name__)

MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Limit:
    max_bytes: int
    types: Mapping[str, str]  # content type -> file name extension


LIMITS: Mapping[str, Limit] = {
    "photo": Limit(10 * MiB, {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/heic": "heic"}),
    "video": Limit(100 * MiB, {"video/mp4": "mp4", "video/quicktime": "mov", "video/3gpp": "3gp"}),
}
EXTENSIONS = {t: ext for limit in LIMITS.values() for t, ext in limit.types.items()}

TOO_BIG = "too_big"
WRONG_TYPE = "wrong_type"
UNREACHABLE = "unreachable"
NOT_STORED = "not_stored"  # the file could not be written here (disk full, folder gone)

MAX_ATTEMPTS = 6
BACKOFF_S = 5.0  # 5, 10, 20, 40, 80 s: about two and a half minutes of gateway outage
BACKOFF_MAX_S = 300.0
PARALLEL = 4  # fetches at once: one long video does not hold up the next report's photos
HEAD_BYTES = 16  # what the magic check reads
_IDLE_S = 60.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
# ISO base media (ftyp) brands of HEIC/HEIF stills; any other ftyp brand is a video container.
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
# The first box of a QuickTime file written without ftyp.
_QT_BOXES = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


class FetchFailed(Exception):
    """The gateway did not hand the file over; ``permanent`` ones (a 404, a redirect too many) are not retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Download(Protocol):
    content_type: str  # the Content-Type header as sent; "" without one
    length: int | None  # the Content-Length, when the gateway said

    def chunks(self) -> AsyncIterator[bytes]: ...


class Fetcher(Protocol):
    """Opens one URL; raises ``FetchFailed`` (also from inside the body) when the file cannot be had."""

    def open(self, url: str) -> AbstractAsyncContextManager[Download]: ...


# access(what, number, *, by, extra=...): records a serve before it happens (core.quality.playback.record_access).
AccessRecorder = Callable[..., Awaitable[None]]


class AttachmentRefused(DomainError):
    """A kept file that is not served: unknown (404), gone from the folder (404) or altered (409)."""

    status = 404
    error_id = "unknown-attachment"


@dataclass(frozen=True, slots=True)
class KeptFile:
    path: Path
    content_type: str
    size: int


def sniff(head: bytes) -> str | None:
    """The content type the first bytes of a file show, among those kept; None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    box = head[4:8]
    if box == b"ftyp":
        brand = head[8:12]
        if brand in _HEIC_BRANDS:
            return "image/heic"
        if brand == b"qt  ":
            return "video/quicktime"
        return "video/3gpp" if brand.startswith(b"3g") else "video/mp4"
    if box in _QT_BOXES:
        return "video/quicktime"
    return None


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def _check_head(kind: str, declared: str, head: bytes) -> None:
    found = sniff(head)
    # A photo must be what its type says; MP4, QuickTime and 3GPP are one family of containers, which phones
    # and gateways label loosely.
    fits = found == declared if kind == "photo" else found in LIMITS["video"].types
    if not fits:
        raise _Refused(WRONG_TYPE, f"the file is not {declared} (its first bytes show "
                                   f"{found or 'no kept type'})")


def _reported(ticket: TicketView) -> StepView | None:
    first = ticket.steps[0] if ticket.steps else None
    return first if first is not None and first.step is Step.REPORTED else None


def _settled(ticket: TicketView, step: Step) -> dict[int, Mapping[str, Any]]:
    return {s.detail["index"]: s.detail for s in ticket.steps
            if s.step is step and isinstance(s.detail.get("index"), int)}


def outstanding(ticket: TicketView) -> list[tuple[int, str, str]]:
    """``(index, kind, url)`` of the report's photos and videos neither kept nor refused yet."""
    first = _reported(ticket)
    if first is None or ticket.state is State.CLOSED:
        return []
    done = {*_settled(ticket, Step.ATTACHMENT_KEPT), *_settled(ticket, Step.ATTACHMENT_REFUSED)}
    return [(i, a["kind"], a["url"]) for i, a in enumerate(first.detail.get("attachments", ()))
            if isinstance(a, Mapping) and a.get("kind") in LIMITS and isinstance(a.get("url"), str) and i not in done]


def attachment_url(number: str, sha256: str) -> str:
    return f"/api/tickets/{number}/attachments/{sha256}"


def briefing_attachments(ticket: TicketView) -> list[dict[str, Any]]:
    """The report's attachments for the incident card: a kept one by the center's URL, any other by its link."""
    first = _reported(ticket)
    if first is None:
        return []
    kept = _settled(ticket, Step.ATTACHMENT_KEPT)
    out = []
    for i, a in enumerate(first.detail.get("attachments", ())):
        if not isinstance(a, Mapping):
            continue
        found = kept.get(i)
        sha256 = None if found is None else found.get("sha256")
        if isinstance(sha256, str):
            out.append({"kind": a.get("kind"), "url": attachment_url(ticket.number, sha256), "sha256": sha256,
                        "kept": True})
        else:
            out.append({"kind": a.get("kind"), "url": a.get("url"), "sha256": None, "kept": False})
    return out


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class _Pending:
    number: str
    uniqueid: str
    source: str  # the report's own (its channel): the steps it leads to come from the same gateway
    index: int
    kind: str
    url: str
    attempts: int = 0
    due_at: float = 0.0
    outcome: tuple[Step, dict[str, Any]] | None = None  # settled, the step not yet written

    @property
    def key(self) -> tuple[str, int]:
        return self.number, self.index


class AttachmentKeeper:
    """Fetches, checks and stores the reports' photos and videos; serves them, each serve journaled first.

    ``attach`` makes every new report queue its attachments; ``start`` catches
    up with the reports still waiting and starts the owned task; ``stop``
    cancels it and the fetches under way (their partial files are removed).
    Without a ``folder`` nothing is fetched and nothing is served.
    """

    def __init__(
        self,
        service: TicketService,
        folder: str | os.PathLike[str] | None,
        fetcher: Fetcher | None,
        *,
        access: AccessRecorder,
        clock: Callable[[], float] = time.time,
        limits: Mapping[str, Limit] = LIMITS,
        max_attempts: int = MAX_ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        parallel: int = PARALLEL,
    ) -> None:
        self._service = service
        self.folder = Path(folder) if folder else None
        self._fetcher = fetcher
        self._access = access
        self._clock = clock
        self._limits = limits
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._slots = asyncio.Semaphore(parallel)
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._busy: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._remove: Callable[[], None] | None = None

    @property
    def enabled(self) -> bool:
        return self.folder is not None and self._fetcher is not None

    # -- wiring --------------------------------------------------------------------------------

    def attach(self) -> None:
        """Queue the attachments of every new report (a listener: no I/O, the owned task fetches)."""
        if self.enabled and self._remove is None:
            self._remove = self._service.add_listener(self._on_step)

    def _on_step(self, ticket: TicketView, step: StepView) -> None:
        if step.step is Step.REPORTED:
            self._queue(ticket)
        elif step.step is Step.CLOSED:  # closed is final: what waits for a retry stays a link
            for key in [k for k in self._pending if k[0] == ticket.number and k not in self._busy]:
                del self._pending[key]

    def _queue(self, ticket: TicketView) -> int:
        first = _reported(ticket)
        if first is None:
            return 0
        added = 0
        for index, kind, url in outstanding(ticket):
            item = _Pending(ticket.number, ticket.uniqueid, first.source, index, kind, url, due_at=self._clock())
            if item.key not in self._pending:
                self._pending[item.key] = item
                added += 1
        if added:
            self._wake.set()
        return added

    async def cleanup_ctx(self, _app: Any) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.stop()

    async def start(self) -> None:
        if not self.enabled:
            log.info("attachments: no attachments folder set; reports' photos and videos stay links")
            return
        if self._task is not None:
            return
        assert self.folder is not None
        await asyncio.to_thread(self.folder.mkdir, 0o750, True, True)  # mode, parents, exist_ok
        self.attach()
        found = await self.catch_up()
        if found:
            log.info("attachments: %d of earlier reports still to fetch", found)
        self._task = asyncio.create_task(self._run(), name="attachments")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        for running in list(self._busy.values()):
            await stop_task(running)
        if self._remove is not None:
            self._remove()
            self._remove = None
        close = getattr(self._fetcher, "close", None)
        if close is not None:
            await close()  # the HTTP fetcher's client session

    async def catch_up(self) -> int:
        """Queue what reports not closed still have to fetch (written while the keeper was down); how many."""
        async with self._service.engine.connect() as conn:
            rows = (await conn.execute(
                select(Ticket.number, TicketStep.detail)
                .join(TicketStep, TicketStep.ticket_id == Ticket.id)
                .where(TicketStep.seq == 1, TicketStep.step == Step.REPORTED.value,
                       Ticket.state != State.CLOSED.value)
                .order_by(Ticket.id)
            )).all()
        added = 0
        for number, detail in rows:
            listed = (detail or {}).get("attachments", ())
            if not any(isinstance(a, Mapping) and a.get("kind") in LIMITS for a in listed):
                continue
            ticket = await self._service.get(number)
            if ticket is not None:
                added += self._queue(ticket)
        return added

    # -- fetching ------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def keep_due(self) -> int:
        """Try every attachment that is due once and wait for the tries; how many (the worker's round, by hand)."""
        launched = self._launch_due()
        await asyncio.gather(*launched, return_exceptions=True)
        return len(launched)

    def _launch_due(self) -> list[asyncio.Task[None]]:
        now = self._clock()
        launched = []
        for item in list(self._pending.values()):
            if item.due_at <= now and item.key not in self._busy:
                task = asyncio.create_task(self._try(item), name=f"attachment-{item.number}-{item.index}")
                self._busy[item.key] = task
                task.add_done_callback(lambda _t, key=item.key: self._done(key))
                launched.append(task)
        return launched

    def _done(self, key: tuple[str, int]) -> None:
        self._busy.pop(key, None)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            self._launch_due()
            waiting = [p.due_at for k, p in self._pending.items() if k not in self._busy]
            wait = max(0.0, min(waiting) - self._clock()) if waiting else _IDLE_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(wait, _IDLE_S))

    async def _try(self, item: _Pending) -> None:
        try:
            async with self._slots:
                if item.outcome is None:
                    item.outcome = await self._fetch(item)
                if item.outcome is not None:
                    await self._record(item, *item.outcome)
                    self._pending.pop(item.key, None)
        except asyncio.CancelledError:
            raise
        except Exception:  # the store refused the step: try writing it again later
            log.exception("attachments: %s #%d not recorded; retrying", item.number, item.index)
            item.due_at = self._clock() + self._backoff_s

    async def _fetch(self, item: _Pending) -> tuple[Step, dict[str, Any]] | None:
        """The step that settles ``item``, or None when it is to be tried again later."""
        item.attempts += 1
        about = {"index": item.index, "kind": item.kind, "url": item.url}
        try:
            kept = await self._download(item)
        except _Refused as exc:
            log.warning("attachments: %s #%d refused (%s): %s", item.number, item.index, exc.reason, exc)
            return Step.ATTACHMENT_REFUSED, {**about, "reason": exc.reason, "error": str(exc)[:500],
                                             "attempts": item.attempts}
        except FetchFailed as exc:
            error, permanent, reason = str(exc), exc.permanent, UNREACHABLE
        except Exception as exc:  # noqa: BLE001 - the file could not be written here (disk full, folder gone)
            log.exception("attachments: %s #%d not stored", item.number, item.index)
            error, permanent = f"{type(exc).__name__}: {exc}", False
            reason = UNREACHABLE if isinstance(exc, TimeoutError) else NOT_STORED
        else:
            log.info("attachments: %s #%d kept (%s, %d bytes, %s)", item.number, item.index, kept["content_type"],
                     kept["size"], kept["sha256"])
            return Step.ATTACHMENT_KEPT, {**about, **kept}
        if permanent or item.attempts >= self._max_attempts:
            log.error("attachments: %s #%d not kept after %d attempts: %s", item.number, item.index, item.attempts,
                      error)
            message = error if permanent else f"{error} (after {item.attempts} attempts)"
            return Step.ATTACHMENT_REFUSED, {**about, "reason": reason, "error": message[:500],
                                             "attempts": item.attempts}
        pause = min(BACKOFF_MAX_S, self._backoff_s * 2 ** (item.attempts - 1))
        item.due_at = self._clock() + pause
        log.warning("attachments: %s #%d failed (attempt %d), retrying in %.0f s: %s", item.number, item.index,
                    item.attempts, pause, error)
        return None

    async def _download(self, item: _Pending) -> dict[str, Any]:
        """Fetch, check and store one file; its ``sha256``, ``size`` and ``content_type``."""
        assert self.folder is not None and self._fetcher is not None
        limit = self._limits[item.kind]
        part = self.folder / f".{uuid.uuid4().hex}.part"
        out = None
        try:
            async with self._fetcher.open(item.url) as download:
                declared = _media_type(download.content_type)
                if declared not in limit.types:
                    raise _Refused(WRONG_TYPE, f"the gateway sent {declared or 'no content type'}; a {item.kind} "
                                               f"must be one of {', '.join(limit.types)}")
                if download.length is not None and download.length > limit.max_bytes:
                    raise _Refused(TOO_BIG, f"{download.length} bytes announced; a {item.kind} may have "
                                            f"{limit.max_bytes}")
                digest, size, head = hashlib.sha256(), 0, bytearray()
                out = await asyncio.to_thread(_create, part)
                async for chunk in download.chunks():
                    size += len(chunk)
                    if size > limit.max_bytes:  # stop here: the rest is never read
                        raise _Refused(TOO_BIG, f"more than {limit.max_bytes} bytes; a {item.kind} may have "
                                                f"{limit.max_bytes}")
                    digest.update(chunk)
                    if head is not None:  # held until the first bytes are checked
                        head += chunk
                        if len(head) < HEAD_BYTES:
                            continue
                        _check_head(item.kind, declared, bytes(head))
                        chunk, head = bytes(head), None
                    await asyncio.to_thread(out.write, chunk)
                if head is not None:  # a file shorter than the head
                    _check_head(item.kind, declared, bytes(head))
                    await asyncio.to_thread(out.write, bytes(head))
            sha256 = digest.hexdigest()
            await asyncio.to_thread(_seal, out, part, self.folder / f"{sha256}.{limit.types[declared]}")
            out = None
            return {"sha256": sha256, "size": size, "content_type": declared}
        finally:
            if out is not None:
                await asyncio.to_thread(_discard, out, part)

    async def _record(self, item: _Pending, step: Step, detail: dict[str, Any]) -> None:
        try:
            await self._service.record_step(item.uniqueid, step, at=self._clock(), source=item.source, **detail)
        except (IllegalTransition, UnknownTicket):
            # Closed (or gone) meanwhile: closed is final, the attachment stays a link.
            log.warning("attachments: %s was closed before its attachment #%d was settled (%s); it stays a link",
                        item.number, item.index, step)

    # -- serving -------------------------------------------------------------------------------

    async def open(self, number: str, sha256: str, *, by: str) -> KeptFile:
        """The kept file ``sha256`` of ticket ``number``, once its serve to ``by`` is journaled."""
        ticket = await self._service.get(number) if self.folder is not None and _SHA256.fullmatch(sha256) else None
        found = None if ticket is None else next(
            (s.detail for s in ticket.steps if s.step is Step.ATTACHMENT_KEPT and s.detail.get("sha256") == sha256),
            None)
        if found is None or found.get("content_type") not in EXTENSIONS:
            raise AttachmentRefused(f"ticket {number} has no kept attachment {sha256[:64]}",
                                    details={"number": number[:64]})
        assert self.folder is not None
        content_type = found["content_type"]
        path = self.folder / f"{sha256}.{EXTENSIONS[content_type]}"
        try:
            actual = await asyncio.to_thread(file_sha256, path)
        except OSError:
            raise AttachmentRefused(f"the file of ticket {number}'s attachment is gone",
                                    error_id="attachment-gone") from None
        if actual != sha256:
            raise AttachmentRefused(f"the file of ticket {number}'s attachment no longer matches its sha256: it is "
                                    "not served", error_id="attachment-altered", status=409)
        await self._access("attachment_viewed", number, by=by,
                           extra={"sha256": sha256, "index": found.get("index"), "media": found.get("kind")})
        return KeptFile(path, content_type, found.get("size", 0))


def _create(part: Path) -> Any:
    # Exclusive, private while it is written; the final mode is set before it gets its name.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _seal(out: Any, part: Path, final: Path) -> None:
    """Flush to disk, 0640, then the name: the folder never holds half a file under a sha256."""
    try:
        out.flush()
        os.fsync(out.fileno())
        os.fchmod(out.fileno(), 0o640)
    finally:
        out.close()
    os.replace(part, final)


def _discard(out: Any, part: Path) -> None:
    out.close()
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
