"""The printable daily situation report: one HTML page with its charts as inline SVG, no script, no fetches.

Made from the same report the page shows (``core.situation.report``), so what is printed is what was on
screen. A4 portrait when printed (``@page``); every chart is drawn here from the figures, so the file can be
mailed or archived alone.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

__all__ = ["daily_report_html"]

W, H = 640, 200


def _bar_chart(days: list[str], series: dict[str, list], title: str) -> str:
    actual = series.get("actual", [])
    lines = {m: series.get(m, []) for m in ("sepp", "kde")}
    top = max([1.0, *actual, *(v for vs in lines.values() for v in vs if v is not None)])
    pad_l, pad_b, pad_t = 36, 22, 18
    inner_w, inner_h = W - pad_l - 8, H - pad_b - pad_t
    step = inner_w / max(len(days), 1)

    def y(v: float) -> float:
        return pad_t + inner_h * (1 - v / top)

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for k in range(5):
        v = top * k / 4
        parts.append(f'<line x1="{pad_l}" x2="{W - 8}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                     f'<text x="{pad_l - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">{v:.0f}</text>')
    for i, v in enumerate(actual):
        x = pad_l + i * step + step * 0.15
        parts.append(f'<rect class="actual" x="{x:.1f}" y="{y(v):.1f}" width="{step * 0.7:.1f}" '
                     f'height="{pad_t + inner_h - y(v):.1f}" fill="#6c8ebf"><title>{escape(days[i])}: {v}</title></rect>')
    for model, colour, dash in (("sepp", "#c1121f", ""), ("kde", "#333", ' stroke-dasharray="4 3"')):
        points = [f"{pad_l + (i + 0.5) * step:.1f},{y(v):.1f}" for i, v in enumerate(lines[model]) if v is not None]
        if len(points) > 1:
            parts.append(f'<polyline class="{model}" points="{" ".join(points)}" fill="none" stroke="{colour}" '
                         f'stroke-width="2"{dash}/>')
    for i, d in enumerate(days):
        if i % 7 == 0 or i == len(days) - 1:
            parts.append(f'<text x="{pad_l + (i + 0.5) * step:.1f}" y="{H - 6}" text-anchor="middle" '
                         f'font-size="10">{escape(d[5:])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _colour(value: float, top: float) -> str:
    if value <= 0 or top <= 0:
        return "#f4f6f8"
    t = min(1.0, math.log1p(value) / math.log1p(top))
    stops = [(255, 243, 176), (255, 140, 26), (193, 18, 31)]
    a, b, u = (stops[0], stops[1], t * 2) if t < 0.5 else (stops[1], stops[2], (t - 0.5) * 2)
    return "rgb({},{},{})".format(*(round(a[i] + (b[i] - a[i]) * u) for i in range(3)))


def _map(cells: list[dict[str, Any]], officers: list[dict[str, Any]]) -> str:
    """The forecast over coverage: cells by expected incidents, hot cells outlined, cold cells hatched."""
    mw, mh, pad = 640, 460, 12
    points = [p for c in cells for p in c["boundary"]]
    if not points:
        return "<p>无数据 No cells.</p>"
    lat0 = (min(p[0] for p in points) + max(p[0] for p in points)) / 2
    k = math.cos(math.radians(lat0))
    xs = [p[1] * k for p in points]
    ys = [p[0] for p in points]
    scale = min((mw - 2 * pad) / max(max(xs) - min(xs), 1e-9), (mh - 2 * pad) / max(max(ys) - min(ys), 1e-9))
    off_x = (mw - (max(xs) - min(xs)) * scale) / 2
    off_y = (mh - (max(ys) - min(ys)) * scale) / 2

    def project(lat: float, lon: float) -> str:
        return f"{off_x + (lon * k - min(xs)) * scale:.1f},{off_y + (max(ys) - lat) * scale:.1f}"

    top = max((c["expected"] for c in cells), default=0.0)
    parts = [f'<svg class="map" viewBox="0 0 {mw} {mh}" width="{mw}" height="{mh}" role="img" aria-label="hot cells">'
             '<defs><pattern id="ice" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" stroke="#3b8fc4" stroke-width="1.5"/>'
             '</pattern></defs>']
    for c in cells:
        d = " ".join(project(lat, lon) for lat, lon in c["boundary"])
        parts.append(f'<polygon class="cell" points="{d}" fill="{_colour(c["expected"], top)}" stroke="#9aa5b1" '
                     f'stroke-width="0.6"><title>{escape(c["cell"])}: {c["expected"]:.2f} expected, '
                     f'{c["today"]} today</title></polygon>')
    for c in cells:
        d = " ".join(project(lat, lon) for lat, lon in c["boundary"])
        if c["cold"]:
            parts.append(f'<polygon class="ice" points="{d}" fill="url(#ice)" stroke="none"/>')
        if c["hot"]:
            parts.append(f'<polygon class="hot" points="{d}" fill="none" stroke="#7a0010" stroke-width="2.5"/>')
    for o in officers:
        x, y = project(o["lat"], o["lon"]).split(",")
        fill = "#2e9e6a" if o["status"] == "available" else "#d99a1e"
        parts.append(f'<circle class="officer" cx="{x}" cy="{y}" r="4" fill="{fill}" stroke="#222"/>')
    parts.append("</svg>")
    return "".join(parts)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p>无 None.</p>"
    out = ["<table><thead><tr>", *(f"<th>{escape(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def daily_report_html(report: dict[str, Any]) -> str:
    scope = report.get("station") or "全市 city bureau"
    if not report.get("ready"):
        body = f"<p>{escape(report.get('message', 'no forecast yet'))}</p>"
        return _page(f"警情态势日报 Situation report · {scope}", body)
    sections = []
    total = report["types"][0]
    sections.append(
        f'<p class="lead">{escape(report["day"])} · 截至 as of {escape(report["now"])} · 今日警情 incidents today '
        f'<b>{total["today"]}</b> / 预计至此 expected by now {total["expected_by_now"]} · 全天预计 expected today '
        f'{total["expected_day"]} · 热点且冰区 hot and uncovered cells <b>{report["hot_and_cold"]}</b></p>')
    sections.append("<h2>分类 By type</h2>" + _table(
        ["type", "today", "expected by now", "expected today (SEPP)", "expected today (KDE)"],
        [[t["type"], t["today"], t["expected_by_now"], t["expected_day"], t["kde_expected_day"]]
         for t in report["types"]]))
    trend = report["trend"]
    sections.append("<h2>近28日走势 Last 28 days against the forecast</h2>"
                    '<p class="legend"><span class="sw bar"></span>incidents '
                    '<span class="sw sepp"></span>self-exciting forecast <span class="sw kde"></span>kernel map</p>'
                    + _bar_chart(trend["days"], trend["series"]["all"], "all incidents"))
    for kind, series in trend["series"].items():
        if kind != "all" and sum(series["actual"]):
            sections.append(f"<h3>{escape(kind)}</h3>" + _bar_chart(trend["days"], series, kind))
    sections.append("<h2>热点与警力覆盖 Forecast hot cells over officer coverage</h2>"
                    f"<p>outlined: the {report['hot_cells']} hottest cells of the city for today; hatched: no "
                    f"available officer within {report['cold_km']:g} km.</p>"
                    + _map(report["cells"], report["officers"]))
    hot = sorted((c for c in report["cells"] if c["hot"]), key=lambda c: c["rank"])
    sections.append(_table(["rank", "cell", "station", "expected", "today", "nearest officer km", "cold"],
                           [[c["rank"], c["cell"], c["station"] or "-", c["expected"], c["today"],
                             c["nearest_available_km"] if c["nearest_available_km"] is not None else "-",
                             "yes" if c["cold"] else ""] for c in hot]))
    if len(report["stations"]) > 1 or not report.get("station"):
        sections.append("<h2>各派出所 Stations</h2>" + _table(
            ["station", "today", "expected by now", "expected today"],
            [[s["station"], s["today"], s["expected_by_now"], s["expected_day"]] for s in report["stations"]]))
    sections.append("<h2>异常 Anomalies (well above expectation)</h2>" + _table(
        ["place", "type", "today", "expected by now", "chance of as many", "surge alert"],
        [[a["place"], a["type"], a["today"], a["expected_by_now"], f"{a['p']:.2g}", a["surge"] or "-"]
         for a in report["anomalies"]]))
    sections.append("<h2>激增告警 Surge alerts today</h2>" + _table(
        ["place", "open", "forecast today", "hot cell", "anomaly", "message"],
        [[s["ref"], "open" if s["open"] else "ended", s["expected_day"],
          {True: "yes", False: "no", None: "-"}[s["forecast_hot"]], "yes" if s["anomaly"] else "", s["message"]]
         for s in report["surges"]]))
    track = report["track"]
    rows = []
    for model, tallies in track.get("models", {}).items():
        for t in tallies:
            rows.append([model, f"{t['share']:.0%}", f"{t['area_share']:.1%}", t["pai"], t["pei_star"],
                         t["hits"], t["incidents"]])
    sections.append(f"<h2>预测命中 How the last {track.get('days', 0)} days' forecasts did</h2>"
                    + _table(["model", "area", "actual area", "PAI", "PEI*", "hits", "incidents"], rows))
    sepp = report["params"]["sepp"].get("", {})
    sections.append(f'<p class="small">Self-exciting model (all incidents): μ {sepp.get("mu_per_day")} a day, '
                    f'θ {sepp.get("theta")}, near-repeats on average {sepp.get("mean_delay_h")} h later and '
                    f'σ {sepp.get("sigma_m")} m away; made {escape(report["made_at"])} from {report["events"]} '
                    'incidents.</p>')
    return _page(f"警情态势日报 Situation report · {scope} · {report['day']}", "".join(sections))


def _page(title: str, body: str) -> str:
    return ("<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1>{body}</body></html>")


_CSS = """
@page { size: A4 portrait; margin: 14mm; }
body { font: 13px/1.45 "Noto Sans CJK SC", "PingFang SC", sans-serif; color: #111; max-width: 680px; margin: 16px auto; }
h1 { font-size: 20px; border-bottom: 2px solid #7a0010; padding-bottom: 4px; }
h2 { font-size: 15px; margin: 18px 0 6px; break-after: avoid; }
h3 { font-size: 13px; margin: 10px 0 2px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; break-inside: avoid; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; font-size: 12px; }
th { background: #f0f2f5; }
svg { display: block; break-inside: avoid; }
.lead { font-size: 14px; }
.small { color: #555; font-size: 11px; }
.legend .sw { display: inline-block; width: 14px; height: 8px; margin: 0 4px 0 10px; vertical-align: middle; }
.legend .bar { background: #6c8ebf; } .legend .sepp { background: #c1121f; } .legend .kde { border-top: 2px dashed #333; }
"""
