"""The sans-IO AMI codec: parsing Asterisk's stream, encoding actions safely,
and escaping caller text for the dialplan."""

from __future__ import annotations

import random

import pytest

from telephony.ami.codec import (
    MAX_ACTION_HEADERS,
    MAX_ACTION_LINE,
    MAX_LINE,
    MAX_MESSAGE,
    NEED_DATA,
    AMIProtocol,
    AMIProtocolError,
    Banner,
    Closed,
    Event,
    LocalProtocolError,
    Message,
    RemoteProtocolError,
    Response,
    dialplan_escape,
    encode_action,
    variable_headers,
)

# Hand-written in the shape of Asterisk 22 output (timestampevents = yes).
TRANSCRIPT = (
    b"Asterisk Call Manager/9.0.0\r\n"
    b"Response: Success\r\n"
    b"ActionID: jj-1-ab\r\n"
    b"Message: Authentication accepted\r\n"
    b"\r\n"
    b"Event: FullyBooted\r\n"
    b"Privilege: system,all\r\n"
    b"Timestamp: 1732870000.123456\r\n"
    b"Uptime: 12\r\n"
    b"LastReload: 12\r\n"
    b"Status: Fully Booted\r\n"
    b"\r\n"
    b"Response: Success\r\n"
    b"ActionID: jj-2-ab\r\n"
    b"Message: Command output follows\r\n"
    b"Output: Channel              Location             State   Application(Data)\r\n"
    b"Output:   PJSIP/trunk-00000001 110@intake:3       Up      Queue(intake)\r\n"
    b"Output: 1 active channel\r\n"
    b"\r\n"
    b"Event: Newchannel\r\n"
    b"Privilege: call,all\r\n"
    b"Timestamp: 1732870001.000250\r\n"
    b"Channel: PJSIP/trunk-00000001\r\n"
    b"CallerIDNum: 13800138000\r\n"
    b"CallerIDName: \xe5\xbc\xa0\xe4\xb8\x89\r\n"
    b"ChanVariable: JIEJING_TICKET=110-20261129-000042\r\n"
    b"ChanVariable: JIEJING_QUEUE=intake\r\n"
    b"Uniqueid: 1732870001.1\r\n"
    b"\r\n"
    b"Response: Success\r\n"
    b"ActionID: jj-3-ab\r\n"
    b"EventList: start\r\n"
    b"Message: Channels will follow\r\n"
    b"\r\n"
    b"Event: CoreShowChannel\r\n"
    b"ActionID: jj-3-ab\r\n"
    b"Timestamp: 1732870001.500000\r\n"
    b"Channel: PJSIP/trunk-00000001\r\n"
    b"\r\n"
    b"Event: CoreShowChannelsComplete\r\n"
    b"ActionID: jj-3-ab\r\n"
    b"Timestamp: 1732870001.500100\r\n"
    b"EventList: Complete\r\n"
    b"ListItems: 1\r\n"
    b"\r\n"
)


def drain(p: AMIProtocol) -> list[object]:
    out = []
    while True:
        item = p.next_event()
        if item is NEED_DATA:
            return out
        out.append(item)
        if isinstance(item, Closed):
            return out


def parse_chunks(chunks: list[bytes]) -> list[object]:
    p = AMIProtocol()
    out: list[object] = []
    for chunk in chunks:
        p.receive_data(chunk)
        out.extend(drain(p))
    return out


def parse_all(data: bytes, *, eof: bool = False) -> list[object]:
    return parse_chunks([data, b""] if eof else [data])


# -- parsing ---------------------------------------------------------------


def test_transcript_whole():
    items = parse_all(TRANSCRIPT, eof=True)
    assert [type(i) for i in items] == [Banner, Response, Event, Response, Event, Response, Event, Event, Closed]
    assert items[0] == Banner("Asterisk Call Manager/9.0.0")
    login = items[1]
    assert login.ok and login.action_id == "jj-1-ab" and login.message == "Authentication accepted"
    booted = items[2]
    assert booted.name == "FullyBooted"
    assert booted.timestamp == pytest.approx(1732870000.123456)


