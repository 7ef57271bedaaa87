"""The lab's Asterisk 22: a Debian sid chroot, provisioned once and reused.

Debian 12 has no Asterisk package and sid's needs a newer libc, so Asterisk
runs in a sid chroot kept in a cache folder outside the checkout. Everything
here is idempotent: ``provision`` builds the chroot only when it is missing,
``start`` only starts what is not running, ``stop`` leaves nothing running or
mounted.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("JIEJING_LAB_CACHE", "/var/cache/jiejing"))
READY_MARK = ".jiejing-ready"
# Inside the chroot: our own configuration folder, rewritten at every start, so
# the package's sample configuration never leaks into the lab.
ETC_IN_CHROOT = "/etc/jiejing-asterisk"
# Folders the package leaves owned by its own user; Asterisk runs as root here.
OWNED_DIRS = ("etc/asterisk", "var/lib/asterisk", "var/log/asterisk", "var/spool/asterisk", "var/run/asterisk")

REPO = Path(__file__).resolve().parent.parent
DIALPLAN = REPO / "dialplan"


class LabError(RuntimeError):
    """Something the lab needs is missing or broken; the message says what to do."""


@dataclass
class LabPaths:
    cache: Path = DEFAULT_CACHE

    @property
    def root(self) -> Path:
        return self.cache / "asterisk-sid"

    @property
    def run(self) -> Path:
        return self.cache / "run"

    @property
    def etc(self) -> Path:
        return self.root / ETC_IN_CHROOT.lstrip("/")

    @property
    def recordings(self) -> Path:
        """Where MixMonitor's files appear, seen from the host."""
        return self.root / "var/spool/asterisk/monitor"

    @property
    def cel_file(self) -> Path:
        """Asterisk's channel event log (dialplan/cel_custom.conf), seen from the host."""
        return self.root / "var/log/asterisk/cel-custom/jiejing.csv"

    @property
    def webrtc_phones(self) -> Path:
        """The lab's browser seats, for the backend's ``JIEJING_PHONES_FILE`` (written at each start)."""
        return self.run / "webrtc-phones.json"

    @property
    def asterisk_log(self) -> Path:
        return self.run / "asterisk.out"

    @property
    def asterisk_pid(self) -> Path:
        return self.run / "asterisk.pid"


@dataclass
class LabConfig:
    seats: int = 100
    ami_secret: str = "jiejing-lab"
    extra_files: dict[str, str] = field(default_factory=dict)


def _run(cmd: list[str], *, check: bool = True, timeout: float | None = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, timeout=timeout, text=True, capture_output=True, **kw)


def host_mirror() -> str:
    """The Debian mirror the host's apt already uses (the chroot takes sid from the same archive)."""
    candidates = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in candidates:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "/debian" in line and "security" not in line:
                return line.split(":", 1)[1].strip().split()[0]
            if line.startswith("deb ") and "/debian" in line and "security" not in line:
                return line.split()[1]
    raise LabError("no Debian mirror found in /etc/apt/sources.list(.d): the sid chroot needs the host's archive")


