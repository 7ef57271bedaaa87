"""WeChat reports: the official account's message interface (signature, safe mode's AES, the XML) and its
route, with messages built to the platform's published protocol."""

from __future__ import annotations

import base64
import hashlib
import struct
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import func, select

from core.alerts.board import Alert
from core.calls.lifecycle import State, Step
from core.calls.tables import Ticket
from core.calls.tickets import TicketService
from core.config import ConfigError
from core.quality.config import QualitySettings
from core.triage import wechat
from core.triage.reports import parse_report
from core.triage.wechat import Account, Malformed
from core.triage.wechat_crypto import CryptoError, WrongAppId, aes_key, decrypt, encrypt
from core.web.app import make_app
from tests.dispatch_city import CENTER, load, officer, point_in
from tests.triage_setup import make_desk, planner_for
from tests.unit.conftest import T0, FakeClock

TOKEN = "jiejing110token"
APP_ID = "wx1234567890abcdef"
ENCODING_AES_KEY = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"  # 43 letters and digits, as the platform makes
KEY = base64.b64decode(ENCODING_AES_KEY + "=")
OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
ACCOUNT_ID = "gh_0123456789ab"
NOW = str(int(T0))


# -- messages as the platform sends them -------------------------------------------------------


def _sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def _query(timestamp: str = NOW, nonce: str = "1320562132", **more: str) -> dict[str, str]:
    return {"signature": _sign(TOKEN, timestamp, nonce), "timestamp": timestamp, "nonce": nonce, "openid": OPENID,
            **more}


def _xml(**fields: Any) -> bytes:
    """A message body: text fields in CDATA, numbers bare, as the platform writes them."""
    parts = [f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()]
    return ("<xml>" + "".join(parts) + "</xml>").encode("utf-8")


def _message(msg_type: str, msg_id: int | None = 6054768590064713728, **fields: Any) -> bytes:
    head: dict[str, Any] = {"ToUserName": ACCOUNT_ID, "FromUserName": OPENID, "CreateTime": int(T0),
                            "MsgType": msg_type}
    return _xml(**head, **fields, **({} if msg_id is None else {"MsgId": msg_id}))


def _seal(inner: bytes, *, app_id: str = APP_ID, timestamp: str = NOW, nonce: str = "77") -> tuple[dict[str, str],
                                                                                                     bytes]:
    """Query and body of a safe-mode message: the plaintext laid out by hand, as the protocol describes it."""
    plain = bytes(range(16)) + struct.pack(">I", len(inner)) + inner + app_id.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).encryptor()
    sealed = base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()
    query = _query(timestamp, nonce, encrypt_type="aes", msg_signature=_sign(TOKEN, timestamp, nonce, sealed))
    return query, _xml(ToUserName=ACCOUNT_ID, Encrypt=sealed)


def _fields(body: bytes) -> dict[str, str]:
    return {child.tag: child.text or "" for child in ET.fromstring(body)}


# -- crypto ------------------------------------------------------------------------------------


def test_the_aes_key_is_the_encoding_aes_key_decoded() -> None:
    assert aes_key(ENCODING_AES_KEY) == KEY and len(KEY) == 32
    for bad in ("", ENCODING_AES_KEY[:-1], ENCODING_AES_KEY + "H", ENCODING_AES_KEY[:-1] + "=", "é" * 43):
        with pytest.raises(ValueError):
            aes_key(bad)


def test_encryption_follows_the_published_layout_byte_for_byte() -> None:
    # Constructed from the protocol: 16 random bytes, the length big-endian, the XML, the AppId, PKCS#7 to 32
    # bytes, AES-256-CBC with the key's first 16 bytes as IV.
    message = "<xml><Content><![CDATA[救命]]></Content></xml>".encode()
    random = b"0123456789abcdef"
    plain = random + len(message).to_bytes(4, "big") + message + APP_ID.encode()
    plain += bytes([32 - len(plain) % 32]) * (32 - len(plain) % 32)
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).encryptor()
    expected = base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()
    assert encrypt(message, key=KEY, app_id=APP_ID, random=random) == expected
    assert decrypt(expected, key=KEY, app_id=APP_ID) == message


