"""`jiejing rules check|diff|apply|rollback|history`: the triage's rule files under the dialplan's safety net.

The rule files (routing.toml, keywords.toml, surge.toml, guidance.toml, callback.toml) are edited in the source folder
(the checkout's ``dialplan/``) and run from ``JIEJING_RULES_DIR``. ``apply`` checks them all with the
backend's own parsers, keeps what runs now as a version, writes the changed files atomically, then reads
back from the running backend's ``/healthz`` that it loaded exactly these files (it looks for changes every
2 s; a bad file keeps its running version and is reported there). If the backend reports an error for a
file, the previous files are put back. ``rollback N`` applies version N the same way.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import RULE_FILES
from core.triage.callback_rules import parse_callback_rules
from core.triage.guidance import parse_guidance
from core.triage.keywords import parse_keywords
from core.triage.routing import parse_rules
from core.triage.surge import parse_surge_config
from telephony.dialplan_admin.apply import write_files
from telephony.dialplan_admin.versions import VersionStore, digest_files

PARSERS: dict[str, Callable[[str, str], Any]] = {
    "routing.toml": parse_rules, "keywords.toml": parse_keywords, "surge.toml": parse_surge_config,
    "guidance.toml": parse_guidance, "callback.toml": parse_callback_rules}
NAMES = {"routing.toml": "routing", "keywords.toml": "keywords", "surge.toml": "surge",
         "guidance.toml": "guidance", "callback.toml": "callback"}  # in /healthz


@dataclass
class Outcome:
    ok: bool
    message: str
    lines: list[str] = field(default_factory=list)


def check(files: dict[str, bytes]) -> list[str]:
    """Each file's errors as the backend would report them (file:line: reason); empty when they all load."""
    errors = []
    for name in RULE_FILES:
        if name not in files:
            errors.append(f"{name}: missing")
            continue
        try:
            PARSERS[name](files[name].decode("utf-8"), name)
        except UnicodeDecodeError:
            errors.append(f"{name}: not UTF-8")
        except ValueError as exc:
            errors.append(str(exc))
    return errors


def diff(source: dict[str, bytes], live: dict[str, bytes]) -> list[str]:
    out: list[str] = []
    for name in RULE_FILES:
        a = live.get(name, b"").decode("utf-8", "replace").splitlines(keepends=True)
        b = source.get(name, b"").decode("utf-8", "replace").splitlines(keepends=True)
        out.extend(line.rstrip("\n") for line in difflib.unified_diff(a, b, f"running/{name}", f"new/{name}"))
    return out


class RulesAdmin:
    def __init__(self, source: Path, live: Path, store: VersionStore, *, healthz: str, by: str,
                 wait_s: float = 10.0, log: Callable[[str], None] = print) -> None:
        self.source, self.live, self.store = source, live, store
        self.healthz, self.by, self.wait_s, self.log = healthz, by, wait_s, log

    def source_files(self) -> dict[str, bytes]:
        return {n: (self.source / n).read_bytes() for n in RULE_FILES if (self.source / n).is_file()}

    def live_files(self) -> dict[str, bytes]:
        return {n: (self.live / n).read_bytes() for n in RULE_FILES if (self.live / n).is_file()}

    def backend_state(self) -> dict[str, Any] | None:
        """The rule files the running backend has loaded (name -> {sha256, error}), None if it cannot be asked."""
        try:
            with urllib.request.urlopen(self.healthz, timeout=3) as resp:  # noqa: S310 - our own /healthz
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # 503 while something is not ok: the body still says what
            try:
                body = json.loads(exc.read())
            except ValueError:
                return None
        except (OSError, ValueError):
            return None
        return (body.get("checks", {}).get("triage") or {}).get("rule_files")

    def _wait_loaded(self, files: dict[str, bytes]) -> tuple[str, dict[str, str]]:
        """"loaded", "refused" (with the backend's errors) or "unreachable"."""
        want = {NAMES[n]: hashlib.sha256(d).hexdigest() for n, d in files.items()}
        deadline = time.monotonic() + self.wait_s
        state = None
        while time.monotonic() < deadline:
            state = self.backend_state()
            if state is not None and all((state.get(k) or {}).get("sha256") == v for k, v in want.items()):
                errors = {k: state[k]["error"] for k in want if state[k].get("error")}
                return ("refused", errors) if errors else ("loaded", {})
            time.sleep(0.5)
        return ("unreachable" if state is None else "not loaded"), {}

    def apply(self, files: dict[str, bytes] | None = None, *, note: str = "") -> Outcome:
        files = self.source_files() if files is None else files
        errors = check(files)
        if errors:
            return Outcome(False, "refused: the check found errors; nothing was changed", errors)
        before = self.live_files()
        changed = {n: d for n, d in files.items() if before.get(n) != d}
        if not changed:
            return Outcome(True, "nothing to apply: the rule files are already these")
        latest = self.store.latest()
        if before and (latest is None or latest.files != digest_files(before)):
            self.store.add(before, by=self.by, status="snapshot", note="rule files before an apply")
        write_files(self.live, changed)
        result, backend_errors = self._wait_loaded(files)
        if result == "refused":
            restore = {n: before[n] for n in changed if n in before}
            write_files(self.live, restore)
            meta = self.store.add(files, by=self.by, status="rolled back",
                                  note="; ".join(f"{k}: {v}" for k, v in backend_errors.items())[:500])
            return Outcome(False, f"rolled back (attempt kept as version {meta.version}): the backend refused it",
                           [f"{k}: {v}" for k, v in backend_errors.items()])
        meta = self.store.add({**before, **files}, by=self.by, status="applied", note=note)
        names = ", ".join(sorted(changed))
        if result == "loaded":
            return Outcome(True, f"applied as version {meta.version} ({names}); the backend runs it")
        return Outcome(True, f"applied as version {meta.version} ({names}); the backend did not confirm it "
                             f"({result} at {self.healthz}): it reads them within 2 s, or when it starts")

    def rollback(self, version: int) -> Outcome:
        meta = self.store.get(version)
        self.log(f"rolling back the rule files to version {version} ({meta.status}, {meta.by})")
        return self.apply(self.store.files(version), note=f"rollback to version {version}")

