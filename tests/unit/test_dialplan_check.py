"""``jiejing dialplan check`` offline: the project's dialplan/ passes, and each kind of
hand-editing mistake in a copy of it is reported once, at the file and line to fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from siplab.asterisk import render_seats, render_webrtc_seats
from telephony import channel_vars
from telephony.dialplan_admin.check import Finding, Report, check, format_report
from telephony.dialplan_admin.model import Config, parse_folder

REPO = Path(__file__).resolve().parents[2]
DIALPLAN = REPO / "dialplan"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the project's dialplan/ that a test may break, with secrets of its own as a center sets them."""
    copy = Path(shutil.copytree(DIALPLAN, tmp_path / "dialplan"))
    manager = copy / "manager.conf"
    manager.write_text(manager.read_text().replace("secret = jiejing-lab-admin", "secret = s3cret-admin-7Qx")
                       .replace("secret = jiejing-lab", "secret = s3cret-backend-9Kp"))
    return copy


def test_shipped_ami_secrets_are_an_error_outside_the_lab_and_a_warning_in_it(tmp_path):
    shipped = parse_folder(Path(shutil.copytree(DIALPLAN, tmp_path / "shipped")))
    outside = [f for f in check(shipped).findings if f.code == "ami-lab-secret"]
    assert [(f.level, f.file.name) for f in outside] == [("error", "manager.conf")] * 2
    inside = [f for f in check(shipped, lab=True).findings if f.code == "ami-lab-secret"]
    assert {f.level for f in inside} == {"warning"} and check(shipped, lab=True).ok


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """The files `jiejing lab up` writes next to the dialplan: three seats and their queue membership, two browser seats."""
    gen = tmp_path / "generated"
    gen.mkdir()
    pjsip_seats, members = render_seats(3, 5070)
    (gen / "pjsip_seats.conf").write_text(pjsip_seats)
    (gen / "pjsip_webrtc.conf").write_text(render_webrtc_seats(["wseat01", "wseat02"]))
    (gen / "queues_members.conf").write_text(members)
    return gen


def parse(folder: Path, *extra: Path) -> Config:
    return parse_folder(folder, extra_folders=[folder / "lab", *extra])


def edit(path: Path, marker: str, new_line: str, *, first: bool = False) -> int:
    """Replace the one line containing ``marker`` (the first of them: ``first``); its line number."""
    lines = path.read_text().splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if marker in line]
    assert len(hits) == 1 or (first and hits), f"{marker!r} is on lines {[i + 1 for i in hits]} of {path.name}"
    lines[hits[0]] = new_line + "\n"
    path.write_text("".join(lines))
    return hits[0] + 1


def line_of(path: Path, marker: str) -> int:
    hits = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if marker in line]
    assert len(hits) == 1, hits
    return hits[0]


def intake_priority(folder: Path, line: int) -> int:
    """Number of the 110 priority written on ``line`` of extensions.conf (numbers move as the file grows)."""
    intake = parse(folder).contexts["from-carrier"].extensions["110"]
    return next(p.number for p in intake.priorities if p.line == line)


def only_error(report: Report, code: str) -> Finding:
    assert [f.code for f in report.errors] == [code], format_report(report, relative_to=REPO)
    return report.errors[0]


# --- the project's own dialplan ---------------------------------------------------------


def test_project_dialplan_with_lab_files_has_no_errors():
    report = check(parse_folder(DIALPLAN, extra_folders=[DIALPLAN / "lab"]), lab=True)
    assert report.ok, format_report(report, relative_to=REPO)
    assert report.errors == []
    # Only the lab's generated files (seats, members) are absent from the checkout; its secrets are the lab's.
    assert {f.code for f in report.warnings} <= {"tryinclude-missing", "no-members", "ami-lab-secret"}


def test_lab_with_generated_seats_is_clean(folder, generated):
    report = check(parse(folder, generated))
    assert report.ok, format_report(report)
    # With the seats and their membership present, nothing is left to warn about them.
    assert not [f for f in report.warnings if f.code == "no-members" or
                "pjsip_seats" in f.message or "queues_members" in f.message], format_report(report)


def test_project_dialplan_without_lab_files_has_no_errors():
    report = check(parse_folder(DIALPLAN))
    # A center's copy: nothing wrong but the secrets it must set itself.
    assert {f.code for f in report.errors} == {"ami-lab-secret"}


# --- the model ------------------------------------------------------------------------------


