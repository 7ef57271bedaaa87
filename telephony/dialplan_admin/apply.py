"""`jiejing dialplan diff|apply|rollback|history`: change the running Asterisk safely.

apply = check → keep the live files as a version → copy the new files into
Asterisk's live configuration → reload only the modules whose files changed →
read back over AMI what Asterisk now runs and compare with what we meant →
on any difference or error put the previous files back, reload again, and say
so. Reloading pbx_config, app_queue or res_pjsip does not cut calls in
progress: a channel keeps executing the priorities it already has.
"""

from __future__ import annotations

import asyncio
import fnmatch
import getpass
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from telephony.dialplan_admin import check as checking
from telephony.dialplan_admin import model
from telephony.dialplan_admin.running import (
    PriorityLine,
    QueueState,
    RunningState,
    read_running,
)
from telephony.dialplan_admin.versions import VersionStore, digest_files

# Which module reads which file (included files follow their parent's name).
MODULE_BY_FILE = (
    ("extensions*.conf", "pbx_config"),
    ("queues*.conf", "app_queue"),
    ("pjsip*.conf", "res_pjsip"),
    ("confbridge*.conf", "app_confbridge"),
    ("manager*.conf", "manager"),
    ("rtp.conf", "res_rtp_asterisk"),
    ("logger.conf", "logger"),
    ("features.conf", "features"),
    ("geolocation.conf", "res_geolocation"),
    ("http.conf", "http"),
)
# Files Asterisk reads only at start: applying them needs a restart.
RESTART_ONLY = ("asterisk.conf", "modules.conf")


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write each file into ``folder`` through a temporary name and a rename: a reader sees the old file or
    the new one, never half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = folder / f".{name}.jiejing-tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)


def module_for(filename: str) -> str | None:
    for pattern, module in MODULE_BY_FILE:
        if fnmatch.fnmatch(filename, pattern):
            return module
    return None


def who() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


@dataclass
class Desired:
    dialplan: dict[str, dict[str, tuple[PriorityLine, ...]]]
    queues: dict[str, QueueState]
    globals: dict[str, str] = field(default_factory=dict)


def desired_from(config: model.Config) -> Desired:
    plan = {
        ctx.name: {
            ext.name: tuple(PriorityLine(p.number, p.label, p.app, p.data.strip()) for p in ext.priorities)
            for ext in ctx.extensions.values()
        }
        for ctx in config.contexts.values()
        if ctx.name not in ("general", "globals")
    }
    queues = {
        q.name: QueueState(strategy=q.options.get("strategy", "ringall"),
                           members={m.interface for m in q.members})
        for q in config.queues.values()
        if q.name != "general"
    }
    return Desired(plan, queues, {name: e.value.strip() for name, e in config.globals.items()})


