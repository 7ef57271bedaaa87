"""`jiejing dialplan diff` sees every option `apply` would change, not only the dialplan and queue members.

Each case changes the project's own dialplan/ the way an admin would and compares it with an unchanged copy
(the live files); the running Asterisk side is tested in tests/integration/test_dialplan_admin.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from telephony.dialplan_admin import model
from telephony.dialplan_admin.apply import desired_from, differences, file_differences
from telephony.dialplan_admin.running import QueueState, RunningState

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    live, new = tmp_path / "live", tmp_path / "new"
    for target in (live, new):
        shutil.copytree(REPO / "dialplan", target, ignore=shutil.ignore_patterns("lab", "*.toml"))
    return live, new


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_the_same_files_have_no_difference(folders) -> None:
    live, new = folders
    assert file_differences(model.parse_folder(new), model.parse_folder(live)) == []


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("extensions.conf", "JIEJING_DEFAULT_PRIORITY = 10", "JIEJING_DEFAULT_PRIORITY = 9",
         "~ extensions.conf [globals] jiejing_default_priority: 10 -> 9"),
        ("queues.conf", "timeout = 10", "timeout = 11", "~ queues.conf [emergency-110] timeout: 10 -> 11"),
        ("manager.conf", "writetimeout = 100\n", "writetimeout = 200\n",
         "~ manager.conf [jiejing] writetimeout: 100 -> 200"),
    ],
)
def test_a_changed_option_is_a_difference(folders, file: str, old: str, new: str, expected: str) -> None:
    live, changed = folders
    _edit(changed / file, old, new)
    assert file_differences(model.parse_folder(changed), model.parse_folder(live)) == [expected]


def test_added_and_removed_sections_and_repeated_options(folders) -> None:
    live, new = folders
    conf = new / "confbridge.conf"
    conf.write_text(conf.read_text() + "\n[spare_bridge]\ntype = bridge\nmax_members = 3\n")
    changes = file_differences(model.parse_folder(new), model.parse_folder(live))
    assert changes == ["+ confbridge.conf [spare_bridge]"]
    changes = file_differences(model.parse_folder(live), model.parse_folder(new))
    assert changes == ["- confbridge.conf [spare_bridge]"]


def test_a_global_asterisk_holds_otherwise_is_a_difference() -> None:
    config = model.parse_folder(REPO / "dialplan")
    desired = desired_from(config)
    assert desired.globals["JIEJING_DEFAULT_PRIORITY"] == "10"
    running = RunningState(dialplan={}, queues={}, globals={**desired.globals, "JIEJING_DEFAULT_PRIORITY": "9",
                                                           "JIEJING_OVERFLOW_RING_S": None})
    globals_only = [c for c in differences(desired, running) if "global" in c]
    assert globals_only == ["~ global JIEJING_DEFAULT_PRIORITY: 9 -> 10", "+ global JIEJING_OVERFLOW_RING_S = 20"]
    same = RunningState(dialplan={}, queues={q: QueueState() for q in desired.queues}, globals=desired.globals)
    assert not [c for c in differences(desired, same) if "global" in c]


def test_diff_without_asterisk_says_so_plainly(folders, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import socket

    from telephony import cli

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    live, _ = folders
    monkeypatch.setenv("JIEJING_ASTERISK_ETC", str(live))
    monkeypatch.setenv("JIEJING_AMI_PORT", str(port))
    monkeypatch.setenv("JIEJING_AMI_ADMIN_SECRET", "an-admin-secret")
    assert cli.main(["dialplan", "diff"]) == 1
    err = capsys.readouterr().err
    assert f"cannot log in to Asterisk's AMI at 127.0.0.1:{port} as jiejing-admin" in err
    assert "Traceback" not in err
