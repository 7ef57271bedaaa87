"""Settings of one backend process, read from ``JIEJING_*`` environment variables.

Each field ``name`` is set by ``JIEJING_NAME`` (e.g. ``JIEJING_HTTP_PORT``); an
unset or empty variable keeps the default. Lists are comma-separated. A bad
value stops the process at start-up with a message naming the variable, not
at the first call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PREFIX = "JIEJING_"


class ConfigError(ValueError):
    """A ``JIEJING_*`` variable holds a value the backend cannot use."""


def _default_db_url() -> str:
    # Resolved once at start-up so a later change of directory cannot move the database.
    return "sqlite+aiosqlite:///" + str(Path("var", "jiejing.db").absolute())


def _default_web_vendor() -> str:
    # Where sip-lab/bootstrap.sh bundles the pages' browser libraries (npm), next to the database's var/.
    return str(Path("vendor", "web", "dist").absolute())


# The AMI secrets dialplan/manager.conf ships with: anyone who has read the repository knows them.
LAB_AMI_SECRETS = frozenset({"jiejing-lab", "jiejing-lab-admin"})


@dataclass(frozen=True, slots=True)
class Settings:
    db_url: str = field(default_factory=_default_db_url)
    http_host: str = "127.0.0.1"
    http_port: int = 8110
    intake_host: str = "127.0.0.1"  # the dialplan's CURL() intake (JIEJING_INTAKE in extensions.conf)
    intake_port: int = 4574
    # The intake answers in a process of its own (telephony/intake_process.py); no: in this one (tests, debugging).
    intake_process: bool = True
    agi_host: str = "127.0.0.1"  # FastAGI: the seats' feature codes
    agi_port: int = 4573
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_user: str = "jiejing"
    ami_secret: str = field(default="jiejing-lab", repr=False)  # kept out of logs
    recordings_dir: str = ""  # empty: recordings are not bound (the lab sets it)
    # Asterisk's channel event log (dialplan/cel_custom.conf: <astlogdir>/cel-custom/jiejing.csv), replayed after
    # any gap; empty: no replay, the channel snapshot alone reconciles after a reconnect (the lab sets it)
    cel_file: str = ""
    timezone: str = "Asia/Shanghai"
    ticket_prefix: str = "110"
    intake_contexts: tuple[str, ...] = ("from-carrier",)
    emergency_numbers: tuple[str, ...] = ("110",)
    city_file: str = ""  # stations, cells, officers, roster (JSON or TOML); the lab's by default
    seat_queue: str = "emergency-110"  # the queue seats join when their call-takers log in
    wrap_up_s: float = 10.0  # after each call, before the seat rings again
    token_ttl_s: float = 12 * 3600.0  # a log-in lasts one long shift
    phones_file: str = ""  # browser seats' WebSocket URL and SIP credentials (JSON; core/seats/phones.py)
    web_vendor: str = field(default_factory=_default_web_vendor)  # served as /vendor/ (jssip.min.js)
    lab: bool = False  # JIEJING_LAB=yes: the lab, where the shipped AMI secrets are allowed
    # CPU priority below Asterisk's (os.nice increment, and its session's: telephony/serve.py yield_cpu): under
    # load the callers' Asterisk gets the CPU, and the record, which Asterisk's log keeps, catches up afterwards.
    # 0 leaves it as started. At 10 the backend still moved the answer p99 at 40 calls/s by 0.1-0.2 s in the lab.
    nice: int = 19

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name, "").strip()
            if not raw:
                continue
            if f.name.endswith("_port"):
                values[f.name] = _port(name, raw)
            elif f.name in ("intake_contexts", "emergency_numbers"):
                values[f.name] = _list(name, raw)
            elif f.name.endswith("_s"):
                values[f.name] = _seconds(name, raw)
            elif f.name in ("lab", "intake_process"):
                values[f.name] = _flag(name, raw)
            elif f.name == "nice":
                try:
                    values[f.name] = int(raw)
                except ValueError:
                    raise ConfigError(f"{name} must be a whole number 0..19, got {raw!r}") from None
            else:
                values[f.name] = raw
        settings = cls(**values)
        settings._validate()
        return settings

    def _validate(self) -> None:
        if not 0 <= self.nice <= 19:
            raise ConfigError(f"{PREFIX}NICE must be 0..19, got {self.nice}")
        if not self.token_ttl_s > 0:
            raise ConfigError(f"{PREFIX}TOKEN_TTL_S must be more than 0 seconds")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{PREFIX}TIMEZONE: unknown time zone {self.timezone!r}") from None
        if (
            not self.ticket_prefix.isascii()
            or not self.ticket_prefix.isalnum()
            or len(self.ticket_prefix) > 16
        ):
            raise ConfigError(
                f"{PREFIX}TICKET_PREFIX must be 1-16 ASCII letters or digits, got {self.ticket_prefix!r}"
            )


def _flag(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "yes", "true", "on"):
        return True
    if value in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"{name} must be yes or no, got {raw!r}")


def refuse_lab_secret(settings: Settings) -> None:
    """A center must not run on the AMI secret the repository ships (ConfigError), only the lab may."""
    if settings.ami_secret in LAB_AMI_SECRETS and not settings.lab:
        raise ConfigError(
            f"{PREFIX}AMI_SECRET is the secret shipped in dialplan/manager.conf, which anyone can read: set your "
            f"own in manager.conf and {PREFIX}AMI_SECRET (or {PREFIX}LAB=yes for the lab)"
        )


def _port(name: str, raw: str) -> int:
    # isdecimal() alone would accept non-ASCII digits such as "８１１０".
    if not (raw.isascii() and raw.isdecimal()):
        raise ConfigError(f"{name} must be an integer port number, got {raw!r}")
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < 10**7:
        raise ConfigError(f"{name} must be between 0 and 10000000 seconds, got {raw!r}")
    return value


def _list(name: str, raw: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.split(","))
    if not all(items):
        raise ConfigError(f"{name} has an empty item in {raw!r}")
    return items