def provision(paths: LabPaths, *, log=print) -> None:
    """Build the sid chroot with Asterisk if it is not already there."""
    root = paths.root
    if (root / READY_MARK).exists() and (root / "usr/sbin/asterisk").exists():
        return
    if os.geteuid() != 0:
        raise LabError("provisioning the lab Asterisk needs root (debootstrap and chroot)")
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is missing: run sip-lab/bootstrap.sh (apt-get install debootstrap)")
    paths.cache.mkdir(parents=True, exist_ok=True)
    tmp = paths.cache / "asterisk-sid.tmp"
    if tmp.exists():
        _umount_all(tmp)
        shutil.rmtree(tmp)
    mirror = host_mirror()
    log(f"lab: building a Debian sid chroot from {mirror} (about a minute, once)")
    res = _run(["debootstrap", "--variant=minbase", "sid", str(tmp), mirror], check=False, timeout=1200)
    if res.returncode != 0:
        raise LabError(f"debootstrap of Debian sid failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    # The archive this machine sees may serve a sid Release file past its
    # Valid-Until date; apt would then refuse every package.
    (tmp / "etc/apt/apt.conf.d/99jiejing").write_text('Acquire::Check-Valid-Until "false";\n')
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    res = _run(["chroot", str(tmp), "apt-get", "update", "-qq"], check=False, env=env)
    if res.returncode != 0:
        raise LabError(f"apt-get update in the sid chroot failed:\n{res.stderr[-2000:]}")
    res = _run(
        ["chroot", str(tmp), "apt-get", "install", "-y", "-qq", "--no-install-recommends", "asterisk"],
        check=False,
        env=env,
        timeout=1200,
    )
    if res.returncode != 0 or not (tmp / "usr/sbin/asterisk").exists():
        raise LabError(
            "installing asterisk in the Debian sid chroot failed. sid is rolling: if the package "
            f"disappeared from sid, the lab cannot be built this way any more.\n{res.stdout[-1500:]}{res.stderr[-1500:]}"
        )
    (tmp / READY_MARK).write_text(_run(["chroot", str(tmp), "dpkg-query", "-W", "asterisk"]).stdout)
    tmp.rename(root)
    log(f"lab: Asterisk installed in {root}")


def asterisk_version(paths: LabPaths) -> str:
    mark = paths.root / READY_MARK
    return mark.read_text().strip() if mark.exists() else ""


def _mounted(target: Path) -> bool:
    target = str(target.resolve())
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f)


def _umount_all(root: Path) -> None:
    for sub in ("proc",):
        target = root / sub
        if target.exists() and _mounted(target):
            _run(["umount", "-l", str(target)], check=False)


def seat_name(index: int) -> str:
    return f"seat{index:03d}"


def render_seats(seats: int, seat_sip_port: int) -> tuple[str, str]:
    """pjsip endpoints and queue members for the lab's simulated seats."""
    pjsip = ["; Generated by `jiejing lab up`: the lab's call-taker seats (one SIPp process)."]
    members = ["; Generated by `jiejing lab up`: every lab seat is a member of the 110 queue."]
    for i in range(1, seats + 1):
        name = seat_name(i)
        pjsip += [
            f"[{name}](seat-endpoint)",
            f"aors = {name}",
            f"[{name}](seat-aor)",
            f"contact = sip:{name}@127.0.0.1:{seat_sip_port}",
        ]
        members.append(f"member => PJSIP/{name},0,{name}")
    return "\n".join(pjsip) + "\n", "\n".join(members) + "\n"


# Browser seats (WebRTC, JsSIP): they register over Asterisk's WebSocket and
# join the queue only when a test or a call-taker adds them.
WEBRTC_SEATS = [f"wseat{i:02d}" for i in range(1, 5)]


def webrtc_password(name: str) -> str:
    return f"lab-{name}-secret"


def render_webrtc_seats(names: list[str] = WEBRTC_SEATS) -> str:
    """pjsip endpoints, AORs and auths of the lab's browser seats."""
    lines = ["; Generated by `jiejing lab up`: call-taker seats whose phone is a browser (WebRTC)."]
    for name in names:
        lines += [
            f"[{name}](webrtc-seat-endpoint)",
            f"auth = {name}",
            f"aors = {name}",
            f"[{name}](seat-aor)",
            f"[{name}]",
            "type = auth",
            "auth_type = userpass",
            f"username = {name}",
            f"password = {webrtc_password(name)}",
        ]
    return "\n".join(lines) + "\n"


def websocket_url(http_conf: Path) -> str:
    """The ws:// URL of Asterisk's SIP WebSocket as ``http.conf`` binds it."""
    values = {}
    for line in http_conf.read_text().splitlines():
        line = line.split(";", 1)[0].strip()
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            values[key] = value
    return f"ws://{values.get('bindaddr', '127.0.0.1')}:{values.get('bindport', '8088')}/ws"