def test_model_gives_file_and_line_for_priorities_labels_and_globals():
    config = parse(DIALPLAN)
    ext_conf = DIALPLAN / "extensions.conf"
    intake = config.contexts["from-carrier"].extensions["110"]
    assert [p.number for p in intake.priorities] == list(range(1, len(intake.priorities) + 1))
    record = intake.labelled("record")
    assert record.app == "Set" and record.data == "JIEJING_RECORDING=${UNIQUEID}"
    assert record.line == line_of(ext_conf, "n(record),")
    assert record.file == ext_conf
    ask = next(p for p in intake.priorities if "CURL(" in p.data)
    assert ask.app == "Set" and ask.data.startswith("HASH(jiejing)=${CURL(${JIEJING_INTAKE}?uniqueid=${UNIQUEID}&")
    assert config.globals["JIEJING_DEFAULT_QUEUE"].value == "emergency-110"
    assert config.general["static"].value == "yes"
    # #tryinclude extensions_lab.conf: the lab context keeps its own file and line
    echo = config.contexts["lab-echo"]
    assert echo.file == DIALPLAN / "lab" / "extensions_lab.conf" and echo.line == 2
    assert "_X." in config.contexts["from-carrier"].extensions


def test_model_applies_pjsip_templates_and_reads_members_through_tryinclude(folder, generated):
    config = parse(folder, generated)
    pjsip = folder / "pjsip.conf"
    carrier = config.pjsip[("carrier", "endpoint")]
    assert carrier.get("context") == "from-carrier"
    direct = carrier.entry("direct_media")
    # from the trunk template, not from the seat template further down
    assert (direct.value, direct.file) == ("no", pjsip)
    assert line_of(pjsip, "[trunk-endpoint](!)") < direct.line < line_of(pjsip, "[seat-endpoint](!)")
    # one name, two objects: the seat's endpoint and its aor
    assert ("seat001", "endpoint") in config.pjsip and ("seat001", "aor") in config.pjsip
    assert config.pjsip[("seat001", "aor")].get("max_contacts") == "1"
    assert "trunk-endpoint" in config.pjsip_templates
    assert not any(name == "trunk-endpoint" for name, _ in config.pjsip)
    queue = config.queues["emergency-110"]
    assert queue.options["strategy"] == "leastrecent"
    assert [m.endpoint for m in queue.members] == ["seat001", "seat002", "seat003"]
    first = queue.members[0]
    assert (first.file.name, first.line, first.penalty, first.name) == ("queues_members.conf", 2, 0, "seat001")


def test_model_of_manager_users():
    config = parse(DIALPLAN)
    backend = config.manager.users["jiejing"]
    assert backend.read == {"call", "agent", "reporting", "user", "dtmf"}
    assert backend.write == {"originate", "call", "agent", "reporting"}
    assert (config.manager.bindaddr, config.manager.port) == ("127.0.0.1", 5038)


def test_parser_comments_escapes_templates_and_plus_equals(tmp_path):
    (tmp_path / "pjsip.conf").write_text(
        "[tpl](!)\ntype = endpoint\ndirect_media = yes\n"
        ";-- a block comment\nexten => 1,1,Hangup()\n--;\n"
        "[a](tpl)\ndirect_media = no ; the seat's own value wins\nallow = alaw\nallow += ,ulaw\n"
        "[b](tpl)\ncallerid = Desk \\; 1\n"
    )
    config = parse_folder(tmp_path)
    a, b = config.pjsip[("a", "endpoint")], config.pjsip[("b", "endpoint")]
    assert a.get("direct_media") == "no" and a.entry("direct_media").line == 8
    assert a.get("allow") == "alaw,ulaw"
    assert b.get("callerid") == "Desk ; 1"
    assert b.entry("direct_media").line == 3  # from the template
    assert config.problems == []


def test_priority_numbering_of_n_labels_and_explicit_numbers(tmp_path):
    (tmp_path / "extensions.conf").write_text(
        "[c]\nexten => 5,1,NoOp()\n same => n(two),NoOp()\n same => 3,NoOp()\n same => n,Goto(two)\n"
        "exten => 6,n,NoOp()\n"
    )
    config = parse_folder(tmp_path)
    five = config.contexts["c"].extensions["5"]
    assert [(p.number, p.label) for p in five.priorities] == [(1, None), (2, "two"), (3, None), (4, None)]
    # 'n' continues from the previous line, even for a new extension: 6 never gets a priority 1
    assert [(f.code, f.line) for f in config.problems] == [("no-priority-1", 6)]