def test_transcript_one_byte_at_a_time_equals_whole():
    whole = parse_all(TRANSCRIPT, eof=True)
    bytewise = parse_chunks([TRANSCRIPT[i : i + 1] for i in range(len(TRANSCRIPT))] + [b""])
    assert bytewise == whole


def test_random_chunking_equals_whole():
    rng = random.Random(110)
    whole = parse_all(TRANSCRIPT, eof=True)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(TRANSCRIPT)), rng.randint(1, 30)))
        chunks = [TRANSCRIPT[a:b] for a, b in zip([0, *cuts], [*cuts, len(TRANSCRIPT)])]
        assert parse_chunks(chunks + [b""]) == whole


def test_trailing_partial_message_waits_for_more():
    p = AMIProtocol()
    p.receive_data(TRANSCRIPT + b"Event: Hangup\r\nChannel: PJSIP/trunk-0000")
    items = drain(p)
    assert len(items) == 8 and not any(isinstance(i, Closed) for i in items)
    assert p.next_event() is NEED_DATA
    p.receive_data(b"0001\r\nCause: 16\r\n\r\n")
    (hangup,) = drain(p)
    assert hangup.name == "Hangup" and hangup["Channel"] == "PJSIP/trunk-00000001" and hangup["Cause"] == "16"


def test_bare_newlines_are_tolerated():
    items = parse_all(TRANSCRIPT.replace(b"\r\n", b"\n"), eof=True)
    assert items == parse_all(TRANSCRIPT, eof=True)


def test_repeated_output_keys_keep_order_and_indentation():
    command = parse_all(TRANSCRIPT)[3]
    assert isinstance(command, Response) and command.ok
    assert command.get_all("output") == [
        "Channel              Location             State   Application(Data)",
        "  PJSIP/trunk-00000001 110@intake:3       Up      Queue(intake)",
        "1 active channel",
    ]
    assert command.get("Output") == command.get_all("Output")[0]


def test_repeated_chanvariable_and_lookup_api():
    event = parse_all(TRANSCRIPT)[4]
    assert event.get_all("ChanVariable") == ["JIEJING_TICKET=110-20261129-000042", "JIEJING_QUEUE=intake"]
    assert event.get("callerid" "name") == "张三"
    assert event["CALLERIDNUM"] == "13800138000"
    assert event.get("Missing") is None and event.get("Missing", "x") == "x"
    with pytest.raises(KeyError):
        event["Missing"]
    assert "channel" in event and "Missing" not in event
    as_dict = event.as_dict()
    assert as_dict["ChanVariable"] == "JIEJING_TICKET=110-20261129-000042"  # first wins
    assert list(as_dict)[:3] == ["Event", "Privilege", "Timestamp"]
    assert event.action_id is None


def test_eventlist_events_carry_action_id():
    items = parse_all(TRANSCRIPT)
    ack, item, complete = items[5], items[6], items[7]
    assert ack.get("EventList") == "start" and ack.action_id == "jj-3-ab"
    assert item.name == "CoreShowChannel" and item.action_id == "jj-3-ab"
    assert complete.name == "CoreShowChannelsComplete" and complete["EventList"] == "Complete"
    assert complete.action_id == "jj-3-ab"


@pytest.mark.parametrize(
    "raw, expected",
    [
        (b"Timestamp: 1732870000.123456", 1732870000.123456),
        (b"Timestamp: 17", 17.0),
        (b"Timestamp: soon", None),
        (b"Timestamp: ", None),
        (b"Other: 1", None),
    ],
)
def test_timestamp(raw, expected):
    (event,) = parse_all(b"Event: X\r\n" + raw + b"\r\n\r\n")
    assert event.timestamp == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    "status, ok",
    [("Success", True), ("Goodbye", True), ("Follows", True), ("success", True), ("Error", False), ("", False)],
)
def test_response_ok(status, ok):
    p = AMIProtocol(expect_banner=False)
    p.receive_data(f"Response: {status}\r\nActionID: 7\r\nMessage: m\r\n\r\n".encode())
    (response,) = drain(p)
    assert isinstance(response, Response)
    assert response.ok is ok and response.message == "m" and response.action_id == "7"


