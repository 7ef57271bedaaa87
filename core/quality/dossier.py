"""A ticket's dossier for a court or a complaint: the ticket, its steps and recordings, and its journal entries,
in one JSON file that can be checked away from the center.

The file holds every journal entry of the ticket (its steps, recordings and playbacks) with the hash before
it, its exact payload and its hash; ``check`` recomputes each hash, and compares the ticket's steps and
recordings with what the entries say, and a recording file with its journaled sha256. The first signed anchor line
at or after the ticket's last step or recording entry is included: with the anchor key (the bureau's, never in the file)
``check`` verifies their signatures. What a single ticket's file cannot show is the chain between its entries
and an anchor, which runs through other tickets' entries: that part is what ``jiejing journal verify``
checks at the center, and the dossier records when it was exported and the chain's head then.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from core.calls.tickets import TicketService
from core.quality.journal import (
    ANCHOR_VERSION,
    KIND_ACCESS,
    JournalEntry,
    anchor_mac,
    canonical,
    link_hash,
)

FORMAT = "jiejing-dossier/1"


class DossierError(ValueError):
    """The file is not a dossier this release can read."""


async def build(service: TicketService, number: str, *, anchor_file: str | Path | None = None,
                by: str = "-", clock=time.time) -> dict[str, Any] | None:
    """The dossier of ticket ``number`` (None if there is no such ticket)."""
    ticket = await service.get(number)
    if ticket is None:
        return None
    engine: AsyncEngine = service.engine
    marker = f'"ticket":{json.dumps(number)}'
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(JournalEntry.seq, JournalEntry.kind, JournalEntry.prev_hash, JournalEntry.payload,
                   JournalEntry.hash, JournalEntry.at_us)
            .where(JournalEntry.payload.contains(marker, autoescape=True)).order_by(JournalEntry.seq)
        )).all()
        head = (await conn.execute(
            select(JournalEntry.seq, JournalEntry.hash).order_by(JournalEntry.seq.desc()).limit(1))).first()
    entries = [{"seq": r.seq, "kind": r.kind, "prev_hash": r.prev_hash, "payload": r.payload, "hash": r.hash,
                "at_us": r.at_us} for r in rows if json.loads(r.payload).get("ticket") == number]
    # The first anchor after the call's record (its steps and recordings; later playbacks need not be covered).
    last = max((e["seq"] for e in entries if e["kind"] != KIND_ACCESS), default=0)
    anchors = []
    if anchor_file is not None and Path(anchor_file).exists():
        for line in Path(anchor_file).read_text("ascii").splitlines():
            try:
                fields = json.loads(line)
            except ValueError:
                continue
            if isinstance(fields, dict) and isinstance(fields.get("seq"), int) and fields["seq"] >= last:
                anchors.append(line)
                break  # the first anchor covering the ticket's entries
    return {
        "format": FORMAT,
        "exported_at_us": round(clock() * 1_000_000),
        "exported_by": by,
        "ticket": ticket.to_json(),
        "journal": entries,
        "chain_head": {"seq": head.seq, "hash": head.hash} if head else None,
        "anchors": anchors,
        "note": "Each entry's hash is sha256(prev_hash + payload). The chain between these entries and the "
                "anchor runs through other tickets' entries and is checked by `jiejing journal verify` at the "
                "center; the anchor's signature needs the bureau's key.",
    }


def check(dossier: Any, *, recording: bytes | None = None, key: bytes | None = None) -> list[str]:
    """Findings (empty when everything the file can show holds): altered entries, steps or recordings that
    differ from their entries, a recording file that differs, a forged anchor (with ``key``)."""
    if not isinstance(dossier, dict) or dossier.get("format") != FORMAT:
        raise DossierError(f"not a dossier of format {FORMAT}")
    try:
        ticket, entries = dossier["ticket"], dossier["journal"]
        number = ticket["number"]
    except (KeyError, TypeError):
        raise DossierError("the dossier has no ticket or journal") from None
    findings: list[str] = []
    payloads: dict[tuple[str, int], dict[str, Any]] = {}
    for entry in entries:
        seq = entry.get("seq")
        if link_hash(str(entry.get("prev_hash")), str(entry.get("payload"))) != entry.get("hash"):
            findings.append(f"journal entry {seq}: its payload does not give its hash (altered)")
            continue
        payload = json.loads(entry["payload"])
        if canonical(payload) != entry["payload"] or payload.get("ticket") != number:
            findings.append(f"journal entry {seq}: not an entry of ticket {number}")
            continue
        if payload.get("kind") != KIND_ACCESS:
            payloads[(payload["kind"], payload["id"])] = payload
    steps = {p["seq"]: p for (kind, _), p in payloads.items() if kind == "step"}
    for step in ticket.get("steps", []):
        journaled = steps.pop(step.get("seq"), None)
        if journaled is None:
            findings.append(f"step {step.get('seq')} ({step.get('step')}) has no journal entry in the dossier")
        elif (journaled["step"], journaled["at_us"], journaled["detail"]) != (
                step.get("step"), step.get("at_us"), step.get("detail")):
            findings.append(f"step {step.get('seq')}: the ticket says {step.get('step')} at {step.get('at_us')}, "
                            f"the journal {journaled['step']} at {journaled['at_us']}")
    findings += [f"journal step {i} is missing from the ticket" for i in sorted(steps)]
    recorded = {p["sha256"] for (kind, _), p in payloads.items() if kind == "recording"}
    for r in ticket.get("recordings", []):
        if r.get("sha256") not in recorded:
            findings.append(f"recording {r.get('sha256')} has no journal entry in the dossier")
    if recording is not None and hashlib.sha256(recording).hexdigest() not in recorded:
        findings.append("the recording file given matches none of the ticket's journaled recordings")
    last = max((e["seq"] for e in entries if e.get("kind") != KIND_ACCESS), default=0)
    for line in dossier.get("anchors", []):
        fields = json.loads(line)
        if fields.get("seq", 0) < last:
            findings.append(f"anchor at entry {fields.get('seq')} does not cover the ticket's last entry {last}")
        if key is not None:
            version = fields.get("v", 1)
            expected = anchor_mac(key, fields["seq"], fields["hash"], fields["at_us"], version)
            if version > ANCHOR_VERSION or not hmac.compare_digest(expected, str(fields.get("mac"))):
                findings.append(f"anchor at entry {fields.get('seq')}: its signature does not verify")
    return findings
