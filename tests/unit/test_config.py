"""Settings: defaults, the configuration file, overrides, secrets from files, the lab defaults a center refuses,
and clear errors."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import (
    ConfigError,
    Settings,
    environment,
    production_problems,
    refuse_lab_defaults,
)
from core.quality.config import QualitySettings
from telephony import config_cmd
from telephony.config_cmd import setting_names


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({})
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'jiejing.db'}"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8110)
    assert (settings.agi_host, settings.agi_port) == ("127.0.0.1", 4573)
    assert (settings.ami_host, settings.ami_port, settings.ami_user) == ("127.0.0.1", 5038, "jiejing")
    assert settings.ami_secret == "jiejing-lab"
    assert settings.recordings_dir == ""
    assert (settings.timezone, settings.ticket_prefix) == ("Asia/Shanghai", "110")
    assert settings.intake_contexts == ("from-carrier",)
    assert settings.emergency_numbers == ("110",)


def test_environment_overrides() -> None:
    settings = Settings.from_env(
        {
            "JIEJING_DB_URL": "postgresql+asyncpg://jj@db/jiejing",
            "JIEJING_HTTP_PORT": "9000",
            "JIEJING_AMI_SECRET": "s3cret",
            "JIEJING_RECORDINGS_DIR": "/var/spool/asterisk/monitor",
            "JIEJING_TIMEZONE": "Asia/Urumqi",
            "JIEJING_TICKET_PREFIX": "JJ",
            "JIEJING_INTAKE_CONTEXTS": "from-carrier, from-pstn",
            "JIEJING_EMERGENCY_NUMBERS": "110,112",
            "JIEJING_AGI_PORT": "",  # empty keeps the default
            "OTHER_HTTP_PORT": "1",
        }
    )
    assert settings.db_url == "postgresql+asyncpg://jj@db/jiejing"
    assert (settings.http_port, settings.agi_port) == (9000, 4573)
    assert settings.ami_secret == "s3cret"
    assert settings.recordings_dir == "/var/spool/asterisk/monitor"
    assert (settings.timezone, settings.ticket_prefix) == ("Asia/Urumqi", "JJ")
    assert settings.intake_contexts == ("from-carrier", "from-pstn")
    assert settings.emergency_numbers == ("110", "112")
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JIEJING_HTTP_PORT": "abc"}, "JIEJING_HTTP_PORT must be an integer port number, got 'abc'"),
        ({"JIEJING_AMI_PORT": "50.38"}, "JIEJING_AMI_PORT must be an integer"),
        ({"JIEJING_AGI_PORT": "-1"}, "JIEJING_AGI_PORT must be an integer"),
        ({"JIEJING_AGI_PORT": "４５７３"}, "JIEJING_AGI_PORT must be an integer"),
        ({"JIEJING_HTTP_PORT": "70000"}, "JIEJING_HTTP_PORT must be between 1 and 65535, got 70000"),
        ({"JIEJING_HTTP_PORT": "0"}, "between 1 and 65535"),
        ({"JIEJING_TIMEZONE": "Mars/Olympus"}, "JIEJING_TIMEZONE: unknown time zone 'Mars/Olympus'"),
        ({"JIEJING_TIMEZONE": "../etc/passwd"}, "JIEJING_TIMEZONE: unknown time zone"),
        ({"JIEJING_TICKET_PREFIX": "11-0"}, "JIEJING_TICKET_PREFIX must be"),
        ({"JIEJING_EMERGENCY_NUMBERS": "110,,112"}, "JIEJING_EMERGENCY_NUMBERS has an empty item"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert message in str(caught.value)


def _center(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Everything a center must set, set properly."""
    city = tmp_path / "city.json"
    city.write_text('{"name": "our city", "stations": []}')
    return {"JIEJING_AMI_SECRET": "a-secret-of-our-own", "JIEJING_CITY_FILE": str(city),
            "JIEJING_RECORDINGS_DIR": "/var/spool/asterisk/monitor",
            "JIEJING_CEL_FILE": "/var/log/asterisk/cel-custom/jiejing.csv",
            "JIEJING_DB_URL": "sqlite+aiosqlite:////var/lib/jiejing/jiejing.db", **extra}


