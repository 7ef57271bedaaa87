"""The ``dialplan/`` folder as Asterisk reads it, with file:line for everything.

Two layers. The first is Asterisk's configuration format, read line by line
the way ``main/config.c`` does: ``[name](options)`` headers (``!`` template,
``+`` append, other names are sections to inherit from, in order),
``key = value`` and ``key => value``, ``;`` comments with ``\\;`` for a
literal semicolon, ``;-- --;`` block comments, and ``#include`` /
``#tryinclude`` (an included file continues the section it was included in).
The second gives the files their meaning: the dialplan (contexts, extensions,
priorities), the queues and their members, the PJSIP objects with their
templates applied, and the AMI users.

pyst2's ``asterisk.config`` is not used for the first layer: it rejects
``[name](!)`` and ``[name](tpl)`` headers and every ``#include`` line, cuts a
value at an escaped ``\\;``, knows no block comments, silently drops lines
that come before the first section (Asterisk refuses such a file) and leaves
its file open. Every file of this folder uses at least one of those.

Problems the parser meets (a line Asterisk would refuse, a missing include,
priority numbering Asterisk would reject) are collected in
``Config.problems``; ``check.check`` reports them with its own findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Level = Literal["error", "warning"]

# Top-level file names that have a meaning below; any other *.conf is kept as plain sections.
EXTENSIONS = "extensions.conf"
QUEUES = "queues.conf"
PJSIP = "pjsip.conf"
MANAGER = "manager.conf"
MODULES = "modules.conf"
CONFBRIDGE = "confbridge.conf"

FALSE_VALUES = frozenset({"no", "false", "0", "off", "n", "f"})


@dataclass(frozen=True)
class Finding:
    """One problem, at the file and line an admin has to edit (line 0: the file as a whole)."""

    level: Level
    file: Path
    line: int
    code: str
    message: str


# ---------------------------------------------------------------------------
# Layer 1: Asterisk's configuration format
# ---------------------------------------------------------------------------


@dataclass
class Entry:
    """One ``key = value`` (``object`` when written ``key => value``)."""

    key: str
    value: str
    file: Path
    line: int
    object: bool = False


@dataclass
class Include:
    """One ``#include`` / ``#tryinclude`` line; ``resolved`` is empty when nothing was found."""

    directive: Literal["include", "tryinclude"]
    target: str
    file: Path
    line: int
    resolved: tuple[Path, ...] = ()


@dataclass
class Section:
    """One ``[name](options)`` section; ``inherited`` holds the entries of its bases, in order."""

    name: str
    file: Path
    line: int
    template: bool = False
    bases: tuple[str, ...] = ()
    append: bool = False
    entries: list[Entry] = field(default_factory=list)
    inherited: list[Entry] = field(default_factory=list)
    includes: list[Include] = field(default_factory=list)

    @property
    def all_entries(self) -> list[Entry]:
        """What Asterisk sees in the section: inherited entries first, then its own."""
        return self.inherited + self.entries

    def entry(self, key: str) -> Entry | None:
        """The last entry named ``key`` (the one that wins for a single-valued option)."""
        key = key.lower()
        found = None
        for e in self.all_entries:
            if e.key.lower() == key:
                found = e
        return found

    def get(self, key: str, default: str | None = None) -> str | None:
        e = self.entry(key)
        return e.value if e is not None else default

    def values(self, key: str) -> list[Entry]:
        key = key.lower()
        return [e for e in self.all_entries if e.key.lower() == key]


@dataclass
class ConfigFile:
    """A top-level file with everything it includes, as one configuration (Asterisk's view)."""

    name: str
    path: Path
    sections: list[Section]
    includes: list[Include]
    files: list[Path]

    def categories(self, name: str | None = None) -> list[Section]:
        """Sections that are not templates, in load order; only those called ``name`` if given."""
        return [
            s for s in self.sections if not s.template and (name is None or s.name.lower() == name.lower())
        ]

    def section(self, name: str) -> Section | None:
        found = self.categories(name)
        return found[0] if found else None