def differences(desired: Desired, running: RunningState) -> list[str]:
    """Human-readable lines: what running Asterisk would change to reach ``desired``."""
    out: list[str] = []
    for ctx in sorted(set(desired.dialplan) | set(running.dialplan)):
        want, have = desired.dialplan.get(ctx), running.dialplan.get(ctx)
        if want is None:
            out.append(f"- context {ctx}")
            continue
        if have is None:
            out.append(f"+ context {ctx} ({len(want)} extensions)")
            continue
        for ext in sorted(set(want) | set(have)):
            w, h = want.get(ext), have.get(ext)
            if w is None:
                out.append(f"- extension {ext}@{ctx}")
            elif h is None:
                out.append(f"+ extension {ext}@{ctx} ({len(w)} priorities)")
            else:
                wm = {p.number: p for p in w}
                hm = {p.number: p for p in h}
                for n in sorted(set(wm) | set(hm)):
                    a, b = wm.get(n), hm.get(n)
                    if a is None:
                        out.append(f"- {ext}@{ctx},{n}: {b.app}({b.data})")
                    elif b is None:
                        out.append(f"+ {ext}@{ctx},{n}: {a.app}({a.data})")
                    elif (a.app.lower(), a.data.strip(), a.label) != (b.app.lower(), b.data.strip(), b.label):
                        out.append(f"~ {ext}@{ctx},{n}: {b.app}({b.data}) -> {a.app}({a.data})")
    for name in sorted(set(desired.queues) | set(running.queues)):
        w, h = desired.queues.get(name), running.queues.get(name)
        if w is None:
            out.append(f"- queue {name}")
        elif h is None:
            out.append(f"+ queue {name} ({len(w.members)} members)")
        else:
            if (w.strategy or "").lower() != (h.strategy or "").lower():
                out.append(f"~ queue {name} strategy: {h.strategy} -> {w.strategy}")
            for m in sorted(w.members - h.members):
                out.append(f"+ queue {name} member {m}")
            for m in sorted(h.members - w.members):
                out.append(f"- queue {name} member {m}")
    for name in sorted(desired.globals):
        want, have = desired.globals[name], running.globals.get(name, desired.globals[name])
        if "$" in want:
            continue  # Asterisk keeps the value with its ${…} substituted: the live file's is compared instead
        if have is None:
            out.append(f"+ global {name} = {want}")
        elif have != want:
            out.append(f"~ global {name}: {have} -> {want}")
    return out


# What Asterisk reports back, and so what `diff` compares with the running Asterisk itself; every other
# option is compared with the live files, which Asterisk loaded at its last reload.
COMPARED_RUNNING = "the dialplan, its globals, each queue's strategy and members"


def file_differences(desired: model.Config, live: model.Config) -> list[str]:
    """Every option ``apply`` would change in the live files, section by section (the dialplan's contexts are
    compared with the running dialplan instead, priority by priority)."""
    out: list[str] = []
    for name in sorted(desired.files):
        want = _options(desired.files[name], name)
        have = _options(live.files[name], name) if name in live.files else None
        if have is None:
            out.append(f"+ file {name} ({len(want)} sections)")
            continue
        for section in sorted(set(want) | set(have)):
            w, h = want.get(section), have.get(section)
            if w is None:
                out.append(f"- {name} [{section}]")
            elif h is None:
                out.append(f"+ {name} [{section}]")
            else:
                out.extend(_option_changes(f"{name} [{section}]", w, h))
    return out


def _options(cf: model.ConfigFile, name: str) -> dict[str, dict[str, list[str]]]:
    """Each section (same-named ones together, templates applied) as option -> values in order."""
    out: dict[str, dict[str, list[str]]] = {}
    for sec in cf.categories():
        if name == model.EXTENSIONS and sec.name.lower() not in ("general", "globals"):
            continue
        options = out.setdefault(sec.name, {})
        for e in sec.all_entries:
            options.setdefault(e.key.lower(), []).append(e.value.strip())
    return out


def _option_changes(where: str, want: dict[str, list[str]], have: dict[str, list[str]]) -> list[str]:
    out = []
    for key in sorted(set(want) | set(have)):
        w, h = want.get(key, []), have.get(key, [])
        if w == h:
            continue
        if len(w) == 1 and len(h) == 1:
            out.append(f"~ {where} {key}: {h[0]} -> {w[0]}")
            continue
        out.extend(f"- {where} {key} = {v}" for v in h if v not in w)
        out.extend(f"+ {where} {key} = {v}" for v in w if v not in h)
        if sorted(w) == sorted(h):
            out.append(f"~ {where} {key}: order changed")
    return out


@dataclass
class Outcome:
    ok: bool
    message: str
    version: int | None = None
    rolled_back: bool = False
    report: str = ""
    changes: list[str] = field(default_factory=list)


def asterisk_console(prefix: tuple[str, ...], timeout: float = 30.0) -> Callable[[str], Awaitable[str]]:
    """``prefix + (command,)`` run as a process (``asterisk -rx``, or the lab's chroot form); its output."""

    async def run(command: str) -> str:
        proc = await asyncio.create_subprocess_exec(*prefix, command, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(prefix)} exited {proc.returncode}: {out.decode(errors='replace')[:200]}")
        return out.decode(errors="replace")

    return run