# --- the 110 paths -----------------------------------------------------------------------------


def test_missing_110_is_an_error(folder):
    ext_conf = folder / "extensions.conf"
    edit(ext_conf, "exten => 110,1,", "exten => 119,1,NoOp(110 call from ${CALLERID(num)})")
    report = check(parse(folder))
    # the queue's exit key ([queue-keys]) sends callers back to 110's queue: its Gotos lose their target too
    assert {e.code for e in report.errors} == {"no-110", "unknown-label"}
    assert all("queue-keys" in e.message for e in report.errors if e.code == "unknown-label")
    (f,) = [e for e in report.errors if e.code == "no-110"]
    assert (f.file, f.line) == (ext_conf, line_of(ext_conf, "[from-carrier]"))
    assert "110" in f.message and "_X." in f.message  # says where such calls would go instead


def test_path_that_hangs_up_before_queue(folder):
    ext_conf = folder / "extensions.conf"
    jump = edit(ext_conf, "Set(CURLOPT(hashcompat)=yes)", ' same => n,GotoIf($["${CALLERID(num)}" = ""]?done)')
    done_line = line_of(ext_conf, "n(done),Hangup()")
    done, at = intake_priority(folder, done_line), intake_priority(folder, jump)
    f = only_error(check(parse(folder)), "no-queue-path")
    assert (f.file, f.line) == (ext_conf, done_line)
    assert f"110@from-carrier can end at priority {done} (Hangup) without reaching Queue()" in f.message
    assert f"path 1-{at}, {done}" in f.message


def test_agi_failure_branch_going_to_hangup(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "n(fallback),NoOp", " same => n(fallback),Hangup()")
    branch = intake_priority(folder, line_of(ext_conf, "?fallback)"))
    f = only_error(check(parse(folder)), "no-queue-path")
    assert (f.file, f.line) == (ext_conf, line)
    # the path goes through AGI() and the GotoIf on its outcome, then straight to the fallback label
    fallback = intake_priority(folder, line)
    assert f"priority {fallback} (Hangup)" in f.message and f"path 1-{branch}, {fallback}" in f.message


def test_fallback_that_loops_forever(folder):
    ext_conf = folder / "extensions.conf"
    edit(ext_conf, "same => n,Goto(record)", " same => n,Goto(fallback)")
    f = only_error(check(parse(folder)), "no-queue-path")
    assert "loop forever" in f.message
    assert f.line == line_of(ext_conf, "n(fallback),NoOp")


def test_goto_to_an_unknown_label_is_reported_once(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "same => n,Goto(record)", " same => n,Goto(recrod)")
    f = only_error(check(parse(folder)), "unknown-label")
    assert (f.file, f.line) == (ext_conf, line) and "recrod" in f.message


def test_gosub_that_returns_is_followed(folder):
    ext_conf = folder / "extensions.conf"
    edit(ext_conf, "same => n,Goto(record)", " same => n,Gosub(sub-note,s,1)\n same => n,Goto(record)\n"
         "[sub-note]\nexten => s,1,NoOp(fallback)\n same => n,Return()")
    assert check(parse(folder)).ok


# --- AGI routes and channel variables ----------------------------------------------------------------


def test_unknown_agi_route(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "AGI(${JIEJING_AGI}/dispatch", "exten => dispatch,1,AGI(${JIEJING_AGI}/dispatc)")
    f = only_error(check(parse(folder)), "unknown-agi-route")
    assert (f.file, f.line) == (ext_conf, line) and "dispatc" in f.message


def test_agi_route_folder_is_a_parameter(folder, tmp_path):
    routes = tmp_path / "routes"
    routes.mkdir()
    # every route of the backend but dispatch
    for module in (REPO / "telephony" / "agi" / "routes").glob("*.py"):
        if module.name != "dispatch.py":
            (routes / module.name).write_text('"""stand-in"""\n')
    f = only_error(check(parse(folder), routes=routes), "unknown-agi-route")
    assert "dispatch" in f.message
    (routes / "dispatch.py").write_text('"""stand-in"""\n')
    assert check(parse(folder), routes=routes).ok


