"""Two Asterisk nodes behind the Kamailio front door: calls spread over both, and a node killed with kill -9
loses no new call — the next ones are answered by the other node.

Real parts only: Kamailio (Debian package) with the generated configuration, two Asterisk 22 nodes from the
lab's chroot with their generated files, SIPp callers that follow the recorded route and SIPp seats. The
single-node lab is not touched (sip-lab/cluster.py). Which node answered a call is read twice: from the
Contact of its 200 OK as the caller saw it, and from that node's own channel event log.
"""

from __future__ import annotations

import os
import time

import pytest

from siplab import cluster
from siplab.asterisk import LabPaths

pytestmark = pytest.mark.lab

NODE1, NODE2 = cluster.node(1), cluster.node(2)


@pytest.fixture(scope="module")
def cluster_paths():
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (chroot, mount); run sip-lab/test.sh as root")
    paths = cluster.ClusterPaths(LabPaths())
    cluster.up(cluster.ClusterSettings(nodes=2, seats=20, seat_ring_ms=200, seat_talk_ms=2000), paths,
               log=lambda *_: None)
    yield paths
    cluster.down(paths, log=lambda *_: None)


def _numbers(tag: int, count: int) -> list[str]:
    run = int(time.time()) % 10_000
    return [f"138{run:04d}{tag}{i:03d}" for i in range(1, count + 1)]


async def test_calls_are_spread_over_both_nodes_and_each_node_logs_its_own(cluster_paths):
    numbers = _numbers(1, 20)
    run = await cluster.place_calls(cluster_paths, numbers, rate=5)
    assert run.stats.get("SuccessfulCall(C)") == "20", run.run_dir
    assert run.stats.get("FailedCall(C)") == "0", run.run_dir
    by_node = run.answered_by()
    assert set(by_node) == {NODE1.address, NODE2.address}
    assert by_node[NODE1.address] >= 5 and by_node[NODE2.address] >= 5
    # every call ended by the seat, the node's BYE reaching the caller through the front door (Record-Route)
    assert {rec.ended for rec in run.calls.values()} == {"by-node"}
    # each node's own log has exactly the calls the callers saw it answer, under its own uniqueids
    for n in (NODE1, NODE2):
        logged = cluster.cel_calls(cluster_paths, n)
        answered_here = {num for num, rec in run.calls.items() if rec.node_address == n.address}
        assert answered_here <= set(logged)
        assert not (set(numbers) - answered_here) & set(logged)
        assert all(logged[num].startswith(f"{n.name}-") for num in answered_here)


async def test_after_a_node_is_killed_new_calls_are_answered_by_the_other(cluster_paths):
    cluster.wait_nodes_active(cluster_paths, [NODE1.sip_uri, NODE2.sip_uri], timeout=15)
    front_door_log = cluster_paths.run / "kamailio.log"
    log_offset = front_door_log.stat().st_size
    cluster.kill_node(cluster_paths, NODE1.name)
    try:
        # at once, before any probe can have failed: the first call sent to the dead node must fail over
        numbers = _numbers(2, 10)
        run = await cluster.place_calls(cluster_paths, numbers, rate=5)
        assert run.stats.get("SuccessfulCall(C)") == "10", run.run_dir
        assert run.answered_by() == {NODE2.address: 10}
        assert set(numbers) <= set(cluster.cel_calls(cluster_paths, NODE2))
        # the front door has taken the dead node out (its probes or the call that timed out on it)
        states = cluster.node_states(cluster_paths)
        assert not states[NODE1.sip_uri].startswith("A"), states
        assert states[NODE2.sip_uri].startswith("A"), states
        # a call sent to the dead node before its probe failed was retried on the other (failure_route)
        with front_door_log.open("rb") as f:
            f.seek(log_offset)
            log = f.read().decode(errors="replace")
        assert f"node {NODE1.sip_uri} silent" in log
        assert f"retried on node {NODE2.sip_uri}" in log
    finally:
        # started again, the node is taken back by its probes
        cluster.restart_node(cluster_paths, NODE1.name, log=lambda *_: None)
    run = await cluster.place_calls(cluster_paths, _numbers(3, 6), rate=5)
    assert run.stats.get("SuccessfulCall(C)") == "6", run.run_dir
    assert set(run.answered_by()) == {NODE1.address, NODE2.address}
