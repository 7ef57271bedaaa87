"""Browser seats' phones: where a desk's browser registers (Asterisk's SIP WebSocket) and with which credentials.

The phones file is JSON, written by whoever provisions the PJSIP endpoints
(the lab writes its own at each start; a center writes it next to its
``pjsip_webrtc.conf``) and named by ``JIEJING_PHONES_FILE``::

    {"ws_url": "wss://pbx.center.example:8089/ws",   # Asterisk's http.conf, path /ws
     "domain": "pbx.center.example",                  # the SIP domain of the seats' URIs
     "ice_servers": [],                               # RTCPeerConnection iceServers (none on a LAN)
     "seats": {"wseat01": {"password": "…"}, …}}

It is read at each request, so a changed password needs no restart. The
passwords go to the desk that asks (``GET /api/phone``) and nowhere else:
they are never logged and never part of an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DomainError


class PhonesNotConfigured(DomainError):
    """No phones file is set or it cannot be read: browser seats are not provisioned on this center."""

    status = 404
    error_id = "phones-not-configured"


class UnknownPhone(DomainError, LookupError):
    status = 404
    error_id = "unknown-phone"


@dataclass(frozen=True, slots=True)
class PhoneAccount:
    seat: str
    ws_url: str
    sip_uri: str
    password: str
    ice_servers: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"seat": self.seat, "ws_url": self.ws_url, "sip_uri": self.sip_uri, "username": self.seat,
                "password": self.password, "ice_servers": list(self.ice_servers)}

    def __repr__(self) -> str:  # never the password, whoever prints it
        return f"PhoneAccount(seat={self.seat!r}, ws_url={self.ws_url!r}, sip_uri={self.sip_uri!r})"


class PhoneBook:
    """The browser seats of one phones file (``path`` empty: none are configured)."""

    def __init__(self, path: str | Path = "") -> None:
        self.path = Path(path) if path else None

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            raise PhonesNotConfigured("no browser seats here: JIEJING_PHONES_FILE is not set")
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            # The file's name is the admin's; its contents (passwords) never go into the message.
            raise PhonesNotConfigured(f"the phones file {self.path} cannot be read ({type(exc).__name__})") from None
        if not isinstance(data, dict) or not isinstance(data.get("seats"), dict) or not data.get("ws_url"):
            raise PhonesNotConfigured(f"the phones file {self.path} needs \"ws_url\" and \"seats\"")
        return data

    def seats(self) -> list[str]:
        return sorted(self._read()["seats"])

    def account(self, seat: str) -> PhoneAccount:
        data = self._read()
        entry = data["seats"].get(seat)
        if not isinstance(entry, dict) or not entry.get("password"):
            raise UnknownPhone("no browser phone for this seat", details={"seat": seat})
        domain = data.get("domain") or "127.0.0.1"
        ice = data.get("ice_servers") or []
        return PhoneAccount(seat=seat, ws_url=str(data["ws_url"]), sip_uri=f"sip:{seat}@{domain}",
                            password=str(entry["password"]), ice_servers=tuple(ice))