def test_a_center_set_up_properly_has_no_problem(tmp_path: Path) -> None:
    env = _center(tmp_path)
    assert production_problems(Settings.from_env(env), env) == []
    refuse_lab_defaults(Settings.from_env(env), env)
    pg = _center(tmp_path, JIEJING_DB_URL="postgresql+asyncpg://jiejing@db.example/jiejing")
    assert production_problems(Settings.from_env(pg), pg) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"JIEJING_AMI_SECRET": "jiejing-lab"}, "JIEJING_AMI_SECRET is the secret shipped in dialplan/manager.conf"),
        ({"JIEJING_CITY_FILE": ""}, "JIEJING_CITY_FILE is not set"),
        ({"JIEJING_CITY_FILE": str(Path(__file__).parents[2] / "sip-lab" / "city.json")}, "the lab's synthetic city"),
        ({"JIEJING_RECORDINGS_DIR": ""}, "JIEJING_RECORDINGS_DIR is not set"),
        ({"JIEJING_RECORDINGS_DIR": "monitor"}, "JIEJING_RECORDINGS_DIR 'monitor' is relative"),
        ({"JIEJING_CEL_FILE": ""}, "JIEJING_CEL_FILE is not set"),
        ({"JIEJING_DB_URL": ""}, "JIEJING_DB_URL is not set"),
        ({"JIEJING_DB_URL": "sqlite+aiosqlite:///var/jiejing.db"}, "relative SQLite path 'var/jiejing.db'"),
        ({"JIEJING_RULES_DIR": "/nonexistent-rules"},
         "JIEJING_RULES_DIR: routing.toml, keywords.toml, surge.toml, guidance.toml, callback.toml not found in "
         "/nonexistent-rules"),
    ],
)
def test_outside_the_lab_each_lab_default_is_refused(tmp_path: Path, change: dict[str, str], message: str) -> None:
    env = {k: v for k, v in {**_center(tmp_path), **change}.items() if v}
    problems = production_problems(Settings.from_env(env), env)
    assert len(problems) == 1 and message in problems[0], problems
    with pytest.raises(ConfigError, match="not starting outside the lab"):
        refuse_lab_defaults(Settings.from_env(env), env)
    lab = {**env, "JIEJING_LAB": "yes"}
    assert production_problems(Settings.from_env(lab), lab) == []  # the lab may
    with pytest.raises(ConfigError, match="JIEJING_LAB must be yes or no"):
        Settings.from_env({"JIEJING_LAB": "maybe"})


def test_serve_does_not_start_on_lab_defaults():
    from telephony import serve

    with pytest.raises(ConfigError, match="JIEJING_AMI_SECRET is the secret shipped"):
        serve.run(Settings.from_env({}), {})  # refused before anything is opened or listens


