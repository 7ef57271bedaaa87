"""Install drill: docs/install.md followed on a clean Debian 12 root file system, then a real call through it.

1. The release wheel is built from this checkout.
2. A Debian 12 root file system is bootstrapped with debootstrap (the base is cached in the lab cache, so later
   runs start from the same clean system in seconds), given the host's package sources, and a stand-in for
   ``systemctl`` that runs the unit files by hand (``siplab.drill_units``): systemd cannot run in it.
3. Every ``sh`` block of docs/install.md runs in it, in order and unchanged, but for the values block.
4. A person's first call: a SIP phone (baresip) registers as ``seat001`` with its password from
   ``phones.csv``; the administrator logs in through nginx and TLS, changes the temporary password, adds a
   call-taker, who changes his own and logs the seat in; a caller on the carrier's address dials 110; the
   seat answers and talks, then hangs up; the ticket, its steps and its recording are read through the web
   (and the recording played); the wallboard's WebSocket answers through the proxy; ``journal verify``.
5. ``jiejing backup``; a second clean root with sections 1-2 of the guide (packages, backend) and the center's
   ``/etc/jiejing`` but its journal key; ``jiejing restore`` (the store, recordings, key and anchors);
   ``journal verify`` there.

Needs root, debootstrap, sipp and baresip, the lab down (the installed center takes the usual ports), run under
the lab's lock. Prints a report (markdown) on stdout; the roots are removed unless ``--keep``.

    .venv/bin/python -m siplab.drill_install [--work /var/tmp/jiejing-install] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from siplab import asterisk, sipp, storm
from siplab.softphone import Softphone
from telephony.asterisk_host import host_mirror

REPO = Path(__file__).resolve().parent.parent
GUIDE = REPO / "docs" / "install.md"
WEB_NAME = "110.drill.test"
CALLER = "13912345678"
ADMIN_FIRST, ADMIN_OWN = "first-log-in-drill", "admin-own-secret-1"
TAKER_FIRST, TAKER_OWN = "taker-temporary-1", "taker-own-secret-1"
# A root shell's environment inside a root file system (nothing of the drill's own).
ROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8", "TERM": "dumb"}
VALUES = """\
CARRIER_ADDR=127.0.0.1
CARRIER_OUT=sip:127.0.0.1:5090
SEATS=2
WEB_NAME={web}
WHEEL=/root/{wheel}
CITY=/root/city.json
ADMIN_PASSWORD={admin}
"""


class DrillError(RuntimeError):
    pass


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # step, seconds, result
    ok: bool = True

    def add(self, step: str, seconds: float, result: str, ok: bool = True) -> None:
        self.rows.append((step, f"{seconds:.1f}", result))
        self.ok = self.ok and ok
        print(f"drill: {step}: {result} ({seconds:.1f} s)", file=sys.stderr, flush=True)


def sh(argv: list[str], *, timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, text=True, capture_output=True, timeout=timeout, **kw)
    if check and res.returncode != 0:
        raise DrillError(f"{' '.join(argv[:6])} exited {res.returncode}:\n{res.stdout[-3000:]}{res.stderr[-3000:]}")
    return res


def guide_blocks(text: str) -> list[str]:
    """The guide's ``sh`` blocks, in order."""
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M)


def guide_script(blocks: list[str], values: str, *, upto: int | None = None) -> str:
    """One bash script of the blocks (the values block replaced), each announced with its number and time."""
    out = ["set -euo pipefail", "export DEBIAN_FRONTEND=noninteractive"]
    for i, block in enumerate(blocks[:upto]):
        if block.startswith("# This center's values"):
            block = values
        out.append(f'echo "### block {i} $(date +%s.%N)" >&2')
        out.append(block)
    out.append('echo "### done $(date +%s.%N)" >&2')
    return "\n".join(out) + "\n"


# -- the wheel and the root file systems ---------------------------------------------------------------------

