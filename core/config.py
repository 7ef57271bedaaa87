"""Settings of jiejing: a configuration file, ``JIEJING_*`` environment variables over it.

Each field ``name`` is set by ``name = …`` in the configuration file (``/etc/jiejing/jiejing.toml``, or the
file ``JIEJING_CONFIG`` names) or by ``JIEJING_NAME`` (e.g. ``JIEJING_HTTP_PORT``), the variable winning; an
unset or empty variable keeps the file's value or the default. Lists are comma-separated. A secret can be
read from a file instead (``JIEJING_AMI_SECRET_FILE``). A bad value stops the process at start-up with a
message naming the setting, not at the first call. ``jiejing config check`` prints what is in effect and
``docs/configuration.md`` (generated from the fields' docs here) describes every setting.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PREFIX = "JIEJING_"
CONFIG_FILE = "/etc/jiejing/jiejing.toml"  # read when it exists; JIEJING_CONFIG names another


class ConfigError(ValueError):
    """A setting holds a value the backend cannot use."""


def _default_db_url() -> str:
    # Resolved once at start-up so a later change of directory cannot move the database.
    return "sqlite+aiosqlite:///" + str(Path("var", "jiejing.db").absolute())


def _default_web_vendor() -> str:
    # Where sip-lab/bootstrap.sh bundles the pages' browser libraries (npm), next to the database's var/.
    return str(Path("vendor", "web", "dist").absolute())


RULE_FILES = ("routing.toml", "keywords.toml", "surge.toml", "guidance.toml", "callback.toml")  # the triage's rules (core/triage/desk.py)
DEFAULT_RULES_DIR = Path(__file__).resolve().parents[1] / "dialplan"  # the source tree's, when rules_dir is unset
# The AMI secrets dialplan/manager.conf ships with: anyone who has read the repository knows them.
LAB_AMI_SECRETS = frozenset({"jiejing-lab", "jiejing-lab-admin"})


def setting(doc: str, default: Any = None, *, factory: Any = None, secret: bool = False) -> Any:
    """A settings field with its documentation (``docs/configuration.md`` is generated from it)."""
    meta = {"doc": doc, "secret": secret}
    if factory is not None:
        return field(default_factory=factory, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


def environment(env: Mapping[str, str] | None = None, *, known: Collection[str] | None = None) -> dict[str, str]:
    """The settings' source as variables: the configuration file's values, ``JIEJING_*`` variables over them, and
    each ``JIEJING_<SECRET>_FILE`` read into ``JIEJING_<SECRET>``. With ``known`` (setting names), a key of the
    file that is none of them is an error: a misspelt setting must not pass as unset."""
    env = os.environ if env is None else env
    named = env.get(PREFIX + "CONFIG", "").strip()
    path = Path(named) if named else Path(CONFIG_FILE)
    out: dict[str, str] = {}
    if named or path.exists():
        out.update(_file_values(path, known))
    out.update({k: v for k, v in env.items() if not (k.startswith(PREFIX) and not v.strip())})
    for name in secret_names():
        var, file_var = PREFIX + name.upper(), PREFIX + name.upper() + "_FILE"
        if out.get(file_var, "").strip():
            if env.get(var, "").strip():
                raise ConfigError(f"both {var} and {file_var} are set: keep one")
            try:
                out[var] = Path(out[file_var].strip()).read_text(encoding="utf-8").strip()
            except PermissionError as exc:
                # Not this user's secret (the backend's user cannot read the admin commands' one): an error
                # only for a command that needs it (require_readable_secrets).
                out[file_var + UNREADABLE] = f"{file_var}: cannot read the secret: {exc}"
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{file_var}: cannot read the secret: {exc}") from None
            if not out[var]:
                raise ConfigError(f"{file_var}: {out[file_var]} is empty")
    return out


_SECRETS: set[str] = set()
UNREADABLE = "_UNREADABLE"


def require_readable_secrets(cls: type, env: Mapping[str, str]) -> None:
    """A ``…_FILE`` secret of ``cls`` that this user may not read is an error where ``cls`` is read."""
    for f in fields(cls):
        if f.metadata.get("secret") and (problem := env.get(PREFIX + f.name.upper() + "_FILE" + UNREADABLE)):
            raise ConfigError(problem)


def secret_names() -> set[str]:
    """Fields whose value may come from a file (``…_FILE``) and is masked when printed."""
    return _SECRETS


def register_secrets(cls: type) -> type:
    _SECRETS.update(f.name for f in fields(cls) if f.metadata.get("secret"))
    return cls


def _file_values(path: Path, known: Collection[str] | None) -> dict[str, str]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"configuration file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path}: {exc}") from None
    out: dict[str, str] = {}
    for key, value in data.items():
        name = key[:-5] if key.endswith("_file") and key[:-5] in secret_names() else key
        if known is not None and name not in known:
            raise ConfigError(f"configuration file {path}: unknown setting {key!r} (see `jiejing config reference`)")
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, (int, float, str)):
            text = str(value)
        elif isinstance(value, list) and all(isinstance(v, (int, float, str)) and not isinstance(v, bool)
                                             for v in value):
            text = ",".join(str(v) for v in value)
        else:
            raise ConfigError(f"configuration file {path}: {key} must be a string, number, yes/no or a list, "
                              f"got {type(value).__name__}")
        out[PREFIX + key.upper()] = text
    return out


@register_secrets
@dataclass(frozen=True, slots=True)
class Settings:
    lab: bool = setting("The lab: the AMI secrets dialplan/manager.conf ships are allowed, and `serve` takes the lab's "
                        "city, recordings folder and channel event log where they are not set. Never in a center.",
                        False)
    db_url: str = setting("The store, an SQLAlchemy URL: `sqlite+aiosqlite:////var/lib/jiejing/jiejing.db` (an "
                          "absolute path) or `postgresql+asyncpg://user@host/db`. Default: var/jiejing.db under the "
                          "directory the command is started in (the lab only).", factory=_default_db_url)
    http_host: str = setting("Address of the operations web (pages, API, /healthz, /metrics); put a TLS proxy in "
                             "front of it.", "127.0.0.1")
    http_port: int = setting("Port of the operations web.", 8110)
    intake_host: str = setting("Address of the intake the dialplan's CURL() asks (JIEJING_INTAKE in "
                               "extensions.conf).", "127.0.0.1")
    intake_port: int = setting("Port of the intake.", 4574)
    intake_process: bool = setting("The intake answers in a process of its own (telephony/intake_process.py); no: "
                                   "in the backend's (tests, debugging).", True)
    agi_host: str = setting("Address of the FastAGI server: the seats' feature codes.", "127.0.0.1")
    agi_port: int = setting("Port of the FastAGI server.", 4573)
    ami_host: str = setting("Asterisk's manager interface (AMI): address.", "127.0.0.1")
    ami_port: int = setting("AMI port.", 5038)
    ami_user: str = setting("AMI user of the backend (dialplan/manager.conf [jiejing]).", "jiejing")
    ami_secret: str = setting("AMI secret of that user. The lab's shipped secret is refused outside the lab.",
                              "jiejing-lab", secret=True)
    recordings_dir: str = setting("Where Asterisk writes the recordings (MixMonitor): they are hashed and bound to "
                                  "tickets from here, and retention removes files only inside it. Required in a "
                                  "center.", "")
    major_message_dir: str = setting("Where a declared major incident's recorded message is written for Asterisk "
                                     "to play (the folder dialplan/musiconhold.conf names, /var/lib/asterisk/sounds/"
                                     "jiejing as Asterisk sees it). Unset: callers hear the generic message only.",
                                     "")
    cel_file: str = setting("Asterisk's channel event log (dialplan/cel_custom.conf: "
                            "<astlogdir>/cel-custom/jiejing.csv), replayed after any gap. Required in a center: "
                            "without it calls made while the backend was down have no ticket.", "")
    timezone: str = setting("The center's time zone (IANA name): shifts, hourly counts, ticket numbers.",
                            "Asia/Shanghai")
    ticket_prefix: str = setting("First part of every ticket number (1-16 ASCII letters or digits).", "110")
    intake_contexts: tuple[str, ...] = setting("Dialplan contexts whose calls are emergency calls.",
                                               ("from-carrier",))
    emergency_numbers: tuple[str, ...] = setting("Numbers dialled for the emergency line.", ("110",))
    city_file: str = setting("The city: stations, cells, officers and roster (JSON or TOML, as sip-lab/city.json). "
                             "Required in a center; the lab's synthetic city is refused outside the lab.", "")
    rules_dir: str = setting("Folder of the rule files routing.toml, keywords.toml, surge.toml, guidance.toml and "
                             "callback.toml. "
                             "Default: dialplan/ of the source tree; an installed center keeps its own (e.g. "
                             "/etc/jiejing/rules).", "")
    seat_queue: str = setting("The Asterisk queue seats join when their call-takers log in.", "emergency-110")
    wrap_up_s: float = setting("Seconds after each call before the seat rings again.", 10.0)
    token_ttl_s: float = setting("Seconds a web log-in lasts (one long shift).", 12 * 3600.0)
    aml_ticket_window_s: float = setting("Handset location (AML): a caller's AML message binds to the live ticket "
                                         "of that number, else to its latest ticket opened within this many "
                                         "seconds.", 3600.0)
    aml_max_age_s: float = setting("Handset location (AML): a fix positioned more than this many seconds before "
                                   "it arrived, or before the call began, is refused as stale (kept for the "
                                   "audit).", 1800.0)
    silent_after_s: float = setting("Silent calls: a caller who has not spoken this many seconds after a seat "
                                    "answered is flagged silent on the desk and the ticket (Asterisk's talk "
                                    "detection); the call is never hung up. 0: no watch.", 8.0)
    silent_sms_window_s: float = setting("Silent calls: an SMS from a number the desk texted within this many "
                                         "seconds goes to that ticket (while it is not closed) instead of "
                                         "opening a text report.", 86400.0)
    auto_callback: bool = setting("Automatic call-backs: the center calls back lost 110 callers (abandoned, cut off "
                                  "or ended within seconds of the answer) as callback.toml in the rules folder "
                                  "says. no: none at all (the lab's tests, a center that calls back by hand).", True)
    auto_callback_trunk: str = setting("Automatic call-backs: the PJSIP endpoint of the carrier trunk they ring "
                                       "through (the one JIEJING_CARRIER_OUT names in extensions.conf).",
                                       "carrier-out")
    auto_callback_cli: str = setting("Automatic call-backs: the number the called-back caller's phone shows.", "110")
    phones_file: str = setting("Browser seats' WebSocket URL and SIP credentials (JSON; core/seats/phones.py).", "")
    web_vendor: str = setting("The pages' browser libraries, served as /vendor/ (set-up bundles them from npm).",
                              factory=_default_web_vendor)
    trusted_proxies: tuple[str, ...] = setting(
        "Addresses of the TLS proxies in front of the web (e.g. 127.0.0.1): for a request from one of them, the "
        "client's address is the last one the proxy put in X-Forwarded-For (log-in throttling and the addresses handlers record). "
        "Empty: X-Forwarded-For is ignored.", ())
    log_format: str = setting("Log lines as text (dated, for a person) or json (one object per line, for a "
                              "collector).", "text")
    nice: int = setting("CPU priority below Asterisk's (0-19; the backend's session too, telephony/serve.py "
                        "yield_cpu): under load the callers' Asterisk gets the CPU, and the record, which "
                        "Asterisk's log keeps, catches up afterwards. 0 leaves it as started.", 19)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """From ``env`` as given, or, by default, from the configuration file and the process's variables."""
        env = environment() if env is None else env
        require_readable_secrets(cls, env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name, "").strip()
            if not raw:
                continue
            if f.name.endswith("_port"):
                values[f.name] = _port(name, raw)
            elif f.name in ("intake_contexts", "emergency_numbers", "trusted_proxies"):
                values[f.name] = _list(name, raw)
            elif f.name.endswith("_s"):
                values[f.name] = _seconds(name, raw)
            elif f.name in ("lab", "intake_process", "auto_callback"):
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
        for address in self.trusted_proxies:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"{PREFIX}TRUSTED_PROXIES: {address!r} is not an IP address") from None
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be text or json, got {self.log_format!r}")
        if not 0 <= self.nice <= 19:
            raise ConfigError(f"{PREFIX}NICE must be 0..19, got {self.nice}")
        if not self.token_ttl_s > 0:
            raise ConfigError(f"{PREFIX}TOKEN_TTL_S must be more than 0 seconds")
        for name in ("aml_ticket_window_s", "aml_max_age_s", "silent_sms_window_s"):
            if not 0 < getattr(self, name) <= 7 * 86400:
                raise ConfigError(f"{PREFIX}{name.upper()} must be more than 0 seconds and at most a week")
        if not 0 <= self.silent_after_s <= 300:
            raise ConfigError(f"{PREFIX}SILENT_AFTER_S must be 0 (no watch) to 300 seconds")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.auto_callback_trunk):
            raise ConfigError(f"{PREFIX}AUTO_CALLBACK_TRUNK must be a PJSIP endpoint name, got {self.auto_callback_trunk!r}")
        if not re.fullmatch(r"\+?[0-9]{2,20}", self.auto_callback_cli):
            raise ConfigError(f"{PREFIX}AUTO_CALLBACK_CLI must be a phone number, got {self.auto_callback_cli!r}")
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


