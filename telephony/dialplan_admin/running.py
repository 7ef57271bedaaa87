"""What the running Asterisk has loaded, read over AMI, in a form to compare.

The admin AMI user (`jiejing-admin`: read/write `reporting` only) reads the
dialplan (ShowDialPlan, `config` or `reporting`) and the queues (QueueStatus,
no right needed). It has no `config` right: that class would also allow
UpdateConfig, which can rewrite manager.conf itself. Modules are reloaded
through Asterisk's control socket (``asterisk -rx``), which only a local user
with the rights on Asterisk's files can use (``dialplan apply`` writes those
files anyway).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Contexts that modules create by themselves, not from our files.
FOREIGN_REGISTRARS = {"func_periodic_hook"}


@dataclass(frozen=True)
class PriorityLine:
    number: int
    label: str | None
    app: str
    data: str


Dialplan = dict[str, dict[str, tuple[PriorityLine, ...]]]


@dataclass
class QueueState:
    strategy: str | None = None
    members: set[str] = field(default_factory=set)


@dataclass
class RunningState:
    dialplan: Dialplan
    queues: dict[str, QueueState]
    globals: dict[str, str | None] = field(default_factory=dict)  # only those asked for; None: not set


async def running_dialplan(ami) -> Dialplan:
    _, events = await ami.list_action("ShowDialPlan")
    plan: dict[str, dict[str, list[PriorityLine]]] = {}
    for e in events:
        if e.name != "ListDialplan" or e.get("Registrar") in FOREIGN_REGISTRARS:
            continue
        if not e.get("Extension") or not (e.get("Priority") or "").isdigit():
            continue  # includes and ignorepat lines
        line = PriorityLine(int(e.get("Priority")), e.get("ExtensionLabel") or None,
                            e.get("Application") or "", e.get("AppData") or "")
        plan.setdefault(e.get("Context"), {}).setdefault(e.get("Extension"), []).append(line)
    return {c: {x: tuple(sorted(p, key=lambda l: l.number)) for x, p in exts.items()} for c, exts in plan.items()}


async def running_queues(ami) -> dict[str, QueueState]:
    _, events = await ami.list_action("QueueStatus")
    queues: dict[str, QueueState] = {}
    for e in events:
        name = e.get("Queue")
        if not name:
            continue
        q = queues.setdefault(name, QueueState())
        if e.name == "QueueParams":
            q.strategy = e.get("Strategy")
        elif e.name == "QueueMember":
            q.members.add(e.get("StateInterface") or e.get("Location") or "")
    return queues


async def running_globals(ami, names) -> dict[str, str | None]:
    """The dialplan's global variables ``names`` as Asterisk holds them (Getvar without a channel; the
    ``reporting`` right reads them). None for one that is not set."""
    out: dict[str, str | None] = {}
    for name in sorted(names):
        response = await ami.action("Getvar", (("Variable", name),))
        value = response.get("Value") if response.ok else None
        out[name] = value if value not in (None, "(null)") else None
    return out


async def read_running(ami, global_names=()) -> RunningState:
    return RunningState(
        dialplan=await running_dialplan(ami),
        queues=await running_queues(ami),
        globals=await running_globals(ami, global_names),
    )
