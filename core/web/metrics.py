"""``/metrics``: the Prometheus text format, written by prometheus-client from collectors read when scraped.

Every source of figures is a collector: an object whose ``collect()`` yields
metric families (``CounterMetricFamily``, ``GaugeMetricFamily``,
``HistogramMetricFamily``) made from live objects at that moment. Core
brings the call figures (``core.calls.metrics.CallMetrics``) and the queue
and seat gauges; the telephony side hands its own (AMI connection, FastAGI
requests and latency) to ``core.web.make_app(metrics=...)``: core does not
import telephony.

Each application has its own ``CollectorRegistry`` (the library's global one
is never used: tests build many applications). A collector that raises is
left out of that scrape, logged, and counted in
``jiejing_metrics_collector_errors_total{collector}``; the others are still
scraped. The name in that label is the collector's ``name`` attribute, or
else its class name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["Collector", "FunctionCollector", "metrics_response", "registry_of"]

log = logging.getLogger(__name__)


class FunctionCollector:
    """A collector whose families come from ``families()``, named for the error counter."""

    def __init__(self, name: str, families: Callable[[], Iterable[Metric]]) -> None:
        self.name = name
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()


def collector_name(collector: Collector) -> str:
    return str(getattr(collector, "name", None) or type(collector).__name__)


class _Guarded:
    """One collector, its failures kept to itself: logged, counted, its families left out of that scrape."""

    def __init__(self, collector: Collector, name: str, errors: dict[str, int]) -> None:
        self._collector = collector
        self._name = name
        self._errors = errors

    def collect(self) -> list[Metric]:
        try:
            families = list(self._collector.collect())
            for family in families:
                for sample in family.samples:
                    float(sample.value)  # None or text would break the whole text, not just this collector
        except Exception:  # one broken source must not blank the scrape
            log.exception("metrics collector %s failed; its metrics are left out of this scrape", self._name)
            self._errors[self._name] += 1
            return []
        return families


class _Errors:
    def __init__(self, errors: dict[str, int]) -> None:
        self._errors = errors

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("jiejing_metrics_collector_errors_total",
                                     "Scrapes in which a metrics collector failed and its metrics were left out.",
                                     labels=["collector"])
        for name, count in self._errors.items():
            family.add_metric([name], count)
        yield family


def registry_of(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of one application: the collectors in order, each guarded, then their error counts."""
    registry = CollectorRegistry()
    errors: dict[str, int] = {}
    for collector in collectors:
        name = collector_name(collector)
        errors.setdefault(name, 0)
        registry.register(_Guarded(collector, name, errors))
    registry.register(_Errors(errors))  # last: counts this scrape's failures too
    return registry


def metrics_response(registry: CollectorRegistry) -> web.Response:
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