def build_wheel(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    src = dest / "src"
    for name in ("core", "telephony", "sip-lab", "dialplan"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "lab"
                                                                                if name == "dialplan" else "-"))
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    shutil.copy2(REPO / "README.md", src / "README.md")
    sh([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dest),
        str(src)], cwd=dest)
    wheels = sorted(dest.glob("jiejing-*.whl"))
    if not wheels:
        raise DrillError("no wheel was built")
    return wheels[-1]


def base_tarball(cache: Path) -> Path:
    """A clean Debian 12 root (debootstrap's default variant: a server's required and important packages)."""
    tar = cache / "debian12-base.tar"
    if tar.exists():
        return tar
    tmp = cache / "debian12-base.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    sh(["debootstrap", "bookworm", str(tmp), host_mirror()], timeout=1800)
    with tarfile.open(cache / "debian12-base.tar.tmp", "w") as out:
        out.add(tmp, arcname=".")
    os.replace(cache / "debian12-base.tar.tmp", tar)
    shutil.rmtree(tmp)
    return tar


def make_root(tar: Path, root: Path) -> None:
    if root.exists():
        teardown(root)
        shutil.rmtree(root)
    root.mkdir(parents=True)
    sh(["tar", "-xpf", str(tar), "-C", str(root)], timeout=600)
    # The host's network and package sources: what any machine of the center's network has.
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    shutil.copyfile("/etc/hosts", root / "etc/hosts")
    for conf in Path("/etc/apt/apt.conf.d").glob("*"):
        if conf.is_file():
            shutil.copyfile(conf, root / "etc/apt/apt.conf.d" / conf.name)
    # The network's own certificate authorities (ca-certificates adds them when the guide installs it), and
    # pip told to use the system's store, as the host's pip is.
    local_ca = root / "usr/local/share/ca-certificates"
    local_ca.mkdir(parents=True, exist_ok=True)
    for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copyfile(cert, local_ca / cert.name)
    (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    # Packages must not start services at install (a root file system has no init to own them).
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    (root / "usr/local/lib/drill").mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(__file__).with_name("drill_units.py"), root / "usr/local/lib/drill/units.py")
    shim = root / "usr/local/sbin/systemctl"
    shim.write_text("#!/bin/sh\nexec python3 /usr/local/lib/drill/units.py \"$@\"\n")
    shim.chmod(0o755)
    for sub, how in (("proc", ["-t", "proc", "proc"]), ("sys", ["-t", "sysfs", "sys"]), ("dev", ["--bind", "/dev"]),
                     ("dev/pts", ["--bind", "/dev/pts"])):
        sh(["mount", *how, str(root / sub)])


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def teardown(root: Path) -> None:
    """Nothing of the root left running or mounted."""
    prefix = str(root.resolve())
    for _ in range(3):
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.readlink(entry / "root").startswith(prefix):
                        pids.append(int(entry.name))
                except OSError:
                    pass
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        sh(["umount", "-l", point], check=False)


def in_root(root: Path, *argv: str, timeout: float = 600, check: bool = True, input: str | None = None):
    return sh(["chroot", str(root), *argv], timeout=timeout, check=check, env=ROOT_ENV, input=input)


def run_guide(root: Path, script: str, log: Path) -> dict[int, float]:
    """Run the script in the root; the seconds each block took."""
    (root / "root/install.sh").write_text(script)
    with open(log, "w") as out:
        proc = subprocess.run(["chroot", str(root), "/bin/bash", "-x", "/root/install.sh"], env=ROOT_ENV,
                              stdout=out, stderr=subprocess.STDOUT, timeout=2400)
    text = log.read_text(errors="replace")
    marks = [(m.group(1), float(m.group(2))) for m in re.finditer(r"^### (block \d+|done) ([\d.]+)$", text, re.M)]
    if proc.returncode != 0:
        raise DrillError(f"the guide failed (exit {proc.returncode}) after {marks[-1][0] if marks else 'start'}; "
                         f"its output's end:\n{text[-4000:]}")
    return {int(a.split()[1]): round(tb - ta, 1) for (a, ta), (_, tb) in zip(marks, marks[1:])}


