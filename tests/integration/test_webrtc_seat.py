"""The browser is the seat's phone: Chromium registers over Asterisk's WebSocket (JsSIP, DTLS-SRTP) and answers a 110 call.

Chromium's fake microphone plays a steady tone (a WAV made here), so the
browser seat's voice is a frequency no caller makes; the SIPp caller sends the
lab's recorded speech. The call's recording (MixMonitor on the caller) must
hold both: the caller's speech from the start, the browser's tone only once the
seat has answered.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.auth.users import AuthService, Role
from siplab import audio
from tests.browser.cdp import Browser, chromium_path
from tests.browser.desk import start_shift
from tests.web_login import PASSWORD, TEST_SCRYPT_N

from .conftest import start_backend
from .test_dispatch import answered_ticket

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
SEAT = "wseat01"
QUEUE = "emergency-110"
TONE_HZ = 1400.0  # far from speech's strongest band and from the ringback tone (440/480 Hz)
FRAME_S = 0.1


def _caller() -> str:
    return f"135{random.randrange(10**8):08d}"


@pytest.fixture
async def webrtc_backend(backend_settings, lab_paths):
    vendor = REPO / "vendor" / "web" / "dist"
    assert (vendor / "jssip.min.js").is_file(), "JsSIP is not installed: run sip-lab/bootstrap.sh"
    assert lab_paths.webrtc_phones.is_file(), "the lab wrote no phones file: restart it (jiejing lab down)"
    running = await start_backend(replace(backend_settings, phones_file=str(lab_paths.webrtc_phones),
                                          web_vendor=str(vendor)))
    yield running
    await running.runner.cleanup()


@pytest.fixture
async def phone_browser(tmp_path):
    assert chromium_path() is not None, "chromium is not installed (sip-lab/bootstrap.sh installs it)"
    tone = audio.write_tone_wav(tmp_path / "seat-voice.wav", TONE_HZ)
    flags = [
        "--use-fake-ui-for-media-stream",  # the microphone permission is granted without a prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={tone}",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",  # ICE on 127.0.0.1 too, where the lab's Asterisk is
    ]
    async with Browser(extra_args=flags) as browser:
        yield browser


def _at(browser_log: list[dict], state: str) -> float:
    return next(e["at"] for e in browser_log if e["state"] == state) / 1000


async def test_browser_seat_registers_over_webrtc_and_answers_a_queued_110_call(
        webrtc_backend, phone_browser, calls, lab_paths):
    running, browser = webrtc_backend, phone_browser
    ami = running.backend.ami
    await AuthService(running.service.engine, scrypt_n=TEST_SCRYPT_N).add_user("wang", PASSWORD, Role.CALL_TAKER)
    base = f"http://127.0.0.1:{running.settings.http_port}"

    await start_shift(browser, base, "wang", PASSWORD, SEAT)  # the seat log-in adds PJSIP/wseat01 to the queue
    await browser.wait_for("window.JiejingPhone && window.JiejingPhone.state === 'registered'", 15)

    for i in range(1, 101):
        await ami.action("QueuePause", {"Interface": f"PJSIP/seat{i:03d}", "Paused": "true", "Reason": "test"})
    try:
        caller = _caller()
        call = asyncio.create_task(calls.place([(caller, "WebRTC")], talk_s=8, patience_s=30))
        await browser.wait_for("window.JiejingPhone.state === 'ringing'", 15)
        # the desk popped the ringing call: its caller is on screen before the call-taker answers
        await browser.wait_for("deskStats.pops.some((p) => p.event === 'ringing')", 5)
        caller_shown = await browser.evaluate("document.getElementById('t-caller').textContent")
        await asyncio.sleep(3)  # the call-taker takes the call after three seconds of ringing: caller alone on tape
        clicked_ms = await browser.evaluate("Date.now()")
        await browser.press("Enter")  # answer from the keyboard
        await browser.wait_for("window.JiejingPhone.state === 'in-call'", 15)
        await browser.wait_for("deskStats.pops.some((p) => p.event === 'answered')", 5)
        ticket = await answered_ticket(running, caller)
        assert ticket.seat == SEAT
        await asyncio.sleep(6)  # both voices on the line
        await browser.screenshot(ARTIFACTS / "screenshots" / "webrtc_phone.png")
        await browser.click("#hangup")
        await browser.wait_for("window.JiejingPhone.state === 'ended'", 10)
        stats = await call
        assert stats.get("SuccessfulCall(C)") == "1", stats
    finally:
        await ami.action("QueueRemove", {"Queue": QUEUE, "Interface": f"PJSIP/{SEAT}"})
        for i in range(1, 101):
            await ami.action("QueuePause", {"Interface": f"PJSIP/seat{i:03d}", "Paused": "false"})

    assert caller in caller_shown
    await running.settle()
    t = await running.service.get(ticket.number)
    assert len(t.recordings) == 1
    steps = {s.step: s.at_us for s in reversed(t.steps)}  # first of each
    answered_s = (steps["answered"] - steps["received"]) / 1e6
    samples, rate = audio.read_wav(Path(t.recordings[0].path))
    frames = audio.tone_frames(samples, rate, TONE_HZ, FRAME_S)
    first_after = int((answered_s + 1.0) / FRAME_S)
    before = frames[: max(int((answered_s - 0.3) / FRAME_S), 0)]
    after = frames[first_after: len(frames) - 5]
    assert len(before) >= 5 and len(after) >= 30, (answered_s, len(frames))

    def share(rows, test) -> float:
        return sum(1 for row in rows if test(*row)) / len(rows)

    # Chrome's audio processing (gain control, echo canceller) lowers the steady tone from ~11,000 to ~2,000
    # RMS and ducks it to ~500 while the caller talks; speech outside the tone is hundreds to thousands.
    browser_voice_after = share(after, lambda tone, rest: tone > 300)
    browser_voice_before = share(before, lambda tone, rest: tone > 300)
    caller_voice_after = share(after, lambda tone, rest: rest > 300)
    caller_voice_before_s = sum(1 for _, rest in before if rest > 300) * FRAME_S
    log = await browser.evaluate("window.phoneLog")
    facts = {
        "register_s": round(_at(log, "registered") - _at(log, "connecting"), 3),
        "answer_click_to_in_call_s": round(_at(log, "in-call") - clicked_ms / 1000, 3),
        "codec": await browser.evaluate("window.JiejingPhone.codec"),
        "answered_after_received_s": round(answered_s, 3),
        "browser_voice_frames_after_answer": round(browser_voice_after, 3),
        "caller_voice_frames_after_answer": round(caller_voice_after, 3),
        "caller_voice_before_answer_s": round(caller_voice_before_s, 1),
        "tone_rms_median_after_answer": sorted(tone for tone, _ in after)[len(after) // 2],
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "webrtc_seat.json").write_text(json.dumps(facts, indent=2) + "\n")
    (ARTIFACTS / "webrtc_seat_frames.json").write_text(json.dumps(
        {"answered_s": answered_s, "frame_s": FRAME_S, "tone_rms": [round(x) for x, _ in frames],
         "other_rms": [round(y) for _, y in frames]}) + "\n")
    # the browser's tone: on the line from the answer on (the echo canceller ducks it in a few frames while the
    # caller talks: 0.93-0.98 of frames measured), never before it
    assert browser_voice_after >= 0.8, browser_voice_after
    assert browser_voice_before <= 0.05, browser_voice_before
    # the caller's speech (with its pauses) beside the tone, and on its own while the seat rang
    assert caller_voice_after >= 0.4, caller_voice_after
    assert caller_voice_before_s >= 1.0, caller_voice_before_s

    assert facts["codec"] in ("opus/48000/2", "PCMA/8000", "PCMU/8000"), facts
