"""Settings of supervision and quality, read from ``JIEJING_*`` variables like ``core.config``.

Kept apart from the call path's settings: the journal's anchor key and the
Twilio credentials are secrets that the intake side never needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from core.config import PREFIX, ConfigError


@dataclass(frozen=True, slots=True)
class QualitySettings:
    # The anchor key lives in a file outside the database (and ideally off the
    # database host); anchors are appended to a file the database cannot reach.
    journal_key_file: str = ""
    journal_anchor_file: str = ""
    journal_anchor_interval_s: float = 3600.0
    twilio_account_sid: str = ""
    twilio_auth_token: str = field(default="", repr=False)
    twilio_from: str = ""
    twilio_base_url: str = ""  # empty: Twilio itself; a URL: a stand-in or a relay
    twilio_webhook_url: str = ""  # the public URL Twilio posts replies to; the signature covers it
    survey_enabled: bool = False
    spot_check_size: int = 20
    shift_starts: tuple[int, ...] = (0, 8, 16)  # hours, center time
    follow_up_hours: int = 72
    retention_days: int = 0  # 0: keep forever

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> QualitySettings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = PREFIX + f.name.upper()
            raw = env.get(name, "").strip()
            if not raw:
                continue
            if f.name in ("spot_check_size", "follow_up_hours", "retention_days"):
                values[f.name] = _int(name, raw, minimum=0)
            elif f.name == "journal_anchor_interval_s":
                values[f.name] = float(_int(name, raw, minimum=1))
            elif f.name == "survey_enabled":
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif f.name == "shift_starts":
                hours = tuple(sorted({_int(name, h.strip(), minimum=0) for h in raw.split(",")}))
                if any(h > 23 for h in hours):
                    raise ConfigError(f"{name}: hours must be 0-23, got {raw!r}")
                values[f.name] = hours
            else:
                values[f.name] = raw
        settings = cls(**values)
        if settings.survey_enabled and not (
            settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        ):
            raise ConfigError(f"{PREFIX}SURVEY_ENABLED needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM")
        if settings.survey_enabled and not settings.twilio_webhook_url:
            raise ConfigError(f"{PREFIX}SURVEY_ENABLED needs TWILIO_WEBHOOK_URL, the public URL Twilio signs")
        return settings


def _int(name: str, raw: str, *, minimum: int) -> int:
    if not (raw.isascii() and raw.isdecimal()) or int(raw) < minimum:
        raise ConfigError(f"{name} must be an integer of at least {minimum}, got {raw!r}")
    return int(raw)
