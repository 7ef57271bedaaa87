"""Advanced Mobile Location (AML, ETSI TS 103 625): a handset's own position, read from its SMS or HTTPS form.

When a smartphone calls an emergency number it works out where it is (GNSS, Wi-Fi, cell) and sends that, within
about 20 seconds, to the emergency service: as an SMS from the caller's number whose text is ``A"ML=1;lt=…``, or
(Android's Emergency Location Service, EENA deployments) as an HTTPS POST of form fields. This module only reads
such a message — text or fields in, an ``AmlFix`` or an ``AmlError`` out, no I/O — and refuses anything it cannot
read with certainty: a position sent to a patrol car must not be guessed from a mangled message. Which ticket a
fix belongs to, and whether it may move the incident, is ``core.triage.aml_service``'s business.

The SMS form (ETSI TS 103 625 v1; the same fields in Google's ELS SMS specification), ``;``-separated ``key=value``
pairs, the ``A"ML`` header first:

=======  ======================================================  ====================================
key      value                                                   checked
=======  ======================================================  ====================================
A"ML     version                                                 ``1`` (ELS beta's ``2`` has other keys)
lt, lg   latitude, longitude, signed decimal degrees             −90..90, −180..180
rd       radius of the position's uncertainty, metres            0..``RADIUS_MAX_M``; ``N`` with pm=N
top      time of positioning, ``YYYYMMDDhhmmss`` UTC             a real instant
lc       confidence of the position, percent                     0..100
pm       positioning method: G (GNSS), W (Wi-Fi), C (cell), N    one of them; N: the handset had none
si, ei   IMSI (all but its first 6 digits zeroed), IMEI          digits
mcc,mnc  the network's country and network codes                 digits
ml       length of the whole message, ``ml`` included            the message's length
=======  ======================================================  ====================================

The HTTPS form (Google's ELS HTTPS specification, "based on the latest ETSI AML specification"): ``v`` (1),
``device_number`` (the caller's number), ``location_latitude``/``location_longitude`` (degrees),
``location_accuracy`` (metres), ``location_time`` (the fix's time, ms since the epoch), ``location_source`` (gps,
wifi, cell, unknown), ``location_certainty`` or ``location_confidence`` (percent), ``location_altitude`` (metres),
``location_floor`` (a floor label), ``time`` (the call's start, ms), ``emergency_number``, ``source`` (CALL or
SMS), ``thunderbird_version``.

Strictness. A message with a control character, a repeated key, a key that is not a key, a missing or unreadable
required field, an unknown version or positioning method, or (SMS) an ``ml`` that does not match its length is
refused with the reason. Keys of the right shape that this module does not read are passed over: both
specifications say receivers must expect fields they do not know (ELS sends device, cell and medical details, and
adds fields), and refusing a whole position for one of them would lose it for the caller.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from core.errors import DomainError

__all__ = ["AmlError", "AmlFix", "Method", "looks_like_aml", "parse_https", "parse_sms"]

SMS_HEADER = 'A"ML='
SMS_MAX = 1000  # characters; an AML SMS is about 130, a concatenated one well under this
HTTPS_FIELDS_MAX = 64
HTTPS_VALUE_MAX = 256
RAW_MAX = 2000  # what an error or a fix keeps of the message (for the audit record)
RADIUS_MAX_M = 100_000.0  # a cell-based fix of a rural macro cell is a few km; 100 km is nonsense
# The ml field counts the whole message, itself included; it must match exactly. A message that lost or gained
# one character in a field that still reads (``lt=+3.23041`` for ``lt=+31.23041``) is told only by its length.
ML_SLACK = 0
VERSIONS = frozenset({"1"})

_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_DEGREES = re.compile(r"[+-]?[0-9]{1,3}(?:\.[0-9]{1,12})?")
_METRES = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,3})?")
_PERCENT = re.compile(r"[0-9]{1,3}")
_TOP = re.compile(r"[0-9]{14}")
_DIGITS = {"si": (re.compile(r"[0-9]{6,15}"), "an IMSI (6-15 digits)"),
           "ei": (re.compile(r"[0-9]{14,16}"), "an IMEI (14-16 digits)"),
           "mcc": (re.compile(r"[0-9]{3}"), "a country code (3 digits)"),
           "mnc": (re.compile(r"[0-9]{2,3}"), "a network code (2-3 digits)")}
_ML = re.compile(r"[0-9]{1,4}")
_MSISDN = re.compile(r"\+?[0-9]{3,20}")
_MILLIS = re.compile(r"[0-9]{10,14}")
_SIGNED = re.compile(r"[+-]?[0-9]{1,6}(?:\.[0-9]{1,3})?")
_FLOOR = re.compile(r"[0-9A-Za-z+-]{1,8}")
_SHORT = re.compile(r"[0-9A-Za-z_.+-]{1,32}")
_SMS_REQUIRED = ("lt", "lg", "rd", "top", "lc", "pm")
_SMS_KNOWN = frozenset({*_SMS_REQUIRED, "si", "ei", "mcc", "mnc", "ml"})


class Method(StrEnum):
    """How the handset found its position."""

    GNSS = "gnss"
    WIFI = "wifi"
    CELL = "cell"
    UNKNOWN = "unknown"  # the HTTPS form's "unknown": a position, source not said


_SMS_METHODS = {"G": Method.GNSS, "W": Method.WIFI, "C": Method.CELL}
_HTTPS_METHODS = {"gps": Method.GNSS, "wifi": Method.WIFI, "cell": Method.CELL, "unknown": Method.UNKNOWN}


class AmlError(DomainError):
    """A message that is not a usable AML position; ``reason`` says which rule it broke (stable, for tests)."""

    status = 400
    error_id = "aml-malformed"

    def __init__(self, reason: str, message: str, *, field: str | None = None, status: int | None = None,
                 error_id: str | None = None) -> None:
        details: dict[str, Any] = {"reason": reason}
        if field is not None:
            details["field"] = field
        super().__init__(message, details=details, status=status, error_id=error_id)
        self.reason = reason
        self.field = field


def _no_position(message: str) -> AmlError:
    # Well formed, but nothing to locate with: not the sender's fault, so not a 400.
    return AmlError("no-position", message, status=422, error_id="aml-no-position")


@dataclass(frozen=True, slots=True)
class AmlFix:
    """One handset position, as the message gave it."""

    channel: str  # "sms" or "https"
    msisdn: str | None  # the caller's number: the SMS's sender, the HTTPS form's device_number
    lat: float
    lon: float
    radius_m: float
    positioned_at: float  # epoch seconds, UTC
    confidence: int | None  # percent
    method: Method
    raw: str  # the message as received (bounded to RAW_MAX)
    floor: str | None = None
    altitude_m: float | None = None
    call_started_at: float | None = None  # the HTTPS form's "time"

    def to_json(self) -> dict[str, Any]:
        """What a ticket step keeps of the fix (``positioned_at`` as ISO-8601 UTC)."""
        out: dict[str, Any] = {
            "source": "aml", "channel": self.channel, "method": str(self.method), "radius_m": self.radius_m,
            "confidence": self.confidence, "positioned_at": iso(self.positioned_at),
        }
        if self.floor is not None:
            out["floor"] = self.floor
        if self.altitude_m is not None:
            out["altitude_m"] = self.altitude_m
        return out


def iso(at: float) -> str:
    moment = datetime.fromtimestamp(at, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def looks_like_aml(text: str) -> bool:
    """Whether an SMS text is an AML message (and so never a text report nor a survey answer)."""
    return isinstance(text, str) and text.startswith(SMS_HEADER)


def _check_text(text: str, what: str) -> None:
    for ch in text:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise AmlError("control-character", f"{what} holds a control character (U+{ord(ch):04X})")


def _number(value: str, pattern: re.Pattern[str], key: str, what: str) -> float:
    if not pattern.fullmatch(value):
        raise AmlError(f"bad-{key}", f"{key}={value[:40]!r} is not {what}", field=key)
    number = float(value)
    if not math.isfinite(number):  # pragma: no cover - the patterns admit only finite decimals
        raise AmlError(f"bad-{key}", f"{key} is not finite", field=key)
    return number


def _lat_lon(lat_text: str, lon_text: str, lat_key: str, lon_key: str) -> tuple[float, float]:
    lat = _number(lat_text, _DEGREES, lat_key, "a latitude in decimal degrees")
    lon = _number(lon_text, _DEGREES, lon_key, "a longitude in decimal degrees")
    if not -90.0 <= lat <= 90.0:
        raise AmlError(f"bad-{lat_key}", f"latitude {lat} is outside -90..90", field=lat_key)
    if not -180.0 <= lon <= 180.0:
        raise AmlError(f"bad-{lon_key}", f"longitude {lon} is outside -180..180", field=lon_key)
    return lat, lon


def _radius(value: str, key: str) -> float:
    radius = _number(value, _METRES, key, "a radius in metres")
    if radius > RADIUS_MAX_M:
        raise AmlError(f"bad-{key}", f"radius {radius:g} m is over {RADIUS_MAX_M:g} m", field=key)
    return radius


def _percent(value: str, key: str) -> int:
    if not _PERCENT.fullmatch(value) or int(value) > 100:
        raise AmlError(f"bad-{key}", f"{key}={value[:40]!r} is not a percentage 0-100", field=key)
    return int(value)


def _top(value: str) -> float:
    if not _TOP.fullmatch(value):
        raise AmlError("bad-top", f"top={value[:40]!r} is not a time YYYYMMDDhhmmss", field="top")
    try:
        moment = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise AmlError("bad-top", f"top={value} is no real instant", field="top") from None
    return moment.timestamp()


def _millis(value: str, key: str) -> float:
    if not _MILLIS.fullmatch(value):
        raise AmlError(f"bad-{key}", f"{key}={value[:40]!r} is not milliseconds since the epoch", field=key)
    return int(value) / 1000.0


def _msisdn(value: str, key: str) -> str:
    _check_text(value, key)
    compact = re.sub(r"[\s().-]", "", value)
    if not _MSISDN.fullmatch(compact):
        raise AmlError(f"bad-{key}", f"{key}={value[:40]!r} is not a phone number", field=key)
    return compact


def parse_sms(text: str, *, sender: str | None = None) -> AmlFix:
    """The position of an AML SMS; ``sender`` is the SMS's originating number (the caller's)."""
    if not isinstance(text, str):
        raise AmlError("not-text", "an AML SMS is text")
    if not text.startswith(SMS_HEADER):
        raise AmlError("not-aml", f'an AML SMS starts with {SMS_HEADER!r}')
    if len(text) > SMS_MAX:
        raise AmlError("too-long", f"{len(text)} characters; an AML SMS has at most {SMS_MAX}")
    _check_text(text, "the message")
    msisdn = None if sender is None else _msisdn(sender, "sender")
    fields: dict[str, str] = {}
    for i, part in enumerate(text.split(";")):
        key, eq, value = part.partition("=")
        if i == 0:
            key = 'A"ML'
        elif not eq:
            raise AmlError("bad-field", f"field {i + 1} ({part[:20]!r}) is not key=value")
        elif not _KEY.fullmatch(key):
            raise AmlError("bad-field", f"field {i + 1} has no valid key ({key[:20]!r})")
        if key in fields:
            raise AmlError("repeated-field", f"{key} is given twice", field=key)
        fields[key] = value
    version = fields['A"ML']
    if version not in VERSIONS:
        raise AmlError("unknown-version", f'A"ML={version[:20]!r}: only version 1 is read')
    missing = [k for k in _SMS_REQUIRED if k not in fields]
    if missing:
        raise AmlError("missing-field", f"no {', '.join(missing)} (a truncated message?)", field=missing[0])
    if "ml" in fields:
        if not _ML.fullmatch(fields["ml"]):
            raise AmlError("bad-ml", f"ml={fields['ml'][:20]!r} is not a length", field="ml")
        if abs(int(fields["ml"]) - len(text)) > ML_SLACK:
            raise AmlError("bad-ml", f"the message has {len(text)} characters but ml says {fields['ml']} "
                                     "(truncated or joined?)", field="ml")
    for key, (pattern, what) in _DIGITS.items():
        if key in fields and not pattern.fullmatch(fields[key]):
            raise AmlError(f"bad-{key}", f"{key}={fields[key][:20]!r} is not {what}", field=key)
    pm = fields["pm"]
    if pm == "N":
        raise _no_position("pm=N: the handset had no position")
    if pm not in _SMS_METHODS:
        raise AmlError("bad-pm", f"pm={pm[:20]!r} is none of G, W, C, N", field="pm")
    lat, lon = _lat_lon(fields["lt"], fields["lg"], "lt", "lg")
    return AmlFix(
        channel="sms", msisdn=msisdn, lat=lat, lon=lon, radius_m=_radius(fields["rd"], "rd"),
        positioned_at=_top(fields["top"]), confidence=_percent(fields["lc"], "lc"), method=_SMS_METHODS[pm],
        raw=text[:RAW_MAX],
    )


def form_text(form: Mapping[str, str]) -> str:
    """The HTTPS form as one line for the audit record (``key=value&…``, bounded)."""
    try:
        text = "&".join(f"{k}={v}" for k, v in form.items())
    except Exception:  # noqa: BLE001 - anything that is not a mapping of text is kept as its repr
        text = repr(form)
    return text[:RAW_MAX]


def parse_https(form: Mapping[str, str]) -> AmlFix:
    """The position of an AML (ELS) HTTPS POST, given its form fields."""
    if not isinstance(form, Mapping):
        raise AmlError("not-a-form", "an AML HTTPS message is a set of form fields")
    if len(form) > HTTPS_FIELDS_MAX:
        raise AmlError("too-long", f"{len(form)} fields; at most {HTTPS_FIELDS_MAX}")
    fields: dict[str, str] = {}
    for key, value in form.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise AmlError("bad-field", f"{str(key)[:20]!r} is not a field name")
        if not isinstance(value, str):
            raise AmlError("bad-field", f"{key} is not text", field=key)
        if len(value) > HTTPS_VALUE_MAX:
            raise AmlError("too-long", f"{key} has {len(value)} characters; at most {HTTPS_VALUE_MAX}", field=key)
        _check_text(value, key)
        fields[key] = value.strip()
    if "v" not in fields:
        raise AmlError("missing-field", "no v (the version)", field="v")
    if fields["v"] not in VERSIONS:
        raise AmlError("unknown-version", f"v={fields['v'][:20]!r}: only version 1 is read", field="v")
    required = ("device_number", "location_latitude", "location_longitude", "location_accuracy", "location_time")
    missing = [k for k in required if not fields.get(k)]
    if missing:
        if "device_number" not in missing and all(
                k in missing for k in ("location_latitude", "location_longitude")):
            raise _no_position("no location_latitude/location_longitude: the handset had no position")
        raise AmlError("missing-field", f"no {', '.join(missing)}", field=missing[0])
    source = fields.get("location_source", "unknown").lower()
    if source not in _HTTPS_METHODS:
        raise AmlError("bad-location_source", f"location_source={source[:20]!r} is none of "
                       f"{', '.join(_HTTPS_METHODS)}", field="location_source")
    confidence = None
    for key in ("location_certainty", "location_confidence"):
        if fields.get(key):
            confidence = _percent(fields[key], key)
    for key in ("emergency_number", "source", "thunderbird_version"):
        if fields.get(key) and not _SHORT.fullmatch(fields[key]):
            raise AmlError(f"bad-{key}", f"{key}={fields[key][:20]!r} is not a short word or number", field=key)
    floor = fields.get("location_floor") or None
    if floor is not None and not _FLOOR.fullmatch(floor):
        raise AmlError("bad-location_floor", f"location_floor={floor[:20]!r} is not a floor label",
                       field="location_floor")
    altitude = None
    if fields.get("location_altitude"):
        altitude = _number(fields["location_altitude"], _SIGNED, "location_altitude", "an altitude in metres")
    started = _millis(fields["time"], "time") if fields.get("time") else None
    lat, lon = _lat_lon(fields["location_latitude"], fields["location_longitude"],
                        "location_latitude", "location_longitude")
    return AmlFix(
        channel="https", msisdn=_msisdn(fields["device_number"], "device_number"), lat=lat, lon=lon,
        radius_m=_radius(fields["location_accuracy"], "location_accuracy"),
        positioned_at=_millis(fields["location_time"], "location_time"), confidence=confidence,
        method=_HTTPS_METHODS[source], raw=form_text(form), floor=floor, altitude_m=altitude,
        call_started_at=started,
    )


def number_forms(msisdn: str) -> tuple[str, ...]:
    """The spellings a caller id of this number may have in the ticket store.

    A handset's AML SMS comes from its number in E.164 (``+8613800138000``), while the network may present the
    call's caller id nationally (``13800138000``) or with the country code but no ``+``: every usual spelling
    finds the caller's tickets. A number of another country is looked up as given, without and with ``00``.
    """
    digits = msisdn.lstrip("+")
    if msisdn.startswith("+") and not digits.startswith("86"):
        return tuple(sorted({msisdn, digits, "00" + digits}))
    national = digits
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) >= 7:
            national = digits[len(prefix):]
            break
    return tuple(sorted({msisdn, digits, national, "+86" + national, "86" + national, "0086" + national}))
