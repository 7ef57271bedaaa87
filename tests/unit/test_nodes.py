"""Per-node Asterisk files generated from the one dialplan/ folder (telephony/nodes.py, sip-lab/cluster.py)."""

from __future__ import annotations

import difflib
import re

import pytest

from siplab import asterisk, cluster
from telephony.nodes import (
    AsteriskNode,
    NodeConfigError,
    read_dialplan,
    render_node,
    set_values,
)

SHIPPED = read_dialplan([asterisk.DIALPLAN, asterisk.DIALPLAN / "lab"])


def _value(text: str, section: str, key: str) -> str:
    current = None
    for line in text.splitlines():
        if m := re.match(r"^\[([^\]]+)\]", line):
            current = m.group(1)
        elif current == section and re.match(rf"^{key}\s*=", line):
            return line.split("=", 1)[1].strip()
    raise AssertionError(f"[{section}] {key} not found")


def test_set_values_changes_only_the_key_in_its_section():
    text = "[a]\nport = 1 ; note\n;port = 9\n[b]\nport = 2\n"
    assert set_values(text, "a", {"port": "5"}) == "[a]\nport = 5\n;port = 9\n[b]\nport = 2\n"


def test_set_values_refuses_a_key_the_file_does_not_have():
    with pytest.raises(NodeConfigError, match=r"\[a\] has no bindport"):
        set_values("[a]\nport = 1\n", "a", {"bindport": "2"})


def test_two_nodes_differ_in_name_addresses_ports_and_folders():
    one, two = (cluster.node_files(cluster.node(i), 20) for i in (1, 2))
    assert "systemname = node1" in one["asterisk.conf"] and "systemname = node2" in two["asterisk.conf"]
    assert _value(one["pjsip.conf"], "transport-udp", "bind") == "127.0.0.2:5060"
    assert _value(two["pjsip.conf"], "transport-udp", "bind") == "127.0.0.3:5060"
    assert _value(one["manager.conf"], "general", "bindaddr") == "127.0.0.2"
    assert _value(two["http.conf"], "general", "bindaddr") == "127.0.0.3"
    ranges = [(int(_value(f["rtp.conf"], "general", "rtpstart")), int(_value(f["rtp.conf"], "general", "rtpend")))
              for f in (one, two)]
    assert ranges[0][1] < ranges[1][0]
    for folder in ("astrundir", "astspooldir", "astlogdir", "astdbdir"):
        assert re.search(rf"{folder} => (\S+)", one["asterisk.conf"])[1] != \
            re.search(rf"{folder} => (\S+)", two["asterisk.conf"])[1]
    assert _value(one["extensions.conf"], "globals", "JIEJING_RECORDINGS") != \
        _value(two["extensions.conf"], "globals", "JIEJING_RECORDINGS")


def test_a_node_runs_the_shipped_dialplan_with_only_its_own_values_changed():
    files = render_node(cluster.node(1), SHIPPED)
    assert set(files) == set(SHIPPED) | {"asterisk.conf"}
    changed = {}
    for name, text in SHIPPED.items():
        diff = [line for line in difflib.unified_diff(text.splitlines(), files[name].splitlines(), lineterm="", n=0)
                if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        if diff:
            changed[name] = len([line for line in diff if line.startswith("+")])
    # transport bind; AMI and HTTP address (each node has its own address, so the shipped ports stay); RTP
    # range; recordings folder, intake and FastAGI addresses
    assert changed == {"pjsip.conf": 1, "manager.conf": 1, "http.conf": 1, "rtp.conf": 2, "extensions.conf": 3}
    assert files["queues.conf"] == SHIPPED["queues.conf"]


def test_a_node_without_a_usable_name_or_address_is_refused():
    with pytest.raises(NodeConfigError, match="name"):
        render_node(AsteriskNode(name="Node 1", address="127.0.0.2", etc="/e", var="/v"), SHIPPED)
    with pytest.raises(NodeConfigError, match="address"):
        render_node(AsteriskNode(name="node1", address="node-one", etc="/e", var="/v"), SHIPPED)


def test_cluster_phones_and_front_door_stay_off_the_lab_ports():
    from siplab import sipp

    lab_ports = {sipp.SEAT_SIP_PORT, sipp.CALLER_SIP_PORT, sipp.OFFICER_SIP_PORT, sipp.SILENT_SIP_PORT, 5060}
    ours = {cluster.SEAT_SIP_PORT, cluster.CALLER_SIP_PORT, cluster.FIELD_SIP_PORT, cluster.SILENT_SIP_PORT,
            int(cluster.FRONT_DOOR.rsplit(":", 1)[1])}
    assert not lab_ports & ours
    assert all(cluster.node(i).address != "127.0.0.1" for i in range(1, cluster.MAX_NODES + 1))


def test_call_log_lines_become_call_records():
    calls = cluster.parse_call_log(
        "answered 1390001 1796666766.000000 193386.000000 1796666766.000000 200690.000000 127.0.0.3 @127.0.0.3\n"
        "ended 1390001 by-node\n"
        "ended 1390002 by-caller\n")
    assert calls["1390001"].node_address == "127.0.0.3"
    assert calls["1390001"].answer_s == pytest.approx(0.007304, abs=1e-6)
    assert calls["1390001"].ended == "by-node"
    assert calls["1390002"].answered_at is None


def test_dispatcher_list_output_gives_each_node_state():
    text = """{
        NRSETS: 1
        RECORDS: {
            SET: {
                ID: 1
                TARGETS: {
                    DEST: {
                        URI: sip:127.0.0.3:5060
                        FLAGS: AX
                        PRIORITY: 0
                    }
                    DEST: {
                        URI: sip:127.0.0.2:5060
                        FLAGS: IP
                        PRIORITY: 0
                    }
                }
            }
        }
    }"""
    assert cluster.parse_dispatcher_list(text) == {"sip:127.0.0.3:5060": "AX", "sip:127.0.0.2:5060": "IP"}
