"""Alerts are stored even when the store fails for a while, and their queue is bounded."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

import core.alerts.board as board_module
from core.alerts.board import AlertBoard


async def test_an_alert_the_store_refuses_is_retried_until_stored(engine, monkeypatch):
    monkeypatch.setattr(board_module, "RETRY_FIRST_S", 0.01)
    board = AlertBoard(engine)
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE alerts RENAME TO alerts_away"))  # the store refuses the write
    await board.start()
    try:
        board.raise_alert("keyword", "110-20261206-000001", "杀人")
        for _ in range(100):
            if board.failures >= 2:
                break
            await asyncio.sleep(0.01)
        health = board.health()
        assert health["ok"] is False and "alerts are not being stored" in health["reason"]
        assert health["waiting"] == 0 and board.failures >= 2  # held by the writer, not dropped
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE alerts_away RENAME TO alerts"))
        await asyncio.wait_for(board.flush(), 5)
        assert [a["ref"] for a in await board.open_alerts()] == ["110-20261206-000001"]
        assert board.health()["ok"] is True
    finally:
        await board.stop()


async def test_past_the_bound_an_alert_is_refused_and_health_says_so(engine):
    board = AlertBoard(engine, pending_max=2)  # not started: nothing is taken off the queue
    for n in range(3):
        board.raise_alert("keyword", f"t{n}", "x")
    health = board.health()
    assert board.refused == 1 and health["waiting"] == 2
    assert health["ok"] is False and "1 alerts refused" in health["reason"]
    await board.start()
    await asyncio.wait_for(board.flush(), 5)
    await board.stop()
    assert {a["ref"] for a in await board.open_alerts()} == {"t0", "t1"}
