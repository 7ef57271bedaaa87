"""Asterisk 22 on a Debian 12 host: a Debian sid root with the distribution's Asterisk, run as a service.

Debian 12 has no Asterisk package and sid's needs a newer C library, so Asterisk runs in a Debian sid root
(``chroot``) that this module builds with debootstrap — the method the lab has used since the start, made a
supported service. Asterisk's files keep their usual places inside the root (``/srv/asterisk`` by default):
its configuration folder ``<root>/etc/asterisk`` (which the install guide links to ``/etc/asterisk``), the
recordings under ``<root>/var/spool/asterisk/monitor``, the channel event log under
``<root>/var/log/asterisk/cel-custom``. The backend reads those as host paths; the dialplan names them as
Asterisk sees them.

``install`` builds the root once and replaces the package's sample configuration (dozens of files that would
otherwise be loaded by ``autoload``) with an ``asterisk.conf`` that runs Asterisk as its own user.
``prepare`` is the service's start step: it mounts ``/proc`` in the root and gives it the host's name
resolution. Both are safe to run again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

DEFAULT_ROOT = Path("/srv/asterisk")
READY_MARK = ".jiejing-ready"
MONITOR = "var/spool/asterisk/monitor"
CEL_DIR = "var/log/asterisk/cel-custom"

def asterisk_conf(etc: str = "/etc/asterisk", *, run_as: str | None = "asterisk",
                  header: str = "Written by `jiejing asterisk install`") -> str:
    """asterisk.conf for Asterisk in its Debian root: its files in their usual places, ``etc`` its configuration
    folder; with ``run_as`` it drops root for that user and group."""
    user = f"runuser = {run_as}\nrungroup = {run_as}\n" if run_as else "; runs as root: no user to switch to\n"
    return f"""; {header}.
[directories]
astetcdir => {etc}
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
{user}"""


ASTERISK_CONF = asterisk_conf()


class AsteriskHostError(RuntimeError):
    """The Asterisk root cannot be built or prepared: the message says why and what to do."""


def _run(cmd: list[str], *, check: bool = True, timeout: float | None = 1200, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, timeout=timeout, text=True, capture_output=True, **kw)


def host_mirror() -> str:
    """The Debian mirror the host's apt already uses (the root takes sid from the same archive)."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("URIs:") and "/debian" in line and "security" not in line:
                return line.split(":", 1)[1].strip().split()[0]
            if line.startswith("deb ") and "/debian" in line and "security" not in line:
                return line.split()[1]
    raise AsteriskHostError("no Debian mirror found in /etc/apt/sources.list(.d): the sid root needs the host's "
                            "archive")


