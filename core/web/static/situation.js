// The situation page: today's forecast hot cells over officer coverage, drawn as the heat map draws its cells
// (H3 polygons projected equirectangularly, ice hatching for cold cells), with the last 28 days against the
// kept forecasts and the tables of the report (GET /api/situation).
"use strict";
(() => {
  const W = 1000, H = 620, PAD = 20, TH = 200;
  const form = document.getElementById("query");
  const map = document.getElementById("map");
  const trend = document.getElementById("trend");
  let mine = null;  // a station user's station

  const colour = jj.heat, node = jj.svg;
  const projector = (points) => jj.projector(points, W, H, PAD);

  function drawMap(data) {
    map.replaceChildren();
    const points = data.cells.flatMap((c) => c.boundary).concat(data.officers.map((o) => [o.lat, o.lon]));
    if (!points.length) return;
    const project = projector(points);
    const top = Math.max(...data.cells.map((c) => c.expected), 0);
    const defs = node("defs", {});
    const hatch = node("pattern", { id: "ice-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
    hatch.append(node("rect", { width: 6, height: 6, fill: "rgba(127,211,255,0.12)" }), node("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "rgba(127,211,255,0.55)", "stroke-width": 2 }));
    defs.append(hatch);
    const cells = node("g", { id: "cells" }), ice = node("g", { id: "ice" }), hot = node("g", { id: "hot" }), officers = node("g", { id: "officers" });
    for (const cell of data.cells) {
      const d = cell.boundary.map(project).map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
      const poly = node("polygon", { points: d, fill: colour(cell.expected, top), stroke: "#0b1219", "stroke-width": 1,
                                     class: "cell", "data-cell": cell.cell, "data-expected": cell.expected, "data-today": cell.today });
      poly.append(node("title", {}, cell.cell + " (" + (cell.station || "-") + "): 预计 " + cell.expected.toFixed(2) +
        " 起，今日 " + cell.today + " 起，第 " + cell.rank + " 位" + (cell.nearest_available_km === null ? "，无可用警力" : "，最近可用警力 " + cell.nearest_available_km + " km")));
      cells.append(poly);
      if (cell.cold) ice.append(node("polygon", { points: d, fill: "url(#ice-hatch)", stroke: "#7fd3ff", "stroke-width": 1.5, class: "ice" }));
      if (cell.hot) hot.append(node("polygon", { points: d, fill: "none", stroke: "#ff3b5c", "stroke-width": 3.5, class: "hot", "data-cell": cell.cell }));
    }
    for (const o of data.officers) {
      const [x, y] = project([o.lat, o.lon]);
      const dot = node("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 6, class: "officer", fill: o.status === "available" ? "#3ecf8e" : "#f5b841", stroke: "#0b1219", "stroke-width": 1.5 });
      dot.append(node("title", {}, o.badge + " " + o.name + " (" + o.station + ", " + o.status + ")"));
      officers.append(dot);
    }
    map.append(defs, cells, ice, hot, officers);
  }

  function drawTrend(data) {
    trend.replaceChildren();
    const days = data.trend.days, series = data.trend.series.all;
    const values = series.actual.concat(series.sepp.filter((v) => v !== null), series.kde.filter((v) => v !== null));
    const top = Math.max(1, ...values), left = 40, bottom = 24, topPad = 14;
    const step = (W - left - 10) / Math.max(days.length, 1);
    const y = (v) => topPad + (TH - bottom - topPad) * (1 - v / top);
    for (let k = 0; k <= 4; k++) {
      const v = top * k / 4;
      trend.append(node("line", { x1: left, x2: W - 10, y1: y(v), y2: y(v), stroke: "#27384a" }),
                   node("text", { x: left - 6, y: y(v) + 4, fill: "#93a4b8", "font-size": 11, "text-anchor": "end" }, v.toFixed(0)));
    }
    series.actual.forEach((v, i) => {
      const bar = node("rect", { x: left + i * step + step * 0.15, y: y(v), width: step * 0.7, height: TH - bottom - y(v), fill: "#6c8ebf", class: "actual" });
      bar.append(node("title", {}, days[i] + ": " + v + " 起"));
      trend.append(bar);
    });
    for (const [model, colourOf, dash] of [["sepp", "#ff3b5c", ""], ["kde", "#93a4b8", "5 4"]]) {
      const pts = series[model].map((v, i) => v === null ? null : (left + (i + 0.5) * step).toFixed(1) + "," + y(v).toFixed(1)).filter((p) => p);
      if (pts.length > 1) trend.append(node("polyline", { points: pts.join(" "), fill: "none", stroke: colourOf, "stroke-width": 2, "stroke-dasharray": dash, class: model }));
    }
    days.forEach((d, i) => { if (i % 7 === 0 || i === days.length - 1) trend.append(node("text", { x: left + (i + 0.5) * step, y: TH - 6, fill: "#93a4b8", "font-size": 11, "text-anchor": "middle" }, d.slice(5))); });
  }

  function table(id, head, rows, classOf) {
    const t = document.getElementById(id);
    t.replaceChildren(jj.el("tr", {}));
    head.forEach((h) => t.firstChild.append(jj.el("th", typeof h === "object" ? { class: "num" } : {}, typeof h === "object" ? h.num : h)));
    if (!rows.length) { const tr = jj.el("tr", {}); tr.append(jj.el("td", { colspan: head.length }, "无 none")); t.append(tr); return; }
    rows.forEach((row, k) => {
      const tr = jj.el("tr", classOf ? { class: classOf(k) } : {});
      row.forEach((v, i) => tr.append(jj.el("td", typeof head[i] === "object" ? { class: "num" } : {}, String(v))));
      t.append(tr);
    });
  }

  function params() {
    const p = new URLSearchParams();
    const station = mine || form.station.value;
    if (station) p.set("station", station);
    p.set("cold_km", form.cold_km.value || "3");
    return p;
  }

  // Only the latest request draws: an earlier one answered late (the first load, then a new query at once)
  // must not put its map over the newer one.
  let asked = 0;
  async function refresh() {
    const summary = document.getElementById("summary");
    const turn = ++asked;
    map.removeAttribute("data-ready");
    try {
      const data = await jj.api("/api/situation?" + params());
      if (turn !== asked) return;
      // The first forecast after a start takes a little while: ask again until it is there.
      if (!data.ready) { summary.textContent = data.message; setTimeout(refresh, 5000); return; }
      if (!mine) {
        const chosen = form.station.value;
        const names = data.station ? [...form.station.options].map((o) => o.value).filter((v) => v) : data.stations.map((s) => s.station);
        form.station.replaceChildren(jj.el("option", { value: "" }, "全市 City"), ...names.map((s) => jj.el("option", { value: s }, s)));
        form.station.value = chosen;
      }
      drawMap(data);
      drawTrend(data);
      const all = data.types[0];
      summary.textContent = data.day + " · 今日 " + all.today + " 起 / 预计至此 " + all.expected_by_now + " · 全天预计 " + all.expected_day +
        " · " + data.hot_cells + " 个热点 hot cells, " + data.hot_and_cold + " 个无警力 uncovered · " + data.anomalies.length + " 项异常 anomalies";
      table("types", ["类型 type", { num: "今日 today" }, { num: "预计至此 by now" }, { num: "全天 day" }],
            data.types.map((t) => [t.type, t.today, t.expected_by_now, t.expected_day]),
            (k) => data.types[k].today > 2 * data.types[k].expected_by_now + 2 ? "above" : "");
      table("stations", ["派出所", { num: "今日" }, { num: "预计至此" }, { num: "全天" }],
            data.stations.map((s) => [s.station, s.today, s.expected_by_now, s.expected_day]));
      table("anomalies", ["地点 place", "类型", { num: "今日" }, { num: "预计" }, { num: "p" }, "告警 surge"],
            data.anomalies.map((a) => [a.place, a.type, a.today, a.expected_by_now, a.p.toPrecision(2), a.surge || "-"]), () => "above");
      table("surges", ["地点 place", "状态", { num: "全天预计" }, "热点 hot"],
            data.surges.map((s) => [s.ref, s.open ? "进行中 open" : "已结束 ended", s.expected_day, s.forecast_hot === null ? "-" : (s.forecast_hot ? "是 yes" : "否 no")]));
      const track = [];
      for (const [model, rows] of Object.entries(data.track.models || {})) for (const t of rows) track.push([model, (t.share * 100).toFixed(0) + "%", t.pai, t.pei_star]);
      table("track", ["模型 model", "面积 area", { num: "PAI" }, { num: "PEI*" }], track);
      map.setAttribute("data-ready", "1");
    } catch (err) {
      summary.textContent = "错误 error: " + err.message;
    }
  }

  // The printable report: fetched with the log-in's token, opened in a window of its own to print.
  document.getElementById("print").addEventListener("click", async () => {
    const resp = await fetch("/api/situation/report?" + params(), { headers: { "Authorization": "Bearer " + jj.token() } });
    const html = await resp.text();
    const win = window.open("", "_blank");
    if (!win) return;
    win.document.open();
    win.document.write(html);
    win.document.close();
    win.focus();
  });

  form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  jj.whenLoggedIn((me) => {
    if (me.role === "station") {
      mine = me.station;
      form.station.replaceChildren(jj.el("option", { value: me.station }, me.station));
      form.station.disabled = true;
    }
    refresh();
  });
})();
