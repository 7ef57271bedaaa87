"""``jiejing dialplan check``: what must hold before a hand-edited dialplan is applied.

The first promise is that every call to 110 is queued to the call-takers,
also when the backend fails. ``check`` follows every path of the 110
extension through ``Goto``/``GotoIf``/``Gosub``/``Return``/``Hangup`` and
falling off the end, taking both branches of every condition, so the path on
which the intake request failed is among them. The other checks keep the
pieces in step: AGI routes that exist in the backend, channel variables that
both sides agree on (``telephony/channel_vars.py``), queues and members that
exist, media through Asterisk, and an AMI user with no more rights than the
backend needs. Each finding has a short, stable ``code`` for scripts.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.config import LAB_AMI_SECRETS
from telephony import channel_vars
from telephony.dialplan_admin.model import (
    CONFBRIDGE,
    EXTENSIONS,
    FALSE_VALUES,
    MANAGER,
    MODULES,
    PJSIP,
    QUEUES,
    Config,
    Context,
    Extension,
    Finding,
    Level,
    Priority,
    split_app,
)

__all__ = ["Finding", "Report", "check", "format_report"]

ROUTES_FOLDER = Path(__file__).resolve().parent.parent / "agi" / "routes"

# What the backend's own AMI user needs: call/agent/queue events in, Originate and call actions out.
BACKEND_AMI_READ = frozenset({"call", "agent", "reporting", "user", "dtmf"})  # user: the dialplan's UserEvent;
# dtmf: a silent caller's keys (telephony/silent_calls.py)
BACKEND_AMI_WRITE = frozenset({"originate", "call", "agent", "reporting"})
# Shell commands and restarts: no AMI user of the center may have them.
FORBIDDEN_AMI_CLASSES = frozenset({"system", "command", "all"})
LOOPBACK = "127.0.0.1"

# Modules without which a 110 call cannot be answered, recorded, queued or reach the backend.
REQUIRED_MODULES = (
    "pbx_config.so", "res_agi.so", "res_curl.so", "func_curl.so", "func_uri.so", "app_queue.so", "app_mixmonitor.so",
    "res_pjsip.so", "res_pjsip_session.so", "chan_pjsip.so", "func_strings.so", "func_callerid.so",
)

# Modules a browser seat (pjsip endpoint with webrtc = yes) cannot register or talk without.
WEBRTC_MODULES = ("res_http_websocket.so", "res_pjsip_transport_websocket.so", "res_crypto.so", "res_srtp.so")
HTTP = "http.conf"

# Applications after which the call goes no further in the dialplan.
END_APPS = frozenset({"hangup", "busy", "congestion"})
MAX_STATES = 20_000
MAX_GOSUB_DEPTH = 8

_VAR_READ = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?=[}:])")
_ONE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


# --- helpers -----------------------------------------------------------------------


def split_top(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split at ``sep`` outside ``()``, ``{}`` and ``[]`` (an argument may hold ``${IF(a,b)}``)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0 and maxsplit != 0:
            parts.append(text[start:i])
            start = i + 1
            maxsplit -= 1
    parts.append(text[start:])
    return parts


def _condition(data: str) -> tuple[str | None, str | None]:
    """``cond?a:b`` → (a, b); a missing branch is None (the call goes on to the next priority)."""
    parts = split_top(data, "?", 1)
    if len(parts) < 2:
        return None, None
    branches = split_top(parts[1], ":", 1)
    true = branches[0].strip() or None
    false = branches[1].strip() or None if len(branches) > 1 else None
    return true, false


def _expand(text: str, env: dict[str, str], depth: int = 0) -> str:
    """Replace ``${NAME}`` whose value is known; unknown ones stay as written."""
    if depth > 8 or "${" not in text:
        return text
    expanded = _ONE_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)
    return expanded if expanded == text else _expand(expanded, env, depth + 1)


def _assignments(p: Priority) -> list[tuple[str, str]]:
    """(variable, value) written by ``Set``/``MSet``/``Read``; inheritance prefixes dropped."""
    app = p.app.lower()
    if app == "set":
        pairs = [p.data]
    elif app == "mset":
        pairs = split_top(p.data, ",")
    elif app in ("read", "readexten"):
        name = split_top(p.data, ",")[0].strip()
        return [(name, "")] if name else []
    else:
        return []
    out = []
    for pair in pairs:
        name, eq, value = pair.partition("=")
        name = name.strip().lstrip("_")
        if eq and name and "(" not in name:
            out.append((name, value.strip()))
    return out


def _label(ext: Extension, ctx: Context) -> str:
    return f"{ext.name}@{ctx.name}"


class _Checker:
    def __init__(self, config: Config, report: Report) -> None:
        self.config = config
        self.report = report
        self.seen: set[tuple[str, Path, int, str]] = set()

    def add(self, level: Level, file: Path, line: int, code: str, message: str) -> None:
        key = (code, file, line, message)
        if key not in self.seen:
            self.seen.add(key)
            self.report.findings.append(Finding(level, file, line, code, message))

    # --- goto targets ----------------------------------------------------------------

    def resolve(self, ctx: Context, ext: Extension, target: str) -> tuple[Context, Extension, Priority] | str | None:
        """A ``[[context,]exten,]priority`` target: where it lands, a reason it cannot, or None if computed."""
        if "$" in target:
            return None
        parts = [s.strip() for s in split_top(target, ",")]
        if len(parts) == 1:
            c, e, pri = ctx.name, ext.name, parts[0]
        elif len(parts) == 2:
            c, (e, pri) = ctx.name, parts
        elif len(parts) == 3:
            c, e, pri = parts
        else:
            return f"'{target}' is not [[context,]extension,]priority"
        to_ctx = self.config.contexts.get(c)
        if to_ctx is None:
            return f"no context '{c}'"
        to_ext = to_ctx.find(e)
        if to_ext is None:
            return f"no extension '{e}' in {c}"
        to_p = to_ext.priority(int(pri)) if pri.isdigit() else to_ext.labelled(pri)
        if to_p is None:
            what = "priority" if pri.isdigit() else "label"
            return f"no {what} '{pri}' in {_label(to_ext, to_ctx)}"
        return to_ctx, to_ext, to_p

    def targets(self, p: Priority) -> list[str]:
        """Literal jump targets written in a priority (for the unknown-label check)."""
        app = p.app.lower()
        if app in ("goto", "gosub"):
            return [_strip_args(p.data.strip())]
        if app in ("gotoif", "gotoiftime", "gosubif"):
            return [_strip_args(t) for t in _condition(p.data) if t]
        return []

    def check_targets(self) -> set[tuple[Path, int]]:
        bad: set[tuple[Path, int]] = set()
        for ctx, ext, p in self.config.priorities():
            for target in self.targets(p):
                where = self.resolve(ctx, ext, target)
                if isinstance(where, str):
                    code = "unknown-context" if where.startswith("no context") else "unknown-label"
                    self.add("error", p.file, p.line, code, f"{p.app}({p.data}) in {_label(ext, ctx)}: {where}")
                    bad.add((p.file, p.line))
        for ctx in self.config.contexts.values():
            for inc in ctx.includes:
                if inc not in self.config.contexts:
                    self.add("warning", ctx.file, ctx.line, "unknown-context",
                             f"[{ctx.name}] includes '{inc}', which is not defined")
        return bad

    # --- the 110 paths ---------------------------------------------------------------------

    def emergency_paths(self, contexts: Sequence[str], number: str, bad_targets: set[tuple[Path, int]]) -> None:
        ext_path = self.config.path(EXTENSIONS)
        for name in contexts:
            ctx = self.config.contexts.get(name)
            if ctx is None:
                self.add("error", ext_path, 0, "no-110",
                         f"context [{name}], where {number} calls arrive, is not defined")
                continue
            found = (ctx, ctx.extensions[number]) if number in ctx.extensions else _included(self.config, ctx, number)
            if found is None or not found[1].priorities:
                other = ctx.find(number)
                hint = f"; such calls go to {other.name} (line {other.line})" if other else ""
                self.add("error", ctx.file, ctx.line, "no-110", f"no extension {number} in [{name}]{hint}")
                continue
            _Paths(self, *found, number, bad_targets).run()

    # --- channel variables, AGI routes ---------------------------------------------------

    def variables(self, intake: Sequence[str], number: str, set_by_backend: Iterable[str],
                  read_by_backend: Iterable[str]) -> None:
        set_by_backend, read_by_backend = frozenset(set_by_backend), frozenset(read_by_backend)
        reads: dict[str, list[Priority]] = {}
        sets: set[str] = set()
        for _, _, p in self.config.priorities():
            for name in _VAR_READ.findall(p.data):
                reads.setdefault(name, []).append(p)
            sets.update(name for name, _ in _assignments(p))
        glob_reads = {name for e in self.config.globals.values() for name in _VAR_READ.findall(e.value)}
        anchor_file, anchor_line = self._backend_anchor(intake, number)
        for name in sorted(set_by_backend):
            if name not in reads and name not in glob_reads:
                self.add("error", anchor_file, anchor_line, "backend-var-unread",
                         f"the backend sets {name} (telephony/channel_vars.py) "
                         f"but the dialplan never reads ${{{name}}}")
        for name in sorted(read_by_backend):
            if name not in sets:
                self.add("error", anchor_file, anchor_line, "backend-var-unset",
                         f"the backend reads {name} (telephony/channel_vars.py) but the dialplan never sets it")
        for name, where in sorted(reads.items()):
            if not name.startswith("JIEJING_"):
                continue
            if name in self.config.globals or name in sets or name in set_by_backend:
                continue
            for p in where:
                self.add("error", p.file, p.line, "var-never-set",
                         f"${{{name}}} is read but neither the dialplan ([globals], Set) nor the backend sets it")

    def _backend_anchor(self, intake: Sequence[str], number: str) -> tuple[Path, int]:
        """Where a channel-variable mismatch is shown: the intake request (CURL) of the intake extension."""
        for name in intake:
            ctx = self.config.contexts.get(name)
            ext = ctx.extensions.get(number) if ctx else None
            for p in ext.priorities if ext else ():
                if "CURL(" in p.data.upper() or p.app.lower() in ("agi", "eagi"):
                    return p.file, p.line
        for _, _, p in self.config.priorities():
            if p.app.lower() in ("agi", "eagi"):
                return p.file, p.line
        return self.config.path(EXTENSIONS), 0

    def agi_routes(self, routes: Path) -> None:
        env = {k: e.value for k, e in self.config.globals.items()}
        for ctx, ext, p in self.config.priorities():
            if p.app.lower() not in ("agi", "eagi"):
                continue
            script = _expand(split_top(p.data, ",")[0].strip(), env)
            if "${" in script or "$[" in script:
                self.add("warning", p.file, p.line, "agi-unresolved",
                         f"AGI({script}) in {_label(ext, ctx)}: the address depends on a variable not in [globals]")
                continue
            if not script.lower().startswith(("agi://", "hagi://")):
                self.add("warning", p.file, p.line, "agi-local",
                         f"AGI({script}) runs a local script; the backend serves agi:// routes only")
                continue
            _, _, rest = script.partition("://")
            route = rest.partition("/")[2].split("?")[0]
            if not route:
                self.add("error", p.file, p.line, "unknown-agi-route",
                         f"AGI({script}) names no route (agi://host:port/NAME)")
            elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", route) or not (routes / f"{route}.py").is_file():
                self.add("error", p.file, p.line, "unknown-agi-route",
                         f"AGI route '{route}' has no module {routes.name}/{route}.py in the backend")

    # --- queues, members, endpoints -----------------------------------------------------------

    def queue_names(self, ctx: Context, ext: Extension, text: str, origin: Priority | None = None,
                    depth: int = 0) -> list[tuple[str, Path, int]]:
        """Literal queue names ``text`` can stand for, each with the line where it is written."""
        text = text.strip()
        if "$" not in text:
            return [(text, origin.file, origin.line)] if origin and text else []
        m = _ONE_VAR.fullmatch(text)
        if not m or depth > 8:
            return []
        var, out = m.group(1), []
        g = self.config.globals.get(var)
        if g is not None:
            if "$" in g.value:
                out += self.queue_names(ctx, ext, g.value, None, depth + 1)
            elif g.value:
                out.append((g.value, g.file, g.line))
        for p in ext.priorities:
            for name, value in _assignments(p):
                if name == var:
                    out += self.queue_names(ctx, ext, value, p, depth + 1)
        return out

    def queues(self, intake: Sequence[str], number: str) -> set[str]:
        """Check every Queue() name that can be known offline; the queues 110 calls go to."""
        emergency: set[str] = set()
        unknown: dict[tuple[str, Path, int], list[Priority]] = {}
        for ctx, ext, p in self.config.priorities():
            if p.app.lower() != "queue":
                continue
            first = split_top(p.data, ",")[0]
            for name, file, line in self.queue_names(ctx, ext, first, p):
                if name in self.config.queues:
                    if ctx.name in intake and ext.name == number:
                        emergency.add(name)
                else:
                    unknown.setdefault((name, file, line), []).append(p)
        # One finding per place the wrong name is written, however many Queue() calls use it.
        for (name, file, line), uses in unknown.items():
            elsewhere = [u for u in uses if (u.file, u.line) != (file, line)]
            sites = ", ".join(f"{u.file.name}:{u.line}" for u in elsewhere)
            used = f" (used by Queue() at {sites})" if elsewhere else ""
            self.add("error", file, line, "unknown-queue", f"queue '{name}'{used} is not defined in queues.conf")
        return emergency

    def members(self) -> None:
        endpoints = self.config.endpoints
        for q in self.config.queues.values():
            for m in q.members:
                if m.endpoint is not None and m.endpoint not in endpoints:
                    self.add("error", m.file, m.line, "unknown-member-endpoint",
                             f"member {m.interface} of queue {q.name}: no endpoint '{m.endpoint}' in pjsip.conf")
            if not q.members:
                if q.missing_includes:
                    inc = q.missing_includes[0]
                    self.add("warning", inc.file, inc.line, "no-members",
                             f"queue {q.name} has no members: #{inc.directive} {inc.target} was not found")
                else:
                    self.add("warning", q.file, q.line, "no-members", f"queue {q.name} has no members")

    def emergency_queue_options(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            q = self.config.queues[name]
            e = q.entries.get("ringinuse")
            if e is None or e.value.lower() not in FALSE_VALUES:
                where = (e.file, e.line) if e else (q.file, q.line)
                self.add("warning", *where, "queue-ringinuse",
                         f"queue {name}: ringinuse is not 'no', a seat already on a 110 call can be rung")
            e = q.entries.get("retry")
            try:
                retry = int(e.value) if e is not None else 5  # app_queue's default
            except ValueError:
                retry = 5
            if retry > 1:
                where = (e.file, e.line) if e else (q.file, q.line)
                self.add("warning", *where, "queue-retry",
                         f"queue {name}: retry = {retry} s, a waiting 110 caller is offered to seats "
                         f"only every {retry} s")

    def endpoints(self) -> None:
        by_origin: dict[tuple[Path, int], list[str]] = {}
        for obj in self.config.endpoints.values():
            e = obj.entry("direct_media")
            if e is None:
                self.add("error", obj.file, obj.line, "direct-media",
                         f"endpoint {obj.name} does not set direct_media = no (Asterisk's default is yes)")
            elif e.value.lower() not in FALSE_VALUES:
                by_origin.setdefault((e.file, e.line), []).append(obj.name)
            ctx = obj.entry("context")
            if ctx is not None and ctx.value not in self.config.contexts:
                self.add("error", ctx.file, ctx.line, "unknown-context",
                         f"endpoint {obj.name}: context '{ctx.value}' is not defined in extensions.conf")
        for (file, line), names in sorted(by_origin.items()):
            self.add("error", file, line, "direct-media",
                     f"direct_media is not 'no' for endpoint{'s' if len(names) > 1 else ''} "
                     f"{', '.join(sorted(names))}: "
                     "media would bypass Asterisk and the recording")

    # --- AMI, modules ------------------------------------------------------------------------------

    def manager(self, backend_user: str, *, lab: bool = False) -> None:
        mc = self.config.manager
        path = self.config.path(MANAGER)
        for user in mc.users.values():
            secret = user.options.get("secret")
            if secret is not None and secret.value in LAB_AMI_SECRETS:
                self.add("warning" if lab else "error", secret.file, secret.line, "ami-lab-secret",
                         f"AMI user {user.name} has the secret shipped with jiejing, which anyone can read: "
                         "set a secret of your own in manager_site.conf (`jiejing site init` writes one) and the "
                         "same in JIEJING_AMI_SECRET / JIEJING_AMI_ADMIN_SECRET")
        bind = mc.general.get("bindaddr")
        if mc.bindaddr != LOOPBACK:
            where = (bind.file, bind.line) if bind else (path, mc.line)
            self.add("error", *where, "ami-bindaddr",
                     f"AMI listens on {mc.bindaddr}: it must be bound to {LOOPBACK} only")
        tls = mc.general.get("tlsenable")
        if tls is not None and tls.value.lower() not in FALSE_VALUES:
            tls_bind = mc.general.get("tlsbindaddr")
            addr = tls_bind.value.rsplit(":", 1)[0] if tls_bind else "0.0.0.0"
            if addr != LOOPBACK:
                where = (tls_bind.file, tls_bind.line) if tls_bind else (tls.file, tls.line)
                self.add("error", *where, "ami-bindaddr",
                         f"AMI over TLS listens on {addr}: it must be bound to {LOOPBACK}")
        if not mc.enabled and path.name in self.config.files:
            e = mc.general.get("enabled")
            self.add("error", e.file if e else path, e.line if e else mc.line, "ami-disabled",
                     "AMI is not enabled: the backend sees no call events")
        user = mc.users.get(backend_user)
        if user is None:
            if MANAGER in self.config.files:
                self.add("error", path, 0, "ami-user-missing", f"no AMI user [{backend_user}] for the backend")
        else:
            rights = (("read", user.read, BACKEND_AMI_READ), ("write", user.write, BACKEND_AMI_WRITE))
            for kind, have, allowed in rights:
                extra = have - allowed
                if extra:
                    e = user.options.get(kind)
                    self.add("error", e.file if e else user.file, e.line if e else user.line, "ami-rights",
                             f"AMI user {user.name} may {kind} {', '.join(sorted(extra))}; the backend needs only "
                             f"{', '.join(sorted(allowed))}")
        for other in mc.users.values():
            if other.name == backend_user:
                continue
            for kind, have in (("read", other.read), ("write", other.write)):
                bad = have & (FORBIDDEN_AMI_CLASSES | ({"config"} if kind == "write" else set()))
                if bad:
                    e = other.options.get(kind)
                    self.add("error", e.file if e else other.file, e.line if e else other.line, "ami-rights",
                             f"AMI user {other.name} may {kind} {', '.join(sorted(bad))}: no user may run shell "
                             "commands, restart Asterisk or rewrite its configuration (UpdateConfig)")

    def conference_profiles(self) -> None:
        """``ConfBridge(room,bridge_profile,user_profile,menu)``: named profiles must exist, of that type."""
        cf = self.config.files.get(CONFBRIDGE)
        types = {}
        for sec in cf.categories() if cf else ():
            types.setdefault(sec.name, (sec.get("type") or "").lower())
        for ctx, ext, p in self.config.priorities():
            if p.app.lower() != "confbridge":
                continue
            args = [a.strip() for a in split_top(p.data, ",")]
            for arg, kind in zip(args[1:4], ("bridge", "user", "menu")):
                if not arg or "$" in arg:
                    continue
                if types.get(arg) != kind:
                    found = f"it is of type {types[arg]}" if types.get(arg) else "there is no such section"
                    self.add("error", p.file, p.line, "unknown-conference-profile",
                             f"ConfBridge() in {_label(ext, ctx)} names {kind} profile '{arg}': "
                             f"{found} in confbridge.conf")

    def webrtc(self) -> None:
        """Browser seats need Asterisk's HTTP server, a WebSocket transport and the DTLS-SRTP modules."""
        seats = [o for o in self.config.endpoints.values() if (o.get("webrtc") or "no").lower() not in FALSE_VALUES]
        if not seats:
            return
        first = min(seats, key=lambda o: (str(o.file), o.line))
        names = ", ".join(sorted(o.name for o in seats)[:3]) + (" …" if len(seats) > 3 else "")
        transports = [o for (_, t), o in self.config.pjsip.items() if t == "transport"]
        if not any((o.get("protocol") or "").lower() in ("ws", "wss") for o in transports):
            self.add("error", first.file, first.line, "webrtc-no-websocket",
                     f"WebRTC endpoints ({names}) but no pjsip transport with protocol = ws or wss")
        http = self.config.files.get(HTTP)
        general = http.section("general") if http else None
        enabled = general.get("enabled") if general else None
        if enabled is None or enabled.lower() in FALSE_VALUES:
            where = (general.file, general.line) if general else (first.file, first.line)
            self.add("error", *where, "webrtc-no-http",
                     f"WebRTC endpoints ({names}) register over Asterisk's HTTP server: "
                     "set enabled = yes in [general] of http.conf")
        cf = self.config.files.get(MODULES)
        sec = cf.section("modules") if cf else None
        if sec is None:
            return
        noload = {e.value.strip(): e for e in sec.values("noload")}
        for module in WEBRTC_MODULES:
            if module in noload:
                e = noload[module]
                self.add("error", e.file, e.line, "module-noload", f"noload {module}: WebRTC seats ({names}) need it")

    def tones(self) -> None:
        """``Playtones(ring)`` names a tone of the channel's tone zone; without indications.conf there is none,
        and Asterisk plays nothing (the lab found callers in silence in the overflow's pause)."""
        if "indications.conf" in self.config.files:
            return
        for ctx, ext, p in self.config.priorities():
            if p.app.lower() != "playtones":
                continue
            tone = p.data.split(",", 1)[0].strip()
            if tone and not any(ch in tone for ch in "/+$"):
                self.add("error", p.file, p.line, "tone-unknown",
                         f"Playtones({tone}) in {_label(ext, ctx)}: no indications.conf defines the tone "
                         f"'{tone}'; give the frequencies (e.g. 450/1000,0/4000)")

    def modules(self) -> None:
        cf = self.config.files.get(MODULES)
        sec = cf.section("modules") if cf else None
        if sec is None:
            return
        noload = {e.value.strip(): e for e in sec.values("noload")}
        loaded = {e.value.strip() for key in ("load", "require", "preload", "preload-require") for e in sec.values(key)}
        autoload = (sec.get("autoload") or "no").lower() not in FALSE_VALUES
        for module in REQUIRED_MODULES:
            if module in noload:
                e = noload[module]
                self.add("error", e.file, e.line, "module-noload", f"noload {module}: 110 calls need it")
            elif not autoload and module not in loaded:
                self.add("error", sec.file, sec.line, "module-noload", f"autoload is off and {module} is not loaded")