def test_serve_outside_the_lab_imports_no_lab_code(tmp_path: Path) -> None:
    """`jiejing serve` of an installed center: refused on its problems without the lab package being loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIEJING_")}
    env["JIEJING_CONFIG"] = str(tmp_path / "none.toml")
    (tmp_path / "none.toml").write_text("")
    code = ("import sys; from telephony import cli; rc = cli.main(['serve']); "
            "print('siplab' in sys.modules or any(m.startswith('siplab.') for m in sys.modules)); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() == "False"
    assert "not starting outside the lab" in done.stderr and "JIEJING_CITY_FILE is not set" in done.stderr


def test_the_configuration_file_with_variables_over_it(tmp_path: Path) -> None:
    conf = tmp_path / "jiejing.toml"
    conf.write_text('http_port = 8443\nemergency_numbers = ["110", "112"]\nintake_process = false\n'
                    'timezone = "Asia/Urumqi"\nretention_days = 365\n')
    source = environment({"JIEJING_CONFIG": str(conf), "JIEJING_TIMEZONE": "Asia/Shanghai",
                          "JIEJING_HTTP_HOST": ""}, known=setting_names())
    settings = Settings.from_env(source)
    assert settings.http_port == 8443 and settings.emergency_numbers == ("110", "112")
    assert settings.intake_process is False
    assert settings.timezone == "Asia/Shanghai"  # the variable wins
    assert settings.http_host == "127.0.0.1"  # an empty variable keeps the default
    assert QualitySettings.from_env(source).retention_days == 365


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http_prot = 8443\n", "unknown setting 'http_prot'"),
        ("http_port = \n", "jiejing.toml"),
        ("[backend]\nhttp_port = 1\n", "unknown setting 'backend'"),
        ("http_port = { a = 1 }\n", "http_port must be a string, number, yes/no or a list, got dict"),
        ("http_port = 99999\n", "JIEJING_HTTP_PORT must be between 1 and 65535"),
    ],
)
def test_a_bad_configuration_file_names_the_setting(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "jiejing.toml"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(environment({"JIEJING_CONFIG": str(conf)}, known=setting_names()))


def test_a_named_configuration_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file .*missing.toml"):
        environment({"JIEJING_CONFIG": str(tmp_path / "missing.toml")})


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "ami").write_text("s3cret-from-a-file\n")
    (tmp_path / "twilio").write_text("tw-token")
    conf = tmp_path / "jiejing.toml"
    conf.write_text(f'twilio_auth_token_file = "{tmp_path / "twilio"}"\n')
    source = environment({"JIEJING_CONFIG": str(conf), "JIEJING_AMI_SECRET_FILE": str(tmp_path / "ami")},
                         known=setting_names())
    assert Settings.from_env(source).ami_secret == "s3cret-from-a-file"
    assert QualitySettings.from_env(source).twilio_auth_token == "tw-token"
    with pytest.raises(ConfigError, match="both JIEJING_AMI_SECRET and JIEJING_AMI_SECRET_FILE"):
        environment({"JIEJING_AMI_SECRET": "x", "JIEJING_AMI_SECRET_FILE": str(tmp_path / "ami")})
    with pytest.raises(ConfigError, match="JIEJING_AMI_SECRET_FILE: cannot read"):
        environment({"JIEJING_AMI_SECRET_FILE": str(tmp_path / "nothing")})


def test_config_check_masks_secrets_and_says_what_would_stop_serve(tmp_path: Path) -> None:
    out = io.StringIO()
    env = _center(tmp_path, JIEJING_CONFIG=str(tmp_path / "none.toml"), JIEJING_TWILIO_AUTH_TOKEN="tw-token")
    (tmp_path / "none.toml").write_text("")
    assert config_cmd.check(out, env=env) == 0
    text = out.getvalue()
    assert "a-secret-of-our-own" not in text and "tw-token" not in text and 'ami_secret = "********"' in text
    assert text.endswith("serve would start\n")
    out = io.StringIO()
    assert config_cmd.check(out, as_json=True, env={**env, "JIEJING_CEL_FILE": ""}) == 1
    report = json.loads(out.getvalue())
    assert report["settings"]["The backend"]["ami_secret"] == "********"
    assert [p.split(" ")[0] for p in report["problems"]] == ["JIEJING_CEL_FILE"]


def test_the_configuration_reference_is_generated_from_the_code() -> None:
    """docs/configuration.md is `jiejing config reference`: regenerate it when a setting changes."""
    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert doc.read_text(encoding="utf-8") == config_cmd.reference_markdown()


def test_every_jiejing_variable_the_code_reads_is_documented() -> None:
    root = Path(__file__).parents[2]
    reference = config_cmd.reference_markdown()
    dialplan = " ".join(p.read_text(encoding="utf-8") for p in (root / "dialplan").rglob("*.conf"))
    files = [*root.glob("core/**/*.py"), *root.glob("telephony/**/*.py"), *root.glob("sip-lab/*.py"),
             *root.glob("sip-lab/*.sh"), root / ".ci" / "run", root / "README.md"]
    names = {m for f in files for m in re.findall(r"JIEJING_[A-Z][A-Z0-9_]*[A-Z0-9]", f.read_text(encoding="utf-8"))}
    missing = sorted(n for n in names - {"JIEJING_NAME", "JIEJING_CONFIG"}
                     if f"`{n}`" not in reference and f"`{n.removesuffix('_FILE')}`" not in reference
                     and n not in dialplan)
    assert missing == []


def test_the_backend_yields_the_cpu_to_asterisk_by_default():
    assert Settings.from_env({}).nice == 19
    assert Settings.from_env({"JIEJING_NICE": "0"}).nice == 0
    for bad in ("-5", "20", "high"):
        with pytest.raises(ConfigError, match="JIEJING_NICE"):
            Settings.from_env({"JIEJING_NICE": bad})


def test_json_log_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import logging

    from telephony import cli

    monkeypatch.setenv("JIEJING_CONFIG", str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")
    assert cli._log_format() == "text"
    monkeypatch.setenv("JIEJING_LOG_FORMAT", "json")
    assert cli._log_format() == "json"
    record = logging.LogRecord("jiejing.test", logging.WARNING, __file__, 1, "警情 %s", ("来了",), None)
    line = json.loads(cli.JsonLogFormatter().format(record))
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "jiejing.test", "警情 来了")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", line["time"])
    with pytest.raises(ConfigError, match="JIEJING_LOG_FORMAT must be text or json"):
        Settings.from_env({"JIEJING_LOG_FORMAT": "xml"})


def test_a_secret_file_this_user_may_not_read_stops_only_the_commands_that_need_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found installing a center: the backend's user (`db upgrade`, `serve`) could not start because the admin
    commands' AMI secret, readable by root only, was read for every command."""
    from core.config import AdminSettings, environment

    backend, admin = tmp_path / "ami-secret", tmp_path / "ami-admin-secret"
    (tmp_path / "none.toml").write_text("")
    backend.write_text("backend-secret\n")
    admin.write_text("admin-secret\n")
    real_read = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if self == admin:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    source = environment({"JIEJING_CONFIG": str(tmp_path / "none.toml"), "JIEJING_AMI_SECRET_FILE": str(backend),
                          "JIEJING_AMI_ADMIN_SECRET_FILE": str(admin)})
    assert Settings.from_env(source).ami_secret == "backend-secret"
    with pytest.raises(ConfigError, match="JIEJING_AMI_ADMIN_SECRET_FILE: cannot read the secret"):
        AdminSettings.from_env(source)
    # a missing or empty file is still an error at once: that is a mistake, not another user's secret
    with pytest.raises(ConfigError, match="cannot read the secret"):
        environment({"JIEJING_CONFIG": str(tmp_path / "none.toml"),
                     "JIEJING_AMI_SECRET_FILE": str(tmp_path / "missing")})