def test_originate_response_event_is_an_event():
    data = b"Event: OriginateResponse\r\nActionID: jj-9-ab\r\nResponse: Success\r\nChannel: PJSIP/officer-1\r\n\r\n"
    (event,) = parse_all(data)
    assert isinstance(event, Event) and event.name == "OriginateResponse"
    assert event.action_id == "jj-9-ab" and event["Response"] == "Success"


def test_message_with_neither_key_is_a_generic_message():
    (message,) = parse_all(b"Asterisk Call Manager/9.0.0\r\nFoo: bar\r\nBaz: \r\n\r\n")[1:]
    assert type(message) is Message
    assert message.headers == (("Foo", "bar"), ("Baz", ""))


def test_event_key_later_still_makes_an_event():
    (event,) = parse_all(b"Privilege: call,all\r\nEvent: Late\r\n\r\n")
    assert isinstance(event, Event) and event.name == "Late"


def test_value_may_contain_colons_and_no_space():
    (event,) = parse_all(b"Event: X\r\nAddress:sip:110@10.0.0.1:5060\r\nUrl: http://x:1/\r\n\r\n")
    assert event["Address"] == "sip:110@10.0.0.1:5060" and event["Url"] == "http://x:1/"


def test_stray_blank_lines_between_messages():
    items = parse_all(b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\nEvent: B\r\n\r\n")
    assert [i.name for i in items] == ["A", "B"]


def test_no_banner_when_first_line_is_a_header():
    (event,) = parse_all(b"Event: A\r\n\r\n")
    assert event.name == "A"


def test_banner_only_as_first_line():
    p = AMIProtocol()
    p.receive_data(b"Asterisk Call Manager/9.0.0\r\nAsterisk Call Manager/9.0.0\r\n\r\n")
    assert p.next_event() == Banner("Asterisk Call Manager/9.0.0")
    with pytest.raises(RemoteProtocolError, match="without ':'"):
        p.next_event()


def test_non_utf8_is_replaced_not_fatal():
    (event,) = parse_all(b"Event: X\r\nCallerIDName: \xff\xfe\xe5\xbc\r\n\r\n")
    assert event["CallerIDName"] == "\ufffd\ufffd\ufffd"


# -- errors and caps ---------------------------------------------------------


def test_line_without_colon_inside_a_message():
    p = AMIProtocol()
    p.receive_data(b"Asterisk Call Manager/9.0.0\r\nEvent: X\r\nthis is not a header\r\n\r\n")
    assert isinstance(p.next_event(), Banner)
    with pytest.raises(RemoteProtocolError, match="line without ':' inside a message: 'this is not a header'"):
        p.next_event()
    # the stream is no longer trusted: it keeps failing
    p.receive_data(b"Event: Y\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        p.next_event()


def test_header_without_name():
    with pytest.raises(RemoteProtocolError, match="without a name"):
        parse_all(b"Event: X\r\n: value\r\n\r\n")


def test_line_cap_with_newline():
    data = b"Event: X\r\nBig: " + b"a" * MAX_LINE + b"\r\n\r\n"
    with pytest.raises(RemoteProtocolError, match="line longer"):
        parse_all(data)


def test_line_cap_without_newline_does_not_buffer_forever():
    p = AMIProtocol()
    p.receive_data(b"Event: X\r\nBig: ")
    assert drain(p) == []
    chunk = b"a" * 4096
    with pytest.raises(RemoteProtocolError, match="line longer"):
        for _ in range(MAX_LINE // len(chunk) + 2):
            p.receive_data(chunk)
            p.next_event()


def test_line_just_under_cap_is_accepted():
    value = "a" * (MAX_LINE - len("Big: ") - 1)  # plus \r makes exactly MAX_LINE before \n
    (event,) = parse_all(f"Event: X\r\nBig: {value}\r\n\r\n".encode())
    assert event["Big"] == value


def test_message_cap():
    line = b"Output: " + b"x" * 1000 + b"\r\n"
    data = b"Response: Success\r\n" + line * (MAX_MESSAGE // len(line) + 1) + b"\r\n"
    with pytest.raises(RemoteProtocolError, match="message larger"):
        parse_all(data)


def test_many_small_messages_do_not_add_up_to_the_cap():
    one = b"Event: Tick\r\n" + b"Pad: " + b"p" * 1000 + b"\r\n\r\n"
    count = MAX_MESSAGE // len(one) + 10
    items = parse_all(one * count)
    assert len(items) == count


def test_eof_mid_message_raises_once_then_closed():
    p = AMIProtocol()
    p.receive_data(b"Asterisk Call Manager/9.0.0\r\nEvent: Hangup\r\nChannel: PJSIP/x\r\n")
    assert isinstance(p.next_event(), Banner)
    assert p.next_event() is NEED_DATA
    p.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        p.next_event()
    assert p.next_event() == Closed()
    assert p.next_event() == Closed()


def test_eof_mid_line_raises_once_then_closed():
    p = AMIProtocol()
    p.receive_data(b"Asterisk Call Man")
    p.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        p.next_event()
    assert isinstance(p.next_event(), Closed)


def test_clean_eof_is_closed():
    assert parse_all(b"Asterisk Call Manager/9.0.0\r\n", eof=True) == [Banner("Asterisk Call Manager/9.0.0"), Closed()]
    assert parse_chunks([b""]) == [Closed()]


def test_data_after_eof_is_a_usage_error():
    p = AMIProtocol()
    p.receive_data(b"")
    p.receive_data(b"")  # repeated EOF is fine
    with pytest.raises(RuntimeError):
        p.receive_data(b"Event: X\r\n\r\n")


# -- fuzz ---------------------------------------------------------------------


ALLOWED = (Banner, Response, Event, Message, Closed)
NOISE = [b"\r", b"\n", b"\r\n", b":", b": ", b"\x00", b"\xff", b"\xe5\xbc", b"Event", b"Response", b"\r\n\r\n", b" "]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # delete a run
            del buf[pos : pos + rng.randint(1, 20)]
        elif op == 1:  # insert noise
            buf[pos:pos] = rng.choice(NOISE)
        elif op == 2 and buf:  # flip a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 3:  # duplicate a slice
            a = rng.randrange(len(buf) + 1)
            buf[pos:pos] = buf[a : a + rng.randint(1, 60)]
        else:  # truncate
            del buf[pos:]
    return bytes(buf)


def test_fuzz_parser_only_returns_events_or_protocol_errors():
    rng = random.Random(20261129)
    outcomes = {"clean": 0, "error": 0}
    for _ in range(3000):
        data = mutate(rng, TRANSCRIPT)
        p = AMIProtocol()
        pos = 0
        failed = False
        try:
            while pos < len(data):
                step = rng.randint(1, 64)
                p.receive_data(data[pos : pos + step])
                pos += step
                for item in drain(p):
                    assert isinstance(item, ALLOWED), item
            p.receive_data(b"")
            items = drain(p)
            assert all(isinstance(i, ALLOWED) for i in items)
            assert items and isinstance(items[-1], Closed)
        except AMIProtocolError:
            failed = True
        outcomes["error" if failed else "clean"] += 1
    # the mutations must exercise both paths, or the loop proves little
    assert outcomes["clean"] > 100 and outcomes["error"] > 100, outcomes


# -- encoding actions -----------------------------------------------------------


def decode_action(data: bytes) -> Message:
    """Read our own output back with the codec, as Asterisk would see it."""
    p = AMIProtocol(expect_banner=False)
    p.receive_data(data)
    items = drain(p)
    assert len(items) == 1, items
    return items[0]


def test_encode_exact_bytes():
    data = encode_action("Ping", "jj-1-ab", {})
    assert data == b"Action: Ping\r\nActionID: jj-1-ab\r\n\r\n"


def test_encode_mapping_pairs_and_repeated_variable():
    data = encode_action(
        "Originate",
        "jj-2-ab",
        [("Channel", "PJSIP/officer-7"), ("Variable", "A=1"), ("Variable", "B=2"), ("Timeout", 30000), ("Async", True)],
    )
    message = decode_action(data)
    assert message.headers == (
        ("Action", "Originate"),
        ("ActionID", "jj-2-ab"),
        ("Channel", "PJSIP/officer-7"),
        ("Variable", "A=1"),
        ("Variable", "B=2"),
        ("Timeout", "30000"),
        ("Async", "true"),
    )
    assert decode_action(encode_action("Status", "x", {"Channel": "PJSIP/a"}))["Channel"] == "PJSIP/a"


HOSTILE = [
    "evil\r\nAction: Originate",
    "\r\nAction: Originate\r\nChannel: PJSIP/attacker\r\n\r\n",
    "a\nb",
    "a\rb",
    "nul\x00byte",
    "\r\n\r\n",
    '"quoted", \'single\' \\ back',
    "${SHELL(rm -rf /)}",
    "$[1+1]",
    "张三 李四 报警",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_one_header(value):
    data = encode_action("Originate", "jj-3-ab", [("Channel", "PJSIP/officer"), ("CallerID", value)])
    assert data.endswith(b"\r\n\r\n") and data.count(b"\r\n\r\n") == 1
    assert data.count(b"\n") == 5 and data.count(b"\r") == 5 and b"\x00" not in data
    message = decode_action(data)
    assert [k for k, _ in message.headers] == ["Action", "ActionID", "Channel", "CallerID"]
    assert message.get_all("Action") == ["Originate"]
    expected = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    assert message["CallerID"] == expected


@pytest.mark.parametrize("value", HOSTILE[:6])
def test_unsafe_reject_mode(value):
    with pytest.raises(LocalProtocolError, match="CR, LF or NUL"):
        encode_action("UserEvent", "x", {"Body": value}, unsafe="reject")


def test_unsafe_mode_is_checked():
    with pytest.raises(ValueError):
        encode_action("Ping", "x", {}, unsafe="ignore")  # type: ignore[arg-type]


def test_hostile_action_id_is_sanitised():
    message = decode_action(encode_action("Ping", "id\r\nAction: Originate", {}))
    assert message.get_all("Action") == ["Ping"] and message.action_id == "id  Action: Originate"


@pytest.mark.parametrize("name", ["", "Caller ID", "Key:", "Key\r\nAction", "Ключ", "a.b", "x\x00"])
def test_bad_header_names_refused(name):
    with pytest.raises(LocalProtocolError, match="invalid AMI header name"):
        encode_action("UserEvent", "x", [(name, "v")])


@pytest.mark.parametrize("action", ["", "Ping\r\nAction: Originate", "Core Show"])
def test_bad_action_names_refused(action):
    with pytest.raises(LocalProtocolError, match="invalid AMI action name"):
        encode_action(action, "x", {})


@pytest.mark.parametrize("name", ["Action", "ACTIONID", "actionid"])
def test_reserved_headers_refused(name):
    with pytest.raises(LocalProtocolError, match="set by encode_action"):
        encode_action("Ping", "x", [(name, "y")])


def test_bad_value_type_refused():
    with pytest.raises(LocalProtocolError, match="must be str"):
        encode_action("Ping", "x", {"Thing": None})  # type: ignore[dict-item]


def test_line_longer_than_asterisk_accepts_is_refused():
    fits = "x" * (MAX_ACTION_LINE - len("Body: "))
    assert decode_action(encode_action("UserEvent", "x", {"Body": fits}))["Body"] == fits
    with pytest.raises(LocalProtocolError, match="discards lines"):
        encode_action("UserEvent", "x", {"Body": fits + "x"})
    # the limit is in bytes: three bytes per Chinese character
    with pytest.raises(LocalProtocolError):
        encode_action("UserEvent", "x", {"Body": "报" * (MAX_ACTION_LINE // 3)})


def test_too_many_headers_refused():
    ok = [("Variable", f"V{i}=1") for i in range(MAX_ACTION_HEADERS - 2)]
    assert len(decode_action(encode_action("Originate", "x", ok)).get_all("Variable")) == MAX_ACTION_HEADERS - 2
    with pytest.raises(LocalProtocolError, match="at most"):
        encode_action("Originate", "x", ok + [("Variable", "one=more")])


# -- dialplan escaping -------------------------------------------------------------


def asterisk_split(data: str) -> list[str]:
    """Python model of __ast_app_separate_args(buf, ',', remove_chars=1) in
    Asterisk 22 main/app.c: nesting counters persist across arguments;
    a backslash makes the next character literal and is removed."""
    args: list[str] = []
    cur: list[str] = []
    paren = bracket = 0
    quote = False
    i = 0
    while i < len(data):
        c = data[i]
        if c == "(":
            paren += 1
        elif c == ")":
            paren = max(0, paren - 1)
        elif c == "[":
            bracket += 1
        elif c == "]":
            bracket = max(0, bracket - 1)
        elif c == '"':
            quote = not quote
            i += 1
            continue
        elif c == "\\":
            if i + 1 < len(data):
                cur.append(data[i + 1])
            i += 2
            continue
        elif c == "," and not paren and not quote and not bracket:
            args.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    args.append("".join(cur))
    return args


def substitution_fires(data: str) -> bool:
    # Asterisk's substitution starts only at "$" directly followed by "{" or "[".
    return "${" in data or "$[" in data


ESCAPE_CASES = [
    "张三",
    "O'Brien",
    "a,b",
    '",foo',
    "${SHELL(rm -rf /)}",
    "$[${X}+1]",
    "$${x}",
    "(unbalanced",
    "unbalanced)",
    "[x",
    'say "hi"',
    "back\\slash,",
    "a|b",
    "trailing\\",
    "{}",
    "",
]


@pytest.mark.parametrize("value", ESCAPE_CASES)
def test_dialplan_escape_is_one_literal_argument(value):
    escaped = dialplan_escape(value)
    assert not substitution_fires(escaped)
    assert asterisk_split(escaped) == [value]
    # between trusted arguments it neither splits nor swallows its neighbours
    assert asterisk_split(f"room-1,{escaped},quiet") == ["room-1", value, "quiet"]


def test_dialplan_escape_known_outputs():
    assert dialplan_escape("张三") == "张三"
    assert dialplan_escape("a,b") == "a\\,b"
    assert dialplan_escape("${SHELL(rm -rf /)}") == "$\\{SHELL\\(rm -rf /\\)\\}"
    assert dialplan_escape('",foo') == '\\"\\,foo'
    assert dialplan_escape("a|b\\c") == "a\\|b\\\\c"


def test_dialplan_escape_fuzz():
    rng = random.Random(110)
    alphabet = list(',|"\\()[]{}$ a张') + ["${", "$["]
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        escaped = dialplan_escape(value)
        assert not substitution_fires(escaped), value
        assert asterisk_split(f"x,{escaped},y") == ["x", value, "y"], value


def test_variable_headers_survive_asteriks_variable_parsing():
    # Asterisk splits the Variable header value on commas, then each item on the first "=".
    name = 'Zhang",X=1,${SHELL(id)}'
    pairs = variable_headers({"TEST_CALLER_NAME": name, "__JIEJING_TICKET": "110-1"})
    assert [k for k, _ in pairs] == ["Variable", "Variable"]
    items = asterisk_split(pairs[0][1])
    assert len(items) == 1
    var, _, val = items[0].partition("=")
    assert (var, val) == ("TEST_CALLER_NAME", name)
    assert pairs[1][1] == "__JIEJING_TICKET=110-1"


@pytest.mark.parametrize("name", ["", "A B", "A=B", "A,B", "X\r\n", "${X}"])
def test_variable_headers_refuse_bad_names(name):
    with pytest.raises(LocalProtocolError, match="channel variable name"):
        variable_headers([(name, "v")])
