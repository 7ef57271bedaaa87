"""Settings of supervision and quality, read from ``JIEJING_*`` variables like ``core.config``.

Kept apart from the call path's settings: the journal's anchor key and the
Twilio and WeChat credentials are secrets that the intake side never needs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from core.config import (
    PREFIX,
    ConfigError,
    environment,
    register_secrets,
    require_readable_secrets,
    setting,
)
from core.triage.wechat import Account as WeChatAccount


@register_secrets
@dataclass(frozen=True, slots=True)
class QualitySettings:
    # The anchor key lives in a file outside the database (and ideally off the database host); anchors are
    # appended to a file the database cannot reach.
    journal_key_file: str = setting("Key that signs the journal's anchors (a file outside the database, ideally "
                                    "off its host). With journal_anchor_file; without both no anchors are "
                                    "written and a rewrite of the whole database cannot be told.", "")
    journal_anchor_file: str = setting("File the signed anchors are appended to, out of the database's reach.", "")
    journal_anchor_interval_s: float = setting("Seconds between anchors.", 3600.0)
    twilio_account_sid: str = setting("Twilio account for SMS (surveys, reporters' links, text reports).", "")
    twilio_auth_token: str = setting("Twilio auth token: sends SMS and checks the signature of Twilio's webhooks.",
                                     "", secret=True)
    twilio_from: str = setting("The number SMS are sent from.", "")
    twilio_base_url: str = setting("Empty: Twilio itself; a URL: a stand-in or a relay.", "")
    twilio_webhook_url: str = setting("The public URL Twilio posts replies and text reports to; the signature "
                                      "covers it.", "")
    public_url: str = setting("The web's public address (https://…), for the link to a dispatched ticket's live "
                              "status sent to its reporter by SMS (/s/<token>). Empty: no links are sent.", "")
    attachments_dir: str = setting("Where the photos and videos of text reports are kept: each fetched from its "
                                   "gateway once after the report (a photo up to 10 MiB, a video up to 100 MiB), "
                                   "stored as `<sha256>.<ext>` and served only to the ticket's desk, station and "
                                   "officers. Empty: they stay links to the gateway and nothing is fetched.", "")
    wechat_token: str = setting("WeChat official account: the Token of its server configuration (服务器配置), "
                                "which signs the platform's requests to /api/wechat (3-32 letters or digits). "
                                "Empty, with the two below: WeChat reports are off and /api/wechat answers 404.",
                                "", secret=True)
    wechat_app_id: str = setting("The official account's AppId, for safe mode (安全模式): an encrypted message "
                                 "sealed for another account is refused.", "")
    wechat_aes_key: str = setting("The EncodingAESKey of safe mode (43 letters and digits), with wechat_app_id; "
                                  "with it only encrypted messages are taken. Without it (plain mode) the "
                                  "signature does not cover a message's body: run a center in safe mode.",
                                  "", secret=True)
    survey_enabled: bool = setting("Send callers the SMS survey after their call (needs the Twilio settings).",
                                   False)
    spot_check_size: int = setting("Calls drawn for supervisors' spot checks per shift.", 20)
    shift_starts: tuple[int, ...] = setting("Hours (center time) at which shifts start.", (0, 8, 16))
    follow_up_hours: int = setting("Hours within which a complaint must be followed up.", 72)
    retention_days: int = setting("Days tickets and recordings are kept; 0 keeps them forever.", 0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> QualitySettings:
        env = environment() if env is None else env
        require_readable_secrets(cls, env)
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
        if settings.public_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", settings.public_url):
            raise ConfigError(f"{PREFIX}PUBLIC_URL must be an http(s) address without query, got "
                              f"{settings.public_url!r}")
        if settings.survey_enabled and not (
            settings.twilio_account_sid and settings.twilio_auth_token and settings.twilio_from
        ):
            raise ConfigError(f"{PREFIX}SURVEY_ENABLED needs TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM")
        if settings.survey_enabled and not settings.twilio_webhook_url:
            raise ConfigError(f"{PREFIX}SURVEY_ENABLED needs TWILIO_WEBHOOK_URL, the public URL Twilio signs")
        settings.wechat_account()  # a WeChat setting the platform would not take stops the start
        return settings

    def wechat_account(self) -> WeChatAccount | None:
        """The WeChat official account whose messages are text reports; None when none is set."""
        try:
            return WeChatAccount.configure(self.wechat_token, self.wechat_app_id, self.wechat_aes_key)
        except ValueError as exc:
            raise ConfigError(f"{PREFIX}WECHAT_TOKEN, _APP_ID, _AES_KEY: {exc}") from None


def _int(name: str, raw: str, *, minimum: int) -> int:
    if not (raw.isascii() and raw.isdecimal()) or int(raw) < minimum:
        raise ConfigError(f"{name} must be an integer of at least {minimum}, got {raw!r}")
    return int(raw)
