"""``/metrics`` in the Prometheus text format (version 0.0.4), written by hand: no client library needed.

The call figures are counted here from ticket steps (since the process
started, as Prometheus counters are); the queue and seat gauges are read
from the wallboard and the seat board when scraped. The telephony side adds
its own lines (AMI connection, FastAGI latency) through ``MetricsProvider``
callables handed to ``core.web.make_app``: core does not import telephony.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence

from core.calls.lifecycle import Step
from core.calls.tickets import StepView, TicketView

__all__ = ["CallMetrics", "Histogram", "MetricsProvider", "histogram_lines", "render"]

# Lines of the exposition format, without trailing newlines.
MetricsProvider = Callable[[], Iterable[str]]

# Answer times cluster around the 3 s target; the tail shows overload.
ANSWER_BUCKETS_S = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**pairs: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in pairs.items()) + "}" if pairs else ""


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


def histogram_lines(name: str, cumulative: Iterable[tuple[float, int]], total: float, **label_pairs: str) -> list[str]:
    """The bucket, sum and count lines of one histogram series (HELP/TYPE once per name: see ``header``)."""
    rows = list(cumulative)
    lines = [f"{name}_bucket{labels(**label_pairs, le=_number(b))} {n}" for b, n in rows]
    lines.append(f"{name}_sum{labels(**label_pairs)} {_number(total)}")
    lines.append(f"{name}_count{labels(**label_pairs)} {rows[-1][1] if rows else 0}")
    return lines


def header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


class CallMetrics:
    """Counters of calls and the answer-time histogram, fed by ticket steps."""

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

    def lines(self) -> list[str]:
        out = header("jiejing_calls_total", "counter", "Calls by outcome since the backend started.")
        out += [
            f'jiejing_calls_total{{outcome="received"}} {self.received}',
            f'jiejing_calls_total{{outcome="answered"}} {self.answered}',
            f'jiejing_calls_total{{outcome="abandoned"}} {self.abandoned}',
        ]
        out += header("jiejing_answer_seconds", "histogram", "Time from a call's arrival to a seat answering it.")
        out += histogram_lines("jiejing_answer_seconds", self.answer_time.cumulative(), self.answer_time.sum)
        return out


def render(providers: Iterable[MetricsProvider]) -> str:
    """The exposition text; a failing provider is reported in a comment, the rest still scraped."""
    lines: list[str] = []
    for provider in providers:
        try:
            lines.extend(provider())
        except Exception as exc:  # noqa: BLE001 - one broken source must not blank the scrape
            lines.append(f"# provider {getattr(provider, '__name__', provider)!s} failed: {type(exc).__name__}")
    return "\n".join(lines) + "\n"