def refuse_lab_defaults(settings: Settings, source: Mapping[str, str]) -> None:
    """Outside the lab, a ConfigError naming every lab default ``settings`` would run a center on."""
    problems = production_problems(settings, source)
    if problems:
        raise ConfigError(f"not starting outside the lab ({PREFIX}LAB=yes is for the lab only):\n  - "
                          + "\n  - ".join(problems))


def production_problems(settings: Settings, source: Mapping[str, str]) -> list[str]:
    """What stops ``serve`` outside the lab: each a lab default that would silently run a center wrong.

    ``source`` is what the settings were read from (``environment()``): it tells a value set from a default.
    """
    if settings.lab:
        return []
    problems = []
    if settings.ami_secret in LAB_AMI_SECRETS:
        problems.append(f"{PREFIX}AMI_SECRET is the secret shipped in dialplan/manager.conf, which anyone can read: "
                        "set your own in manager.conf and here")
    if not settings.city_file:
        problems.append(f"{PREFIX}CITY_FILE is not set: the center's stations, cells, officers and roster")
    elif _is_lab_city(settings.city_file):
        problems.append(f"{PREFIX}CITY_FILE {settings.city_file} is the lab's synthetic city (\"lab\": true)")
    if not settings.recordings_dir:
        problems.append(f"{PREFIX}RECORDINGS_DIR is not set: recordings would not be bound to tickets")
    elif not Path(settings.recordings_dir).is_absolute():
        problems.append(f"{PREFIX}RECORDINGS_DIR {settings.recordings_dir!r} is relative: give an absolute path")
    rules = Path(settings.rules_dir) if settings.rules_dir else DEFAULT_RULES_DIR
    missing = [name for name in RULE_FILES if not (rules / name).is_file()]
    if missing:
        problems.append(f"{PREFIX}RULES_DIR: {', '.join(missing)} not found in {rules} (copy them from dialplan/ "
                        "and set the folder)")
    if not settings.cel_file:
        problems.append(f"{PREFIX}CEL_FILE is not set: calls made while the backend is down would get no ticket")
    if not source.get(PREFIX + "DB_URL", "").strip():
        problems.append(f"{PREFIX}DB_URL is not set: the store would be var/jiejing.db under whatever directory "
                        "the service starts in")
    elif (path := sqlite_path(settings.db_url)) is not None and not Path(path).is_absolute():
        problems.append(f"{PREFIX}DB_URL names the relative SQLite path {path!r}: give an absolute one "
                        "(sqlite+aiosqlite:////var/lib/jiejing/jiejing.db)")
    return problems