_GLOB_CHARS = re.compile(r"[*?\[]")


def _strip_comments(raw: str, depth: int) -> tuple[str, int]:
    """The line without comments, and the block-comment depth after it (as config.c does)."""
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        if depth:
            if raw.startswith("--;", i):
                depth -= 1
                i += 3
            elif raw.startswith(";--", i):
                depth += 1
                i += 3
            else:
                i += 1
            continue
        ch = raw[i]
        if ch == "\\" and raw.startswith(";", i + 1):
            out.append(";")
            i += 2
        elif ch == ";":
            if raw.startswith(";--", i):
                depth += 1
                i += 3
            else:
                break
        else:
            out.append(ch)
            i += 1
    return "".join(out), depth


class _Reader:
    """Reads one top-level file and the files it includes."""

    def __init__(self, folders: Sequence[Path], problems: list[Finding]) -> None:
        self.folders = folders
        self.problems = problems
        self.sections: list[Section] = []
        self.includes: list[Include] = []
        self.files: list[Path] = []

    def problem(self, level: Level, file: Path, line: int, code: str, message: str) -> None:
        self.problems.append(Finding(level, file, line, code, message))

    def read(self, path: Path) -> ConfigFile:
        self._read(path, None, ())
        return ConfigFile(path.name, path, _resolve(self.sections, self), self.includes, self.files)

    def _find(self, target: str) -> tuple[Path, ...]:
        if Path(target).is_absolute():
            p = Path(target)
            if _GLOB_CHARS.search(target):
                return tuple(sorted(Path(p.anchor).glob(str(p.relative_to(p.anchor)))))
            return (p,) if p.is_file() else ()
        for folder in self.folders:
            if _GLOB_CHARS.search(target):
                found = tuple(sorted(p for p in folder.glob(target) if p.is_file()))
            else:
                found = (folder / target,) if (folder / target).is_file() else ()
            if found:
                return found
        return ()

    def _read(self, path: Path, current: Section | None, chain: tuple[Path, ...]) -> Section | None:
        self.files.append(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self.problem("error", path, 0, "unreadable", f"cannot read {path}: {exc.strerror or exc}")
            return current
        depth = 0
        for lineno, raw in enumerate(text.splitlines(), 1):
            line, depth = _strip_comments(raw, depth)
            line = line.strip()
            if not line:
                continue
            if line[0] == "[":
                current = self._header(line, path, lineno)
                self.sections.append(current)
            elif line[0] == "#":
                self._directive(line, path, lineno, current, chain + (path,))
            else:
                self._entry(line, path, lineno, current)
        if depth:
            self.problem("error", path, len(text.splitlines()), "syntax",
                         "block comment ';--' is never closed with '--;'")
        return current

    def _header(self, line: str, path: Path, lineno: int) -> Section:
        close = line.find("]")
        if close < 0:
            name = line[1:].strip()
            self.problem("error", path, lineno, "unclosed-bracket", f"'[{name}' has no closing ']'")
            return Section(name, path, lineno)
        section = Section(line[1:close].strip(), path, lineno)
        rest = line[close + 1 :]
        if rest and not rest.startswith("("):
            # config.c reads options only right after ']': "[a] (tpl)" silently inherits nothing
            self.problem("error", path, lineno, "syntax",
                         f"'{rest.strip()}' after [{section.name}] is ignored by Asterisk "
                         "(options must follow ']' directly)")
        elif rest:
            end = rest.find(")")
            if end < 0:
                self.problem("error", path, lineno, "unclosed-bracket",
                             f"options of [{section.name}] have no closing ')'")
                end = len(rest)
            bases = []
            for option in (o.strip() for o in rest[1:end].split(",")):
                if option == "!":
                    section.template = True
                elif option == "+":
                    section.append = True
                elif option:
                    bases.append(option)
            section.bases = tuple(bases)
        return section

    def _directive(self, line: str, path: Path, lineno: int, current: Section | None, chain: tuple[Path, ...]) -> None:
        word, _, arg = line[1:].partition(" ")
        word, arg = word.strip().lower(), arg.strip()
        if word not in ("include", "tryinclude"):
            # Asterisk only warns here; #exec would run a program, which a check never does.
            self.problem("warning", path, lineno, "syntax", f"directive '#{word}' is not followed by the check")
            return
        if len(arg) >= 2 and (arg[0], arg[-1]) in (('"', '"'), ("<", ">")):
            arg = arg[1:-1]
        if not arg:
            self.problem("error", path, lineno, "syntax", f"'#{word}' needs a file name")
            return
        directive: Literal["include", "tryinclude"] = "include" if word == "include" else "tryinclude"
        inc = Include(directive, arg, path, lineno, self._find(arg))
        self.includes.append(inc)
        if current is not None:
            current.includes.append(inc)
        if not inc.resolved:
            where = ", ".join(str(f) for f in self.folders)
            if word == "include":
                self.problem("error", path, lineno, "include-missing", f"#include {arg}: no such file in {where}")
            else:
                self.problem("warning", path, lineno, "tryinclude-missing",
                             f"#tryinclude {arg}: no such file in {where}")
            return
        for target in inc.resolved:
            if target.resolve() in {p.resolve() for p in chain}:
                self.problem("error", path, lineno, "include-loop", f"#{word} {arg} includes itself")
                continue
            # The included file continues our section; afterwards we carry on in ours (config.c).
            self._read(target, current, chain)

    def _entry(self, line: str, path: Path, lineno: int, current: Section | None) -> None:
        eq = line.find("=")
        if eq <= 0:
            self.problem("error", path, lineno, "syntax", f"not a 'key = value' line: {line!r}")
            return
        if current is None:
            self.problem("error", path, lineno, "no-section", f"'{line[:eq].strip()}' comes before any [section]")
            return
        key, value, obj = line[:eq].strip(), line[eq + 1 :], False
        if value.startswith(">"):
            obj, value = True, value[1:]
        value = value.strip()
        if key.endswith("+"):
            # key += value: append to the last value of that key in this section
            key = key[:-1].strip()
            for e in reversed(current.entries):
                if e.key == key:
                    e.value += value
                    return
        current.entries.append(Entry(key, value, path, lineno, obj))


def _resolve(sections: list[Section], reader: _Reader) -> list[Section]:
    """Apply ``(+)`` and ``(base, …)``: a base must be defined earlier in the same configuration."""
    first: dict[str, Section] = {}
    result: list[Section] = []
    for s in sections:
        key = s.name.lower()
        for base_name in s.bases:
            base = first.get(base_name.lower())
            if base is None:
                reader.problem(
                    "error", s.file, s.line, "unknown-template",
                    f"[{s.name}] inherits from '{base_name}', which is not defined before it",
                )
                continue
            s.inherited.extend(base.all_entries)
        if s.append:
            target = first.get(key)
            if target is None:
                reader.problem("error", s.file, s.line, "unknown-template",
                               f"[{s.name}](+) adds to a section not defined before it")
            else:
                target.entries.extend(s.inherited + s.entries)
                target.includes.extend(s.includes)
                continue
        first.setdefault(key, s)
        result.append(s)
    return result


# ---------------------------------------------------------------------------
# Layer 2: what the files mean
# ---------------------------------------------------------------------------


@dataclass
class Priority:
    number: int
    label: str | None
    app: str
    data: str
    file: Path
    line: int


@dataclass
class Extension:
    name: str
    priorities: list[Priority] = field(default_factory=list)
    file: Path | None = None
    line: int = 0

    @property
    def is_pattern(self) -> bool:
        return self.name.startswith("_")

    def priority(self, number: int) -> Priority | None:
        for p in self.priorities:
            if p.number == number:
                return p
        return None

    def labelled(self, label: str) -> Priority | None:
        for p in self.priorities:
            if p.label == label:
                return p
        return None

    def matches(self, number: str) -> bool:
        return number == self.name or (self.is_pattern and pattern_matches(self.name, number))


@dataclass
class Context:
    name: str
    file: Path
    line: int
    extensions: dict[str, Extension] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)

    def find(self, number: str) -> Extension | None:
        """The extension a call to ``number`` enters in this context alone: exact name, else a pattern."""
        if number in self.extensions:
            return self.extensions[number]
        for ext in self.extensions.values():
            if ext.matches(number):
                return ext
        return None