def build_root(target: Path, *, log: Callable[[str], None] = print) -> str:
    """Debootstrap Debian sid into ``target`` (which must not exist) and install Asterisk there.

    Returns ``dpkg-query -W asterisk``'s line (package and version)."""
    if os.geteuid() != 0:
        raise AsteriskHostError("building the Asterisk root needs root (debootstrap and chroot)")
    if shutil.which("debootstrap") is None:
        raise AsteriskHostError("debootstrap is missing: apt-get install debootstrap")
    mirror = host_mirror()
    log(f"asterisk: building a Debian sid root in {target} from {mirror} (a minute or two, once)")
    res = _run(["debootstrap", "--variant=minbase", "sid", str(target), mirror], check=False)
    if res.returncode != 0:
        raise AsteriskHostError(f"debootstrap of Debian sid failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    # The archive may serve a sid Release file past its Valid-Until date; apt would then refuse every package.
    (target / "etc/apt/apt.conf.d/99jiejing").write_text('Acquire::Check-Valid-Until "false";\n')
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    res = _run(["chroot", str(target), "apt-get", "update", "-qq"], check=False, env=env)
    if res.returncode != 0:
        raise AsteriskHostError(f"apt-get update in the sid root failed:\n{res.stderr[-2000:]}")
    res = _run(["chroot", str(target), "apt-get", "install", "-y", "-qq", "--no-install-recommends", "asterisk"],
               check=False, env=env)
    if res.returncode != 0 or not (target / "usr/sbin/asterisk").exists():
        raise AsteriskHostError(
            "installing asterisk in the Debian sid root failed. sid is rolling: if the package disappeared from "
            f"sid, Asterisk cannot be installed this way any more.\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
    return _run(["chroot", str(target), "dpkg-query", "-W", "asterisk"]).stdout.strip()


def _ids(root: Path, user: str = "asterisk") -> tuple[int, int]:
    """The uid and gid of ``user`` inside the root (the host may not know the name)."""
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == user:
            return int(parts[2]), int(parts[3])
    raise AsteriskHostError(f"no user {user!r} in {root}/etc/passwd: is Asterisk installed there?")


def host_group(root: Path, name: str = "asterisk") -> tuple[str, int]:
    """The host's group for the root's Asterisk group, with the same gid in both: the backend's user joins it to
    read what Asterisk writes. The root's gid is kept when the host has it free; when the host already uses it
    for another group (a Debian host's gid 101 may be ``crontab``), the root's group takes the gid of a new host
    group and the root's files follow: membership must never mean another group's rights."""
    import grp

    gid = _ids(root)[1]
    try:
        existing = grp.getgrnam(name)
    except KeyError:
        existing = None
    if existing is None:
        try:
            grp.getgrgid(gid)
        except KeyError:
            free = True
        else:
            free = False
        res = _run(["groupadd", "--system", *(["--gid", str(gid)] if free else []), name], check=False)
        if res.returncode != 0:
            raise AsteriskHostError(f"cannot make the group {name} on this host: {res.stderr.strip()}")
        existing = grp.getgrnam(name)
    target = existing.gr_gid
    if target != gid:
        res = _run(["chroot", str(root), "groupmod", "--gid", str(target), name], check=False)
        if res.returncode != 0:
            raise AsteriskHostError(f"cannot give {name} the gid {target} in {root}: {res.stderr.strip()}")
        _run(["find", str(root), "-xdev", "-gid", str(gid), "-exec", "chgrp", "--no-dereference", str(target), "{}",
              "+"])
    return name, target


def install(root: Path = DEFAULT_ROOT, *, member: str | None = None,
            log: Callable[[str], None] = print) -> dict[str, str | int]:
    """Build the root if it is missing and set it up as jiejing's Asterisk; what was done, for the log.

    ``member`` (the backend's user) joins the host group of Asterisk's gid, so it reads the recordings and the
    channel event log and can remove expired recordings."""
    root = Path(root)
    if not ((root / READY_MARK).exists() and (root / "usr/sbin/asterisk").exists()):
        tmp = root.with_name(root.name + ".tmp")
        if tmp.exists():
            unmount(tmp)
            shutil.rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        version = build_root(tmp, log=log)
        etc = tmp / "etc/asterisk"
        # The package's samples would be loaded by autoload: keep them aside, start from an empty folder.
        if etc.exists():
            etc.rename(tmp / "etc/asterisk.dist")
        etc.mkdir()
        (etc / "asterisk.conf").write_text(ASTERISK_CONF)
        (tmp / READY_MARK).write_text(version + "\n")
        tmp.rename(root)
        log(f"asterisk: {version} installed in {root}")
    group, _ = host_group(root)
    uid, gid = _ids(root)
    for sub, mode in ((MONITOR, 0o2770), (CEL_DIR, 0o2750), ("var/run/asterisk", 0o755),
                      ("var/lib/asterisk", 0o750), ("var/log/asterisk", 0o2750), ("var/spool/asterisk", 0o750)):
        path = root / sub
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, mode)
    # The configuration folder: the admin commands write it as root, Asterisk reads it.
    etc = root / "etc/asterisk"
    os.chown(etc, 0, gid)
    os.chmod(etc, 0o2750)
    if member:
        res = _run(["usermod", "--append", "--groups", group, member], check=False)
        if res.returncode != 0:
            raise AsteriskHostError(f"cannot add {member} to the group {group}: {res.stderr.strip()}")
    return {"root": str(root), "asterisk": (root / READY_MARK).read_text().strip().replace("\t", " "),
            "uid": uid, "gid": gid, "group": group}


def _mounted(target: Path) -> bool:
    target_s = str(target.resolve())
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target_s for line in f)


def prepare(root: Path = DEFAULT_ROOT) -> None:
    """The service's start step: ``/proc`` mounted in the root, the host's name resolution copied in."""
    root = Path(root)
    if not (root / "usr/sbin/asterisk").exists():
        raise AsteriskHostError(f"no Asterisk in {root}: run `jiejing asterisk install --root {root}` first")
    if not _mounted(root / "proc"):
        _run(["mount", "-t", "proc", "proc", str(root / "proc")])
    for name in ("hosts", "resolv.conf"):
        src = Path("/etc") / name
        if src.exists():
            shutil.copyfile(src, root / "etc" / name)


def unmount(root: Path = DEFAULT_ROOT) -> None:
    """Undo ``prepare`` (after Asterisk stopped); nothing mounted is left."""
    target = Path(root) / "proc"
    if target.exists() and _mounted(target):
        _run(["umount", "-l", str(target)], check=False)
