"""Settings.from_env: defaults, overrides and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, Settings


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


def test_a_center_refuses_the_shipped_ami_secret_the_lab_may_use_it():
    from core.config import refuse_lab_secret

    with pytest.raises(ConfigError, match="shipped in dialplan/manager.conf"):
        refuse_lab_secret(Settings.from_env({}))
    refuse_lab_secret(Settings.from_env({"JIEJING_LAB": "yes"}))
    refuse_lab_secret(Settings.from_env({"JIEJING_AMI_SECRET": "a-secret-of-our-own"}))
    with pytest.raises(ConfigError, match="JIEJING_LAB must be yes or no"):
        Settings.from_env({"JIEJING_LAB": "maybe"})


def test_serve_does_not_start_on_the_shipped_secret():
    from telephony import serve

    with pytest.raises(ConfigError):
        serve.run(Settings.from_env({}))  # refused before anything is opened or listens


def test_the_backend_yields_the_cpu_to_asterisk_by_default():
    assert Settings.from_env({}).nice == 19
    assert Settings.from_env({"JIEJING_NICE": "0"}).nice == 0
    for bad in ("-5", "20", "high"):
        with pytest.raises(ConfigError, match="JIEJING_NICE"):
            Settings.from_env({"JIEJING_NICE": bad})