def test_backend_variable_not_read_by_dialplan(folder):
    ext_conf = folder / "extensions.conf"
    # the 110 call's recording, the call-back's and the automatic call-back's are the places that read it
    for _ in range(3):
        edit(ext_conf, "MixMonitor(${JIEJING_RECORDINGS}/${JIEJING_RECORDING}",
             " same => n,MixMonitor(${JIEJING_RECORDINGS}/${UNIQUEID}.wav)", first=True)
    f = only_error(check(parse(folder)), "backend-var-unread")
    assert channel_vars.RECORDING in f.message
    assert (f.file, f.line) == (ext_conf, line_of(ext_conf, "${CURL("))  # where the backend's answer comes in


def test_variable_the_backend_reads_but_the_dialplan_never_sets(folder):
    ext_conf = folder / "extensions.conf"
    edit(ext_conf, "Set(JIEJING_LOCATION=", " same => n,Set(JIEJING_LOCATON=${GEOLOC_PROFILE(location_info)})")
    report = check(parse(folder), read_by_backend={"JIEJING_LOCATION"})
    assert sorted(f.code for f in report.errors) == ["backend-var-unset", "var-never-set"]


def test_jiejing_variable_read_but_never_set(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, 'GotoIf($["${QUEUESTATUS}"',
                ' same => n,GotoIf($["${QUEUESTATUS}" = "" | "${JIEJING_QUEUE}" = "${JIEJING_DEFAULT_QUEU}"]?done)')
    f = only_error(check(parse(folder)), "var-never-set")
    assert (f.file, f.line) == (ext_conf, line) and "JIEJING_DEFAULT_QUEU" in f.message


# --- queues, members, endpoints --------------------------------------------------------------------


def test_queue_name_typo_is_reported_where_the_name_is_written(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "JIEJING_DEFAULT_QUEUE =", "JIEJING_DEFAULT_QUEUE = emergency-11O")
    f = only_error(check(parse(folder)), "unknown-queue")
    assert (f.file, f.line) == (ext_conf, line) and "emergency-11O" in f.message


def test_queue_literal_typo(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "n(back),Queue(${JIEJING_DEFAULT_QUEUE},r)", " same => n(back),Queue(emergency110,r)")
    f = only_error(check(parse(folder)), "unknown-queue")
    assert (f.file, f.line) == (ext_conf, line)


def test_member_endpoint_undefined(folder, generated):
    members = generated / "queues_members.conf"
    line = edit(members, "PJSIP/seat002,", "member => PJSIP/seat020,0,seat020")
    f = only_error(check(parse(folder, generated)), "unknown-member-endpoint")
    assert (f.file, f.line) == (members, line) and "seat020" in f.message


def test_members_file_missing_is_a_warning():
    report = check(parse(DIALPLAN))
    no_members = [f for f in report.warnings if f.code == "no-members"]
    assert [(f.file.name, f.line) for f in no_members] == [("queues.conf", line_of(DIALPLAN / "queues.conf",
                                                                                   "#tryinclude queues_members"))]


def test_direct_media_yes_in_a_template(folder):
    pjsip = folder / "pjsip.conf"
    trunk_template = line_of(pjsip, "[trunk-endpoint](!)")
    lines = pjsip.read_text().splitlines()
    target = next(i for i in range(trunk_template, len(lines)) if lines[i].startswith("direct_media"))
    lines[target] = "direct_media = yes"
    pjsip.write_text("\n".join(lines) + "\n")
    f = only_error(check(parse(folder)), "direct-media")
    assert (f.file, f.line) == (pjsip, target + 1) and "carrier" in f.message


def test_browser_seats_get_webrtc_dtls_and_no_direct_media_from_their_template(folder, generated):
    seat = parse(folder, generated).pjsip[("wseat01", "endpoint")]
    assert (seat.get("webrtc"), seat.get("media_encryption"), seat.get("dtls_auto_generate_cert")) == ("yes", "dtls",
                                                                                                      "yes")
    assert seat.get("direct_media") == "no" and seat.get("context") == "seats" and seat.get("auth") == "wseat01"


def test_browser_seats_without_the_http_server(folder, generated):
    http = folder / "http.conf"
    line = edit(http, "enabled = yes", "enabled = no")
    f = only_error(check(parse(folder, generated)), "webrtc-no-http")
    assert f.file == http and f.line == line_of(http, "[general]") and "wseat01" in f.message
    assert line > f.line


def test_browser_seats_without_a_websocket_transport(folder, generated):
    edit(folder / "pjsip.conf", "protocol = ws", "protocol = tcp")
    f = only_error(check(parse(folder, generated)), "webrtc-no-websocket")
    assert f.file == generated / "pjsip_webrtc.conf" and "wseat01, wseat02" in f.message