# -- a person's first call -------------------------------------------------------------------------------------

def ports_free() -> None:
    for port in (5060, 5038, 8088, 8110, 4573, 4574, 443, 80):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise DrillError(f"port {port} is in use: the installed center takes the usual ports (lab down?)")


class Web:
    """The operations web through nginx and TLS, as a browser reaches it by name."""

    def __init__(self, root: Path) -> None:
        self.ssl = ssl.create_default_context(cafile=str(root / "etc/jiejing/tls/center.crt"))
        self.http: aiohttp.ClientSession | None = None
        self.base = "https://127.0.0.1"

    async def __aenter__(self) -> Web:
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.close()

    async def call(self, method: str, path: str, token: str | None = None, **kw):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.base + path, ssl=self.ssl, server_hostname=WEB_NAME,
                                     headers={**headers, "Host": WEB_NAME}, **kw) as r:
            body = await r.read()
            return r.status, r.headers.get("Content-Type", ""), body

    async def json(self, method: str, path: str, token: str | None = None, expect: int = 200, **kw):
        status, _, body = await self.call(method, path, token, **kw)
        if status != expect:
            raise DrillError(f"{method} {path}: {status} {body[:300]!r}")
        return json.loads(body) if body else None

    async def login(self, user: str, password: str) -> str:
        return (await self.json("POST", "/api/login", json={"username": user, "password": password}))["token"]


async def first_call(root: Path, work: Path, report: Report) -> str:
    phones = {row["name"]: row["password"] for row in csv.DictReader(io.StringIO(
        (root / "etc/jiejing/site/phones.csv").read_text()))}
    async with Web(root) as web:
        t0 = time.monotonic()
        token = await web.login("admin", ADMIN_FIRST)
        status, _, _ = await web.call("GET", "/api/tickets", token)
        if status != 403:
            raise DrillError(f"a temporary password reached the tickets: {status}")
        await web.json("POST", "/api/password", token, json={"current": ADMIN_FIRST, "new": ADMIN_OWN})
        admin = await web.login("admin", ADMIN_OWN)
        await web.json("POST", "/api/users", admin, expect=201,
                       json={"username": "taker01", "password": TAKER_FIRST, "role": "call_taker"})
        taker = await web.login("taker01", TAKER_FIRST)
        await web.json("POST", "/api/password", taker, json={"current": TAKER_FIRST, "new": TAKER_OWN})
        taker = await web.login("taker01", TAKER_OWN)
        report.add("people through TLS", time.monotonic() - t0,
                   "admin's temporary password refused for work (403), changed; call-taker added, own password")

        phone = Softphone("seat001", phones["seat001"], sip_port=5095, ctrl_port=4444)
        t0 = time.monotonic()
        await phone.start()  # returns once registered
        try:
            await web.json("POST", "/api/seats/seat001/login", taker, json={"operator": "taker01"})
            report.add("seat phone", time.monotonic() - t0,
                       "seat001 registered with its password from phones.csv; call-taker logged the seat in")

            run = work / "call"
            (run / "callers.csv").parent.mkdir(parents=True, exist_ok=True)
            storm.write_injection(run / "callers.csv", [(CALLER, "Drill caller")])
            scenario = sipp.render("caller.xml", run, PATIENCE_MS=30000, AUDIO=sipp.audio_pcap(run))
            t0 = time.monotonic()
            caller = asyncio.create_task(storm.drive_calls(run, scenario, 1, 1, timeout=60))
            await phone.wait_for("CALL_ESTABLISHED", 20)
            answered = time.monotonic() - t0
            await asyncio.sleep(4)  # they talk
            await phone.command("hangup")
            await phone.wait_for("CALL_CLOSED", 10)
            stats = await caller
            ok = storm._int(stats, "SuccessfulCall(C)") == 1
            report.add("the call", time.monotonic() - t0,
                       f"caller {CALLER} dialled 110 on the carrier's address; seat001 answered after "
                       f"{answered:.2f} s, talked 4 s, hung up; SIPp: {storm._int(stats, 'SuccessfulCall(C)')} "
                       "successful call", ok)
        finally:
            await phone.stop()

        t0 = time.monotonic()
        deadline = time.monotonic() + 30
        while True:
            rows = (await web.json("GET", "/api/tickets?limit=5", admin))["tickets"]
            ticket = next((t for t in rows if t["caller_id"] == CALLER), None)
            if ticket and ticket.get("state") == "ended" and ticket.get("recordings"):
                break
            if time.monotonic() > deadline:
                raise DrillError(f"no ended ticket with a recording for {CALLER} within 30 s: {rows!r:.800}")
            await asyncio.sleep(1)
        number = ticket["number"]
        full = await web.json("GET", f"/api/tickets/{number}", admin)
        steps = [s["step"] for s in full["steps"]]
        rec = ticket["recordings"][0]
        status, ctype, audio = await web.call("GET", f"/api/tickets/{number}/recordings/{rec['sha256']}", admin)
        on_disk = Path(str(root) + rec["path"]) if rec["path"].startswith("/") else None
        ok = (ticket.get("seat") == "seat001" and "answered" in steps and status == 200
              and audio[:4] == b"RIFF" and on_disk is not None and on_disk.is_file())
        report.add("ticket and recording", time.monotonic() - t0,
                   f"{number}: seat {ticket.get('seat')}, steps {' → '.join(steps)}; recording "
                   f"{rec['path']} ({len(audio)} bytes, played through the web: {status} {ctype})", ok)

        t0 = time.monotonic()
        async with web.http.ws_connect("wss://127.0.0.1/api/wallboard/ws", ssl=web.ssl,
                                       server_hostname=WEB_NAME, headers={"Host": WEB_NAME},
                                       protocols=(f"jiejing.bearer.{admin}",)) as ws:
            msg = await ws.receive(timeout=10)
        figures = json.loads(msg.data) if msg.type == aiohttp.WSMsgType.TEXT else None
        report.add("live stream through the proxy", time.monotonic() - t0,
                   f"wallboard WebSocket over wss: {'figures received' if figures else msg.type}", bool(figures))
    return number