@dataclass
class Member:
    interface: str
    penalty: int
    name: str | None
    file: Path
    line: int

    @property
    def endpoint(self) -> str | None:
        """The PJSIP endpoint name of a ``PJSIP/NAME`` member, else None."""
        tech, _, rest = self.interface.partition("/")
        return rest.split("/")[0] if tech.upper() == "PJSIP" and rest else None


@dataclass
class Queue:
    """A queue of queues.conf: ``options`` are the values (last one wins), ``entries`` their lines."""

    name: str
    file: Path
    line: int
    options: dict[str, str] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    # #tryinclude lines inside the section that found no file (usually the member list)
    missing_includes: list[Include] = field(default_factory=list)


@dataclass
class PjsipObject:
    """A PJSIP object with its templates applied; ``options`` in the order Asterisk applies them."""

    name: str
    type: str
    file: Path
    line: int
    options: list[Entry] = field(default_factory=list)

    def entry(self, key: str) -> Entry | None:
        found = None
        for e in self.options:
            if e.key.lower() == key.lower():
                found = e
        return found

    def get(self, key: str, default: str | None = None) -> str | None:
        e = self.entry(key)
        return e.value if e is not None else default


@dataclass
class AmiUser:
    name: str
    file: Path
    line: int
    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    options: dict[str, Entry] = field(default_factory=dict)


