"""What the running Asterisk has loaded, read over AMI, in a form to compare.

The admin AMI user (`jiejing-admin`: read/write `config,reporting`, no
`system`, no `command`) can read the dialplan (ShowDialPlan), the queues
(QueueStatus) and the configuration files as Asterisk reads them (GetConfig),
and reload modules (Reload). PJSIP's own show actions need `system`, which we
do not grant, so endpoints are compared through GetConfig of the live files.
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
    pjsip: dict[str, dict[str, str]]  # section -> options, as Asterisk reads pjsip.conf


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


async def running_config_file(ami, filename: str) -> dict[str, dict[str, str]]:
    """A config file as Asterisk reads it (includes resolved), by "section/type".

    PJSIP gives an endpoint and its AOR the same section name, so the type is
    part of the key; sections without a type keep their bare name.
    """
    resp = await ami.action("GetConfig", {"Filename": filename})
    if not resp.ok:
        return {}
    names: dict[str, str] = {}
    options: dict[str, dict[str, str]] = {}
    for key, value in resp.headers:
        if key.startswith("Category-"):
            index = key.split("-", 1)[1]
            names[index] = value
            options.setdefault(index, {})
        elif key.startswith("Line-"):
            index = key.split("-")[1]
            opt, _, val = value.partition("=")
            options.setdefault(index, {})[opt.strip()] = val.strip()
    sections: dict[str, dict[str, str]] = {}
    for index, opts in options.items():
        name = names.get(index, index)
        sections[f"{name}/{opts['type']}" if "type" in opts else name] = opts
    return sections


async def read_running(ami) -> RunningState:
    return RunningState(
        dialplan=await running_dialplan(ami),
        queues=await running_queues(ami),
        pjsip=await running_config_file(ami, "pjsip.conf"),
    )
