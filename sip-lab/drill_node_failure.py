"""Drill: an Asterisk node dies (kill -9) while 110 calls stream in through the front door.

    python -m siplab.drill_node_failure [--rounds 3] [--rate 10] [--talk-s 4] [--kill-after-s 8] [--after-s 10]

Each round: calls arrive at ``--rate`` through Kamailio onto the lab cluster (sip-lab/cluster.py, brought up
if it is not); ``--kill-after-s`` into the stream node1 is killed with kill -9; calls go on for ``--after-s``
more; then node1 is started again and taken back by the front door before the next round. Per round it prints:

- death → first new call answered on the other node: a call whose INVITE left the caller after the death,
  from the death to its 200 OK (wall clock of the caller's machine, the same as the drill's);
- death → node out: until the front door's dispatcher no longer counts the node as active (polled every 50 ms);
- new calls lost: calls invited after the death that were never answered (goal 0);
- failed over: new calls that were first sent to the dead node and answered by the other after the no-reply
  timer (``answer > 0.9 s``), and the slowest answer among the new calls;
- cut with media on the dead node: calls the dead node had answered and was still carrying — lost with it
  (nothing on another node holds their media), to be called back.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass

from . import cluster
from .asterisk import LabError, LabPaths

VICTIM = cluster.node(1)
SURVIVOR = cluster.node(2)
FAILED_OVER_S = 0.9


@dataclass
class Round:
    calls: int
    death_to_first_answer_s: float | None
    death_to_out_s: float | None
    new_calls: int
    new_lost: int
    failed_over: int
    slowest_new_answer_s: float | None
    cut_on_dead_node: int
    in_flight_at_death: int


async def _watch_out(paths: cluster.ClusterPaths, death: dict, out: dict, stop: asyncio.Event) -> None:
    while not stop.is_set():
        if "at" in death and "at" not in out:
            try:
                states = await asyncio.to_thread(cluster.node_states, paths)
            except LabError:
                states = {}
            if states and not states.get(VICTIM.sip_uri, "").startswith("A"):
                out["at"] = time.time()
        await asyncio.sleep(0.05)


async def one_round(paths: cluster.ClusterPaths, index: int, *, rate: float, talk_s: float,
                    kill_after_s: float, after_s: float) -> Round:
    count = int(rate * (kill_after_s + after_s))
    tag = int(time.time()) % 10_000
    numbers = [f"137{tag:04d}{index}{i:04d}" for i in range(1, count + 1)]
    death: dict = {}
    out: dict = {}
    stop = asyncio.Event()
    started = asyncio.Event()

    async def killer() -> None:
        await started.wait()
        await asyncio.sleep(kill_after_s)
        death["at"] = time.time()
        await asyncio.to_thread(cluster.kill_node, paths, VICTIM.name)

    watcher = asyncio.create_task(_watch_out(paths, death, out, stop))
    kill = asyncio.create_task(killer())
    try:
        run = await cluster.place_calls(paths, numbers, rate=rate, patience_s=talk_s + 3, started=started)
        await kill
    finally:
        stop.set()
        await watcher
    dead_at = death["at"]
    recs = [run.calls.get(n) or cluster.CallRecord(n) for n in numbers]
    missing = [r.number for r in recs if r.invited_at is None]
    if missing:
        raise LabError(f"{len(missing)} calls were never placed (first {missing[0]}); see {run.run_dir}")
    new = [r for r in recs if r.invited_at >= dead_at]
    unanswered_new = [r for r in new if r.answered_at is None]
    answered_new = [r for r in new if r.answered_at is not None]
    survivors_first = min((r.answered_at for r in answered_new if r.node_address == SURVIVOR.address), default=None)
    cut = [r for r in recs if r.node_address == VICTIM.address and r.answered_at is not None
           and r.answered_at < dead_at and r.ended != "by-node"]
    in_flight = [r for r in recs if r.invited_at is not None and r.invited_at < dead_at
                 and (r.answered_at is None or r.answered_at >= dead_at)]
    slowest = max((r.answer_s for r in answered_new if r.answer_s is not None), default=None)
    return Round(
        calls=count,
        death_to_first_answer_s=None if survivors_first is None else survivors_first - dead_at,
        death_to_out_s=out["at"] - dead_at if "at" in out else None,
        new_calls=len(answered_new) + len(unanswered_new),
        new_lost=len(unanswered_new),
        failed_over=sum(1 for r in answered_new if (r.answer_s or 0) > FAILED_OVER_S),
        slowest_new_answer_s=slowest,
        cut_on_dead_node=len(cut),
        in_flight_at_death=len(in_flight),
    )


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def print_table(rounds: list[Round], out=sys.stdout) -> None:
    print("| round | calls | death → first new call answered on node2 (s) | death → node1 out (s) | new calls | "
          "new calls lost | failed over | slowest new answer (s) | cut with media on node1 |", file=out)
    print("|---|---|---|---|---|---|---|---|---|", file=out)
    for i, r in enumerate(rounds, 1):
        print(f"| {i} | {r.calls} | {_fmt(r.death_to_first_answer_s)} | {_fmt(r.death_to_out_s)} | {r.new_calls} | "
              f"{r.new_lost} | {r.failed_over} | {_fmt(r.slowest_new_answer_s)} | {r.cut_on_dead_node} |", file=out)
    firsts = [r.death_to_first_answer_s for r in rounds if r.death_to_first_answer_s is not None]
    outs = [r.death_to_out_s for r in rounds if r.death_to_out_s is not None]
    if firsts and outs:
        print(f"\ndeath → first new call answered: median {statistics.median(firsts):.3f} s, max {max(firsts):.3f} s; "
              f"death → node out: median {statistics.median(outs):.3f} s, max {max(outs):.3f} s; "
              f"new calls lost: {sum(r.new_lost for r in rounds)} of {sum(r.new_calls for r in rounds)}", file=out)


async def main_async(args: argparse.Namespace) -> list[Round]:
    paths = cluster.ClusterPaths(LabPaths())
    settings = cluster.ClusterSettings(nodes=2, seats=args.seats, seat_ring_ms=200,
                                       seat_talk_ms=int(args.talk_s * 1000))
    was_up = cluster.running_settings(paths) == settings and all(
        cluster.node_pid(paths, n.name) for n in (VICTIM, SURVIVOR))
    cluster.up(settings, paths)
    rounds: list[Round] = []
    try:
        for i in range(1, args.rounds + 1):
            if not cluster.node_pid(paths, VICTIM.name):
                cluster.restart_node(paths, VICTIM.name, log=lambda *_: None)
            cluster.wait_nodes_active(paths, [VICTIM.sip_uri, SURVIVOR.sip_uri], timeout=15)
            rounds.append(await one_round(paths, i, rate=args.rate, talk_s=args.talk_s,
                                          kill_after_s=args.kill_after_s, after_s=args.after_s))
            print(f"round {i}: {rounds[-1]}", file=sys.stderr)
        cluster.restart_node(paths, VICTIM.name, log=lambda *_: None)
    finally:
        if not was_up:
            cluster.down(paths, log=lambda *_: None)
    return rounds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=10, help="calls per second through the front door")
    ap.add_argument("--talk-s", type=float, default=4, help="how long a seat talks")
    ap.add_argument("--kill-after-s", type=float, default=8, help="node1 is killed this long into the stream")
    ap.add_argument("--after-s", type=float, default=10, help="calls go on this long after the death")
    ap.add_argument("--seats", type=int, default=100)
    args = ap.parse_args(argv)
    try:
        rounds = asyncio.run(main_async(args))
    except LabError as exc:
        print(f"drill: {exc}", file=sys.stderr)
        return 2
    print_table(rounds)
    return 0 if all(r.new_lost == 0 for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
