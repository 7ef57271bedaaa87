"""Fixtures for tests against the real lab: Asterisk 22 in its chroot, SIPp phones.

The lab is brought up once per test session (and taken down at the end if this
session started it). Each test gets its own backend — store on a fresh SQLite
file, AMI connection, FastAGI server on the port the dialplan calls, HTTP on a
free port — running in the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web

from core.config import Settings
from siplab import asterisk, lab, storm
from telephony import serve

LAB_SEATS = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab_paths() -> asterisk.LabPaths:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (chroot, mount); run sip-lab/test.sh as root")
    paths = asterisk.LabPaths()
    running = lab.running_settings(paths)
    was_up = asterisk.asterisk_pid(paths) is not None and running is not None and running.seats == LAB_SEATS
    lab.up(lab.LabSettings(seats=LAB_SEATS), paths, log=lambda *_: None)
    yield paths
    if not was_up:
        lab.down(paths, log=lambda *_: None)


@dataclass
class RunningBackend:
    backend: serve.Backend
    settings: Settings
    runner: web.AppRunner

    @property
    def service(self):
        return self.backend.service

    async def wait_connected(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not self.backend.ami.connected:
            if time.monotonic() > deadline:
                raise AssertionError("backend never connected to AMI")
            await asyncio.sleep(0.05)

    async def settle(self) -> None:
        """Every event Asterisk has logged applied and every recording bound."""
        await asyncio.sleep(0.5)
        if self.backend.cel is not None:
            await self.backend.cel.poll()
        await self.backend.events.drain()
        await self.backend.events.wait_recordings()


async def start_backend(settings: Settings) -> RunningBackend:
    backend = serve.build(settings)
    app = serve.make_web_app(backend)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    running = RunningBackend(backend, settings, runner)
    await running.wait_connected()
    return running


def default_phones(paths: asterisk.LabPaths) -> None:
    """Each test starts with the lab's default phones: ring and talk times that a test or a storm changed
    (``storm.prepare_callers`` sets the seats' talk time) do not leak into the next test."""
    wanted = lab.LabSettings(seats=LAB_SEATS)
    if lab.running_settings(paths) != wanted:
        lab.up(wanted, paths, log=lambda *_: None)


@pytest.fixture
def backend_settings(lab_paths, tmp_path) -> Settings:
    default_phones(lab_paths)
    return replace(
        Settings(),
        db_url=f"sqlite+aiosqlite:///{tmp_path / 'tickets.db'}",
        http_port=_free_port(),
        recordings_dir=str(lab_paths.recordings),
        cel_file=str(lab_paths.cel_file),
        # Lab calls are short and many are abandoned on purpose: only the call-back tests call them back.
        auto_callback=False,
    )


@pytest.fixture
async def backend(backend_settings) -> AsyncIterator[RunningBackend]:
    running = await start_backend(backend_settings)
    yield running
    await running.runner.cleanup()


@dataclass
class Calls:
    """Places calls through SIPp as the carrier trunk."""

    paths: asterisk.LabPaths

    async def place(
        self, callers: list[tuple], *, rate: float = 5, talk_s: float = 3, patience_s: float = 30,
        scenario: str = "caller.xml",
    ) -> dict[str, str]:
        run_dir = self.paths.run / f"test-{int(time.time() * 1000)}"
        run_dir.mkdir(parents=True)
        storm.write_injection(run_dir / "callers.csv", callers)
        scenario_file = storm.prepare_callers(self.paths, run_dir, talk_s=talk_s, patience_s=patience_s,
                                              scenario=scenario)
        return await storm.drive_calls(
            run_dir, scenario_file, len(callers), rate, timeout=len(callers) / rate + patience_s + talk_s + 30
        )


@pytest.fixture
def calls(lab_paths) -> Calls:
    return Calls(lab_paths)


def recording_path(lab_paths: asterisk.LabPaths, name: str) -> Path:
    return lab_paths.recordings / f"{name}.wav"