def _is_lab_city(path: str) -> bool:
    try:
        raw = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(raw) if path.endswith(".toml") else json.loads(raw)
    except (OSError, UnicodeDecodeError, ValueError):
        return False  # unreadable: serve's own loading of the city says why
    return isinstance(data, dict) and data.get("lab") is True


def sqlite_path(url: str) -> str | None:
    """The file of an SQLite URL (``sqlite[+driver]:///path``), None for another database or in-memory."""
    scheme, sep, rest = url.partition(":///")
    if not sep or not scheme.split("+")[0] == "sqlite":
        return None
    path = rest.split("?")[0]
    return path if path and path != ":memory:" else None


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


@register_secrets
@dataclass(frozen=True, slots=True)
class AdminSettings:
    """Settings of the admin commands (``jiejing dialplan``); the AMI address is ``Settings``'."""

    asterisk_etc: str = setting("The configuration folder of the Asterisk `jiejing dialplan apply` changes. "
                                "Default: the lab's when the lab is provisioned, else /etc/asterisk.", "")
    state_dir: str = setting("Where the dialplan's applied versions are kept (dialplan-versions/), outside the "
                             "checkout, next to the database.", "var")
    ami_admin_user: str = setting("AMI user of the admin commands (dialplan/manager.conf [jiejing-admin]).",
                                  "jiejing-admin")
    ami_admin_secret: str = setting("AMI secret of that user. The lab's shipped secret is refused outside the lab.",
                                    "jiejing-lab-admin", secret=True)
    asterisk_rx: str = setting("The command that runs an Asterisk CLI command, e.g. `asterisk -rx` (shell words). "
                               "Default: the lab's chroot in the lab, else `asterisk -rx`.", "")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AdminSettings:
        env = environment() if env is None else env
        require_readable_secrets(cls, env)
        values = {f.name: env[PREFIX + f.name.upper()].strip() for f in fields(cls)
                  if env.get(PREFIX + f.name.upper(), "").strip()}
        return cls(**values)