@dataclass
class ManagerConf:
    general: dict[str, Entry] = field(default_factory=dict)
    users: dict[str, AmiUser] = field(default_factory=dict)
    file: Path | None = None
    line: int = 0  # of [general]

    @property
    def enabled(self) -> bool:
        e = self.general.get("enabled")
        return e is not None and e.value.lower() not in FALSE_VALUES

    @property
    def bindaddr(self) -> str:
        e = self.general.get("bindaddr")
        return e.value if e is not None else "0.0.0.0"  # Asterisk's default: every interface

    @property
    def port(self) -> int:
        e = self.general.get("port")
        try:
            return int(e.value) if e is not None else 5038
        except ValueError:
            return 5038


@dataclass
class Config:
    """The parsed folder.

    ``files`` holds the top-level files by name (``extensions.conf`` …) as
    plain sections; the other fields give them their meaning. ``problems``
    are what the parser found wrong (``check.check`` reports them).
    """

    folder: Path
    extra_folders: tuple[Path, ...]
    files: dict[str, ConfigFile]
    problems: list[Finding]
    # extensions.conf
    general: dict[str, Entry] = field(default_factory=dict)
    globals: dict[str, Entry] = field(default_factory=dict)
    contexts: dict[str, Context] = field(default_factory=dict)
    # queues.conf
    queue_general: dict[str, Entry] = field(default_factory=dict)
    queues: dict[str, Queue] = field(default_factory=dict)
    # pjsip.conf, by (name, type): one name may be an endpoint and an aor
    pjsip: dict[tuple[str, str], PjsipObject] = field(default_factory=dict)
    pjsip_templates: dict[str, Section] = field(default_factory=dict)
    # manager.conf
    manager: ManagerConf = field(default_factory=ManagerConf)

    def path(self, name: str) -> Path:
        """Where a top-level file is (or would be)."""
        f = self.files.get(name)
        return f.path if f is not None else self.folder / name

    @property
    def endpoints(self) -> dict[str, PjsipObject]:
        return {o.name: o for (_, t), o in self.pjsip.items() if t == "endpoint"}

    def priorities(self) -> Iterable[tuple[Context, Extension, Priority]]:
        """Every priority of every context, in file order within an extension."""
        for ctx in self.contexts.values():
            for ext in ctx.extensions.values():
                for p in ext.priorities:
                    yield ctx, ext, p


