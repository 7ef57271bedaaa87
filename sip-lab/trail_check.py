"""Tickets against Asterisk's own log: does the store tell what Asterisk did?

For every 110 call in the CEL file (from a byte offset on, callers among the given numbers) the ticket
must exist and agree with the log: its received, queued, answered and end steps at the log's times
(within ``tolerance_ms``), the seat that answered, the end (hung up after an answer, abandoned
without one), and one recording whose sha256 is that of the finished file. Used by the fault drills
(``siplab.drill_backend``) and the lab tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from core.calls.lifecycle import Step
from core.calls.tickets import TicketService, TicketView
from telephony.cel import CallLog, CelCall, CelFile, derive_steps


def cel_calls(path: Path, offset: int, *, contexts=("from-carrier",), numbers=("110",)) -> dict[str, CelCall]:
    """Every 110 call in the log from ``offset`` on, by uniqueid, in order of arrival."""
    log = CallLog(intake_contexts=contexts, emergency_numbers=numbers, settle_s=0.0)
    cel = CelFile(path)
    inode = None
    while True:
        result = cel.read(inode, offset)
        inode, offset = result.inode, result.offset
        for event in result.events:
            log.feed(event)
        if result.at_end:
            break
    return dict(log.calls)


def offset_now(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass
class Expected:
    caller: str
    received: float
    queued: float | None = None
    answered: float | None = None
    seat: str | None = None
    end_step: Step | None = None
    end: float | None = None


def expected(call: CelCall) -> Expected:
    steps = derive_steps(call)
    exp = Expected(caller=steps[0].detail.get("caller", ""), received=steps[0].at)
    for d in steps[1:]:
        if d.step is Step.QUEUED and exp.queued is None:
            exp.queued = d.at
        elif d.step is Step.ANSWERED:
            exp.answered = d.at
            exp.seat = d.detail.get("seat")
        elif d.step is Step.HUNG_UP:
            exp.end_step = Step.HUNG_UP if exp.answered is not None else Step.ABANDONED
            exp.end = d.at
    return exp


@dataclass
class Comparison:
    calls: int = 0
    tickets: int = 0
    differing: dict[str, list[str]] = field(default_factory=dict)  # uniqueid → what differs
    deltas_ms: list[float] = field(default_factory=list)  # |ticket − log| for every compared step
    recordings_ok: int = 0


def _first(ticket: TicketView, step: Step) -> float | None:
    return next((s.at_us / 1e6 for s in ticket.steps if s.step is step), None)


def compare_one(call: CelCall, ticket: TicketView | None, recordings_dir: Path | None,
                tolerance_ms: float, out: Comparison) -> list[str]:
    if ticket is None:
        return ["no ticket"]
    exp = expected(call)
    problems: list[str] = []
    if ticket.caller_id != exp.caller:
        problems.append(f"caller {ticket.caller_id!r} != {exp.caller!r}")
    pairs = [("received", Step.RECEIVED, exp.received), ("queued", Step.QUEUED, exp.queued),
             ("answered", Step.ANSWERED, exp.answered)]
    if exp.end_step is not None:
        pairs.append((str(exp.end_step), exp.end_step, exp.end))
    for name, step, want in pairs:
        got = _first(ticket, step)
        if want is None:
            if got is not None:
                problems.append(f"{name} on the ticket, not in the log")
            continue
        if got is None:
            problems.append(f"no {name} step")
            continue
        delta = (got - want) * 1000
        out.deltas_ms.append(abs(delta))
        if abs(delta) > tolerance_ms:
            problems.append(f"{name} {delta:+.1f} ms from the log")
    if exp.answered is not None and exp.seat and ticket.seat != exp.seat:
        problems.append(f"seat {ticket.seat!r} != {exp.seat!r}")
    if exp.end_step is not None:
        want_state = "ended" if exp.end_step is Step.HUNG_UP else "abandoned"
        if ticket.state.value not in (want_state, "closed"):
            problems.append(f"state {ticket.state.value} != {want_state}")
    if recordings_dir is not None and exp.end_step is not None:
        if len(ticket.recordings) != 1:
            problems.append(f"{len(ticket.recordings)} recordings bound")
        else:
            rec = ticket.recordings[0]
            path = Path(rec.path)
            if not path.is_file():
                problems.append(f"recording {path.name} is not there")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != rec.sha256:
                problems.append(f"recording {path.name}: sha256 differs from the file")
            else:
                out.recordings_ok += 1
    return problems


async def compare(db_url: str, calls: dict[str, CelCall], recordings_dir: Path | None, *,
                  tolerance_ms: float = 1.0) -> Comparison:
    from core.store import make_engine

    engine = make_engine(db_url)
    service = TicketService(engine)
    out = Comparison(calls=len(calls))
    try:
        for uid, call in calls.items():
            ticket = await service.find_by_uniqueid(uid)
            out.tickets += ticket is not None
            problems = compare_one(call, ticket, recordings_dir, tolerance_ms, out)
            if problems:
                out.differing[uid] = problems
    finally:
        await engine.dispose()
    return out