def test_browser_seats_with_srtp_not_loaded(folder, generated):
    modules = folder / "modules.conf"
    with modules.open("a") as out:
        out.write("noload = res_srtp.so\n")
    f = only_error(check(parse(folder, generated)), "module-noload")
    assert (f.file, f.line) == (modules, line_of(modules, "noload = res_srtp.so")) and "WebRTC" in f.message


def test_no_browser_seats_no_webrtc_requirements(folder):
    edit(folder / "http.conf", "enabled = yes", "enabled = no")
    assert check(parse(folder)).ok


def test_emergency_queue_ringinuse_and_retry_are_warnings(folder):
    queues = folder / "queues.conf"
    ring = edit(queues, "ringinuse = no", "ringinuse = yes")
    retry = edit(queues, "retry = 1", "retry = 5")
    report = check(parse(folder))
    assert report.ok
    got = {(f.code, f.line) for f in report.warnings if f.code.startswith("queue-")}
    assert got == {("queue-ringinuse", ring), ("queue-retry", retry)}


# --- AMI --------------------------------------------------------------------------------------------------


def test_ami_user_with_system_rights(folder):
    manager = folder / "manager.conf"
    line = edit(manager, "read = call,agent,reporting", "read = call,agent,reporting,system")
    f = only_error(check(parse(folder)), "ami-rights")
    assert (f.file, f.line) == (manager, line) and "system" in f.message


def test_ami_bound_to_every_interface(folder):
    manager = folder / "manager.conf"
    line = edit(manager, "bindaddr = 127.0.0.1", "bindaddr = 0.0.0.0")
    f = only_error(check(parse(folder)), "ami-bindaddr")
    assert (f.file, f.line) == (manager, line)


def test_no_user_may_write_config_or_command(folder):
    manager = folder / "manager.conf"
    assert check(parse(folder)).ok  # the admin user reads and writes `reporting` only
    with manager.open("a") as out:
        out.write("\n[reloader]\nsecret = x\nread = config\nwrite = command\n")
    f = only_error(check(parse(folder)), "ami-rights")
    assert f.line == len(manager.read_text().splitlines()) and "command" in f.message
    # `config` may be read (configuration events) but not written: UpdateConfig could rewrite manager.conf
    manager.write_text(manager.read_text().replace("write = command", "write = config"))
    f = only_error(check(parse(folder)), "ami-rights")
    assert "config" in f.message and "UpdateConfig" in f.message


# --- syntax --------------------------------------------------------------------------------------------------


def test_unclosed_bracket(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "[from-carrier]", "[from-carrier")
    f = only_error(check(parse(folder)), "unclosed-bracket")
    assert (f.file, f.line) == (ext_conf, line)


def test_same_without_exten(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "[seats]", "[seats]\nsame => n,Hangup(21)") + 1
    f = only_error(check(parse(folder)), "same-without-exten")
    assert (f.file, f.line) == (ext_conf, line)


def test_missing_include_is_an_error_and_missing_tryinclude_a_warning(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "#tryinclude extensions_lab.conf", "#include extensions_labs.conf")
    f = only_error(check(parse(folder)), "include-missing")
    assert (f.file, f.line) == (ext_conf, line)
    edit(ext_conf, "#include extensions_labs.conf", "#tryinclude extensions_labs.conf")
    report = check(parse(folder))
    assert report.ok and ("tryinclude-missing", line) in {(w.code, w.line) for w in report.warnings}


def test_duplicate_priority(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "same => n,Set(CURLOPT(conntimeout)", " same => 2,Set(CURLOPT(conntimeout)=1)")
    report = check(parse(folder))
    assert ("duplicate-priority", line) in {(f.code, f.line) for f in report.errors}


def test_exten_outside_a_context(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "clearglobalvars = no", "exten => 111,1,Hangup()")
    f = only_error(check(parse(folder)), "exten-outside-context")
    assert (f.file, f.line) == (ext_conf, line)


def test_unparseable_line(folder):
    queues = folder / "queues.conf"
    line = edit(queues, "wrapuptime = 0", "wrapuptime 0")
    f = only_error(check(parse(folder)), "syntax")
    assert (f.file, f.line) == (queues, line)


# --- the report ------------------------------------------------------------------------------------------------


