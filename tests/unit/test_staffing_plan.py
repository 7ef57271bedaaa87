"""History → forecast → plan, end to end against a store holding a synthetic history of known parameters."""

from __future__ import annotations

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from core.auth.users import Role
from core.calls.tickets import TicketService
from core.staffing.erlang import PlanningError, seats_for
from core.staffing.forecast import forecast_calls, plan_seats, queue_wait_s
from core.staffing.history import (
    HALF_HOUR_S,
    SLOTS_PER_WEEK,
    HistoryError,
    load_history,
)
from core.web.app import make_app
from tests.staffing_history import TZ, Pattern, write_history
from tests.web_login import login_headers

WEEK_US = 7 * 86400 * 1_000_000


async def _history(engine: AsyncEngine, weeks: int, **kwargs):
    truth = await write_history(engine, weeks=weeks, **kwargs)
    history = await load_history(engine, until_us=truth.start_us + weeks * WEEK_US, days=7 * weeks, timezone=TZ,
                                 wrap_up_s=truth.wrap_up_s)
    return truth, history


async def test_four_weeks_recover_the_known_load_and_plan_for_it(engine: AsyncEngine) -> None:
    truth, history = await _history(engine, 4)
    # what the store says matches what was generated
    assert history.slots == 4 * SLOTS_PER_WEEK and int(history.calls.sum()) == truth.calls
    assert int(history.abandoned.sum()) == truth.abandoned > 500
    assert history.handle_s == pytest.approx(truth.talk_s + truth.ring_s + truth.wrap_up_s, rel=0.03)
    assert history.answer_delay_s == pytest.approx(truth.ring_s, abs=0.01)
    # the censored estimate of patience (abandoned callers' waits are patience, answered callers' a lower bound)
    assert history.patience_s == pytest.approx(truth.patience_s, rel=0.10)

    plan = plan_seats(history, 7)
    forecast = plan.forecast
    assert forecast.method in ("holt_winters", "seasonal_naive")
    held = forecast.holdout
    assert held["weeks_trained"] == 3 and held["holdout_half_hours"] == SLOTS_PER_WEEK
    assert held["mae_holt_winters"] > 0 and held["mae_seasonal_naive"] > 0
    # the chosen model is the better of the two on the held-out week
    best = min(held["mae_holt_winters"], held["mae_seasonal_naive"])
    assert held["mae_holt_winters" if forecast.method == "holt_winters" else "mae_seasonal_naive"] == best
    # forecast against the true rate of the week after the history (its first half hour is a Monday 00:00)
    true = Pattern().week()
    assert float(np.mean(np.abs(forecast.calls - true))) < 0.12 * true.mean()

    # seats: the plan's Erlang C seats for the center's target against the seats the true load needs
    rows = plan.half_hours
    assert len(rows) == SLOTS_PER_WEEK and rows[0]["start_us"] == truth.start_us + 4 * WEEK_US
    close = 0
    for row, rate in zip(rows, true, strict=True):
        needed = seats_for(rate / HALF_HOUR_S, plan.handle_s, target_s=queue_wait_s(3, plan.answer_delay_s),
                           service_level=0.95).seats
        close += abs(row["suggested_seats"] - needed) <= 1
        for key in ("center_erlang_c", "center_erlang_a", "nena_erlang_c", "nena_erlang_a"):
            assert row[key]["seats"] >= 1
        assert row["center_erlang_c"]["service_level"] >= 0.95 and row["nena_erlang_c"]["service_level"] >= 0.90
        assert row["center_erlang_a"]["abandonment"] >= 0
        assert row["nena_erlang_c"]["seats"] <= row["center_erlang_c"]["seats"]
        assert 0 <= row["seats_seen"] <= truth.seats
    assert close >= 0.9 * len(rows)


async def test_short_histories_fall_back_and_say_so(engine: AsyncEngine) -> None:
    truth, history = await _history(engine, 2, pattern=Pattern(mean_per_half_hour=4))
    forecast = forecast_calls(history, 48)
    assert forecast.method == "seasonal_naive" and "fewer than 3" in forecast.reason and not forecast.holdout
    assert list(forecast.calls) == list(history.calls[-SLOTS_PER_WEEK:][:48].astype(float))

    three_days = await load_history(engine, until_us=truth.start_us + 3 * 86400 * 1_000_000, days=3, timezone=TZ,
                                    wrap_up_s=10)
    daily = forecast_calls(three_days, 48)
    assert daily.method == "daily_profile"
    assert list(daily.calls) == pytest.approx(list(three_days.calls.reshape(3, 48).mean(axis=0)))


async def test_no_history_is_a_clear_refusal(engine: AsyncEngine) -> None:
    empty = await load_history(engine, until_us=1_795_951_800_000_000, days=7, timezone=TZ, wrap_up_s=10)
    assert empty.calls.sum() == 0 and empty.patience_s is None
    with pytest.raises(PlanningError) as refused:
        plan_seats(empty, 7)
    assert refused.value.error_id == "no-handling-time" and refused.value.status == 409
    with pytest.raises(HistoryError):
        await load_history(engine, until_us=1_795_951_800_000_000, days=0, timezone=TZ, wrap_up_s=10)


async def test_the_plan_api_is_for_supervisors(engine: AsyncEngine) -> None:
    truth = await write_history(engine, weeks=2, pattern=Pattern(mean_per_half_hour=4))
    service = TicketService(engine, clock=lambda: (truth.start_us + 2 * WEEK_US) / 1e6 + 60)
    async with TestClient(TestServer(make_app(service, health={}, timezone=TZ))) as client:
        boss = await login_headers(engine, Role.SUPERVISOR)
        taker = await login_headers(engine, Role.CALL_TAKER)
        resp = await client.get("/api/staffing/plan?days=2&history_days=14", headers=boss)
        assert resp.status == 200, await resp.text()
        plan = await resp.json()
        assert len(plan["half_hours"]) == 96 and plan["forecast"]["method"] == "seasonal_naive"
        assert plan["history"]["calls"] == truth.calls and plan["assumptions"]["patience_s"] is not None
        assert "no duty roster" in plan["assumptions"]["roster"]
        assert (await client.get("/api/staffing/plan", headers=taker)).status == 403
        bad = await client.get("/api/staffing/plan?days=40", headers=boss)
        assert bad.status == 400


def test_the_queue_is_asked_for_whole_seconds_because_it_offers_seats_once_a_second() -> None:
    """The lab measured it: every queue wait was a whole number of seconds plus 10-40 ms (docs/staffing.md)."""
    assert queue_wait_s(3, 1.02) == 1.0  # 1.98 s of room holds one check of the queue, not two
    assert queue_wait_s(3, 1.0) == 2.0
    assert queue_wait_s(15, 1.02) == 13.0
    assert queue_wait_s(3, 3.5) == 0.0  # a ring longer than the target: answered at the first offer or late
