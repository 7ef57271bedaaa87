"""`jiejing lab cluster up|down|status|kill`: two (or more) Asterisk nodes behind Kamailio, next to the lab.

The single-node lab (lab.py) is left exactly as it is: its Asterisk on 127.0.0.1 (SIP 5060, AMI 5038, HTTP 8088)
and its SIPp phones keep running while the cluster comes and goes. The cluster uses the same Debian sid chroot
(Asterisk is installed once) but nothing else of the lab's:

- node N listens on 127.0.0.(N+1), with its own configuration folder, run/spool/log/astdb folders, RTP range and
  system name ``nodeN`` — all generated from the same ``dialplan/`` files (telephony/nodes.py);
- the front door, Kamailio on 127.0.0.1:5160 (telephony/kamailio.py), takes the carrier's calls and spreads them;
- the cluster's own SIPp phones (seats 5170, field phones 5190/5191), reached from every node;
- no backend yet: the dialplan's intake and FastAGI addresses point at ports nothing listens on, so every call
  takes the dialplan's fallback branch (default queue) — the branch a call takes when the backend is down.

Both nodes ring the same seats, each with its own app_queue: a seat can be offered two calls at once (one per
node). docs/design.md says how that is to be closed; the cluster here is the front door and the nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from telephony import kamailio
from telephony.nodes import AsteriskNode, read_dialplan, render_node

from . import asterisk, sipp
from .asterisk import LabError, LabPaths

FRONT_DOOR = "127.0.0.1:5160"
SEAT_SIP_PORT = 5170
SEAT_MEDIA_PORT = 31000
FIELD_SIP_PORT = 5190
FIELD_MEDIA_PORT = 32000
SILENT_SIP_PORT = 5191
SILENT_MEDIA_PORT = 33000
CALLER_SIP_PORT = 5180
CALLER_MEDIA_PORT = 34000
# Nothing listens here: the cluster has no backend yet, so calls take the dialplan's fallback branch at once
# (connection refused) instead of reaching a backend some lab test is running on the usual ports.
NO_BACKEND = {"JIEJING_INTAKE": "http://127.0.0.1:9/intake", "JIEJING_AGI": "agi://127.0.0.1:9"}
MAX_NODES = 4


@dataclass
class ClusterSettings:
    nodes: int = 2
    seats: int = 20
    seat_ring_ms: int = 200
    seat_talk_ms: int = 2000

    def validate(self) -> None:
        if not 2 <= self.nodes <= MAX_NODES:
            raise LabError(f"--nodes must be 2..{MAX_NODES}, not {self.nodes}")
        if not 1 <= self.seats <= 999:
            raise LabError(f"--seats must be 1..999, not {self.seats}")
        if not 0 <= self.seat_ring_ms <= 60_000 or not 100 <= self.seat_talk_ms <= 3_600_000:
            raise LabError("seat ring 0..60000 ms, talk 100..3600000 ms")


@dataclass
class ClusterPaths:
    lab: LabPaths

    @property
    def run(self) -> Path:
        return self.lab.cache / "cluster"

    @property
    def state_file(self) -> Path:
        return self.run / "cluster.json"

    @property
    def front_door_dir(self) -> Path:
        return self.run / "kamailio"

    @property
    def control_socket(self) -> Path:
        return self.front_door_dir / "kamailio.ctl"

    @property
    def front_door_pid(self) -> Path:
        return self.run / "kamailio.pid"

    def node_pid(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def node_log(self, name: str) -> Path:
        return self.run / f"{name}.out"

    def on_host(self, node_path: str) -> Path:
        """A path as the node sees it in the chroot, seen from the host."""
        return self.lab.root / node_path.lstrip("/")


def node(index: int) -> AsteriskNode:
    """Node ``index`` (1-based) of the lab cluster."""
    name = f"node{index}"
    return AsteriskNode(
        name=name, address=f"127.0.0.{index + 1}",
        rtp_start=20000 + (index - 1) * 2500, rtp_end=20000 + index * 2500 - 1,
        etc=f"/etc/jiejing-cluster/{name}", var=f"/var/lib/jiejing-cluster/{name}",
        dialplan_globals=dict(NO_BACKEND),
    )


def front_door(paths: ClusterPaths, nodes: list[AsteriskNode]) -> kamailio.FrontDoor:
    return kamailio.FrontDoor(listen=FRONT_DOOR, nodes=tuple(n.sip_uri for n in nodes),
                              control_socket=str(paths.control_socket))


def node_files(n: AsteriskNode, seats: int) -> dict[str, str]:
    """The node's files: dialplan/ and dialplan/lab/, the lab's phones (the cluster's ports), the node's values."""
    shipped = read_dialplan([asterisk.DIALPLAN, asterisk.DIALPLAN / "lab"])
    pjsip_seats, members = asterisk.render_seats(seats, SEAT_SIP_PORT)
    shipped["pjsip_seats.conf"] = pjsip_seats
    shipped["queues_members.conf"] = members
    shipped["pjsip_field.conf"] = asterisk.render_field_phones({"answering": FIELD_SIP_PORT,
                                                                "silent": SILENT_SIP_PORT})
    shipped["pjsip_webrtc.conf"] = asterisk.render_webrtc_seats()
    return render_node(n, shipped)


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if asterisk.pid_alive(pid) else None


def node_pid(paths: ClusterPaths, name: str) -> int | None:
    return _pid(paths.node_pid(name))


def rx(paths: ClusterPaths, n: AsteriskNode, command: str, timeout: float = 15) -> subprocess.CompletedProcess:
    """An Asterisk CLI command on one node, through its own control socket."""
    return subprocess.run(["chroot", str(paths.lab.root), "asterisk", "-C", f"{n.etc}/asterisk.conf", "-rx", command],
                          capture_output=True, text=True, timeout=timeout, check=False)


def _prepare_chroot(paths: ClusterPaths, *, log=print) -> None:
    """What the lab's start does to the shared chroot, done only where missing (the lab may be running)."""
    asterisk.provision(paths.lab, log=log)
    root = paths.lab.root
    (root / "proc").mkdir(exist_ok=True)
    if not asterisk._mounted(root / "proc"):
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    hosts = root / "etc/hosts"
    if not hosts.exists() or hosts.read_bytes() != Path("/etc/hosts").read_bytes():
        shutil.copy2("/etc/hosts", hosts)


def start_node(paths: ClusterPaths, n: AsteriskNode, seats: int, *, log=print) -> int:
    """Start one node (already running: kept as it is)."""
    existing = node_pid(paths, n.name)
    if existing:
        return existing
    if asterisk.port_open(n.ami_port, n.address):
        raise LabError(f"{n.address}:{n.ami_port} (AMI of {n.name}) is in use by another program: stop it first")
    etc = paths.on_host(n.etc)
    if etc.exists():
        shutil.rmtree(etc)
    etc.mkdir(parents=True)
    for name, text in node_files(n, seats).items():
        (etc / name).write_text(text)
    for kind in ("lib", "run", "spool", "log"):
        paths.on_host(n.folder(kind)).mkdir(parents=True, exist_ok=True)
    paths.on_host(n.recordings).mkdir(parents=True, exist_ok=True)
    # Asterisk appends its channel event log there but does not make the folder.
    paths.on_host(n.cel_file).parent.mkdir(parents=True, exist_ok=True)
    pid = asterisk.spawn_daemon(["chroot", str(paths.lab.root), "asterisk", "-f", "-C", f"{n.etc}/asterisk.conf"],
                                paths.node_log(n.name))
    paths.node_pid(n.name).write_text(str(pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not asterisk.pid_alive(pid):
            raise LabError(f"{n.name} exited at start; see {paths.node_log(n.name)}")
        if asterisk.port_open(n.ami_port, n.address) and rx(paths, n, "core waitfullybooted", 30).returncode == 0:
            log(f"cluster: {n.name} running on {n.address} (pid {pid})")
            return pid
        time.sleep(0.1)
    raise LabError(f"{n.name} did not come up within 30 s; see {paths.node_log(n.name)}")


def kill_node(paths: ClusterPaths, name: str) -> int:
    """kill -9 of a node, as a crash would; its pid."""
    pid = node_pid(paths, name)
    if not pid:
        raise LabError(f"{name} is not running")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while asterisk.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    return pid


def stop_node(paths: ClusterPaths, n: AsteriskNode, *, log=print) -> None:
    pid = node_pid(paths, n.name)
    if pid:
        rx(paths, n, "core stop now", timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and asterisk.pid_alive(pid):
            time.sleep(0.1)
        if asterisk.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        log(f"cluster: {n.name} stopped")
    paths.node_pid(n.name).unlink(missing_ok=True)


def kamcmd(paths: ClusterPaths, *command: str, timeout: float = 5) -> str:
    res = subprocess.run(["kamcmd", "-s", f"unix:{paths.control_socket}", *command],
                         capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise LabError(f"kamcmd {' '.join(command)}: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


_DEST = re.compile(r"URI:\s*(?P<uri>\S+)\s+FLAGS:\s*(?P<flags>\S+)")


def parse_dispatcher_list(text: str) -> dict[str, str]:
    """``kamcmd dispatcher.list`` → {node URI: flags}; flags ``AP`` active, ``IP``/``TP`` out (probing)."""
    return {m["uri"]: m["flags"] for m in _DEST.finditer(text)}


def node_states(paths: ClusterPaths) -> dict[str, str]:
    return parse_dispatcher_list(kamcmd(paths, "dispatcher.list"))


def front_door_pid(paths: ClusterPaths) -> int | None:
    return _pid(paths.front_door_pid)


def start_front_door(paths: ClusterPaths, nodes: list[AsteriskNode], *, log=print) -> int:
    if shutil.which("kamailio") is None:
        raise LabError("kamailio is missing: run sip-lab/bootstrap.sh (Debian package kamailio)")
    existing = front_door_pid(paths)
    if existing:
        return existing
    cfg, _ = kamailio.write(front_door(paths, nodes), paths.front_door_dir)
    check = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise LabError(f"Kamailio refuses {cfg}: {check.stderr.strip()[-800:]}")
    paths.control_socket.unlink(missing_ok=True)
    # -DD: stays in the foreground (its own workers still fork); -E: log to stderr, i.e. kamailio.log
    pid = asterisk.spawn_daemon(["kamailio", "-DD", "-E", "-f", str(cfg), "-Y", str(paths.front_door_dir)],
                                paths.run / "kamailio.log")
    paths.front_door_pid.write_text(str(pid))
    wait_nodes_active(paths, [n.sip_uri for n in nodes], timeout=15, pid=pid)
    log(f"cluster: front door (Kamailio) on {FRONT_DOOR} (pid {pid}), nodes {', '.join(n.sip_uri for n in nodes)}")
    return pid


def wait_nodes_active(paths: ClusterPaths, uris: list[str], *, timeout: float, pid: int | None = None) -> None:
    """Until the front door counts every node in ``uris`` as active (probed and answering)."""
    deadline = time.monotonic() + timeout
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        if pid and not asterisk.pid_alive(pid):
            raise LabError(f"Kamailio exited at start; see {paths.run / 'kamailio.log'}")
        if paths.control_socket.exists():
            try:
                states = node_states(paths)
            except LabError:
                states = {}
            if all(states.get(uri, "").startswith("A") for uri in uris):
                return
        time.sleep(0.1)
    raise LabError(f"the front door does not see every node alive within {timeout:.0f} s: {states}")


def stop_front_door(paths: ClusterPaths, *, log=print) -> None:
    pid = front_door_pid(paths)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and asterisk.pid_alive(pid):
            time.sleep(0.05)
        if asterisk.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        log("cluster: front door stopped")
    paths.front_door_pid.unlink(missing_ok=True)


def phones(paths: ClusterPaths) -> dict[str, sipp.Process]:
    return {name: sipp.Process(name, paths.run / f"{name}.pid") for name in ("seats", "field", "silent")}


def running_settings(paths: ClusterPaths) -> ClusterSettings | None:
    try:
        return ClusterSettings(**json.loads(paths.state_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def up(settings: ClusterSettings, paths: ClusterPaths | None = None, *, log=print) -> ClusterPaths:
    """Nodes, front door and phones; what already runs with the same settings is kept."""
    settings.validate()
    paths = paths or ClusterPaths(LabPaths())
    current = running_settings(paths)
    if current and current != settings and any(node_pid(paths, node(i).name) for i in range(1, MAX_NODES + 1)):
        log(f"cluster: running as {current}; restarting as {settings}")
        down(paths, log=log)
    paths.run.mkdir(parents=True, exist_ok=True)
    _prepare_chroot(paths, log=log)
    sipp.start_answering_phones(paths.run, name="seats", sip_port=SEAT_SIP_PORT, media_port=SEAT_MEDIA_PORT,
                                ring_ms=settings.seat_ring_ms, talk_ms=settings.seat_talk_ms)
    sipp.start_answering_phones(paths.run, name="field", sip_port=FIELD_SIP_PORT, media_port=FIELD_MEDIA_PORT,
                                ring_ms=1000, talk_ms=24 * 3600 * 1000)
    sipp.start_answering_phones(paths.run, name="silent", sip_port=SILENT_SIP_PORT, media_port=SILENT_MEDIA_PORT,
                                ring_ms=0, talk_ms=0, scenario_name="silent.xml")
    nodes = [node(i) for i in range(1, settings.nodes + 1)]
    for n in nodes:
        start_node(paths, n, settings.seats, log=log)
    start_front_door(paths, nodes, log=log)
    paths.state_file.write_text(json.dumps(asdict(settings)))
    return paths


def restart_node(paths: ClusterPaths, name: str, *, log=print) -> int:
    """Start a node that was killed again (same settings), and wait until the front door takes it back."""
    settings = running_settings(paths) or ClusterSettings()
    n = next(node(i) for i in range(1, settings.nodes + 1) if node(i).name == name)
    pid = start_node(paths, n, settings.seats, log=log)
    wait_nodes_active(paths, [n.sip_uri], timeout=15)
    return pid


def down(paths: ClusterPaths | None = None, *, log=print) -> None:
    paths = paths or ClusterPaths(LabPaths())
    stop_front_door(paths, log=log)
    for i in range(1, MAX_NODES + 1):
        stop_node(paths, node(i), log=log)
    for proc in phones(paths).values():
        proc.stop()
    paths.state_file.unlink(missing_ok=True)
    # proc stays mounted while the single-node lab runs from the same chroot.
    if asterisk.asterisk_pid(paths.lab) is None:
        asterisk._umount_all(paths.lab.root)
    log("cluster: down")


def status(paths: ClusterPaths | None = None) -> dict:
    paths = paths or ClusterPaths(LabPaths())
    settings = running_settings(paths)
    info: dict = {
        "settings": asdict(settings) if settings else None,
        "front_door": {"listen": FRONT_DOOR, "pid": front_door_pid(paths)},
        "nodes": {},
        "phones": {name: proc.pid for name, proc in phones(paths).items()},
    }
    if info["front_door"]["pid"]:
        try:
            info["front_door"]["dispatcher"] = node_states(paths)
        except LabError as exc:
            info["front_door"]["dispatcher"] = str(exc)
    for i in range(1, (settings.nodes if settings else 2) + 1):
        n = node(i)
        info["nodes"][n.name] = {"pid": node_pid(paths, n.name), "sip": n.sip_uri,
                                 "cel_file": str(paths.on_host(n.cel_file))}
    return info


# --- calls through the front door ------------------------------------------------------------------------------


@dataclass
class CallRecord:
    """One call as the caller saw it (SIPp's log lines of caller_routed.xml)."""

    number: str
    invited_at: float | None = None  # wall clock, s
    answered_at: float | None = None
    node_address: str = ""
    ended: str = ""  # "by-node" (the seat hung up, BYE through the front door) or "by-caller"

    @property
    def answer_s(self) -> float | None:
        if self.invited_at is None or self.answered_at is None:
            return None
        return self.answered_at - self.invited_at


def parse_call_log(text: str) -> dict[str, CallRecord]:
    calls: dict[str, CallRecord] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "invited":
            rec = calls.setdefault(parts[1], CallRecord(parts[1]))
            rec.invited_at = float(parts[2]) + float(parts[3]) / 1e6
        elif len(parts) >= 7 and parts[0] == "answered":
            rec = calls.setdefault(parts[1], CallRecord(parts[1]))
            rec.invited_at = float(parts[2]) + float(parts[3]) / 1e6
            rec.answered_at = float(parts[4]) + float(parts[5]) / 1e6
            rec.node_address = parts[6]
        elif len(parts) >= 3 and parts[0] == "ended":
            calls.setdefault(parts[1], CallRecord(parts[1])).ended = parts[2]
    return calls


@dataclass
class CallRun:
    stats: dict[str, str]
    calls: dict[str, CallRecord]
    run_dir: Path

    def answered_by(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rec in self.calls.values():
            if rec.answered_at is not None:
                counts[rec.node_address] = counts.get(rec.node_address, 0) + 1
        return counts


async def place_calls(paths: ClusterPaths, numbers: list[str], *, rate: float, patience_s: float = 20,
                      run_dir: Path | None = None, started: asyncio.Event | None = None) -> CallRun:
    """Call 110 through the front door from ``numbers`` at ``rate`` calls/s; each call's outcome."""
    from . import storm

    run_dir = run_dir or paths.run / f"calls-{int(time.time() * 1000)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    storm.write_injection(run_dir / "callers.csv", [(n, "lab caller") for n in numbers])
    scenario = sipp.render("caller_routed.xml", run_dir, PATIENCE_MS=int(patience_s * 1000),
                           AUDIO=sipp.audio_pcap(paths.lab.run))
    log_file = run_dir / "calls.log"
    stat_file = run_dir / "stats.csv"
    proc = await asyncio.create_subprocess_exec(
        sipp.sipp_binary(), FRONT_DOOR, "-sf", str(scenario), "-inf", str(run_dir / "callers.csv"),
        "-i", "127.0.0.1", "-p", str(CALLER_SIP_PORT), "-mi", "127.0.0.1", "-mp", str(CALLER_MEDIA_PORT),
        "-r", f"{rate:g}", "-rp", "1000", "-m", str(len(numbers)), "-l", str(len(numbers)),
        "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
        "-trace_logs", "-log_file", str(log_file), "-trace_err", "-error_file", str(run_dir / "errors.log"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=run_dir,
    )
    if started:
        started.set()
    try:
        await asyncio.wait_for(proc.wait(), timeout=len(numbers) / rate + patience_s + 60)
    except asyncio.TimeoutError:
        raise LabError(f"SIPp did not finish; see {run_dir}") from None
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    return CallRun(storm.read_stats(stat_file), parse_call_log(text), run_dir)


def cel_calls(paths: ClusterPaths, n: AsteriskNode) -> dict[str, str]:
    """Calls from the carrier a node took, from its own channel event log: caller number → uniqueid."""
    from telephony.cel import CelFormatError, parse_line

    path = paths.on_host(n.cel_file)
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for line in path.read_bytes().splitlines():
        try:
            event = parse_line(line)
        except CelFormatError:
            continue
        if event.event == "CHAN_START" and event.context == "from-carrier":
            found[event.caller] = event.uniqueid
    return found