def write_webrtc_phones(dest: Path, ws_url: str, names: list[str] = WEBRTC_SEATS) -> Path:
    """The phones file the backend answers ``/api/phone`` from (docs/web.md); readable by root only."""
    data = {
        "ws_url": ws_url,
        "domain": "127.0.0.1",
        "ice_servers": [],
        "seats": {name: {"password": webrtc_password(name)} for name in names},
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(dest)
    return dest


CITY_FILE = REPO / "sip-lab" / "city.json"
# Phones that ring and are never answered (port 5091), for the escalation
# ladder: a test or a city file points an officer's or desk's phone at one.
SILENT_PHONES = [f"silent{i:03d}" for i in range(1, 11)]


def field_phone_names(city_file: Path = CITY_FILE) -> list[str]:
    """Every PJSIP phone the lab city names (officers, duty desks, superiors), plus silent ones."""
    city = json.loads(city_file.read_text()) if city_file.exists() else {}
    names: list[str] = []
    for station in city.get("stations", []):
        names += [station.get("duty_desk") or "", station.get("superior") or ""]
    names += [officer.get("endpoint") or "" for officer in city.get("officers", [])]
    names = [n.split("/", 1)[1] for n in names if n.startswith("PJSIP/")]
    # a few spare answering phones for tests that add officers
    names += [f"officer{i:03d}" for i in range(1, 61)]
    # hand-over targets of dialplan/routing.toml: the anti-fraud desk, the 12345 hotline's trunk;
    # the overflow of the 110 queue (JIEJING_OVERFLOW): the supervisors' desk
    names += ["antifraud-desk", "hotline-12345", "supervisor-desk"]
    return sorted(set(names) - set(SILENT_PHONES)) + SILENT_PHONES


def render_field_phones(ports: dict[str, int]) -> str:
    lines = ["; Generated by `jiejing lab up`: officers', duty desks' and superiors' phones."]
    for name in field_phone_names():
        kind = "silent" if name in SILENT_PHONES else "answering"
        lines += [
            f"[{name}](field-endpoint)",
            f"aors = {name}",
            f"[{name}](seat-aor)",
            f"contact = sip:{name}@127.0.0.1:{ports[kind]}",
        ]
    return "\n".join(lines) + "\n"


ASTERISK_CONF = f"""; Generated by `jiejing lab up`: the lab's Asterisk reads the project's dialplan/.
[directories]
astetcdir => {ETC_IN_CHROOT}
astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules
astvarlibdir => /var/lib/asterisk
astdbdir => /var/lib/asterisk
astkeydir => /var/lib/asterisk
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => /var/spool/asterisk
astrundir => /var/run/asterisk
astlogdir => /var/log/asterisk
astsbindir => /usr/sbin
astcachedir => /var/cache/asterisk

[options]
documentation_language = en_US
; the chroot has no users of its own to switch to
"""


def write_config(paths: LabPaths, cfg: LabConfig, *, seat_sip_port: int,
                 field_ports: dict[str, int] | None = None) -> None:
    """Copy dialplan/ (admin's files) and dialplan/lab/ (lab-only) into the chroot."""
    etc = paths.etc
    if etc.exists():
        shutil.rmtree(etc)
    etc.mkdir(parents=True)
    for src in sorted(DIALPLAN.glob("*.conf")) + sorted((DIALPLAN / "lab").glob("*.conf")):
        shutil.copy2(src, etc / src.name)
    pjsip_seats, members = render_seats(cfg.seats, seat_sip_port)
    (etc / "pjsip_seats.conf").write_text(pjsip_seats)
    (etc / "queues_members.conf").write_text(members)
    (etc / "pjsip_field.conf").write_text(render_field_phones(field_ports or {"answering": 5090, "silent": 5091}))
    (etc / "pjsip_webrtc.conf").write_text(render_webrtc_seats())
    write_webrtc_phones(paths.webrtc_phones, websocket_url(etc / "http.conf"))
    (etc / "asterisk.conf").write_text(ASTERISK_CONF)
    if cfg.ami_secret != "jiejing-lab":
        text = (etc / "manager.conf").read_text().replace("secret = jiejing-lab", f"secret = {cfg.ami_secret}")
        (etc / "manager.conf").write_text(text)
    for name, text in cfg.extra_files.items():
        (etc / name).write_text(text)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still "exists": look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


def spawn_daemon(argv: list[str], log_path: Path, *, cwd: Path | None = None) -> int:
    """Start a long-running lab process detached from us; its pid.

    A shell starts it in the background and exits at once, so no child of the
    calling process is left behind (lab processes outlive `jiejing lab up`).
    """
    script = f"{shlex.join(argv)} >> {shlex.quote(str(log_path))} 2>&1 < /dev/null & echo $!"
    res = subprocess.run(["setsid", "sh", "-c", script], capture_output=True, text=True, cwd=cwd, check=True)
    return int(res.stdout.strip())


def asterisk_pid(paths: LabPaths) -> int | None:
    try:
        pid = int(paths.asterisk_pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def lab_rx_prefix(paths: LabPaths) -> tuple[str, ...]:
    """The command line that runs an Asterisk CLI command (appended) on the lab's Asterisk."""
    return ("chroot", str(paths.root), "asterisk", "-C", f"{ETC_IN_CHROOT}/asterisk.conf", "-rx")


def rx(paths: LabPaths, command: str, timeout: float = 15) -> str:
    """Run an Asterisk CLI command through the control socket (lab tooling only)."""
    res = _run(
        [*lab_rx_prefix(paths), command],
        check=False,
        timeout=timeout,
    )
    return res.stdout


def start(paths: LabPaths, cfg: LabConfig, *, seat_sip_port: int, log=print) -> int:
    """Start Asterisk in the chroot with the project's configuration."""
    provision(paths, log=log)
    existing = asterisk_pid(paths)
    if existing:
        return existing
    root = paths.root
    paths.run.mkdir(parents=True, exist_ok=True)
    (root / "proc").mkdir(exist_ok=True)
    if not _mounted(root / "proc"):
        _run(["mount", "-t", "proc", "proc", str(root / "proc")])
    for sub in OWNED_DIRS:
        d = root / sub
        d.mkdir(parents=True, exist_ok=True)
        _run(["chown", "-R", "root:root", str(d)])
    (root / "var/spool/asterisk/monitor").mkdir(parents=True, exist_ok=True)
    # Asterisk appends its channel event log here but does not make the folder (dialplan/cel_custom.conf).
    paths.cel_file.parent.mkdir(parents=True, exist_ok=True)
    # Without the host's names, every call triggers DNS look-ups of the host name.
    shutil.copy2("/etc/hosts", root / "etc/hosts")
    write_config(paths, cfg, seat_sip_port=seat_sip_port)  # field phones: lab's fixed ports
    if port_open(5038):
        raise LabError("port 5038 (AMI) is already in use by another program: stop it first")
    # -f: foreground without a console (-c floods the log); chroot execs it,
    # so the pid is Asterisk's own.
    pid = spawn_daemon(["chroot", str(root), "asterisk", "-f", "-C", f"{ETC_IN_CHROOT}/asterisk.conf"],
                       paths.asterisk_log)
    paths.asterisk_pid.write_text(str(pid))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise LabError(f"Asterisk exited at start; see {paths.asterisk_log}")
        if port_open(5038):
            res = _run(
                ["chroot", str(root), "asterisk", "-C", f"{ETC_IN_CHROOT}/asterisk.conf", "-rx", "core waitfullybooted"],
                check=False,
                timeout=30,
            )
            if res.returncode == 0:
                log(f"lab: Asterisk running (pid {pid})")
                return pid
        time.sleep(0.1)
    raise LabError(f"Asterisk did not come up within 30 s; see {paths.asterisk_log}")


def stop(paths: LabPaths, *, log=print) -> None:
    pid = asterisk_pid(paths)
    if pid:
        rx(paths, "core stop now", timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        log("lab: Asterisk stopped")
    paths.asterisk_pid.unlink(missing_ok=True)
    # An Asterisk started by hand in the chroot would keep proc busy: say so.
    _umount_all(paths.root)
    if (paths.root / "proc").exists() and _mounted(paths.root / "proc"):
        raise LabError(f"{paths.root}/proc is still mounted")