def test_padding_is_to_32_bytes_and_a_whole_block_when_the_plaintext_fills_its_blocks() -> None:
    message = b"x" * (64 - 16 - 4 - len(APP_ID))  # random + length + message + AppId = 64 bytes exactly
    sealed = base64.b64decode(encrypt(message, key=KEY, app_id=APP_ID, random=bytes(16)))
    decryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).decryptor()
    plain = decryptor.update(sealed) + decryptor.finalize()
    assert len(plain) == 96 and plain[-32:] == bytes([32]) * 32


@pytest.mark.parametrize("message", [b"", b"a", "报警：有人持刀".encode() * 40, bytes(range(256))])
def test_round_trip(message: bytes) -> None:
    for random in (bytes(16), b"\xff" * 16):
        assert decrypt(encrypt(message, key=KEY, app_id=APP_ID, random=random), key=KEY, app_id=APP_ID) == message


def test_envelopes_that_do_not_open_are_refused_with_the_reason() -> None:
    sealed = encrypt(b"<xml/>", key=KEY, app_id=APP_ID, random=bytes(16))
    with pytest.raises(WrongAppId):
        decrypt(sealed, key=KEY, app_id="wx0000000000000000")
    with pytest.raises(CryptoError, match="not base64"):
        decrypt("not base64!", key=KEY, app_id=APP_ID)
    with pytest.raises(CryptoError, match="whole blocks"):
        decrypt(base64.b64encode(base64.b64decode(sealed)[:-1]).decode(), key=KEY, app_id=APP_ID)
    with pytest.raises(CryptoError):
        decrypt(sealed, key=aes_key("A" * 43), app_id=APP_ID)  # another key: garbage padding or AppId
    # A length field that points beyond the end.
    plain = bytes(16) + struct.pack(">I", 10_000) + b"<xml/>" + APP_ID.encode()
    plain += bytes([32 - len(plain) % 32]) * (32 - len(plain) % 32)
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).encryptor()
    forged = base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()
    with pytest.raises(CryptoError, match="beyond its end"):
        decrypt(forged, key=KEY, app_id=APP_ID)


# -- signature and XML -------------------------------------------------------------------------


def test_the_signature_is_sha1_of_the_sorted_parts() -> None:
    expected = hashlib.sha1(b"".join(sorted([TOKEN.encode(), b"1409735669", b"1320562132"]))).hexdigest()
    assert wechat.signature(TOKEN, "1409735669", "1320562132") == expected
    assert wechat.signature(TOKEN, "1320562132", "1409735669") == expected  # order does not matter: sorted
    assert wechat.signature(TOKEN, "1", "2", "enc") == _sign("enc", "2", "1", TOKEN)


def test_the_url_check_answers_echostr_only_when_signed_and_recent() -> None:
    account = Account(TOKEN)
    assert wechat.verify_url(account, _query(echostr="5837397520"), now=T0) == "5837397520"
    with pytest.raises(wechat.Forged):
        wechat.verify_url(Account("anothertoken"), _query(echostr="5837397520"), now=T0)
    with pytest.raises(wechat.Forged):
        wechat.verify_url(account, {"timestamp": NOW, "nonce": "1", "echostr": "1"}, now=T0)
    with pytest.raises(wechat.Stale):
        wechat.verify_url(account, _query(echostr="1"), now=T0 + 301)
    with pytest.raises(wechat.Stale):
        wechat.verify_url(account, _query(echostr="1"), now=T0 - 301)  # from the future, as far
    with pytest.raises(Malformed):
        wechat.verify_url(account, _query(echostr="<script>"), now=T0)


def test_fields_are_read_and_cdata_is_text() -> None:
    body = _message("text", Content="有人<打架>]]&amp;")
    assert wechat.parse_xml(body)["Content"] == "有人<打架>]]&amp;"
    assert wechat.parse_xml(body)["CreateTime"] == NOW


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "not XML"),
    (b"garbage", "not XML"),
    (b"<xml><Content>unclosed</xml>", "not XML"),
    (b"<html><MsgType>text</MsgType></html>", "root element"),
    (b"<xml><MsgType>text</MsgType><MsgType>image</MsgType></xml>", "given twice"),
    ("<xml>\ufeff</xml>".encode("utf-16"), "not UTF-8"),
    (b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;'>]>"
     b"<xml><Content>&lol2;</Content></xml>", "DOCTYPE"),
    (b"<!doctype xml SYSTEM 'file:///etc/passwd'><xml/>", "DOCTYPE"),
    (b"<xml><!ENTITY x 'y'></xml>", "ENTITY"),
    (b"<xml><Content>" + b"a" * wechat.BODY_MAX + b"</Content></xml>", "larger than"),
])
def test_bodies_that_are_no_message_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        wechat.parse_xml(body)