def _strip_args(target: str) -> str:
    """``ctx,ext,prio(args)`` → ``ctx,ext,prio`` (Gosub arguments)."""
    target = target.strip()
    if target.endswith(")") and "(" in target:
        return target[: target.index("(")]
    return target


def _included(config: Config, ctx: Context, number: str, depth: int = 0) -> tuple[Context, Extension] | None:
    """Extension ``number`` of a context that ``ctx`` includes (first include wins), with its context."""
    if depth > 8:
        return None
    for name in ctx.includes:
        inc = config.contexts.get(name)
        if inc is None:
            continue
        found = (inc, inc.extensions[number]) if number in inc.extensions else _included(config, inc, number, depth + 1)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class _State:
    ctx: str
    ext: str
    number: int
    stack: tuple[tuple[str, str, int], ...] = ()


class _Paths:
    """Every path of one emergency extension: each must reach Queue() before the call can end."""

    def __init__(self, checker: _Checker, ctx: Context, ext: Extension, number: str,
                 bad_targets: set[tuple[Path, int]]) -> None:
        self.c = checker
        self.ctx, self.ext, self.number = ctx, ext, number
        self.bad_targets = bad_targets
        self.parent: dict[_State, _State | None] = {}
        self.edges: dict[_State, list[_State]] = {}
        self.productive: set[_State] = set()  # states with a way out: a Queue or an end

    def prio(self, s: _State) -> Priority | None:
        ctx = self.c.config.contexts.get(s.ctx)
        ext = ctx.extensions.get(s.ext) if ctx else None
        return ext.priority(s.number) if ext else None

    def where(self, s: _State) -> str:
        p = self.prio(s)
        at = f"priority {s.number}"
        if (s.ctx, s.ext) != (self.ctx.name, self.ext.name):
            at += f" of {s.ext}@{s.ctx}"
        return f"{at} ({p.app})" if p else at

    def path_text(self, s: _State) -> str:
        steps: list[_State] = []
        cur: _State | None = s
        while cur is not None:
            steps.append(cur)
            cur = self.parent[cur]
        steps.reverse()
        out: list[str] = []
        run: list[int] | None = None  # first and last number of a run of consecutive priorities
        home = (self.ctx.name, self.ext.name)
        for st in steps:
            if (st.ctx, st.ext) != home:
                out.append(f"{st.ext}@{st.ctx},{st.number}")
                run = None
            elif run is not None and st.number == run[1] + 1:
                run[1] = st.number
                out[-1] = f"{run[0]}-{run[1]}"
            else:
                run = [st.number, st.number]
                out.append(str(st.number))
        return ", ".join(out)

    def end(self, s: _State, how: str) -> None:
        p = self.prio(s)
        self.productive.add(s)
        self.c.add("error", p.file, p.line, "no-queue-path",
                   f"{self.number}@{self.ctx.name} {how} without reaching Queue() (path {self.path_text(s)})")

    def go(self, frm: _State, to: _State, queue: deque[_State]) -> None:
        self.edges.setdefault(frm, []).append(to)
        if to not in self.parent:
            self.parent[to] = frm
            queue.append(to)

    def next_of(self, s: _State, stack: tuple | None = None) -> _State | None:
        nxt = _State(s.ctx, s.ext, s.number + 1, s.stack if stack is None else stack)
        return nxt if self.prio(nxt) is not None else None

    def fall_through(self, s: _State, queue: deque[_State]) -> None:
        nxt = self.next_of(s)
        if nxt is None:
            self.end(s, f"can run past its last priority {self.where(s)}")
        else:
            self.go(s, nxt, queue)

    def jump(self, s: _State, target: str, queue: deque[_State], call: bool = False) -> None:
        ctx = self.c.config.contexts[s.ctx]
        ext = ctx.extensions[s.ext]
        p = ext.priority(s.number)
        where = self.c.resolve(ctx, ext, _strip_args(target))
        if where is None:
            self.end(s, f"jumps at {self.where(s)} to '{target}', which cannot be followed offline, and so may end")
            return
        if isinstance(where, str):
            self.productive.add(s)
            if (p.file, p.line) not in self.bad_targets:
                self.end(s, f"jumps at {self.where(s)} nowhere ({where}), and so ends")
            return
        to_ctx, to_ext, to_p = where
        stack = s.stack
        if call:
            if len(stack) >= MAX_GOSUB_DEPTH:
                self.end(s, f"nests Gosub too deep at {self.where(s)} to follow, and so may end")
                return
            stack = stack + ((s.ctx, s.ext, s.number + 1),)
        self.go(s, _State(to_ctx.name, to_ext.name, to_p.number, stack), queue)

    def run(self) -> None:
        start = _State(self.ctx.name, self.ext.name, self.ext.priorities[0].number)
        self.parent[start] = None
        queue: deque[_State] = deque([start])
        while queue:
            if len(self.parent) > MAX_STATES:
                p = self.ext.priorities[0]
                self.c.add("warning", p.file, p.line, "no-queue-path",
                           f"{self.number}@{self.ctx.name} has too many paths to follow; not all were checked")
                return
            s = queue.popleft()
            p = self.prio(s)
            app = p.app.lower()
            if app == "queue" and split_top(p.data, ",")[0].strip():
                self.productive.add(s)  # this path reached a queue; what follows may end the call
            elif app in END_APPS:
                self.end(s, f"can end at {self.where(s)}")
            elif app == "return":
                if not s.stack:
                    self.end(s, f"can end at {self.where(s)} outside any Gosub")
                    continue
                c, e, n = s.stack[-1]
                back = _State(c, e, n, s.stack[:-1])
                if self.prio(back) is None:
                    self.end(s, f"returns at {self.where(s)} past the end of {e}@{c}")
                else:
                    self.go(s, back, queue)
            elif app in ("goto", "gosub"):
                self.jump(s, p.data.strip(), queue, call=app == "gosub")
            elif app in ("gotoif", "gotoiftime", "gosubif"):
                for branch in _condition(p.data):
                    if branch is None:
                        self.fall_through(s, queue)
                    else:
                        self.jump(s, branch, queue, call=app == "gosubif")
            elif app == "execif":
                branches = _condition(p.data)
                ends = [b for b in branches if b and split_app(b)[0].lower() in END_APPS]
                if ends:
                    self.end(s, f"can end at {self.where(s)} ({split_app(ends[0])[0]})")
                if len(ends) < 2:
                    self.fall_through(s, queue)
            else:
                self.fall_through(s, queue)
        self.loops()

    def loops(self) -> None:
        """States from which no path leads to a Queue() or an end: the call would loop forever."""
        reverse: dict[_State, list[_State]] = {}
        for frm, tos in self.edges.items():
            for to in tos:
                reverse.setdefault(to, []).append(frm)
        alive = set(self.productive)
        todo = deque(self.productive)
        while todo:
            for frm in reverse.get(todo.popleft(), ()):
                if frm not in alive:
                    alive.add(frm)
                    todo.append(frm)
        for s in self.parent:  # in the order found: report the first state of the loop
            if s not in alive:
                p = self.prio(s)
                self.c.add("error", p.file, p.line, "no-queue-path",
                           f"{self.number}@{self.ctx.name} can loop forever from {self.where(s)} without reaching "
                           f"Queue() (path {self.path_text(s)})")
                return


