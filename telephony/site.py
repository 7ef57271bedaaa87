"""``jiejing site init``: this installation's own Asterisk files, next to the shipped dialplan.

The shipped ``dialplan/`` is the same in every center; what differs — addresses, the carrier's trunk, the seats'
phones and their passwords, the desks' phones, the AMI secrets — lives in site files that the shipped files
include (``#tryinclude``) and that ``jiejing dialplan apply`` never overwrites:

========================  =====================================================================================
``pjsip_site.conf``       the SIP address (``[transport-udp](+)``, replacing the lab's loopback)
``manager_site.conf``     the AMI users' own secrets (``[jiejing](+)``, ``[jiejing-admin](+)``)
``http_site.conf``        Asterisk's HTTP server (browser seats' SIP over WebSocket), kept on loopback
``pjsip_trunks.conf``     the carrier: 110 calls in (matched by address), call-backs out
``pjsip_seats.conf``      the call-taker positions' phones, registering with a password each
``pjsip_field.conf``      desks reached by phone: anti-fraud, the 12345 hotline, the supervisors (overflow)
``queues_members.conf``   empty: seats join the 110 queue when a call-taker logs in at the desk
========================  =====================================================================================

Secrets are made here (``secrets.token_urlsafe``) and written, readable by root only, into a secrets folder: the
AMI secrets as the files the backend's ``JIEJING_AMI_SECRET_FILE`` and ``JIEJING_AMI_ADMIN_SECRET_FILE`` name,
the phones' passwords as ``phones.csv`` for whoever provisions the handsets. Nothing is overwritten: a second
``init`` into the same folder is refused, so a running center's passwords cannot be replaced by accident.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

SITE_FILES = ("pjsip_site.conf", "manager_site.conf", "http_site.conf", "pjsip_trunks.conf", "pjsip_seats.conf",
              "pjsip_field.conf", "queues_members.conf")
# The desks the shipped routing.toml and extensions.conf dial (hand-overs, overflow).
DEFAULT_DESKS = ("antifraud-desk", "hotline-12345", "supervisor-desk")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,38}$")


class SiteError(ValueError):
    """A site value is unusable; the message names it and says what is expected."""


def _host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SiteError(f"{what} {value!r}: give ADDRESS:PORT, e.g. 0.0.0.0:5060")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SiteError(f"{what} {value!r}: the address must be an IP address") from None
    return host, int(port)


@dataclass(frozen=True)
class Site:
    sip_bind: str = "0.0.0.0:5060"
    carrier: tuple[str, ...] = ()  # addresses or networks the carrier's 110 calls come from
    carrier_out: str = ""  # SIP URI of the carrier for call-backs, e.g. sip:203.0.113.10:5060
    seats: int = 100
    seat_prefix: str = "seat"
    desks: tuple[str, ...] = DEFAULT_DESKS
    http_bind: str = "127.0.0.1:8088"

    def validate(self) -> None:
        _host_port(self.sip_bind, "--sip-bind")
        _host_port(self.http_bind, "--http-bind")
        if not self.carrier:
            raise SiteError("--carrier: give the address (or network) the carrier's 110 calls come from")
        for net in self.carrier:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise SiteError(f"--carrier {net!r} is not an IP address or network") from None
        if not re.match(r"^sips?:[^\s;,]+$", self.carrier_out):
            raise SiteError(f"--carrier-out {self.carrier_out!r}: give the carrier's SIP URI, e.g. "
                            "sip:203.0.113.10:5060")
        if not 0 < self.seats <= 999:
            raise SiteError(f"--seats {self.seats}: from 1 to 999")
        for name in (self.seat_prefix + "001", *self.desks):
            if not _NAME.match(name):
                raise SiteError(f"{name!r} is not a usable phone name (lower-case letters, digits, '-')")
        if len(set(self.desks)) != len(self.desks):
            raise SiteError("--desk names must differ")

    def seat_names(self) -> list[str]:
        return [f"{self.seat_prefix}{i:03d}" for i in range(1, self.seats + 1)]


def _phone(name: str, template: str, password: str) -> list[str]:
    return [
        f"[{name}]({template})",
        f"auth = {name}-auth",
        f"aors = {name}",
        f"[{name}-auth]",
        "type = auth",
        "auth_type = userpass",
        f"username = {name}",
        f"password = {password}",
        f"[{name}](seat-aor)",
        "",
    ]


def _new_secret() -> str:
    return secrets.token_urlsafe(18)


def render(site: Site, new: Callable[[], str] = _new_secret) -> tuple[dict[str, str], dict[str, str]]:
    """The site files' texts, and the secrets they hold (``ami``, ``ami_admin``, and one per phone)."""
    site.validate()
    keys: dict[str, str] = {"ami": new(), "ami_admin": new()}
    head = "; Written by `jiejing site init`; this installation's own. `jiejing dialplan apply` never changes it.\n"
    files: dict[str, str] = {}
    files["pjsip_site.conf"] = head + f"[transport-udp](+)\nbind = {site.sip_bind}\n"
    files["manager_site.conf"] = head + (
        "; The same secrets are in the backend's secret files (JIEJING_AMI_SECRET_FILE, …_ADMIN_SECRET_FILE).\n"
        f"[jiejing](+)\nsecret = {keys['ami']}\n\n[jiejing-admin](+)\nsecret = {keys['ami_admin']}\n")
    host, port = _host_port(site.http_bind, "--http-bind")
    files["http_site.conf"] = head + (
        "; Browser seats reach /ws through the web's TLS proxy (docs/install.md); keep this on loopback.\n"
        f"[general](+)\nbindaddr = {host}\nbindport = {port}\n")
    identify = [f"match = {net}" for net in site.carrier]
    files["pjsip_trunks.conf"] = head + "\n".join([
        "; The carrier: 110 calls come in from these addresses (context from-carrier).",
        "[carrier](trunk-endpoint)",
        "context = from-carrier",
        "geoloc_incoming_call_profile = carrier-location-in",
        "",
        "[carrier-identify]",
        "type = identify",
        "endpoint = carrier",
        *identify,
        "",
        "; Call-backs go out to the carrier (JIEJING_CARRIER_OUT); nothing comes in through it.",
        "[carrier-out](trunk-endpoint)",
        "context = seats",
        "aors = carrier-out",
        "",
        "[carrier-out]",
        "type = aor",
        f"contact = {site.carrier_out}",
        "qualify_frequency = 0",
        "",
    ])
    seats: list[str] = ["; The call-taker positions' phones; passwords in phones.csv of the secrets folder."]
    for name in site.seat_names():
        keys[name] = new()
        seats += _phone(name, "seat-endpoint", keys[name])
    files["pjsip_seats.conf"] = head + "\n".join(seats)
    desks: list[str] = ["; Desks reached by phone: hand-overs (dialplan/routing.toml) and the overflow."]
    for name in site.desks:
        keys[name] = new()
        desks += _phone(name, "field-endpoint", keys[name])
    files["pjsip_field.conf"] = head + "\n".join(desks)
    files["queues_members.conf"] = head + "; Seats join the 110 queue when a call-taker logs in at the desk.\n"
    return files, keys


