"""The SIP front door: Kamailio's configuration, generated from settings, in front of two or more Asterisk nodes.

The carrier's trunk reaches one address, Kamailio's. Its dispatcher module spreads 110 calls over the nodes and
probes each node with OPTIONS every ``ping_interval_s``; a node whose probe fails ``probing_threshold`` times in a
row is taken out, and put back after ``inactive_threshold`` answered probes. A call that a node refuses (5xx) or
never answers (no reply at all within ``no_reply_ms``) is retried on the next node in ``failure_route`` with
``ds_next_dst()``; on a node that timed out the dispatcher is told at once (``ds_mark_dst``), so the next calls
skip it before its probe fails. Kamailio records the route, so in-dialog requests (ACK, BYE, re-INVITE) keep
passing through it and reach the node that holds the call.

Nothing here does I/O except ``write``: ``render_cfg`` and ``render_dispatcher_list`` are plain text, so the
unit tests read the generated file as an admin would, and Kamailio itself checks it (``kamailio -c``).

Why these numbers: the dispatcher's probe is an ordinary transaction, so its time-out is tm's ``fr_timer``; a
probe of a dead node fails after ``probe_timeout_ms``. With a probe every second and one failed probe enough, a
dead node is out within ``ping_interval_s + probe_timeout_ms`` (about 2 s); calls sent to it in that window lose
``no_reply_ms`` each, then ring on the next node. 408 is never an accepted probe answer: Kamailio makes a 408
itself when the node is silent, and that would keep a dead node in.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
# The dispatcher set of the Asterisk nodes that take 110 calls.
NODES_SET = 1
# Dispatcher algorithms (Kamailio's numbers): round-robin spreads calls evenly over the live nodes.
ROUND_ROBIN = 4
_NODE_URI = re.compile(r"^sip:(?P<host>[0-9.]+)(?::(?P<port>\d{1,5}))?$")


class FrontDoorError(ValueError):
    """A front-door setting is unusable; the message names it and says what is expected."""


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise FrontDoorError(f"listen {value!r}: give ADDRESS:PORT, e.g. 127.0.0.1:5160")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise FrontDoorError(f"listen {value!r}: the address must be an IP address") from None
    return host, int(port)


@dataclass(frozen=True)
class FrontDoor:
    """What the front door is told: where it listens, the nodes behind it, and how quickly it gives up on one."""

    listen: str = "127.0.0.1:5160"
    nodes: tuple[str, ...] = ()  # SIP URIs of the Asterisk nodes, e.g. sip:10.0.0.11:5060
    ping_interval_s: int = 1  # one OPTIONS probe per node per interval
    probe_timeout_ms: int = 1000  # a probe (any non-INVITE transaction) unanswered this long has failed
    probing_threshold: int = 1  # failed probes in a row before a node is taken out
    inactive_threshold: int = 2  # answered probes in a row before a node that was out is put back
    no_reply_ms: int = 1000  # a node that sends no reply at all to an INVITE within this: next node
    no_answer_ms: int = 10_000  # after its provisional reply, a node must answer (the dialplan answers at once)
    children: int = 2  # SIP worker processes
    control_socket: str = ""  # kamcmd's socket (ctl module), e.g. /run/jiejing/kamailio.ctl; empty: none
    dispatcher_list: str = ""  # where the generated dispatcher list lies, as Kamailio will read it
    log_level: int = 1  # Kamailio's debug level: 1 errors and warnings … 3 debug
    extra_reply_codes: tuple[int, ...] = field(default=())  # probe answers taken as "alive" besides 2xx

    def validate(self) -> None:
        _listen(self.listen)
        if not self.nodes:
            raise FrontDoorError("nodes: give at least one Asterisk node's SIP URI, e.g. sip:10.0.0.11:5060")
        for uri in self.nodes:
            m = _NODE_URI.match(uri)
            if not m:
                raise FrontDoorError(f"node {uri!r}: give sip:ADDRESS[:PORT], e.g. sip:10.0.0.11:5060")
            try:
                ipaddress.ip_address(m["host"])
            except ValueError:
                raise FrontDoorError(f"node {uri!r}: the address must be an IP address") from None
            if m["port"] and not 0 < int(m["port"]) < 65536:
                raise FrontDoorError(f"node {uri!r}: the port must be 1..65535")
        if len(set(self.nodes)) != len(self.nodes):
            raise FrontDoorError("nodes: each node once")
        if not 1 <= self.ping_interval_s <= 60:
            raise FrontDoorError(f"ping interval {self.ping_interval_s} s: from 1 to 60")
        if not 1 <= self.probing_threshold <= 10 or not 1 <= self.inactive_threshold <= 10:
            raise FrontDoorError("probing and inactive thresholds: from 1 to 10")
        for name in ("probe_timeout_ms", "no_reply_ms"):
            value = getattr(self, name)
            # below one SIP retransmission (T1 = 500 ms) a single lost datagram would fail the node
            if not 500 < value <= 10_000:
                raise FrontDoorError(f"{name} {value}: more than 500 and at most 10000 ms")
        if not self.no_reply_ms < self.no_answer_ms <= 120_000:
            raise FrontDoorError(f"no_answer_ms {self.no_answer_ms}: more than no_reply_ms, at most 120000")
        if not 1 <= self.children <= 64:
            raise FrontDoorError(f"children {self.children}: from 1 to 64")
        if 408 in self.extra_reply_codes:
            # Kamailio answers 408 itself when a node is silent: a dead node would look alive.
            raise FrontDoorError("408 must never count as a live node's answer to a probe")
        for code in self.extra_reply_codes:
            if not 100 <= code <= 699:
                raise FrontDoorError(f"reply code {code}: a SIP status code 100..699")
        for name in ("control_socket", "dispatcher_list"):
            value = getattr(self, name)
            if value and (not value.startswith("/") or re.search(r'[\s"]', value)):
                raise FrontDoorError(f"{name} {value!r}: an absolute path without spaces or quotes")
        if not 0 <= self.log_level <= 3:
            raise FrontDoorError(f"log level {self.log_level}: from 0 to 3")


def render_dispatcher_list(front: FrontDoor) -> str:
    """The dispatcher's list file: one line per node, all in the 110 set."""
    front.validate()
    lines = ["# Generated by jiejing (telephony/kamailio.py) from the front door's settings; do not edit.",
             "# setid destination flags priority attributes"]
    for i, uri in enumerate(front.nodes, 1):
        lines.append(f"{NODES_SET} {uri} 0 0 name=node{i}")
    return "\n".join(lines) + "\n"