class DialplanAdmin:
    def __init__(
        self,
        *,
        live_dir: Path,
        sources: list[Path],
        store: VersionStore,
        connect: Callable[[], Awaitable[object]],
        console: Callable[[str], Awaitable[str]] | None = None,
        by: str | None = None,
        log: Callable[[str], None] = print,
        lab: bool = False,
    ) -> None:
        self.lab = lab  # the lab's Asterisk: the shipped AMI secrets are only a warning
        # Runs an Asterisk CLI command through its control socket and returns the output: module reloads
        # go there, so the admin AMI user needs no `config` right (which would also let it rewrite
        # manager.conf with UpdateConfig).
        self.console = console or asterisk_console(("asterisk", "-rx"))
        self.live_dir = live_dir
        self.sources = sources
        self.store = store
        self.connect = connect  # returns a connected AMI client (admin user); closed by us
        self.by = by or who()
        self.log = log

    # -- files -----------------------------------------------------------------
    def source_files(self) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        for folder in self.sources:
            for path in sorted(folder.glob("*.conf")):
                files[path.name] = path.read_bytes()
        return files

    def live_files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.live_dir.glob("*.conf"))}

    def stage(self, files: dict[str, bytes]) -> tuple[model.Config, checking.Report, Path]:
        """The live folder with ``files`` laid over it, parsed and checked."""
        staging = Path(tempfile.mkdtemp(prefix="jiejing-dialplan-"))
        for name, data in {**self.live_files(), **files}.items():
            (staging / name).write_bytes(data)
        config = model.parse_folder(staging)
        return config, checking.check(config, lab=self.lab), staging

    # -- Asterisk ------------------------------------------------------------------
    async def _reload(self, ami, modules: set[str]) -> list[str]:
        failures = []
        for module in sorted(modules):
            try:
                out = await self.console(f"module reload {module}")
            except (OSError, TimeoutError, RuntimeError) as exc:
                failures.append(f"reload of {module} failed: {exc}")
                continue
            if "reloaded successfully" not in out:
                failures.append(f"reload of {module} refused: {out.strip()[:200] or 'no answer'}")
        return failures

    async def diff(self, files: dict[str, bytes] | None = None) -> Outcome:
        """What ``apply`` would change: in the running Asterisk where it reports it (``COMPARED_RUNNING``), and
        option by option against the live files for the rest. ``ok`` is False when there is any difference."""
        config, report, staging = self.stage(self.source_files() if files is None else files)
        shutil.rmtree(staging, ignore_errors=True)
        desired = desired_from(config)
        ami = await self.connect()
        try:
            running = await read_running(ami, desired.globals)
        finally:
            await ami.stop()
        changes = differences(desired, running)
        seen = set(changes)
        changes += [c for c in file_differences(config, model.parse_folder(self.live_dir)) if c not in seen]
        message = (f"{len(changes)} differences" if changes else "no differences") + (
            f"; compared with the running Asterisk: {COMPARED_RUNNING}; every other option with the live files "
            f"in {self.live_dir}, as Asterisk loaded them at its last reload (it does not report them)")
        return Outcome(not changes, message, changes=changes, report=checking.format_report(report))

    async def install(self, files: dict[str, bytes] | None = None, *, note: str = "") -> Outcome:
        """The first deployment, into the configuration folder of an Asterisk that is not running (its AMI
        and modules come from these very files, so there is nothing to reload or read back yet): check, keep
        what was there as a version, write. Refused while Asterisk runs: that is ``apply``'s work, which
        verifies. After the start, ``diff`` proves Asterisk runs what was installed."""
        files = self.source_files() if files is None else files
        config, report, staging = self.stage(files)
        shutil.rmtree(staging, ignore_errors=True)
        text = checking.format_report(report)
        if not report.ok:
            return Outcome(False, "refused: the check found errors; nothing was changed", report=text)
        try:
            await self.console("core show version")
        except (OSError, TimeoutError, RuntimeError):
            pass  # not running (or not reachable): the case install is for
        else:
            return Outcome(False, "refused: Asterisk is running; use `jiejing dialplan apply`, which reloads and "
                                  "verifies what it changes", report=text)
        before = self.live_files()
        changed = {n: d for n, d in files.items() if before.get(n) != d}
        latest = self.store.latest()
        if before and (latest is None or latest.files != digest_files(before)):
            self.store.add(before, by=self.by, status="snapshot", note="live files before an install")
        write_files(self.live_dir, changed)
        meta = self.store.add({**before, **files}, by=self.by, status="installed", note=note,
                              errors=len(report.errors), warnings=len(report.warnings))
        msg = (f"installed as version {meta.version} ({len(changed)} files written) while Asterisk is stopped: "
               "start it, then `jiejing dialplan diff` shows whether it runs them")
        return Outcome(True, msg, version=meta.version, report=text, changes=sorted(changed))

    async def apply(self, files: dict[str, bytes] | None = None, *, note: str = "") -> Outcome:
        files = self.source_files() if files is None else files
        config, report, staging = self.stage(files)
        shutil.rmtree(staging, ignore_errors=True)
        text = checking.format_report(report)
        if not report.ok:
            return Outcome(False, "refused: the check found errors; nothing was changed", report=text)
        before = self.live_files()
        changed = {n: d for n, d in files.items() if before.get(n) != d}
        if not changed:
            return Outcome(True, "nothing to apply: Asterisk already has these files", report=text)
        restart_only = sorted(n for n in changed if n in RESTART_ONLY)
        modules = {m for n in changed if (m := module_for(n))}
        latest = self.store.latest()
        if latest is None or latest.files != digest_files(before):
            # Keep what runs now, so a rollback to it is always possible.
            self.store.add(before, by=self.by, status="snapshot", note="live files before an apply")
        ami = await self.connect()
        try:
            write_files(self.live_dir, changed)
            failures = await self._reload(ami, modules)
            desired = desired_from(config)
            mismatch = differences(desired, await read_running(ami, desired.globals))
            if not failures and not mismatch:
                meta = self.store.add({**before, **files}, by=self.by, status="applied", note=note,
                                      errors=len(report.errors), warnings=len(report.warnings))
                msg = f"applied as version {meta.version}; reloaded {', '.join(sorted(modules)) or 'nothing'}"
                if restart_only:
                    msg += f"; {', '.join(restart_only)} take effect only after an Asterisk restart"
                self.log(msg)
                return Outcome(True, msg, version=meta.version, report=text, changes=sorted(changed))
            # Asterisk did not take it: put the previous files back.
            problems = failures + mismatch[:20]
            self.log("Asterisk did not run the new version: " + "; ".join(problems))
            restore = {n: before[n] for n in changed if n in before}
            for n in changed:
                if n not in before:
                    (self.live_dir / n).unlink(missing_ok=True)
            write_files(self.live_dir, restore)
            await self._reload(ami, modules)
            previous = desired_from(model.parse_folder(self.live_dir))
            check_back = differences(previous, await read_running(ami, previous.globals))
            meta = self.store.add({**before, **files}, by=self.by, status="rolled back",
                                  note="; ".join(problems)[:500], errors=len(report.errors),
                                  warnings=len(report.warnings))
            state = "the previous version runs again" if not check_back else \
                f"WARNING: the previous version is not fully back either: {check_back[:5]}"
            return Outcome(False, f"rolled back (attempt kept as version {meta.version}): {state}",
                           version=meta.version, rolled_back=True, report=text,
                           changes=problems)
        finally:
            await ami.stop()

    async def rollback(self, version: int) -> Outcome:
        meta = self.store.get(version)
        self.log(f"rolling back to version {version} ({meta.status}, {meta.by})")
        return await self.apply(self.store.files(version), note=f"rollback to version {version}")

