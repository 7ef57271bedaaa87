"""A dialplan global of the lab Asterisk set over AMI, as a test changes one for its own run."""

from __future__ import annotations

from core.config import Settings
from telephony.ami.client import AMIClient


async def set_global(settings: Settings, name: str, value: str) -> None:
    """``Setvar`` with no channel: the global ``name`` is ``value`` for every call from now on."""
    ami = AMIClient(settings.ami_host, settings.ami_port, settings.ami_user, settings.ami_secret)
    await ami.start()
    try:
        await ami.wait_connected(10)
        response = await ami.action("Setvar", [("Variable", name), ("Value", value)])
        assert response.ok, response.message
    finally:
        await ami.stop()
