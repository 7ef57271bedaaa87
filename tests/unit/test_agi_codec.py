"""The sans-IO FastAGI codec: parsing Asterisk's bytes and writing safe command lines."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import pytest

from telephony.agi import codec
from telephony.agi.codec import (
    MAX_COMMAND_BYTES,
    MAX_HEADER_BYTES,
    MAX_LINE_BYTES,
    NEED_DATA,
    AGIProtocol,
    AGIProtocolError,
    Closed,
    HangupNotice,
    LocalProtocolError,
    RemoteProtocolError,
    Reply,
    Request,
    State,
)
from tests.agi_peer import asterisk_headers, parse_agi_args

HEADERS = asterisk_headers("intake", ["1764400000.123"], uniqueid="1764400000.7")


def header_block(headers: dict[str, str] = HEADERS, newline: str = "\n") -> bytes:
    return ("".join(f"{k}: {v}{newline}" for k, v in headers.items()) + newline).encode()


USAGE_520 = (
    b"520-Invalid command syntax.  Proper usage follows:\n"
    b" Usage: SET VARIABLE <variablename> <value>\n"
    b"\n"
    b"Sets a variable to the current channel.\n"
    b"520 End of proper usage.\n"
)

# One call as Asterisk writes it, and the commands we send in between.
REPLIES = [
    b"200 result=1\n",
    b"200 result=1 (1764400000.123)\n",
    b"200 result=0\n",
    b"510 Invalid or unknown command\n",
    USAGE_520,
    b"511 Command Not Permitted on a dead channel or intercept routine\n",
]
COMMANDS: list[Callable[[AGIProtocol], bytes]] = [
    lambda p: p.set_variable("JIEJING_TICKET", "110-20261129-000042"),
    lambda p: p.get_variable("JIEJING_ARRIVED"),
    lambda p: p.get_variable("JIEJING_UNSET"),
    lambda p: p.send_command("NO", "SUCH", "COMMAND"),
    lambda p: p.send_command("SET", "VARIABLE"),
    lambda p: p.send_command("ANSWER"),
]
EXPECTED = [
    Request(headers=HEADERS, script="intake", args=["1764400000.123"]),
    Reply(200, "1", None, "result=1"),
    Reply(200, "1", "1764400000.123", "result=1 (1764400000.123)"),
    Reply(200, "0", None, "result=0"),
    Reply(510, None, None, "Invalid or unknown command"),
    Reply(
        520,
        None,
        None,
        "Invalid command syntax.  Proper usage follows:\n"
        " Usage: SET VARIABLE <variablename> <value>\n"
        "\n"
        "Sets a variable to the current channel.\n"
        "End of proper usage.",
    ),
    Reply(511, None, None, "Command Not Permitted on a dead channel or intercept routine"),
    Closed(),
]
TRANSCRIPT = header_block() + b"".join(REPLIES)


def drive(chunks: Iterable[bytes], commands: Iterable[Callable[[AGIProtocol], bytes]] = ()) -> list[object]:
    """Feed chunks (then EOF), sending the next command whenever one may be sent."""
    proto = AGIProtocol()
    pending = iter(list(chunks) + [b""])
    todo = iter(commands)
    events: list[object] = []
    for _ in range(1_000_000):
        event = proto.next_event()
        if event is NEED_DATA:
            proto.receive_data(next(pending))
            continue
        events.append(event)
        if isinstance(event, Closed):
            return events
        if isinstance(event, (Request, Reply)) and (command := next(todo, None)) is not None:
            command(proto)
    raise AssertionError("codec never reached Closed")


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    chunks, i = [], 0
    while i < len(data):
        n = rng.randint(1, 40)
        chunks.append(data[i : i + n])
        i += n
    return chunks


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("split", ["whole", "bytewise", "random"])
def test_full_call_parses_the_same_however_it_is_split(split: str) -> None:
    chunks = {
        "whole": [TRANSCRIPT],
        "bytewise": bytewise(TRANSCRIPT),
        "random": random_chunks(TRANSCRIPT, random.Random(7)),
    }[split]
    assert drive(chunks, COMMANDS) == EXPECTED


@pytest.mark.parametrize("split", ["whole", "bytewise"])
@pytest.mark.parametrize("index", range(len(REPLIES)))
def test_each_reply_alone_and_with_trailing_data(index: int, split: str) -> None:
    # The HANGUP after the reply must stay in the buffer for the next event.
    data = header_block() + REPLIES[index] + b"HANGUP\n"
    chunks = [data] if split == "whole" else bytewise(data)
    events = drive(chunks, [COMMANDS[index]])
    assert events == [EXPECTED[0], EXPECTED[index + 1], HangupNotice(), Closed()]


def test_crlf_line_endings_are_tolerated() -> None:
    transcript = header_block(newline="\r\n") + b"".join(r.replace(b"\n", b"\r\n") for r in REPLIES)
    assert drive([transcript], COMMANDS) == EXPECTED


def test_request_fields() -> None:
    request = drive([header_block()])[0]
    assert isinstance(request, Request)
    assert request.script == "intake"
    assert request.args == ["1764400000.123"]
    assert request.uniqueid == "1764400000.7"
    assert request.channel == "PJSIP/carrier-00000001"
    assert request.callerid == "13800138000"
    assert request.headers["agi_accountcode"] == ""  # "name: " with nothing after it


@pytest.mark.parametrize(
    ("network_script", "route"),
    [
        ("intake", "intake"),
        ("/intake", "intake"),
        ("intake?x=1&y=2", "intake"),
        ("//intake/", "intake"),
        ("", ""),
    ],
)
def test_route_name_comes_from_network_script(network_script: str, route: str) -> None:
    headers = {**HEADERS, "agi_network_script": network_script}
    request = drive([header_block(headers)])[0]
    assert isinstance(request, Request) and request.script == route


def test_args_in_order_and_only_contiguous() -> None:
    headers = {"agi_network": "yes", "agi_arg_2": "b", "agi_arg_1": "a", "agi_arg_3": "c", "agi_arg_5": "gap"}
    request = drive([header_block(headers)])[0]
    assert isinstance(request, Request) and request.args == ["a", "b", "c"]


def test_request_followed_by_the_reply_in_the_same_chunk() -> None:
    proto = AGIProtocol()
    proto.receive_data(header_block() + b"200 result=1\n")
    assert isinstance(proto.next_event(), Request)
    proto.set_variable("JIEJING_QUEUE", "emergency-110")
    assert proto.next_event() == Reply(200, "1", None, "result=1")
    assert proto.next_event() is NEED_DATA
    assert proto.state is State.IDLE


def test_hangup_before_a_reply_is_a_notice_not_the_reply() -> None:
    events = drive(
        [header_block() + b"HANGUP\n200 result=1\nHANGUP\n200 result=1 (x y)\n"],
        [lambda p: p.set_variable("JIEJING_QUEUE", "q"), lambda p: p.get_variable("JIEJING_ARRIVED")],
    )
    assert events[1:] == [
        HangupNotice(),
        Reply(200, "1", None, "result=1"),
        HangupNotice(),
        Reply(200, "1", "x y", "result=1 (x y)"),
        Closed(),
    ]


def test_hangup_while_idle_and_commands_still_allowed_after_it() -> None:
    proto = AGIProtocol()
    proto.receive_data(header_block() + b"HANGUP\n")
    assert isinstance(proto.next_event(), Request)
    assert proto.next_event() == HangupNotice()
    assert proto.state is State.IDLE
    # Asterisk keeps answering SET/GET VARIABLE on a dead channel.
    assert proto.set_variable("JIEJING_TICKET", "t") == b'SET VARIABLE JIEJING_TICKET "t"\n'


def test_unsolicited_reply_line_is_a_remote_error() -> None:
    proto = AGIProtocol()
    proto.receive_data(header_block() + b"200 result=1\n")
    assert isinstance(proto.next_event(), Request)
    with pytest.raises(RemoteProtocolError, match="no command is outstanding"):
        proto.next_event()


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"200 result=1 (a) b)\n", Reply(200, "1", "a) b", "result=1 (a) b)")),
        (
            b"200 result=1 (timeout) endpos=1234\n",
            Reply(200, "1", "timeout", "result=1 (timeout) endpos=1234"),
        ),
        (b"200 result= (timeout)\n", Reply(200, "", "timeout", "result= (timeout)")),
        (b"200 result=-1\n", Reply(200, "-1", None, "result=-1")),
        (b"200 result=1 ()\n", Reply(200, "1", "", "result=1 ()")),
        (b"520 Invalid command syntax.  Proper usage not available.\n",
         Reply(520, None, None, "Invalid command syntax.  Proper usage not available.")),
        (
            "200 result=1 (报警人在东门)\n".encode(),
            Reply(200, "1", "报警人在东门", "result=1 (报警人在东门)"),
        ),
    ],
)
def test_reply_shapes(line: bytes, expected: Reply) -> None:
    events = drive([header_block() + line], [lambda p: p.send_command("X")])
    assert events[1] == expected


def test_reply_ok_property() -> None:
    assert Reply(200, "1", None, "result=1").ok
    assert not Reply(510, None, None, "Invalid or unknown command").ok


def test_multiline_reply_stays_one_reply_when_split_bytewise() -> None:
    chunks = bytewise(header_block() + USAGE_520 + b"200 result=1\n")
    events = drive(chunks, [lambda p: p.send_command("SET", "VARIABLE"), lambda p: p.send_command("ANSWER")])
    assert [type(e) for e in events] == [Request, Reply, Reply, Closed]
    assert events[1].code == 520 and events[1].text.endswith("End of proper usage.")
    assert events[2] == Reply(200, "1", None, "result=1")


# ------------------------------------------------------------ bad input


def test_eof_mid_headers_raises_once_then_closed() -> None:
    proto = AGIProtocol()
    proto.receive_data(b"agi_network: yes\nagi_channel: PJSIP/x")
    assert proto.next_event() is NEED_DATA
    proto.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="connection closed before the AGI headers ended"):
        proto.next_event()
    assert proto.next_event() == Closed()
    assert proto.next_event() == Closed()
    assert proto.state is State.CLOSED


def test_eof_after_a_complete_header_line_is_still_mid_headers() -> None:
    proto = AGIProtocol()
    proto.receive_data(b"agi_network: yes\n")
    proto.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="before the AGI headers ended"):
        proto.next_event()
    assert proto.next_event() == Closed()


def test_eof_without_any_byte_is_just_closed() -> None:
    proto = AGIProtocol()
    proto.receive_data(b"")
    assert proto.next_event() == Closed()


def test_eof_while_awaiting_reply_is_closed() -> None:
    proto = AGIProtocol()
    proto.receive_data(header_block())
    assert isinstance(proto.next_event(), Request)
    proto.get_variable("JIEJING_ARRIVED")
    proto.receive_data(b"200 resu")
    proto.receive_data(b"")
    assert proto.next_event() == Closed()
    with pytest.raises(LocalProtocolError):
        proto.get_variable("JIEJING_ARRIVED")


@pytest.mark.parametrize(
    "line",
    [b"agi_channel PJSIP/x\n", b": value\n", b"agi_channel:PJSIP/x\n", b"agi chan: x\n", b"HANGUP\n"],
)
def test_malformed_header_line(line: bytes) -> None:
    proto = AGIProtocol()
    proto.receive_data(b"agi_network: yes\n" + line + b"\n")
    with pytest.raises(RemoteProtocolError, match="malformed AGI header line"):
        proto.next_event()
    # The error is sticky: nothing after it is parsed.
    with pytest.raises(RemoteProtocolError, match="already failed"):
        proto.next_event()
    assert proto.state is State.ERROR


def test_empty_header_block_is_refused() -> None:
    proto = AGIProtocol()
    proto.receive_data(b"\n")
    with pytest.raises(RemoteProtocolError, match="empty"):
        proto.next_event()


def test_malformed_reply_line() -> None:
    proto = AGIProtocol()
    proto.receive_data(header_block() + b"OK then\n")
    assert isinstance(proto.next_event(), Request)
    proto.send_command("ANSWER")
    with pytest.raises(RemoteProtocolError, match="malformed AGI reply line"):
        proto.next_event()


def test_line_of_exactly_the_maximum_is_accepted() -> None:
    value = "x" * (MAX_LINE_BYTES - len("agi_arg_1: "))
    request = drive([header_block({"agi_arg_1": value})])[0]
    assert isinstance(request, Request) and request.args == [value]


@pytest.mark.parametrize("with_newline", [True, False])
def test_oversized_line(with_newline: bool) -> None:
    proto = AGIProtocol()
    proto.receive_data(b"agi_arg_1: " + b"x" * MAX_LINE_BYTES + (b"\n" if with_newline else b""))
    with pytest.raises(RemoteProtocolError, match="line longer than 8192 bytes"):
        proto.next_event()


def test_oversized_line_detected_while_trickling_in() -> None:
    proto = AGIProtocol()
    line = b"agi_arg_1: " + b"y" * (MAX_LINE_BYTES - len(b"agi_arg_1: ")) + b"\r"
    for i in range(0, len(line), 1000):
        proto.receive_data(line[i : i + 1000])
        assert proto.next_event() is NEED_DATA  # a full-size line may still end in "\r\n"
    proto.receive_data(b"y")
    with pytest.raises(RemoteProtocolError, match="line longer"):
        proto.next_event()


def test_oversized_header_block() -> None:
    headers = {f"agi_h{i}": "v" * 1000 for i in range(MAX_HEADER_BYTES // 1000 + 1)}
    proto = AGIProtocol()
    proto.receive_data(header_block(headers))
    with pytest.raises(RemoteProtocolError, match="header block longer than 65536 bytes"):
        proto.next_event()


def test_too_many_headers() -> None:
    proto = AGIProtocol()
    proto.receive_data(header_block({f"agi_h{i}": "v" for i in range(codec.MAX_HEADERS + 1)}))
    with pytest.raises(RemoteProtocolError, match="more than 256 AGI header lines"):
        proto.next_event()
    proto2 = AGIProtocol()
    proto2.receive_data(header_block({f"agi_h{i}": "v" for i in range(codec.MAX_HEADERS)}))
    assert isinstance(proto2.next_event(), Request)


def test_oversized_multiline_reply() -> None:
    proto = AGIProtocol()
    proto.receive_data(header_block())
    assert isinstance(proto.next_event(), Request)
    proto.send_command("SET", "VARIABLE")
    proto.receive_data(b"520-Invalid\n" + b"usage line\n" * (codec.MAX_REPLY_BYTES // 11 + 1))
    with pytest.raises(RemoteProtocolError, match="reply longer"):
        proto.next_event()


def test_non_utf8_bytes_are_replaced_not_fatal() -> None:
    proto = AGIProtocol()
    proto.receive_data(b"agi_network: yes\nagi_calleridname: \xff\xfe\xe5\x90\n\n")
    request = proto.next_event()
    assert isinstance(request, Request)
    assert "\ufffd" in request.headers["agi_calleridname"]


def test_data_after_eof_is_our_error() -> None:
    proto = AGIProtocol()
    proto.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        proto.receive_data(b"agi_network: yes\n")


# ------------------------------------------------------------ commands


def ready() -> AGIProtocol:
    proto = AGIProtocol()
    proto.receive_data(header_block())
    assert isinstance(proto.next_event(), Request)
    return proto


def test_exact_wire_format_of_helpers() -> None:
    assert ready().set_variable("JIEJING_TICKET", "110-20261129-000042") == (
        b'SET VARIABLE JIEJING_TICKET "110-20261129-000042"\n'
    )
    assert ready().set_variable("JIEJING_PRIORITY", 10) == b'SET VARIABLE JIEJING_PRIORITY "10"\n'
    assert ready().get_variable("JIEJING_ARRIVED") == b"GET VARIABLE JIEJING_ARRIVED\n"
    assert ready().verbose("ticket 42 opened", 3) == b'VERBOSE "ticket 42 opened" 3\n'
    assert ready().send_command("EXEC", "Playback", "") == b'EXEC Playback ""\n'
    assert ready().send_command("EXEC", "NoOp", 'a "b"') == b'EXEC NoOp "a \\"b\\""\n'


HOSTILE_VALUES = [
    'say "hi"',
    "back\\slash\\",
    'ends with backslash \\',
    "two\r\nGET VARIABLE AGISTATUS",
    "line\nEXEC System rm",
    "${EVIL}",
    "$[${X}+1]",
    "nul\x00after",
    "张三 报警：东门有人打架",
    '"\\"\\',
    "\t tabs \t",
    "",
    " ",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_hostile_value_is_one_quoted_line_and_round_trips(value: str) -> None:
    wire = ready().set_variable("JIEJING_RECORDING", value)
    assert wire.count(b"\n") == 1 and wire.endswith(b"\n")
    assert b"\r" not in wire and b"\x00" not in wire
    assert wire.startswith(b'SET VARIABLE JIEJING_RECORDING "') and wire.endswith(b'"\n')
    expected = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
    assert parse_agi_args(wire[:-1].decode()) == ["SET", "VARIABLE", "JIEJING_RECORDING", expected]


def test_random_values_round_trip_through_asterisk_parsing() -> None:
    rng = random.Random(110)
    alphabet = ' \t"\\\r\n\x00$abc{}()报警\u2028'
    for _ in range(2000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        wire = ready().set_variable("JIEJING_QUEUE", value)
        assert wire.count(b"\n") == 1
        words = parse_agi_args(wire[:-1].decode())
        assert words == ["SET", "VARIABLE", "JIEJING_QUEUE", value.translate({13: 32, 10: 32, 0: 32})]


@pytest.mark.parametrize(
    "name", ["", "1ABC", "A B", "A\nB", "CALLERID(num)", "X;Y", "名字", "A-B", "X\x00", None, 5]
)
def test_bad_variable_names_are_refused_without_changing_state(name: object) -> None:
    proto = ready()
    with pytest.raises(LocalProtocolError, match="invalid channel variable name"):
        proto.set_variable(name, "v")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="invalid channel variable name"):
        proto.get_variable(name)  # type: ignore[arg-type]
    assert proto.state is State.IDLE
    assert proto.get_variable("_GOOD_name_2") == b"GET VARIABLE _GOOD_name_2\n"


@pytest.mark.parametrize("value", [None, 1.5, True, b"bytes"])
def test_bad_value_types_are_refused(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        ready().set_variable("JIEJING_QUEUE", value)  # type: ignore[arg-type]


def test_command_before_request_is_refused() -> None:
    proto = AGIProtocol()
    with pytest.raises(LocalProtocolError, match="reading headers"):
        proto.set_variable("JIEJING_QUEUE", "q")
    proto.receive_data(b"agi_network: yes\n")
    assert proto.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        proto.get_variable("JIEJING_QUEUE")


def test_second_command_while_reply_outstanding_is_refused() -> None:
    proto = ready()
    proto.set_variable("JIEJING_QUEUE", "q")
    with pytest.raises(LocalProtocolError, match="awaiting reply"):
        proto.set_variable("JIEJING_QUEUE", "q")
    proto.receive_data(b"200 result=1\n")
    assert isinstance(proto.next_event(), Reply)
    assert proto.get_variable("JIEJING_QUEUE")  # allowed again once answered


def test_command_after_close_or_error_is_refused() -> None:
    closed = ready()
    closed.receive_data(b"")
    assert closed.next_event() == Closed()
    with pytest.raises(LocalProtocolError, match="closed"):
        closed.send_command("ANSWER")
    broken = AGIProtocol()
    broken.receive_data(b"garbage\n")
    with pytest.raises(RemoteProtocolError):
        broken.next_event()
    with pytest.raises(LocalProtocolError, match="error"):
        broken.send_command("ANSWER")


def test_empty_or_non_str_command_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ready().send_command()
    with pytest.raises(LocalProtocolError):
        ready().send_command("SET", 5)  # type: ignore[arg-type]


def test_command_too_long_for_asterisk_is_refused() -> None:
    proto = ready()
    head = len(b'SET VARIABLE JIEJING_QUEUE ""\n')
    assert len(proto.set_variable("JIEJING_QUEUE", "x" * (MAX_COMMAND_BYTES - head))) == MAX_COMMAND_BYTES
    proto = ready()
    with pytest.raises(LocalProtocolError, match="Asterisk splits"):
        proto.set_variable("JIEJING_QUEUE", "x" * (MAX_COMMAND_BYTES - head + 1))
    assert proto.state is State.IDLE  # refused before anything was "sent"


def test_lone_surrogate_in_value_cannot_crash_encoding() -> None:
    wire = ready().set_variable("JIEJING_QUEUE", "a\udcffb")
    assert wire == b'SET VARIABLE JIEJING_QUEUE "a?b"\n'


# ---------------------------------------------------------------- fuzz


def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            del buf[min(pos, len(buf) - 1)]
        elif op == 1:
            buf[pos:pos] = bytes([rng.randrange(256)])
        elif op == 2 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(b"\n\r: -()\x00\xff9H")
        elif op == 3:
            buf[pos:pos] = rng.choice([b"HANGUP\n", b"\n", b"520-", b"200 result=", b": ", b"\r\n"])
        elif op == 4:
            buf = buf[:pos]
        else:
            start = rng.randrange(len(buf) + 1)
            buf[pos:pos] = buf[start : start + rng.randint(1, 200)]
    return bytes(buf)


def _random_bytes(rng: random.Random) -> bytes:
    tokens = [b"agi_", b"arg_1", b": ", b"\n", b"\r\n", b"HANGUP", b"200 ", b"520-", b"520 ", b"result=1",
              b" (", b")", b"\xe4\xb8\xad", b"\xff", b"\x00", b"x" * 50]
    if rng.random() < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
    return b"".join(rng.choice(tokens) for _ in range(rng.randint(0, 60)))


def test_fuzz_only_events_or_protocol_errors() -> None:
    rng = random.Random(20261129)
    outcomes = {"closed": 0, "error": 0}
    for i in range(4000):
        data = _random_bytes(rng) if i % 2 else _mutate(TRANSCRIPT, rng)
        proto = AGIProtocol()
        pending = random_chunks(data, rng) + [b""]
        try:
            for _ in range(10_000):
                event = proto.next_event()
                if event is NEED_DATA:
                    proto.receive_data(pending.pop(0))
                elif isinstance(event, Closed):
                    outcomes["closed"] += 1
                    break
                else:
                    assert isinstance(event, (Request, Reply, HangupNotice))
                    if proto.state is State.IDLE and rng.random() < 0.9:
                        proto.send_command(rng.choice(["ANSWER", "GET", "SET"]), "VARIABLE", "X")
            else:
                raise AssertionError(f"no end after 10000 events: {data!r}")
        except AGIProtocolError:
            outcomes["error"] += 1
    # Both ways out were exercised, so the loop proved something about each.
    assert outcomes["closed"] > 200 and outcomes["error"] > 200
    assert sum(outcomes.values()) == 4000