# --- entry points ---------------------------------------------------------------------------------


def check(
    config: Config,
    *,
    intake_contexts: Sequence[str] = ("from-carrier",),
    emergency_number: str = "110",
    routes: Path = ROUTES_FOLDER,
    set_by_backend: Iterable[str] = channel_vars.SET_BY_BACKEND,
    read_by_backend: Iterable[str] = channel_vars.READ_BY_BACKEND,
    backend_ami_user: str = "jiejing",
    lab: bool = False,
) -> Report:
    """Every check on a parsed folder; ``Report.ok`` when there is no error (warnings allowed)."""
    report = Report(list(config.problems))
    c = _Checker(config, report)
    for name in (EXTENSIONS, QUEUES, PJSIP, MANAGER):
        if name not in config.files:
            c.add("error", config.path(name), 0, "file-missing", f"{name} is missing from {config.folder}")
    bad_targets = c.check_targets()
    c.emergency_paths(intake_contexts, emergency_number, bad_targets)
    c.agi_routes(Path(routes))
    c.variables(intake_contexts, emergency_number, set_by_backend, read_by_backend)
    emergency_queues = c.queues(intake_contexts, emergency_number)
    c.emergency_queue_options(emergency_queues)
    c.members()
    c.endpoints()
    c.manager(backend_ami_user, lab=lab)
    c.conference_profiles()
    c.tones()
    c.modules()
    c.webrtc()
    report.findings.sort(key=lambda f: (f.level != "error", str(f.file), f.line, f.code))
    return report


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def format_report(report: Report, *, relative_to: Path | None = None) -> str:
    """One line per finding (errors first), then a summary line; paths relative to ``relative_to`` (cwd)."""
    base = relative_to or Path.cwd()
    lines = []
    for f in sorted(report.findings, key=lambda f: (f.level != "error", str(f.file), f.line, f.code)):
        where = f"{_shown(f.file, base)}:{f.line}" if f.line else _shown(f.file, base)
        lines.append(f"{where}: {f.level} [{f.code}]: {f.message}")
    n_err, n_warn = len(report.errors), len(report.warnings)
    verdict = "check passed" if report.ok else "check failed"
    lines.append(f"{verdict}: {n_err} error{'s' if n_err != 1 else ''}, {n_warn} warning{'s' if n_warn != 1 else ''}")
    return "\n".join(lines)