def test_a_utf16_entity_bomb_does_not_slip_past_the_check() -> None:
    bomb = "<?xml version='1.0' encoding='UTF-16'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><xml><C>&a;</C></xml>"
    with pytest.raises(Malformed, match="UTF-8"):
        wechat.parse_xml(bomb.encode("utf-16"))


# -- what a message becomes --------------------------------------------------------------------


def _open(body: bytes, account: Account | None = None, **query: str) -> wechat.Message:
    return wechat.open_message(account or Account(TOKEN), {**_query(), **query}, body, now=T0)


def test_a_text_message_is_a_report_from_the_openid() -> None:
    report = wechat.as_report(_open(_message("text", Content="有人在砸车")))
    assert report is not None
    assert (report.channel, report.ref, report.sender, report.text) == (
        "wechat", "6054768590064713728", f"wx:{OPENID}", "有人在砸车")


def test_images_videos_and_locations_map_onto_reports() -> None:
    image = wechat.as_report(_open(_message("image", PicUrl="http://mmbiz.qpic.cn/mmbiz/abc/0", MediaId="m1")))
    assert image is not None and image.attachments == ({"kind": "photo", "url": "http://mmbiz.qpic.cn/mmbiz/abc/0"},)
    video = wechat.as_report(_open(_message("video", MediaId="Vid_-1", ThumbMediaId="t1")))
    assert video is not None and "media_id=Vid_-1" in video.text and video.attachments == ()
    place = wechat.as_report(_open(_message("location", Location_X="23.134521", Location_Y="113.358803",
                                            Scale=20, Label="天河区体育西路")))
    assert place is not None and (place.lat, place.lon, place.address) == (23.134521, 113.358803, "天河区体育西路")
    odd = wechat.as_report(_open(_message("image", PicUrl="javascript:alert(1)", MediaId="m2")))
    assert odd is not None and odd.attachments == () and "media_id=m2" in odd.text


def test_what_files_no_ticket_gets_a_polite_answer() -> None:
    voice = _open(_message("voice", MediaId="v1", Format="amr"))
    subscribe = _open(_message("event", msg_id=None, Event="subscribe"))
    unsubscribe = _open(_message("event", msg_id=None, Event="unsubscribe"))
    blank = _open(_message("text", Content="   "))
    assert [wechat.as_report(m) for m in (voice, subscribe, unsubscribe, blank)] == [None] * 4
    assert "110" in wechat.answer(voice, None) and wechat.answer(subscribe, None) == wechat.WELCOME
    assert "110" in wechat.WELCOME and wechat.answer(unsubscribe, None) is None
    assert wechat.answer(voice, "110-1") == "110已收到您的报警，编号 110-1。如情况紧急请直接拨打110。"


def test_a_message_without_msg_id_is_keyed_by_sender_and_time() -> None:
    first = wechat.as_report(_open(_message("text", msg_id=None, Content="a")))
    again = wechat.as_report(_open(_message("text", msg_id=None, Content="a")))
    assert first is not None and again is not None and first.ref == again.ref and first.ref.endswith(NOW)


@pytest.mark.parametrize("openid", ["", "a b", "../../etc", "<script>", "x" * 65, "o:1", "wx:o", "é", "o\tp"])
def test_hostile_openids_are_refused(openid: str) -> None:
    body = _xml(ToUserName=ACCOUNT_ID, FromUserName=openid, CreateTime=int(T0), MsgType="text", Content="x",
                MsgId=1)
    with pytest.raises(Malformed):
        _open(body)


@pytest.mark.parametrize("sender", ["wx:", "wx:" + "a" * 65, "wx:a b", "wx:../x", "wx:<b>", "wx:a\n", "wx:a:b",
                                    "13800000000", "WX:abc", "wx:abc "])
def test_the_wechat_channel_takes_wx_openids_only(sender: str) -> None:
    with pytest.raises(ValueError, match="sender"):
        parse_report({"ref": "1", "sender": sender, "text": "x"}, channel="wechat")


def test_phone_channels_still_take_phone_numbers_only() -> None:
    assert parse_report({"ref": "1", "sender": f"wx:{OPENID}", "text": "x"}, channel="wechat").sender == f"wx:{OPENID}"
    for channel in ("sms", "app"):
        with pytest.raises(ValueError, match="phone number"):
            parse_report({"ref": "1", "sender": f"wx:{OPENID}", "text": "x"}, channel=channel)


