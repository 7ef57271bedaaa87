"""WeChat reports: the message interface of a WeChat official account ("消息接口"), sans-IO.

The platform calls the account's server URL: a GET to verify it (``signature``, ``timestamp``, ``nonce``,
``echostr``; answered with ``echostr`` when the signature is the token's) and a POST for every message a
user sends, as XML, with the same signature in the query. In safe mode ("安全模式", ``encrypt_type=aes``)
the body holds ``<Encrypt>`` (``core.triage.wechat_crypto``) and the query ``msg_signature``, which also
covers the encrypted body; the answer is sealed the same way.

This module turns query and body into a checked ``Message``, a message into the ``TextReport`` it is (or
into no report), and an answer into the passive reply's XML. It reads no socket and no clock: the view
gives it the time and the random bytes. Refusals are ``core.errors.DomainError``s: a forged or stale
request is 403, anything malformed 400.

- Signatures are compared in constant time. A timestamp more than ``REPLAY_WINDOW_S`` away from now is
  refused (403): a recorded request cannot be played back later. Within the window a message delivered
  again (WeChat retries three times when it has no answer within 5 s) is filed once: its ticket is keyed
  by ``MsgId`` (``wechat:<MsgId>``), and the answer names the same ticket.
- The XML is parsed by the standard library's expat with its size capped (``BODY_MAX``) and any DOCTYPE or
  ENTITY declaration refused before parsing, so no entity is ever expanded.
- In plain mode the signature covers the timestamp and nonce only, not the body: safe mode is the one to
  run a center in. An account with an EncodingAESKey takes encrypted messages only.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.errors import DomainError
from core.triage.reports import (
    REPORT_TEXT_MAX,
    URL_MAX,
    TextReport,
    clean_text,
    parse_report,
)
from core.triage.wechat_crypto import CryptoError, WrongAppId, aes_key, decrypt, encrypt

__all__ = ["Account", "BODY_MAX", "Forged", "Malformed", "Message", "REPLAY_WINDOW_S", "Stale", "WrongAccount",
           "answer", "as_report", "open_message", "parse_xml", "sealed_reply", "signature", "text_reply",
           "verify_url"]

REPLAY_WINDOW_S = 300  # a signed request's timestamp may be this far from now, either way
BODY_MAX = 16 * 1024  # a text message holds at most 2048 bytes; sealed it is about 3 KB
ECHOSTR_MAX = 128
TOKEN = re.compile(r"[A-Za-z0-9]{3,32}")  # what the platform accepts as a token
APP_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
OPENID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the user as this account sees them
MSG_ID = re.compile(r"[0-9]{1,20}")  # a 64-bit number
ADDRESS_MAX = 500  # as the app's reports (core.triage.report_views)
MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_URL = re.compile(rf"https?://[!-~]{{1,{URL_MAX - 8}}}")  # printable ASCII, as reports take
_DIGITS = re.compile(r"[0-9]{1,12}")
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)

# What the account answers (WeChat shows it to the user at once).
REPORTED = "110已收到您的报警，编号 {number}。如情况紧急请直接拨打110。"
WELCOME = "欢迎关注。您可以在这里发送文字、图片、视频或位置向110报警；如遇紧急情况，请直接拨打110。"
NOT_TAKEN = "本公众号只能接收文字、图片、视频和位置报警，暂不能处理此类消息。如情况紧急请直接拨打110。"
BLANK = "请用文字说明您遇到的情况和所在位置。如情况紧急请直接拨打110。"


class Forged(DomainError):
    """The request does not carry the account token's signature."""

    status = 403
    error_id = "wechat-bad-signature"


class Stale(DomainError):
    """The request's timestamp is outside the replay window."""

    status = 403
    error_id = "wechat-stale"


class Malformed(DomainError):
    """A body or query that is no message of the platform's."""

    status = 400
    error_id = "wechat-malformed"


class WrongAccount(DomainError):
    """A safe-mode message sealed for another official account (AppId)."""

    status = 400
    error_id = "wechat-wrong-app-id"


