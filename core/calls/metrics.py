"""The call figures of ``/metrics``: calls by outcome and the answer-time histogram.

Counted here from ticket steps (since the process started, as Prometheus
counters are) and handed to prometheus-client as metric families when
scraped: ``CallMetrics`` is a collector (``collect()``), registered with the
others on the application's registry by ``core.web.metrics``.

The buckets are counted here rather than by prometheus-client's own
``Histogram`` so that the series keep their label values (``le="3"``, not
``"3.0"`` as the library's ``Histogram`` writes it) and gain no ``_created``
series. ``telephony.serve`` writes the FastAGI latency buckets with ``buckets``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from core.calls.lifecycle import Step
from core.calls.tickets import StepView, TicketView

__all__ = ["CallMetrics", "Histogram", "buckets"]

# Answer times cluster around the 3 s target; the tail shows overload.
ANSWER_BUCKETS_S = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


def _bound(value: float) -> str:
    """A bucket's ``le`` value: ``"3"``, ``"0.5"``, ``"+Inf"``."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def buckets(cumulative: Iterable[tuple[float, int]]) -> list[tuple[str, float]]:
    """(upper bound, observations ≤ bound) rows, ending with +Inf, as ``HistogramMetricFamily`` takes them."""
    return [(_bound(bound), n) for bound, n in cumulative]


class Histogram:
    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        running, rows = 0, []
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            rows.append((bound, running))
        return rows


class CallMetrics:
    """Counters of calls and the answer-time histogram, fed by ticket steps; a prometheus-client collector."""

    name = "calls"  # in jiejing_metrics_collector_errors_total

    def __init__(self) -> None:
        self.received = 0
        self.answered = 0
        self.abandoned = 0
        self.answer_time = Histogram(ANSWER_BUCKETS_S)

    def on_step(self, ticket: TicketView, step: StepView) -> None:
        if step.step is Step.RECEIVED:
            self.received += 1
        elif step.step is Step.ANSWERED:
            self.answered += 1
            if ticket.steps:
                self.answer_time.observe(max(0.0, (step.at_us - ticket.steps[0].at_us) / 1e6))
        elif step.step is Step.ABANDONED:
            self.abandoned += 1

    def collect(self) -> Iterator[Metric]:
        calls = CounterMetricFamily("jiejing_calls_total", "Calls by outcome since the backend started.",
                                    labels=["outcome"])
        calls.add_metric(["received"], self.received)
        calls.add_metric(["answered"], self.answered)
        calls.add_metric(["abandoned"], self.abandoned)
        yield calls
        yield HistogramMetricFamily("jiejing_answer_seconds", "Time from a call's arrival to a seat answering it.",
                                    buckets=buckets(self.answer_time.cumulative()), sum_value=self.answer_time.sum)