@pytest.mark.parametrize(("body", "reason"), [
    (_xml(ToUserName=ACCOUNT_ID, CreateTime=int(T0), MsgType="text", Content="x"), "FromUserName"),
    (_message("text"), "Content"),
    (_message("location", Location_X="23.1"), "Location_Y"),
    (_message("location", Location_X="nan", Location_Y="113"), "Location_X"),
    (_message("location", Location_X="91", Location_Y="113"), "Location_X"),
    (_message("video", MediaId="../../x"), "MediaId"),
    (_message("text", msg_id=None, Content="x", MsgId="12a"), "MsgId"),
])
def test_messages_missing_what_they_need_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        wechat.as_report(_open(body))


def test_safe_mode_opens_the_envelope_and_checks_its_signature_and_app_id() -> None:
    account = Account(TOKEN, APP_ID, KEY)
    query, body = _seal(_message("text", Content="救命"))
    message = wechat.open_message(account, query, body, now=T0)
    assert message.sealed and message.fields["Content"] == "救命"
    with pytest.raises(wechat.Forged, match="msg_signature"):
        wechat.open_message(account, {**query, "msg_signature": "0" * 40}, body, now=T0)
    other_query, other_body = _seal(_message("text", Content="x"), app_id="wx0000000000000000")
    with pytest.raises(wechat.WrongAccount):
        wechat.open_message(account, other_query, other_body, now=T0)
    with pytest.raises(Malformed, match="encrypted messages only"):
        wechat.open_message(account, _query(), _message("text", Content="x"), now=T0)
    with pytest.raises(Malformed, match="not configured"):
        wechat.open_message(Account(TOKEN), query, body, now=T0)


def test_a_sealed_reply_opens_with_the_account_key_and_its_signature_holds() -> None:
    account = Account(TOKEN, APP_ID, KEY)
    message = wechat.open_message(account, *_seal(_message("text", Content="x")), now=T0)
    reply = wechat.text_reply(message, "收到]]>", now=int(T0))
    sealed = _fields(wechat.sealed_reply(account, reply, timestamp=NOW, nonce="42", random=bytes(16)))
    assert set(sealed) == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert sealed["MsgSignature"] == _sign(TOKEN, NOW, "42", sealed["Encrypt"])
    inner = _fields(decrypt(sealed["Encrypt"], key=KEY, app_id=APP_ID))
    assert inner == {"ToUserName": OPENID, "FromUserName": ACCOUNT_ID, "CreateTime": NOW, "MsgType": "text",
                     "Content": "收到]]>"}


def test_settings_make_the_account_or_say_what_is_wrong() -> None:
    assert QualitySettings.from_env({}).wechat_account() is None
    plain = QualitySettings.from_env({"JIEJING_WECHAT_TOKEN": TOKEN}).wechat_account()
    assert plain == Account(TOKEN) and not plain.safe_mode and TOKEN not in repr(plain)
    safe = QualitySettings.from_env({"JIEJING_WECHAT_TOKEN": TOKEN, "JIEJING_WECHAT_APP_ID": APP_ID,
                                     "JIEJING_WECHAT_AES_KEY": ENCODING_AES_KEY}).wechat_account()
    assert safe == Account(TOKEN, APP_ID, KEY) and safe.safe_mode
    for env in ({"JIEJING_WECHAT_APP_ID": APP_ID}, {"JIEJING_WECHAT_TOKEN": "t!"},
                {"JIEJING_WECHAT_TOKEN": TOKEN, "JIEJING_WECHAT_AES_KEY": ENCODING_AES_KEY},
                {"JIEJING_WECHAT_TOKEN": TOKEN, "JIEJING_WECHAT_APP_ID": APP_ID, "JIEJING_WECHAT_AES_KEY": "short"}):
        with pytest.raises(ConfigError, match="WECHAT"):
            QualitySettings.from_env(env)


# -- through the application -------------------------------------------------------------------


@pytest.fixture
async def app_for(service: TicketService, clock: FakeClock) -> AsyncIterator[Any]:
    clients: list[TestClient] = []

    async def build(account: Account | None) -> TestClient:
        planner = planner_for(service, clock)
        await load(planner.officers, officer("e1", "east", point_in(CENTER, 50)))
        app = make_app(service, health={}, dispatch=planner, triage=make_desk(service, planner, clock),
                       wechat=account)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.close()