def write(site: Site, etc: Path, secrets_dir: Path) -> list[Path]:
    """Write the site files into ``etc`` and the secrets into ``secrets_dir``; refuse to overwrite anything."""
    files, keys = render(site)
    secret_files = {"ami-secret": keys["ami"], "ami-admin-secret": keys["ami_admin"]}
    phones = "name,password\n" + "".join(f"{k},{v}\n" for k, v in keys.items() if k not in ("ami", "ami_admin"))
    targets = [etc / name for name in files] + [secrets_dir / name for name in (*secret_files, "phones.csv")]
    present = [str(p) for p in targets if p.exists()]
    if present:
        raise SiteError("already there, not overwritten: " + ", ".join(present) +
                        " (edit them, or move them away to start again)")
    etc.mkdir(parents=True, exist_ok=True)
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written: list[Path] = []
    for name, text in files.items():
        written.append(_write(etc / name, text, 0o640))
    for name, text in secret_files.items():
        written.append(_write(secrets_dir / name, text + "\n", 0o600))
    written.append(_write(secrets_dir / "phones.csv", phones, 0o600))
    return written


def _write(path: Path, text: str, mode: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    # Asterisk reads the configuration folder through its group (jiejing asterisk install sets it).
    parent = path.parent.stat()
    if mode == 0o640 and os.geteuid() == 0:
        os.chown(path, 0, parent.st_gid)
    return path
