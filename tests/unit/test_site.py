"""`jiejing site init`, `jiejing dialplan install` and the host's deploy files: a center's own files."""

from __future__ import annotations

import csv
import io
import itertools
import json
import stat
from pathlib import Path

import pytest

from core.config import RULE_FILES
from telephony import cli
from telephony import site as site_files
from telephony.dialplan_admin import check as checking
from telephony.dialplan_admin import model
from telephony.dialplan_admin.apply import DialplanAdmin
from telephony.dialplan_admin.versions import VersionStore
from telephony.host_cmd import DEPLOY_FILES

REPO = Path(__file__).resolve().parents[2]
SITE = site_files.Site(carrier=("198.51.100.0/24",), carrier_out="sip:198.51.100.7:5060", seats=3)


def counter():
    numbers = itertools.count(1)
    return lambda: f"secret-{next(numbers):02d}"


def test_the_site_files_with_the_shipped_dialplan_pass_the_check_outside_the_lab(tmp_path):
    files, keys = site_files.render(SITE, counter())
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = model.parse_folder(REPO / "dialplan", extra_folders=[tmp_path])
    report = checking.check(config, lab=False)
    assert report.ok, checking.format_report(report)
    # the site's values are what Asterisk will run, over the shipped lab defaults
    assert "bind = 0.0.0.0:5060" in files["pjsip_site.conf"]
    assert "match = 198.51.100.0/24" in files["pjsip_trunks.conf"]
    assert "contact = sip:198.51.100.7:5060" in files["pjsip_trunks.conf"]
    assert [u.options["secret"].value for u in config.manager.users.values()] == [keys["ami"], keys["ami_admin"]]
    assert sorted(k for k in keys if k.startswith("seat")) == ["seat001", "seat002", "seat003"]
    assert {"antifraud-desk", "hotline-12345", "supervisor-desk"} <= set(keys)
    assert len(set(keys.values())) == len(keys)  # every phone its own password


def test_without_site_secrets_the_check_refuses_the_shipped_ones(tmp_path):
    files, _ = site_files.render(SITE, counter())
    del files["manager_site.conf"]
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    report = checking.check(model.parse_folder(REPO / "dialplan", extra_folders=[tmp_path]), lab=False)
    assert {f.code for f in report.errors} == {"ami-lab-secret"}
    assert "manager_site.conf" in report.errors[0].message


@pytest.mark.parametrize("change, message", [
    ({"carrier": ()}, "--carrier"),
    ({"carrier": ("carrier.example",)}, "not an IP address"),
    ({"carrier_out": "198.51.100.7"}, "--carrier-out"),
    ({"carrier_out": "sip:x;transport=tcp\n[evil]"}, "--carrier-out"),
    ({"sip_bind": "0.0.0.0"}, "ADDRESS:PORT"),
    ({"sip_bind": "sip.example:5060"}, "IP address"),
    ({"seats": 0}, "--seats"),
    ({"seat_prefix": "Seat]"}, "phone name"),
    ({"desks": ("desk", "desk")}, "differ"),
])
def test_unusable_values_are_refused_with_what_is_expected(change, message):
    from dataclasses import replace

    with pytest.raises(site_files.SiteError, match=message):
        site_files.render(replace(SITE, **change))