async def _count(service: TicketService) -> int:
    async with service.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(Ticket))).scalar_one()


async def test_without_settings_the_endpoint_is_not_there(app_for: Any) -> None:
    client = await app_for(None)
    for resp in (await client.get("/api/wechat", params=_query(echostr="1")),
                 await client.post("/api/wechat", params=_query(), data=_message("text", Content="x"))):
        assert resp.status == 404 and (await resp.json())["error_id"] == "wechat-disabled"


async def test_the_platform_verifies_the_url(app_for: Any, clock: FakeClock) -> None:
    client = await app_for(Account(TOKEN))
    ok = await client.get("/api/wechat", params=_query(echostr="5837397520"))
    assert ok.status == 200 and ok.content_type == "text/plain" and await ok.text() == "5837397520"
    forged = await client.get("/api/wechat", params={**_query(echostr="1"), "signature": "0" * 40})
    assert forged.status == 403 and (await forged.json())["error_id"] == "wechat-bad-signature"
    clock.now = T0 + 301
    stale = await client.get("/api/wechat", params=_query(echostr="1"))
    assert stale.status == 403 and (await stale.json())["error_id"] == "wechat-stale"


async def test_a_text_message_is_a_ticket_and_its_redelivery_the_same(
    app_for: Any, service: TicketService
) -> None:
    client = await app_for(Account(TOKEN))
    body = _message("text", Content="有人绑架小孩，在人民公园东门")
    first = await client.post("/api/wechat", params=_query(), data=body)
    assert first.status == 200 and first.content_type == "text/xml"
    reply = _fields(await first.read())
    assert (reply["ToUserName"], reply["FromUserName"], reply["MsgType"]) == (OPENID, ACCOUNT_ID, "text")
    [ticket] = await service.list_recent(10)
    assert reply["Content"] == f"110已收到您的报警，编号 {ticket.number}。如情况紧急请直接拨打110。"
    assert (ticket.caller_id, ticket.state, ticket.uniqueid) == (f"wx:{OPENID}", State.REPORTED,
                                                                  "wechat:6054768590064713728")
    step = ticket.steps[0]
    assert (step.step, step.source, step.detail["channel"]) == (Step.REPORTED, "wechat", "wechat")
    assert step.detail["text"] == "有人绑架小孩，在人民公园东门" and step.detail["keywords"] == ["绑架"]
    # WeChat heard nothing within 5 s and delivers again: the same answer, no second ticket, no second alert.
    again = await client.post("/api/wechat", params=_query(nonce="9"), data=body)
    assert again.status == 200 and _fields(await again.read())["Content"] == reply["Content"]
    assert await _count(service) == 1
    async with service.engine.connect() as conn:
        alerts = (await conn.execute(select(Alert.message).where(Alert.kind == "major_incident"))).scalars().all()
    assert len(alerts) == 1 and "(wechat report)" in alerts[0]


async def test_safe_mode_end_to_end(app_for: Any, service: TicketService) -> None:
    client = await app_for(Account(TOKEN, APP_ID, KEY))
    query, body = _seal(_message("text", Content="家里进了小偷"))
    resp = await client.post("/api/wechat", params=query, data=body)
    assert resp.status == 200, await resp.text()
    sealed = _fields(await resp.read())
    assert sealed["MsgSignature"] == _sign(TOKEN, sealed["TimeStamp"], sealed["Nonce"], sealed["Encrypt"])
    inner = _fields(decrypt(sealed["Encrypt"], key=KEY, app_id=APP_ID))
    [ticket] = await service.list_recent(10)
    assert inner["ToUserName"] == OPENID and ticket.number in inner["Content"]
    assert ticket.steps[0].detail["text"] == "家里进了小偷"
    # Refused without a ticket: plain in safe mode, a forged msg_signature, another account's envelope.
    plain = await client.post("/api/wechat", params=_query(), data=_message("text", msg_id=2, Content="x"))
    assert plain.status == 400 and "safe mode" in (await plain.json())["error"]
    forged = await client.post("/api/wechat", params={**query, "msg_signature": "f" * 40}, data=body)
    assert forged.status == 403
    other_query, other_body = _seal(_message("text", msg_id=3, Content="x"), app_id="wx0000000000000000")
    other = await client.post("/api/wechat", params=other_query, data=other_body)
    assert other.status == 400 and (await other.json())["error_id"] == "wechat-wrong-app-id"
    assert await _count(service) == 1