# --- extension patterns -------------------------------------------------------

_PATTERN_CLASSES = {"X": "0-9", "Z": "1-9", "N": "2-9"}


def pattern_matches(pattern: str, number: str) -> bool:
    """Whether a ``_`` pattern (X, Z, N, [..], ``.``, ``!``) matches ``number`` as a whole."""
    regex = []
    i, body = 0, pattern[1:].split("/")[0]
    while i < len(body):
        ch = body[i]
        if ch.upper() in _PATTERN_CLASSES:
            regex.append(f"[{_PATTERN_CLASSES[ch.upper()]}]")
        elif ch == "[":
            end = body.find("]", i)
            if end < 0:
                return False
            regex.append("[" + re.escape(body[i + 1 : end]).replace("\\-", "-") + "]")
            i = end
        elif ch == ".":
            regex.append(".+")
        elif ch == "!":
            regex.append(".*")
        elif ch == "-":
            pass  # Asterisk ignores dashes in patterns
        else:
            regex.append(re.escape(ch))
        i += 1
    return re.fullmatch("".join(regex), number) is not None


# --- dialplan -----------------------------------------------------------------

_NOT_CONTEXTS = ("general", "globals")


def split_app(text: str) -> tuple[str, str, bool]:
    """``App(data)`` (or the old ``App,data``) → app, data, and whether a ')' was missing."""
    firstc, firstp = text.find(","), text.find("(")
    if firstc >= 0 and (firstp < 0 or firstc < firstp):
        return text[:firstc].strip(), text[firstc + 1 :], False
    if firstp < 0:
        return text.strip(), "", False
    rest = text[firstp + 1 :]
    end = rest.rfind(")")
    if end < 0:
        return text[:firstp].strip(), rest, True
    return text[:firstp].strip(), rest[:end], False


