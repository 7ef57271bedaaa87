"""A stand-in for ``systemctl`` inside a root file system, where systemd cannot run (the install drill).

It runs the same unit files by hand: ``User=``/``Group=`` (with the user's groups), ``Environment=``,
``EnvironmentFile=``, ``WorkingDirectory=``, ``ExecStartPre=``, ``ExecStart=``, ``ExecStop=``,
``ExecStopPost=``, ``ExecReload=``, ``Type=simple|forking`` with ``PIDFile=``; a leading ``-`` lets a command
fail. It does not restart a service that dies (``Restart=``), and ignores the sandboxing lines
(``ProtectSystem=`` …) and ordering (``After=``): the guide starts the services in order itself.
Output of each service goes to ``/var/log/drill-units/<unit>.log``. Standard library only: it runs on the
root's own Python, copied in by ``siplab.drill_install``; it is never part of a center.

    systemctl daemon-reload | enable [--now] UNIT… | disable UNIT… | start|stop|restart|reload UNIT…
    systemctl is-active UNIT | status UNIT…
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"), Path("/usr/lib/systemd/system"))
STATE = Path("/run/drill-units")
LOGS = Path("/var/log/drill-units")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class UnitError(Exception):
    pass


def unit_name(name: str) -> str:
    return name if "." in name else name + ".service"


def parse(name: str) -> dict[str, list[str]]:
    for folder in UNIT_DIRS:
        path = folder / name
        if path.exists():
            break
    else:
        raise UnitError(f"Unit {name} not found.")
    service: dict[str, list[str]] = {}
    section = ""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service" and "=" in line:
            key, value = line.split("=", 1)
            service.setdefault(key.strip(), []).append(value.strip())
    return service


def _one(service: dict[str, list[str]], key: str, default: str = "") -> str:
    return service.get(key, [default])[-1]


def environment(service: dict[str, list[str]]) -> dict[str, str]:
    env = {"PATH": PATH, "LANG": "C.UTF-8"}
    for item in service.get("EnvironmentFile", []):
        optional = item.startswith("-")
        path = Path(item.lstrip("-"))
        if not path.exists():
            if optional:
                continue
            raise UnitError(f"EnvironmentFile {path} is missing")
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip().strip('"')
    for item in service.get("Environment", []):
        for word in shlex.split(item):
            key, _, value = word.partition("=")
            env[key] = value
    user = _one(service, "User")
    if user:
        env.update(USER=user, LOGNAME=user, HOME=_home(user))
    return env


def _home(user: str) -> str:
    for line in Path("/etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == user:
            return parts[5]
    raise UnitError(f"User {user} does not exist")


def command(service: dict[str, list[str]], line: str, mainpid: int | None = None) -> tuple[list[str], bool]:
    optional = False
    while line and line[0] in "-@+!:":
        optional = optional or line[0] == "-"
        line = line[1:]
    if mainpid is not None:
        line = line.replace("$MAINPID", str(mainpid)).replace("${MAINPID}", str(mainpid))
    argv = shlex.split(line)
    user = _one(service, "User")
    if user:
        group = _one(service, "Group", user)
        argv = ["setpriv", f"--reuid={user}", f"--regid={group}", "--init-groups", "--", *argv]
    return argv, optional


def run(name: str, service: dict[str, list[str]], key: str, mainpid: int | None = None) -> None:
    for line in service.get(key, []):
        argv, optional = command(service, line, mainpid)
        with open(LOGS / f"{name}.log", "ab") as log:
            rc = subprocess.call(argv, env=environment(service), cwd=_one(service, "WorkingDirectory", "/"),
                                 stdout=log, stderr=subprocess.STDOUT, timeout=120)
        if rc != 0 and not optional:
            raise UnitError(f"{name}: {key} {line!r} exited {rc} (see {LOGS / name}.log)")


def pid_of(name: str, service: dict[str, list[str]]) -> int | None:
    pidfile = _one(service, "PIDFile")
    path = Path(pidfile) if pidfile else STATE / f"{name}.pid"
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    try:  # a zombie is not running
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return None
    except OSError:
        pass
    return pid


def start(name: str) -> None:
    service = parse(name)
    if pid_of(name, service):
        return
    run(name, service, "ExecStartPre")
    argv, _ = command(service, _one(service, "ExecStart"))
    kind = _one(service, "Type", "simple")
    with open(LOGS / f"{name}.log", "ab") as log:
        if kind == "forking":
            rc = subprocess.call(argv, env=environment(service), cwd=_one(service, "WorkingDirectory", "/"),
                                 stdout=log, stderr=subprocess.STDOUT, timeout=120)
            if rc != 0:
                raise UnitError(f"{name}: ExecStart exited {rc} (see {LOGS / name}.log)")
        else:
            proc = subprocess.Popen(argv, env=environment(service), cwd=_one(service, "WorkingDirectory", "/"),
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            (STATE / f"{name}.pid").write_text(str(proc.pid))
            time.sleep(1.0)
            if proc.poll() is not None:
                raise UnitError(f"{name}: exited {proc.returncode} at start (see {LOGS / name}.log)")
    run(name, service, "ExecStartPost")


def stop(name: str) -> None:
    service = parse(name)
    pid = pid_of(name, service)
    if pid is None:
        return
    run(name, service, "ExecStop", pid)
    deadline = time.monotonic() + float(_one(service, "TimeoutStopSec", "20").rstrip("s"))
    sent = bool(service.get("ExecStop"))
    while pid_of(name, service) == pid and time.monotonic() < deadline:
        if not sent:
            os.kill(pid, signal.SIGTERM)
            sent = True
        time.sleep(0.2)
    if pid_of(name, service) == pid:
        os.kill(pid, signal.SIGKILL)
    run(name, service, "ExecStopPost")


def reload(name: str) -> None:
    service = parse(name)
    pid = pid_of(name, service)
    if pid is None:
        raise UnitError(f"{name} is not active, cannot reload.")
    if service.get("ExecReload"):
        run(name, service, "ExecReload", pid)
    else:
        os.kill(pid, signal.SIGHUP)


def main(argv: list[str]) -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    args = [a for a in argv if not a.startswith("-")]
    now = "--now" in argv
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    verb, units = args[0], [unit_name(u) for u in args[1:]]
    try:
        if verb in ("daemon-reload", "disable"):
            return 0
        if verb == "enable":
            for u in units:
                parse(u)
                if now:
                    start(u)
        elif verb == "start":
            for u in units:
                start(u)
        elif verb == "stop":
            for u in reversed(units):
                stop(u)
        elif verb == "restart":
            for u in units:
                stop(u)
                start(u)
        elif verb == "reload":
            for u in units:
                reload(u)
        elif verb == "is-active":
            return 0 if all(pid_of(u, parse(u)) for u in units) else 3
        elif verb == "status":
            for u in units:
                pid = pid_of(u, parse(u))
                print(f"{u}: {'active (running), pid ' + str(pid) if pid else 'inactive'}")
        else:
            print(f"drill systemctl: {verb} is not supported", file=sys.stderr)
            return 2
    except UnitError as exc:
        print(f"systemctl: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