def test_format_report_errors_first_then_warnings_then_summary(folder):
    ext_conf = folder / "extensions.conf"
    edit(ext_conf, "Set(CURLOPT(hashcompat)=yes)", ' same => n,GotoIf($["${CALLERID(num)}" = ""]?done)')
    report = check(parse(folder))
    text = format_report(report, relative_to=folder.parent).splitlines()
    done = line_of(ext_conf, "n(done),Hangup()")
    assert text[0].startswith(f"dialplan/extensions.conf:{done}: error [no-queue-path]: 110@from-carrier can end at "
                              f"priority {intake_priority(folder, done)} (Hangup) without reaching Queue()")
    assert all(" warning [" in line for line in text[1:-1])
    n = len(report.warnings)
    assert n >= 1 and len(text) == n + 2
    assert text[-1] == f"check failed: 1 error, {n} warning{'s' if n > 1 else ''}"


def test_conference_profiles_must_exist_with_their_type(tmp_path):
    (tmp_path / "confbridge.conf").write_text("[room]\ntype = bridge\n[caller]\ntype = user\n")
    (tmp_path / "extensions.conf").write_text(
        "[dispatch]\nexten => a,1,ConfBridge(${UNIQUEID},room,caller)\n"
        "exten => b,1,ConfBridge(${UNIQUEID},rooom,caller)\n"
        "exten => c,1,ConfBridge(${UNIQUEID},room,room)\n"
    )
    report = check(parse_folder(tmp_path))
    found = [(f.line, f.message) for f in report.errors if f.code == "unknown-conference-profile"]
    assert [line for line, _ in found] == [3, 4]
    assert "no such section" in found[0][1] and "of type bridge" in found[1][1]


def test_110_reached_through_an_include_is_analysed_in_its_own_context(tmp_path):
    (tmp_path / "extensions.conf").write_text(
        "[from-carrier]\ninclude => emergency\n"
        "[emergency]\nexten => 110,1,Answer()\n same => n,GotoIf($[${X}]?out)\n same => n,Queue(q)\n"
        " same => n(out),Hangup()\n"
    )
    (tmp_path / "queues.conf").write_text("[q]\nringinuse = no\nretry = 1\n")
    report = check(parse_folder(tmp_path), set_by_backend=(), read_by_backend=())
    paths = [f for f in report.errors if f.code == "no-queue-path"]
    assert [(f.line, "110@emergency" in f.message) for f in paths] == [(7, True)]


def test_options_separated_from_the_header_are_ignored_like_asterisk_does(tmp_path):
    (tmp_path / "pjsip.conf").write_text(
        "[tpl](!)\ntype = endpoint\ndirect_media = no\n[carrier] (tpl)\ntype = endpoint\n"
    )
    config = parse_folder(tmp_path)
    assert [(f.code, f.line) for f in config.problems] == [("syntax", 4)]
    assert config.pjsip[("carrier", "endpoint")].get("direct_media") is None  # nothing inherited
    assert ("direct-media", 4) in {(f.code, f.line) for f in check(config).errors}


def test_a_named_tone_without_a_tone_zone_is_an_error(folder):
    ext_conf = folder / "extensions.conf"
    line = edit(ext_conf, "n,Playtones(", " same => n,Playtones(ring)", first=True)
    f = only_error(check(parse(folder)), "tone-unknown")
    assert (f.file, f.line) == (ext_conf, line) and "450/1000" in f.message


async def test_reloads_go_through_the_console_and_a_refusal_is_reported(tmp_path):
    from telephony.dialplan_admin.apply import DialplanAdmin, asterisk_console
    from telephony.dialplan_admin.versions import VersionStore

    asked = []

    async def console(command: str) -> str:
        asked.append(command)
        return "Module 'pbx_config.so' reloaded successfully.\n" if "pbx_config" in command else "No such module\n"

    admin = DialplanAdmin(live_dir=tmp_path, sources=[tmp_path], store=VersionStore(tmp_path / "v"),
                          connect=None, console=console, log=lambda *_: None)
    failures = await admin._reload(None, {"pbx_config", "app_queue"})
    assert asked == ["module reload app_queue", "module reload pbx_config"]
    assert failures == ["reload of app_queue refused: No such module"]
    # the real runner: a command that fails is an error, its output otherwise
    assert await asterisk_console(("echo",))("module reload x") == "module reload x\n"
    with pytest.raises(RuntimeError):
        await asterisk_console(("false",))("module reload x")