def _build_dialplan(cf: ConfigFile | None, problems: list[Finding], config: Config) -> None:
    if cf is None:
        return

    def problem(level: Level, e: Entry | Section, code: str, message: str) -> None:
        problems.append(Finding(level, e.file, e.line, code, message))

    for sec in cf.categories():
        kind = sec.name.lower()
        if kind in _NOT_CONTEXTS:
            target = config.general if kind == "general" else config.globals
            for e in sec.all_entries:
                if e.key.lower() in ("exten", "same", "include"):
                    problem("error", e, "exten-outside-context", f"'{e.key}' in [{sec.name}], which is not a context")
                else:
                    target[e.key] = e
            continue
        ctx = config.contexts.get(sec.name)
        if ctx is None:  # a context written twice is one context (pbx_config merges them)
            ctx = config.contexts[sec.name] = Context(sec.name, sec.file, sec.line)
        last_ext: Extension | None = None
        lastpri: int | None = None
        for e in sec.all_entries:
            key = e.key.lower()
            if key == "include":
                ctx.includes.append(e.value.split(",")[0].strip())
                continue
            if key in ("ignorepat", "switch", "lswitch", "eswitch"):
                continue
            if key not in ("exten", "same"):
                problem("error", e, "syntax", f"'{e.key}' means nothing in a context (expected exten, same or include)")
                continue
            if key == "same":
                if last_ext is None:
                    problem("error", e, "same-without-exten", f"'same =>' in [{sec.name}] has no 'exten =>' before it")
                    continue
                ext_name, rest = last_ext.name, e.value
            else:
                ext_name, comma, rest = e.value.partition(",")
                ext_name = ext_name.strip()
                if not comma or not ext_name:
                    problem("error", e, "syntax", "expected 'exten => NAME,PRIORITY,Application(data)'")
                    continue
            pri, comma, app_text = rest.partition(",")
            pri = pri.strip()
            if not comma:
                problem("error", e, "syntax", "expected a priority and an application after the extension")
                continue
            ext = ctx.extensions.get(ext_name)
            if ext is None:
                ext = ctx.extensions[ext_name] = Extension(ext_name, file=e.file, line=e.line)
            last_ext = ext
            label = None
            if "(" in pri:
                pri, _, label = pri.partition("(")
                label, pri = label.rstrip(")").strip() or None, pri.strip()
            plus = 0
            if "+" in pri:
                pri, _, inc = pri.partition("+")
                plus = int(inc) if inc.strip().isdigit() else 0
            if pri == "hint":
                continue
            number: int | None = None
            if pri in ("n", "next"):
                if lastpri is None:
                    problem("error", e, "bad-priority",
                            f"priority 'n' on the first line of [{sec.name}]: Asterisk drops it")
                    continue
                number = lastpri + 1
            elif pri in ("s", "same"):
                if lastpri is None:
                    problem("error", e, "bad-priority",
                            f"priority 's' on the first line of [{sec.name}]: Asterisk drops it")
                    continue
                number = lastpri
            elif re.fullmatch(r"-?\d+", pri):
                number = int(pri)
            else:
                target = ext.labelled(pri)
                number = target.number if target is not None else None
                if number is None:
                    problem("error", e, "bad-priority", f"priority '{pri}' is neither a number, 'n' nor a label above")
                    continue
            number += plus
            lastpri = number
            if number < 1:
                problem("error", e, "bad-priority", f"priority {number}: priorities start at 1")
                continue
            app, data, unclosed = split_app(app_text.strip())
            if not app:
                problem("error", e, "syntax", f"priority {number} of {ext_name} has no application")
                continue
            if unclosed:
                problem("error", e, "unclosed-bracket", f"{app}( has no closing ')'")
            if ext.priority(number) is not None:
                other = ext.priority(number)
                problem("error", e, "duplicate-priority",
                        f"{ext_name}@{ctx.name} priority {number} is already at line {other.line}: "
                        "Asterisk refuses this one")
                continue
            if label is not None and ext.labelled(label) is not None:
                problem("error", e, "duplicate-label", f"label '{label}' is already used in {ext_name}@{ctx.name}")
            ext.priorities.append(Priority(number, label, app, data, e.file, e.line))
    for ctx in config.contexts.values():
        for ext in ctx.extensions.values():
            ext.priorities.sort(key=lambda p: p.number)
            if not ext.priorities:
                continue
            if ext.priorities[0].number != 1:
                first = ext.priorities[0]
                problems.append(Finding("error", first.file, first.line, "no-priority-1",
                                        f"{ext.name}@{ctx.name} has no priority 1: calls can never enter it"))
            for before, after in zip(ext.priorities, ext.priorities[1:]):
                if after.number != before.number + 1:
                    problems.append(Finding("warning", after.file, after.line, "priority-gap",
                                            f"{ext.name}@{ctx.name} jumps from priority {before.number} to "
                                            f"{after.number}: execution stops after {before.number}"))


# --- queues, pjsip, manager ----------------------------------------------------


