"""The front door's Kamailio configuration, generated from settings (telephony/kamailio.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace

import pytest

from telephony import kamailio
from telephony.kamailio import FrontDoor, FrontDoorError

NODES = ("sip:10.0.0.11:5060", "sip:10.0.0.12:5060")


def _front(**kw) -> FrontDoor:
    return replace(FrontDoor(nodes=NODES, dispatcher_list="/etc/jiejing/dispatcher.list"), **kw)


def _modparam(cfg: str, module: str, name: str) -> str:
    m = re.search(rf'^modparam\("{module}", "{name}", (.+)\)$', cfg, re.M)
    assert m, f"{module}.{name} not set"
    return m.group(1).strip('"')


def test_every_node_probed_every_second():
    cfg = kamailio.render_cfg(_front())
    assert _modparam(cfg, "dispatcher", "ds_ping_interval") == "1"
    assert _modparam(cfg, "dispatcher", "ds_probing_mode") == "1"
    assert _modparam(cfg, "dispatcher", "ds_ping_method") == "OPTIONS"


def test_a_dead_node_is_out_after_one_failed_probe_that_lasts_a_second():
    cfg = kamailio.render_cfg(_front())
    assert _modparam(cfg, "dispatcher", "ds_probing_threshold") == "1"
    # the probe is a non-INVITE transaction: tm's fr_timer is its time-out
    assert _modparam(cfg, "tm", "fr_timer") == "1000"


def test_408_never_counts_as_alive():
    codes = _modparam(kamailio.render_cfg(_front(extra_reply_codes=(404,))), "dispatcher", "ds_ping_reply_codes")
    assert codes == "class=2;code=404"
    with pytest.raises(FrontDoorError, match="408"):
        kamailio.render_cfg(_front(extra_reply_codes=(408,)))


def test_a_refused_or_silent_call_goes_to_the_next_node():
    cfg = kamailio.render_cfg(_front(no_reply_ms=1500))
    failure = cfg[cfg.index("failure_route[NEXT_NODE]"):]
    assert "ds_next_dst()" in failure
    assert 't_check_status("5[0-9][0-9]")' in failure
    assert "t_branch_timeout()" in failure
    # the silent node is marked at once, so the next calls skip it before its probe fails
    assert 'ds_mark_dst("ip")' in failure
    # the retried branch gets the same short timer and the same failure route
    assert "route(TO_NODE)" in failure
    to_node = cfg[cfg.index("route[TO_NODE]"):cfg.index("route[RELAY]")]
    assert "t_set_fr(10000, 1500)" in to_node
    assert 't_on_failure("NEXT_NODE")' in to_node


def test_route_recorded_so_in_dialog_requests_reach_the_node():
    cfg = kamailio.render_cfg(_front())
    main = cfg[cfg.index("request_route"):cfg.index("route[TO_NODE]")]
    assert "record_route()" in main
    assert "loose_route()" in main
    assert main.index("record_route()") < main.index("ds_select_dst")


def test_dispatcher_list_names_every_node_in_one_set():
    text = kamailio.render_dispatcher_list(_front())
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    assert rows == [["1", NODES[0], "0", "0", "name=node1"], ["1", NODES[1], "0", "0", "name=node2"]]


@pytest.mark.parametrize("change, message", [
    ({"nodes": ()}, "at least one"),
    ({"nodes": ("sip:node-a.example:5060",)}, "sip:ADDRESS"),
    ({"nodes": (NODES[0], NODES[0])}, "once"),
    ({"listen": "5160"}, "ADDRESS:PORT"),
    ({"no_reply_ms": 200}, "no_reply_ms"),
    ({"no_answer_ms": 900}, "no_answer_ms"),
    ({"ping_interval_s": 0}, "interval"),
    ({"control_socket": "relative/ctl"}, "absolute"),
])
def test_unusable_settings_are_refused_with_their_name(change, message):
    with pytest.raises(FrontDoorError, match=message):
        kamailio.render_cfg(_front(**change))


def test_kamailio_accepts_the_generated_file(tmp_path):
    if shutil.which("kamailio") is None:
        pytest.fail("kamailio is missing: run sip-lab/bootstrap.sh (Debian package kamailio)")
    cfg, ds_list = kamailio.write(_front(listen="127.0.0.1:5160", control_socket=str(tmp_path / "ctl")), tmp_path)
    assert ds_list.exists()
    res = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "config file ok" in res.stdout + res.stderr