@dataclass(frozen=True, slots=True)
class Account:
    """The official account's server configuration: the token, and for safe mode the AppId and AES key."""

    token: str = field(repr=False)
    app_id: str = ""
    aes_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def configure(cls, token: str, app_id: str = "", encoding_aes_key: str = "") -> Account | None:
        """The account of the settings; None when none is set (the channel is off). ``ValueError`` names what
        is wrong."""
        if not (token or app_id or encoding_aes_key):
            return None
        if not TOKEN.fullmatch(token):
            raise ValueError("the token must be 3-32 letters or digits, as set on the platform")
        if bool(app_id) != bool(encoding_aes_key):
            raise ValueError("safe mode needs both the AppId and the EncodingAESKey; plain mode neither")
        if app_id and not APP_ID.fullmatch(app_id):
            raise ValueError("the AppId must be letters, digits, _ or -")
        return cls(token, app_id, aes_key(encoding_aes_key) if encoding_aes_key else None)

    @property
    def safe_mode(self) -> bool:
        return self.aes_key is not None


@dataclass(frozen=True, slots=True)
class Message:
    """One message (or event) a user sent the account, its fields as the platform named them."""

    to_user: str  # the account's original id (gh_…)
    openid: str  # FromUserName: the user
    create_time: int
    msg_type: str
    fields: Mapping[str, str]
    sealed: bool  # came encrypted: the answer is sealed too

    @property
    def msg_id(self) -> str | None:
        return self.fields.get("MsgId") or None

    @property
    def event(self) -> str:
        return self.fields.get("Event", "").lower()


# -- signatures -------------------------------------------------------------------------------


def signature(token: str, timestamp: str, nonce: str, *more: str) -> str:
    """sha1 of the sorted concatenation, hex: ``signature`` (token, timestamp, nonce) and, with the
    ``Encrypt`` text as ``more``, ``msg_signature``."""
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, *more))).encode("utf-8")).hexdigest()


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _signed(account: Account, query: Mapping[str, str], *, now: float) -> tuple[str, str]:
    """The query's timestamp and nonce once its signature is the token's and its time inside the window."""
    timestamp, nonce = query.get("timestamp"), query.get("nonce")
    if timestamp is None or nonce is None or query.get("signature") is None:
        raise Forged("unsigned: signature, timestamp and nonce are required")
    if not _same(query.get("signature"), signature(account.token, timestamp, nonce)):
        raise Forged("the signature is not this account's")
    if not _DIGITS.fullmatch(timestamp):
        raise Malformed("timestamp must be seconds since 1970")
    if abs(now - int(timestamp)) > REPLAY_WINDOW_S:
        raise Stale(f"the timestamp is more than {REPLAY_WINDOW_S} seconds from now: refused as a replay")
    return timestamp, nonce


def verify_url(account: Account, query: Mapping[str, str], *, now: float) -> str:
    """The platform's check of the server URL: the ``echostr`` to answer, once the signature holds."""
    _signed(account, query, now=now)
    echostr = query.get("echostr")
    if not echostr or len(echostr) > ECHOSTR_MAX or not echostr.isascii() or not echostr.isalnum():
        raise Malformed(f"echostr must be 1-{ECHOSTR_MAX} letters or digits")
    return echostr


# -- the body ---------------------------------------------------------------------------------