def test_init_writes_secrets_for_root_only_and_never_overwrites(tmp_path):
    etc, secrets = tmp_path / "etc", tmp_path / "site"
    written = site_files.write(SITE, etc, secrets)
    assert sorted(p.name for p in written if p.parent == etc) == sorted(site_files.SITE_FILES)
    for name in ("ami-secret", "ami-admin-secret", "phones.csv"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
    phones = {row["name"]: row["password"] for row in csv.DictReader(io.StringIO((secrets / "phones.csv").read_text()))}
    assert f"password = {phones['seat002']}" in (etc / "pjsip_seats.conf").read_text()
    assert f"secret = {(secrets / 'ami-secret').read_text().strip()}" in (etc / "manager_site.conf").read_text()
    before = {p: p.read_bytes() for p in written}
    with pytest.raises(site_files.SiteError, match="not overwritten"):
        site_files.write(SITE, etc, secrets)
    assert {p: p.read_bytes() for p in written} == before


def test_the_command_line_reports_bad_values_with_exit_2(tmp_path, capsys):
    rc = cli.main(["site", "init", "--etc", str(tmp_path / "e"), "--secrets", str(tmp_path / "s"),
                   "--carrier", "nowhere", "--carrier-out", "sip:198.51.100.7"])
    assert rc == 2 and "not an IP address" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_deploy_shows_the_units_proxy_settings_and_default_rules(capsys):
    for name in DEPLOY_FILES + RULE_FILES:
        assert cli.main(["deploy", "show", name]) == 0
        assert capsys.readouterr().out.strip()
    assert cli.main(["deploy", "show", "routing.toml"]) == 0
    assert capsys.readouterr().out == (REPO / "dialplan" / "routing.toml").read_text()


def test_the_shipped_settings_file_is_complete_for_serve(tmp_path):
    """The jiejing.toml of the install guide names only real settings and leaves serve nothing to refuse but
    files the guide makes."""
    from core.config import Settings, environment, production_problems
    from telephony.config_cmd import setting_names

    text = (REPO / "telephony/deploy/jiejing.toml").read_text()
    for name in ("ami-secret", "ami-admin-secret"):  # what `jiejing site init` writes
        (tmp_path / name).write_text(f"{name}-of-the-site\n")
        text = text.replace(f"/etc/jiejing/site/{name}", str(tmp_path / name))
    (tmp_path / "jiejing.toml").write_text(text)
    source = environment({"JIEJING_CONFIG": str(tmp_path / "jiejing.toml")}, known=setting_names())
    assert source["JIEJING_AMI_SECRET"] == "ami-secret-of-the-site"
    settings = Settings.from_env(source)
    assert settings.trusted_proxies == ("127.0.0.1",)
    problems = production_problems(settings, source)
    # only the rule files the guide copies into /etc/jiejing/rules are missing here
    assert len(problems) == 1 and "RULES_DIR" in problems[0], problems


class Console:
    def __init__(self, running: bool) -> None:
        self.running, self.commands = running, []

    async def __call__(self, command: str) -> str:
        self.commands.append(command)
        if not self.running:
            raise RuntimeError("asterisk -rx exited 1: Unable to connect to remote asterisk")
        return "Asterisk 22"


async def _never_connect():
    raise AssertionError("install must not log in to Asterisk")


def _admin(tmp_path, console) -> DialplanAdmin:
    live = tmp_path / "etc"
    live.mkdir(parents=True, exist_ok=True)
    files, _ = site_files.render(SITE, counter())
    for name, text in files.items():
        (live / name).write_text(text)
    return DialplanAdmin(live_dir=live, sources=[REPO / "dialplan"], store=VersionStore(tmp_path / "versions"),
                         connect=_never_connect, console=console, by="tester", log=lambda *_: None)


async def test_install_writes_the_dialplan_while_asterisk_is_stopped(tmp_path):
    admin = _admin(tmp_path, Console(running=False))
    site_before = {p.name: p.read_bytes() for p in admin.live_dir.iterdir()}
    outcome = await admin.install(note="first")
    assert outcome.ok, outcome.message
    assert "start it" in outcome.message
    for src in (REPO / "dialplan").glob("*.conf"):
        assert (admin.live_dir / src.name).read_bytes() == src.read_bytes()
    for name, data in site_before.items():  # the site's own files untouched
        assert (admin.live_dir / name).read_bytes() == data
    history = admin.store.list()
    assert [m.status for m in history] == ["snapshot", "installed"]


async def test_install_is_refused_while_asterisk_runs_and_on_errors(tmp_path):
    admin = _admin(tmp_path, Console(running=True))
    outcome = await admin.install()
    assert not outcome.ok and "dialplan apply" in outcome.message
    assert not (admin.live_dir / "extensions.conf").exists()

    admin = _admin(tmp_path / "other", Console(running=False))
    (admin.live_dir / "manager_site.conf").unlink()  # the shipped secrets would be live
    outcome = await admin.install()
    assert not outcome.ok and "check found errors" in outcome.message
    assert not (admin.live_dir / "extensions.conf").exists()


def test_the_install_guide_blocks_are_what_the_drill_runs():
    from siplab.drill_install import VALUES, guide_blocks, guide_script

    blocks = guide_blocks((REPO / "docs/install.md").read_text())
    assert blocks[0].startswith("# This center's values")
    names = {line.split("=")[0] for line in blocks[0].splitlines() if "=" in line and not line.startswith("#")}
    assert names == {line.split("=")[0] for line in VALUES.splitlines()}
    script = guide_script(blocks, "X=1\n")
    assert "X=1" in script and "203.0.113.10" not in script
    assert script.count("### block") == len(blocks)
    # every command of the guide is one of jiejing's own or a Debian tool: no drill stand-in named
    assert "drill" not in "".join(blocks)


def test_the_systemctl_stand_in_reads_the_shipped_units(tmp_path, monkeypatch):
    from siplab import drill_units

    monkeypatch.setattr(drill_units, "UNIT_DIRS", (REPO / "telephony/deploy",))
    monkeypatch.setattr(drill_units, "_home", lambda user: "/var/lib/jiejing")
    service = drill_units.parse("jiejing.service")
    argv, optional = drill_units.command(service, drill_units._one(service, "ExecStart"))
    assert argv == ["setpriv", "--reuid=jiejing", "--regid=jiejing", "--init-groups", "--",
                    "/opt/jiejing/bin/jiejing", "serve"] and not optional
    assert drill_units.environment(service)["JIEJING_CONFIG"] == "/etc/jiejing/jiejing.toml"
    service = drill_units.parse("jiejing-asterisk.service")
    argv, _ = drill_units.command(service, service["ExecStop"][0], mainpid=42)
    assert argv[-2:] == ["-rx", "core stop now"]
    assert json.dumps(service["ExecStartPre"]).count("asterisk prepare") == 1


def test_the_shipped_unit_files_pass_systemd_s_own_check(tmp_path):
    """systemd's verifier on the units as the install guide places them (the jiejing command where the guide's
    virtualenv has it is this checkout's; the drill runs the same files by hand)."""
    import os
    import shutil
    import subprocess
    import sys

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        assert not os.environ.get("CI"), "systemd-analyze is missing (Debian package systemd)"
        pytest.skip("systemd-analyze is not installed")
    jiejing = str(Path(sys.executable).with_name("jiejing"))
    units = []
    for name in ("jiejing.service", "jiejing-asterisk.service"):
        text = (REPO / "telephony/deploy" / name).read_text().replace("/opt/jiejing/bin/jiejing", jiejing)
        (tmp_path / name).write_text(text)
        units.append(str(tmp_path / name))
    res = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stderr.strip() and not res.stdout.strip(), res.stdout + res.stderr