async def test_pictures_places_and_videos_become_reports(app_for: Any, service: TicketService) -> None:
    client = await app_for(Account(TOKEN))
    lat, lon = point_in(CENTER)
    for body in (_message("image", msg_id=11, PicUrl="http://mmbiz.qpic.cn/mmbiz_jpg/x/0", MediaId="img1"),
                 _message("location", msg_id=12, Location_X=str(lat), Location_Y=str(lon), Scale=15,
                          Label="人民大道200号"),
                 _message("video", msg_id=13, MediaId="vid_1", ThumbMediaId="th1")):
        resp = await client.post("/api/wechat", params=_query(), data=body)
        assert resp.status == 200 and "110已收到" in _fields(await resp.read())["Content"]
    tickets = {t.uniqueid: t for t in await service.list_recent(10)}
    image = tickets["wechat:11"].steps[0].detail
    assert image["attachments"] == [{"kind": "photo", "url": "http://mmbiz.qpic.cn/mmbiz_jpg/x/0"}]
    place = tickets["wechat:12"]
    assert (place.steps[0].detail["lat"], place.steps[0].detail["address"]) == (lat, "人民大道200号")
    assert place.steps[1].step is Step.LOCATED and place.steps[1].detail["station"] == "east"
    assert "media_id=vid_1" in tickets["wechat:13"].steps[0].detail["text"]
    assert {t.caller_id for t in tickets.values()} == {f"wx:{OPENID}"}


async def test_events_and_voice_get_a_word_and_no_ticket(app_for: Any, service: TicketService) -> None:
    client = await app_for(Account(TOKEN))
    welcome = await client.post("/api/wechat", params=_query(), data=_message("event", msg_id=None,
                                                                              Event="subscribe"))
    assert _fields(await welcome.read())["Content"] == wechat.WELCOME
    voice = await client.post("/api/wechat", params=_query(), data=_message("voice", MediaId="v", Format="amr"))
    assert "110" in _fields(await voice.read())["Content"]
    gone = await client.post("/api/wechat", params=_query(), data=_message("event", msg_id=None, Event="unsubscribe"))
    assert gone.status == 200 and await gone.text() == "success"
    assert await _count(service) == 0


BOMB = (b"<?xml version='1.0'?><!DOCTYPE xml [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;'>"
        b"<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;'>]>"
        b"<xml><ToUserName>gh_1</ToUserName><FromUserName>o1</FromUserName><CreateTime>1</CreateTime>"
        b"<MsgType>text</MsgType><Content>&d;&d;&d;&d;</Content><MsgId>5</MsgId></xml>")


@pytest.mark.parametrize(("query", "body", "status", "error_id"), [
    ({"signature": "0" * 40}, _message("text", Content="x"), 403, "wechat-bad-signature"),
    ({"signature": ""}, _message("text", Content="x"), 403, "wechat-bad-signature"),
    ({}, b"<xml><oops", 400, "wechat-malformed"),
    ({}, b"\x00\xff garbage", 400, "wechat-malformed"),
    ({}, BOMB, 400, "wechat-malformed"),
    ({}, _message("text", Content="x" * wechat.BODY_MAX), 400, "wechat-malformed"),
    ({}, _xml(ToUserName=ACCOUNT_ID, MsgType="text", Content="x"), 400, "wechat-malformed"),
    ({"encrypt_type": "des"}, _message("text", Content="x"), 400, "wechat-malformed"),
])
async def test_bad_posts_are_refused_with_a_reason_and_make_no_ticket(
    app_for: Any, service: TicketService, query: dict[str, str], body: bytes, status: int, error_id: str
) -> None:
    client = await app_for(Account(TOKEN))
    resp = await client.post("/api/wechat", params={**_query(), **query}, data=body)
    answer = await resp.json()
    assert (resp.status, answer["error_id"]) == (status, error_id) and answer["error"]
    assert await _count(service) == 0


async def test_an_old_message_is_refused_as_a_replay(app_for: Any, service: TicketService) -> None:
    client = await app_for(Account(TOKEN))
    old = str(int(T0) - 301)
    resp = await client.post("/api/wechat", params=_query(timestamp=old), data=_message("text", Content="x"))
    assert resp.status == 403 and (await resp.json())["error_id"] == "wechat-stale"
    assert await _count(service) == 0
