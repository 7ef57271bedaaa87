"""Operations: the pages, their static files, the OpenAPI document and ``/metrics``.

The pages are static files from ``core/web/static`` served by the backend
itself (no CDN: the center's network may have no way out). Third-party
browser libraries (JsSIP for the WebRTC seat) are not in the repository: the
set-up installs them from the npm registry and bundles them into a folder
(``JIEJING_WEB_VENDOR``, by default ``vendor/web/dist``) served under
``/vendor/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aiohttp import web
from prometheus_client import ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from core.calls.metrics import CallMetrics
from core.calls.views import SERVICE
from core.http.replies import error_reply, json_reply
from core.http.routes import PUBLIC, RouteTable
from core.seats.views import SEATS, WALLBOARD
from core.web.metrics import FunctionCollector, metrics_response, registry_of

CALL_METRICS = web.AppKey("call_metrics", CallMetrics)
METRICS = web.AppKey("metrics_registry", CollectorRegistry)
VENDOR = web.AppKey("web_vendor", Path)

STATIC = Path(__file__).with_name("static")
# path: (file, summary)
PAGES = {
    "/": ("index.html", "The operations start page (log-in)"),
    "/wallboard": ("wallboard.html", "The wallboard page"),
    "/heatmap": ("heatmap.html", "The heat map page"),
    "/situation": ("situation.html", "The situation page: today against the hot-spot forecast, hot cells over "
                   "officer coverage, anomalies and surges, the printable daily report"),
    "/desk": ("desk.html", "The call-taker's desk"),
    "/supervisor": ("supervisor.html", "The supervisor's page: satisfaction, spot checks, follow-ups, journal"),
    "/phone": ("phone.html", "The browser seat's phone on its own (WebRTC; a call-taker logs in)"),
    "/admin": ("admin.html", "The admins' page: users, passwords, roles"),
    "/officer": ("officer.html", "The officer's phone page: duty, position, the incident he is sent to"),
}
# Browser libraries the set-up installs (vendor/web/package.json): file served → what it is.
VENDOR_FILES = {"jssip.min.js": "JsSIP, SIP over WebSocket for the browser seat"}
_TYPES = {".html": "text/html", ".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml"}

routes = RouteTable("operations")


# -- pages, spec, metrics ------------------------------------------------------------------


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / PAGES[request.path][0], headers={"Cache-Control": "no-cache"})


@routes.get("/static/{name}", PUBLIC, "Scripts and styles of the pages", tag="pages", content="text/plain")
async def static_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    # Only files that exist directly in the folder: no paths, no dot files.
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
        return error_reply(404, "no such file", error_id="unknown-file")
    return web.FileResponse(path, headers={"Content-Type": _TYPES[path.suffix], "Cache-Control": "no-cache"})


@routes.get("/vendor/{name}", PUBLIC, "Browser libraries installed by the set-up (jssip.min.js)", tag="pages",
            content="application/javascript")
async def vendor_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in VENDOR_FILES:
        return error_reply(404, "no such file", error_id="unknown-file")
    path = request.app[VENDOR] / name
    if not path.is_file():
        return error_reply(404, f"{name} is not installed: run the set-up (sip-lab/bootstrap.sh installs the "
                                "browser libraries from the npm registry into vendor/web), or point "
                                "JIEJING_WEB_VENDOR at the folder that holds it",
                           error_id="web-vendor-missing", details={"file": name})
    return web.FileResponse(path, headers={"Content-Type": _TYPES[path.suffix], "Cache-Control": "no-cache"})


@routes.get("/api/openapi.json", PUBLIC, "This specification")
async def openapi_json(request: web.Request) -> web.Response:
    from core.web.openapi import build_spec

    return json_reply(build_spec(request.app))


@routes.get("/metrics", PUBLIC, "Prometheus metrics", content="text/plain")
async def metrics_text(request: web.Request) -> web.Response:
    return metrics_response(request.app[METRICS])


def _gauges(app: web.Application) -> Iterable[Metric]:
    waiting, longest = app[WALLBOARD].waiting_figures()
    yield GaugeMetricFamily("jiejing_queue_calls_waiting", "Calls received and not yet answered.", value=waiting)
    yield GaugeMetricFamily("jiejing_queue_longest_wait_seconds", "How long the longest-waiting call has waited.",
                            value=round(longest, 3))
    seats = GaugeMetricFamily("jiejing_seats", "Seats by state.", labels=["state"])
    for state, count in app[SEATS].by_state().items():
        seats.add_metric([state], count)
    yield seats


def _build_info() -> Iterable[Metric]:
    info = GaugeMetricFamily("jiejing_build_info", "The release running (always 1).", labels=["version"])
    info.add_metric([release()], 1)
    yield info


def release() -> str:
    try:
        return version("jiejing")
    except PackageNotFoundError:
        return "unknown"


for _path, (_file, _summary) in PAGES.items():
    routes.get(_path, PUBLIC, _summary, tag="pages", content="text/html")(page)


# -- registration --------------------------------------------------------------------------


def add_ops_routes(app: web.Application, *, metrics: Iterable[Collector] = (),
                   vendor: str | Path | None = None) -> None:
    """The pages, the spec and /metrics (calls counted from ticket steps, plus ``metrics`` from elsewhere).

    ``vendor`` is the folder of the browser libraries served under ``/vendor/`` (default: ``vendor/web/dist``).
    """
    service = app[SERVICE]
    app[VENDOR] = Path(vendor) if vendor else Path("vendor", "web", "dist").absolute()
    calls = CallMetrics()
    app[CALL_METRICS] = calls
    app[METRICS] = registry_of([calls, FunctionCollector("queue", lambda: _gauges(app)),
                                FunctionCollector("build", _build_info),
                                ProcessCollector(namespace="jiejing", registry=None), *metrics])

    async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
        remove = service.add_listener(calls.on_step)
        yield
        remove()

    app.cleanup_ctx.append(metrics_ctx)
    routes.add_to(app)