def _build_queues(cf: ConfigFile | None, problems: list[Finding], config: Config) -> None:
    if cf is None:
        return
    for sec in cf.categories():
        if sec.name.lower() == "general":
            config.queue_general = {e.key.lower(): e for e in sec.all_entries}
            continue
        q = Queue(sec.name, sec.file, sec.line)
        for e in sec.all_entries:
            if e.key.lower() != "member":
                q.options[e.key.lower()] = e.value
                q.entries[e.key.lower()] = e
                continue
            parts = [p.strip() for p in e.value.split(",")]
            penalty = 0
            if len(parts) > 1 and parts[1]:
                try:
                    penalty = int(parts[1])
                except ValueError:
                    problems.append(Finding("error", e.file, e.line, "syntax",
                                    f"member penalty '{parts[1]}' is not a number"))
            name = parts[2] if len(parts) > 2 and parts[2] else None
            q.members.append(Member(parts[0], penalty, name, e.file, e.line))
        q.missing_includes = [i for i in sec.includes if not i.resolved]
        config.queues[q.name] = q


def _build_pjsip(cf: ConfigFile | None, problems: list[Finding], config: Config) -> None:
    if cf is None:
        return
    for sec in cf.sections:
        if sec.template:
            config.pjsip_templates[sec.name] = sec
            continue
        type_ = sec.get("type")
        if not type_:
            problems.append(Finding("error", sec.file, sec.line, "syntax",
                            f"[{sec.name}] has no 'type' (PJSIP ignores it)"))
            continue
        key = (sec.name, type_.strip().lower())
        if key in config.pjsip:
            first = config.pjsip[key]
            problems.append(Finding("error", sec.file, sec.line, "duplicate-object",
                                    f"{key[1]} '{sec.name}' is already defined at {first.file.name}:{first.line}"))
            continue
        config.pjsip[key] = PjsipObject(sec.name, key[1], sec.file, sec.line, sec.all_entries)


def _classes(value: str) -> frozenset[str]:
    return frozenset(c.strip().lower() for c in value.split(",") if c.strip())


def _build_manager(cf: ConfigFile | None) -> ManagerConf:
    mc = ManagerConf()
    if cf is None:
        return mc
    mc.file = cf.path
    for sec in cf.categories():
        opts = {e.key.lower(): e for e in sec.all_entries}
        if sec.name.lower() == "general":
            mc.general, mc.line = opts, sec.line
            continue
        mc.users[sec.name] = AmiUser(
            sec.name, sec.file, sec.line,
            read=_classes(opts["read"].value) if "read" in opts else frozenset(),
            write=_classes(opts["write"].value) if "write" in opts else frozenset(),
            options=opts,
        )
    return mc


# --- the folder -----------------------------------------------------------------


def parse_file(path: Path, *, folders: Sequence[Path] = ()) -> tuple[ConfigFile, list[Finding]]:
    """One top-level file with its includes (looked up in ``folders``, else the file's own folder)."""
    problems: list[Finding] = []
    cf = _Reader(tuple(folders) or (path.parent,), problems).read(path)
    return cf, problems


def parse_folder(folder: Path, *, extra_folders: Sequence[Path] = ()) -> Config:
    """Read every ``*.conf`` of ``folder`` the way Asterisk would, with file:line for everything.

    ``#include`` / ``#tryinclude`` are looked up in ``folder`` then ``extra_folders``
    (the lab's own files, generated files). A file that another file includes
    is read only there, not again as a top-level file.
    """
    folder = Path(folder)
    folders = (folder, *map(Path, extra_folders))
    parsed: dict[str, tuple[ConfigFile, list[Finding]]] = {}
    for path in sorted(folder.glob("*.conf")):
        if path.is_file():
            parsed[path.name] = parse_file(path, folders=folders)
    included = {p.resolve() for cf, _ in parsed.values() for inc in cf.includes for p in inc.resolved}
    files: dict[str, ConfigFile] = {}
    problems: list[Finding] = []
    for name, (cf, found) in parsed.items():
        if cf.path.resolve() in included:
            continue
        files[name] = cf
        problems.extend(found)
    config = Config(folder, folders[1:], files, problems, manager=_build_manager(files.get(MANAGER)))
    _build_dialplan(files.get(EXTENSIONS), problems, config)
    _build_queues(files.get(QUEUES), problems, config)
    _build_pjsip(files.get(PJSIP), problems, config)
    return config