def journal_verify(root: Path, user: str | None = "jiejing") -> str:
    argv = ["runuser", "-u", user, "--"] if user else []
    res = in_root(root, *argv, "/opt/jiejing/bin/jiejing", "journal", "verify", check=False)
    return f"exit {res.returncode}: {(res.stdout.strip() or res.stderr.strip()).splitlines()[-1][:200]}"


# -- the drill -------------------------------------------------------------------------------------------------

async def drill(work: Path, cache: Path, keep: bool) -> Report:
    report = Report()
    if os.geteuid() != 0:
        raise DrillError("run as root (debootstrap, chroot, mount)")
    ports_free()
    work.mkdir(parents=True, exist_ok=True)
    root, root2 = work / "host", work / "empty-host"

    t0 = time.monotonic()
    wheel = build_wheel(work / "dist")
    report.add("wheel", time.monotonic() - t0, f"{wheel.name}, {wheel.stat().st_size // 1024} KiB")

    t0 = time.monotonic()
    fresh = not (cache / "debian12-base.tar").exists()
    tar = base_tarball(cache)
    make_root(tar, root)
    release = (root / "etc/debian_version").read_text().strip()
    report.add("clean Debian 12 root", time.monotonic() - t0,
               f"Debian {release}, debootstrap default variant ({'bootstrapped now' if fresh else 'cached base'})")
    try:
        shutil.copy2(wheel, root / "root" / wheel.name)
        city = json.loads((REPO / "sip-lab/city.json").read_text())
        city.pop("lab", None)  # the drill's city: the lab's stations and officers, not marked as the lab
        (root / "root/city.json").write_text(json.dumps(city, ensure_ascii=False))
        blocks = guide_blocks(GUIDE.read_text())
        values = VALUES.format(web=WEB_NAME, wheel=wheel.name, admin=ADMIN_FIRST)
        t0 = time.monotonic()
        times = run_guide(root, guide_script(blocks, values), work / "guide.log")
        report.add("the guide", time.monotonic() - t0,
                   f"{len(blocks)} blocks run unchanged but the values; seconds per block: "
                   + ", ".join(f"{i}: {s:g}" for i, s in sorted(times.items())))
        health = json.loads(in_root(root, "curl", "-s", "--cacert", "/etc/jiejing/tls/center.crt", "--resolve",
                                    f"{WEB_NAME}:443:127.0.0.1", f"https://{WEB_NAME}/healthz").stdout)
        report.add("healthz through TLS", 0, f"{health['status']}: " + ", ".join(
            f"{k} {'ok' if v.get('ok') is not False else 'NOT ok'}" for k, v in health["checks"].items()),
            health["status"] == "ok")
        units = in_root(root, "systemctl", "status", "jiejing-asterisk", "jiejing", "nginx").stdout.strip()
        report.add("services", 0, "; ".join(units.splitlines()))

        number = await first_call(root, work, report)

        t0 = time.monotonic()
        report.add("journal verify", time.monotonic() - t0, journal_verify(root), True)
        log = (root / "var/log/drill-units/jiejing.service.log").read_text(errors="replace")
        dated = re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} INFO ", log, re.M)
        report.add("backend log", 0, f"{len(log.splitlines())} lines, dated: {bool(dated)}", bool(dated))

        t0 = time.monotonic()
        in_root(root, "runuser", "-u", "jiejing", "--", "/opt/jiejing/bin/jiejing", "backup",
                "/var/lib/jiejing/backup-drill")
        manifest = json.loads((root / "var/lib/jiejing/backup-drill/manifest.json").read_text())
        report.add("backup", time.monotonic() - t0, f"{len(manifest.get('files', []))} files in the manifest")

        t0 = time.monotonic()
        make_root(tar, root2)
        shutil.copy2(wheel, root2 / "root" / wheel.name)
        run_guide(root2, guide_script(blocks, values, upto=3), work / "guide-empty-host.log")
        # The host's configuration comes from wherever the center keeps it (its settings, site secrets, city,
        # rules); the journal's key comes back from the backup.
        shutil.rmtree(root2 / "etc/jiejing")
        shutil.copytree(root / "etc/jiejing", root2 / "etc/jiejing", symlinks=True)
        (root2 / "etc/jiejing/journal.key").unlink()
        shutil.copytree(root / "var/lib/jiejing/backup-drill", root2 / "root/backup-drill")
        restored = in_root(root2, "/opt/jiejing/bin/jiejing", "restore", "/root/backup-drill", check=False)
        verify = journal_verify(root2, user=None)
        report.add("restore on an empty host", time.monotonic() - t0,
                   f"packages and backend per the guide, the center's /etc/jiejing without the journal key; restore "
                   f"exit {restored.returncode}; "
                   f"journal verify {verify}", restored.returncode == 0 and verify.startswith("exit 0"))
        report.add("ticket", 0, number)
    finally:
        for r in (root, root2):
            if (r / "usr/local/sbin/systemctl").exists() and (r / "etc/systemd/system/jiejing.service").exists():
                in_root(r, "systemctl", "stop", "jiejing", "jiejing-asterisk", "nginx", check=False, timeout=120)
            if r.exists():
                teardown(r)
                if not keep:
                    shutil.rmtree(r, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/var/tmp/jiejing-install", help="working folder (roots, logs)")
    parser.add_argument("--keep", action="store_true", help="keep the root file systems afterwards")
    args = parser.parse_args(argv)
    cache = asterisk.DEFAULT_CACHE
    cache.mkdir(parents=True, exist_ok=True)
    try:
        report = asyncio.run(drill(Path(args.work), cache, args.keep))
    except DrillError as exc:
        print(f"drill: FAILED: {exc}", file=sys.stderr)
        return 1
    print("| step | s | result |\n|---|---|---|")
    for step, seconds, result in report.rows:
        print(f"| {step} | {seconds} | {result} |")
    print(f"\n{'PASSED' if report.ok else 'FAILED'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