def _reply_codes(front: FrontDoor) -> str:
    return ";".join(["class=2", *(f"code={c}" for c in sorted(set(front.extra_reply_codes)))])


def render_cfg(front: FrontDoor, dispatcher_list: str | None = None) -> str:
    """kamailio.cfg of the front door."""
    front.validate()
    host, port = _listen(front.listen)
    ds_list = dispatcher_list or front.dispatcher_list
    if not ds_list:
        raise FrontDoorError("dispatcher_list: the path of the dispatcher list file is needed")
    ctl = ""
    if front.control_socket:
        ctl = (f'loadmodule "ctl.so"\n'
               f'modparam("ctl", "binrpc", "unix:{front.control_socket}")\n')
    return f"""#!KAMAILIO
# Generated by jiejing (telephony/kamailio.py) from the front door's settings; do not edit.
# The carrier's 110 calls arrive here and are spread over the Asterisk nodes of dispatcher set {NODES_SET}.

debug={front.log_level}
log_stderror=yes
fork=yes
children={front.children}
listen=udp:{host}:{port}
# No DNS look-ups on the call path: every address here is an IP address.
dns=no
rev_dns=no
auto_aliases=no
alias="{host}:{port}"

mpath="{KAMAILIO_MODULES}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "dispatcher.so"
{ctl}
# tm: a non-INVITE transaction (the dispatcher's probe among them) fails after {front.probe_timeout_ms} ms
# without an answer; an INVITE's own timers are set per call below.
modparam("tm", "fr_timer", {front.probe_timeout_ms})
modparam("tm", "fr_inv_timer", {front.no_answer_ms})
# A reply from a later branch is what the caller gets, not a stale one from the node that failed.
modparam("tm", "failure_reply_mode", 3)

modparam("rr", "enable_full_lr", 1)

modparam("dispatcher", "list_file", "{ds_list}")
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:frontdoor@{host}:{port}")
modparam("dispatcher", "ds_ping_interval", {front.ping_interval_s})
# probe every node, not only those already marked as failing
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", {front.probing_threshold})
modparam("dispatcher", "ds_inactive_threshold", {front.inactive_threshold})
# what counts as a live node's answer: 2xx (never 408, which Kamailio makes itself on time-out)
modparam("dispatcher", "ds_ping_reply_codes", "{_reply_codes(front)}")
# keep the list of other nodes for ds_next_dst() in failure_route
modparam("dispatcher", "flags", 2)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check("1511", "7")) {{
        xlog("L_WARN", "malformed request from $si:$sp dropped\\n");
        exit;
    }}
    # In-dialog: follow the recorded route to the node (or back to the carrier).
    if (has_totag()) {{
        if (loose_route()) {{
            route(RELAY);
        }}
        if (is_method("ACK") && t_check_trans()) {{
            route(RELAY);
        }}
        if (!is_method("ACK")) {{
            sl_send_reply("404", "Not here");
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    # A retransmission of a request already being handled: tm resends the last reply.
    if (!is_method("ACK")) {{
        t_check_trans();
    }}
    # The carrier probing us.
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    remove_hf("Route");
    record_route();
    if (!ds_select_dst("{NODES_SET}", "{ROUND_ROBIN}")) {{
        xlog("L_ERR", "no live Asterisk node for call $ci from $fU\\n");
        sl_send_reply("503", "No node available");
        exit;
    }}
    route(TO_NODE);
}}

route[TO_NODE] {{
    # no reply at all within {front.no_reply_ms} ms: the next node; after a provisional reply, {front.no_answer_ms} ms
    t_set_fr({front.no_answer_ms}, {front.no_reply_ms});
    t_on_failure("NEXT_NODE");
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

failure_route[NEXT_NODE] {{
    if (t_is_canceled()) {{
        exit;
    }}
    # a silent node: out of the rotation now, its probes will put it back
    if (t_branch_timeout() && !t_branch_replied()) {{
        xlog("L_WARN", "node $du silent for call $ci: marked as failing\\n");
        ds_mark_dst("ip");
    }}
    # refused (5xx) or silent: the next node
    if (t_check_status("5[0-9][0-9]") || (t_branch_timeout() && !t_branch_replied())) {{
        if (ds_next_dst()) {{
            xlog("L_WARN", "call $ci retried on node $du\\n");
            route(TO_NODE);
        }}
        xlog("L_ERR", "call $ci: no node left to try\\n");
    }}
}}
"""


def write(front: FrontDoor, folder: Path) -> tuple[Path, Path]:
    """kamailio.cfg and dispatcher.list into ``folder``; the two paths."""
    folder.mkdir(parents=True, exist_ok=True)
    ds_list = folder / "dispatcher.list"
    cfg = folder / "kamailio.cfg"
    ds_list.write_text(render_dispatcher_list(front))
    cfg.write_text(render_cfg(front, str(ds_list)))
    return cfg, ds_list