def parse_xml(data: bytes) -> dict[str, str]:
    """The fields of a ``<xml>…</xml>`` body: each child element's text (elements inside them left out).

    Refused (``Malformed``): more than ``BODY_MAX`` bytes, not UTF-8, a DOCTYPE or ENTITY declaration
    (entity expansion), not XML, another root, a field given twice.
    """
    if len(data) > BODY_MAX:
        raise Malformed(f"the body is larger than {BODY_MAX} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("the body is not UTF-8") from None
    if _DECLARATION.search(text):
        raise Malformed("DOCTYPE and ENTITY declarations are refused")
    try:
        root = ET.fromstring(text)  # a str: expat reads it as the text it is, whatever encoding is declared
    except ET.ParseError as exc:
        raise Malformed(f"the body is not XML: {exc}") from None
    if root.tag != "xml":
        raise Malformed("the root element must be <xml>")
    fields: dict[str, str] = {}
    for child in root:
        if not isinstance(child.tag, str) or len(child):
            continue  # comments, and the nested blocks of menu events: nothing a report needs
        if child.tag in fields:
            raise Malformed(f"<{child.tag}> is given twice")
        fields[child.tag] = (child.text or "").strip()
    return fields


def open_message(account: Account, query: Mapping[str, str], body: bytes, *, now: float) -> Message:
    """The message of a POST from the platform: signature, replay window, envelope (safe mode) and fields
    checked."""
    timestamp, nonce = _signed(account, query, now=now)
    fields = parse_xml(body)
    mode = query.get("encrypt_type", "raw")
    if mode == "aes":
        if account.aes_key is None:
            raise Malformed("safe mode is not configured here: set the AppId and the EncodingAESKey")
        sealed = fields.get("Encrypt")
        if not sealed:
            raise Malformed("safe mode: the body has no <Encrypt>")
        if not _same(query.get("msg_signature"), signature(account.token, timestamp, nonce, sealed)):
            raise Forged("msg_signature is not this account's")
        try:
            inner = decrypt(sealed, key=account.aes_key, app_id=account.app_id)
        except WrongAppId as exc:
            raise WrongAccount(str(exc)) from None
        except CryptoError as exc:
            raise Malformed(str(exc)) from None
        fields = parse_xml(inner)
    elif mode != "raw":
        raise Malformed("encrypt_type must be aes (safe mode) or absent")
    elif account.safe_mode:
        raise Malformed("this account takes encrypted messages only (safe mode): encrypt_type=aes")
    return _message(fields, sealed=mode == "aes")


def _message(fields: Mapping[str, str], *, sealed: bool) -> Message:
    missing = [name for name in ("ToUserName", "FromUserName", "CreateTime", "MsgType") if not fields.get(name)]
    if missing:
        raise Malformed(f"the message lacks {', '.join(missing)}")
    if not OPENID.fullmatch(fields["FromUserName"]):
        raise Malformed("FromUserName must be an openid: 1-64 letters, digits, _ or -")
    if not APP_ID.fullmatch(fields["ToUserName"]):
        raise Malformed("ToUserName must be the account's id: letters, digits, _ or -")
    if not _DIGITS.fullmatch(fields["CreateTime"]):
        raise Malformed("CreateTime must be seconds since 1970")
    if fields.get("MsgId") and not MSG_ID.fullmatch(fields["MsgId"]):
        raise Malformed("MsgId must be a number")
    return Message(fields["ToUserName"], fields["FromUserName"], int(fields["CreateTime"]),
                   fields["MsgType"].lower(), dict(fields), sealed)


# -- what a message becomes -------------------------------------------------------------------


def _ref(message: Message) -> str:
    """The report's key: ``MsgId``; a message without one by its sender and time (a redelivery has both)."""
    if message.msg_id:
        return message.msg_id
    sender = hashlib.sha256(message.openid.encode("utf-8")).hexdigest()[:24]
    return f"u{sender}-{message.create_time}"


def _required(message: Message, *names: str) -> list[str]:
    missing = [name for name in names if not message.fields.get(name)]
    if missing:
        raise Malformed(f"a {message.msg_type} message lacks {', '.join(missing)}")
    return [message.fields[name] for name in names]


def _media_id(message: Message) -> str:
    [media_id] = _required(message, "MediaId")
    if not MEDIA_ID.fullmatch(media_id):
        raise Malformed("MediaId must be 1-128 letters, digits, _ or -")
    return media_id


def _coordinate(raw: str, name: str, limit: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise Malformed(f"{name} must be a number") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise Malformed(f"{name} must be a finite number within ±{limit:g}")
    return value


def as_report(message: Message) -> TextReport | None:
    """The text report ``message`` is, or None: events, voice, links and the like, blank text.

    text → its text; image → a photo attachment (``PicUrl``); video → its ``MediaId`` in the text (the
    platform keeps it three days; attachments are URLs, and a media id is none); location → a position
    (``Location_X`` latitude, ``Location_Y`` longitude, ``Label`` the address). The report is checked by
    ``parse_report`` as the app's are; what it refuses is ``Malformed``.
    """
    kind = message.msg_type
    body: dict[str, Any] = {"ref": _ref(message), "sender": f"wx:{message.openid}"}
    if kind == "text":
        if "Content" not in message.fields:
            raise Malformed("a text message lacks Content")
        # Nobody can be asked to send it again: mend, do not refuse.
        text = clean_text(message.fields["Content"]).strip()
        if not text:
            return None
        if len(text) > REPORT_TEXT_MAX:
            text = text[:REPORT_TEXT_MAX - 1] + "…"
        body["text"] = text
    elif kind == "image":
        [pic_url] = _required(message, "PicUrl")
        # A PicUrl that is no URL is left out; the picture's media id stands in for it.
        photos = [{"kind": "photo", "url": pic_url}] if _URL.fullmatch(pic_url) else []
        body["text"] = "（微信图片 WeChat picture）" + ("" if photos else f" media_id={_media_id(message)}")
        body["attachments"] = photos
    elif kind in ("video", "shortvideo"):
        body["text"] = f"（微信视频 WeChat video）media_id={_media_id(message)}"
    elif kind == "location":
        lat_raw, lon_raw = _required(message, "Location_X", "Location_Y")
        label = clean_text(message.fields.get("Label", "")).strip()[:ADDRESS_MAX] or None
        body.update(text=f"（微信位置 WeChat location）{label or ''}", address=label,
                    lat=_coordinate(lat_raw, "Location_X", 90), lon=_coordinate(lon_raw, "Location_Y", 180))
    else:
        return None
    try:
        return parse_report(body, channel="wechat")
    except ValueError as exc:
        raise Malformed(f"a {kind} message that is no report: {exc}") from None


def answer(message: Message, number: str | None) -> str | None:
    """What the account says to the user: the report's ticket number, a welcome on subscribing, a polite
    word on what it cannot take; None where nothing is said (other events: the platform's ``success``)."""
    if number is not None:
        return REPORTED.format(number=number)
    if message.msg_type == "event":
        return WELCOME if message.event == "subscribe" else None
    if message.msg_type == "text":
        return BLANK
    return NOT_TAKEN


# -- the answer -------------------------------------------------------------------------------


def _cdata(value: str) -> str:
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply(message: Message, content: str, *, now: int) -> bytes:
    """The passive text reply to ``message`` (to its sender, from the account)."""
    return (
        f"<xml><ToUserName>{_cdata(message.openid)}</ToUserName>"
        f"<FromUserName>{_cdata(message.to_user)}</FromUserName>"
        f"<CreateTime>{int(now)}</CreateTime><MsgType>{_cdata('text')}</MsgType>"
        f"<Content>{_cdata(content)}</Content></xml>"
    ).encode("utf-8")


def sealed_reply(account: Account, reply: bytes, *, timestamp: str, nonce: str, random: bytes) -> bytes:
    """``reply`` in safe mode's envelope: ``Encrypt``, ``MsgSignature``, ``TimeStamp``, ``Nonce``."""
    if account.aes_key is None:
        raise ValueError("a sealed reply needs the account's AES key")
    if not _DIGITS.fullmatch(timestamp) or not nonce.isascii() or not nonce.isalnum():
        raise ValueError("timestamp must be digits and nonce letters or digits")
    sealed = encrypt(reply, key=account.aes_key, app_id=account.app_id, random=random)
    return (
        f"<xml><Encrypt>{_cdata(sealed)}</Encrypt>"
        f"<MsgSignature>{_cdata(signature(account.token, timestamp, nonce, sealed))}</MsgSignature>"
        f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{_cdata(nonce)}</Nonce></xml>"
    ).encode("utf-8")
