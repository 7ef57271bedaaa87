// The heat map: H3 cells as SVG polygons from our own data; no tile server.
// Lat/lon are projected equirectangularly around the map's centre, which is
// exact enough over a city.
"use strict";
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 1000, H = 700, PAD = 20;
  const form = document.getElementById("query");
  const map = document.getElementById("map");

  function colour(count, max) {
    if (!count) return "#16212d";
    const t = Math.min(1, Math.log1p(count) / Math.log1p(Math.max(max, 1)));
    const stops = [[255, 243, 176], [255, 140, 26], [193, 18, 31]];
    const [a, b, u] = t < 0.5 ? [stops[0], stops[1], t * 2] : [stops[1], stops[2], (t - 0.5) * 2];
    return "rgb(" + a.map((v, i) => Math.round(v + (b[i] - v) * u)).join(",") + ")";
  }

  function projector(points) {
    const lats = points.map((p) => p[0]), lons = points.map((p) => p[1]);
    const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2;
    const k = Math.cos(lat0 * Math.PI / 180);
    const minX = Math.min(...lons) * k, maxX = Math.max(...lons) * k;
    const minY = Math.min(...lats), maxY = Math.max(...lats);
    const scale = Math.min((W - 2 * PAD) / Math.max(maxX - minX, 1e-6), (H - 2 * PAD) / Math.max(maxY - minY, 1e-6));
    const offX = (W - (maxX - minX) * scale) / 2, offY = (H - (maxY - minY) * scale) / 2;
    return ([lat, lon]) => [offX + (lon * k - minX) * scale, offY + (maxY - lat) * scale];
  }

  function node(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    return n;
  }

  function draw(data) {
    const points = data.cells.flatMap((c) => c.boundary).concat(data.officers.map((o) => [o.lat, o.lon]));
    map.replaceChildren();
    if (!points.length) {
      const text = node("text", { x: W / 2, y: H / 2, fill: "#93a4b8", "text-anchor": "middle" });
      text.textContent = "此时段无数据 No data in this window";
      map.append(text);
      return;
    }
    const project = projector(points);
    const cells = node("g", { id: "cells" }), ice = node("g", { id: "ice" }), officers = node("g", { id: "officers" });
    for (const cell of data.cells) {
      const d = cell.boundary.map(project).map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
      const poly = node("polygon", { points: d, fill: colour(cell.count, data.max_count), stroke: "#0b1219", "stroke-width": 1,
                                     class: "cell" + (cell.cold ? " cold" : ""), "data-cell": cell.cell, "data-count": cell.count });
      const title = node("title", {});
      title.textContent = cell.cell + ": " + cell.count + " 起" + (cell.nearest_available_km === null ? "，无可用警力" : "，最近可用警力 " + cell.nearest_available_km + " km");
      poly.append(title);
      cells.append(poly);
      if (cell.cold) ice.append(node("polygon", { points: d, fill: "url(#ice-hatch)", stroke: "#7fd3ff", "stroke-width": 1.5, class: "ice" }));
    }
    for (const officer of data.officers) {
      const [x, y] = project([officer.lat, officer.lon]);
      const dot = node("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 6, class: "officer", "data-badge": officer.badge,
                                   fill: officer.status === "available" ? "#3ecf8e" : "#f5b841", stroke: "#0b1219", "stroke-width": 1.5 });
      const title = node("title", {});
      title.textContent = officer.badge + " " + officer.name + " (" + officer.station + ", " + officer.status + ")";
      dot.append(title);
      officers.append(dot);
    }
    const defs = node("defs", {});
    const hatch = node("pattern", { id: "ice-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
    hatch.append(node("rect", { width: 6, height: 6, fill: "rgba(127,211,255,0.12)" }), node("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "rgba(127,211,255,0.55)", "stroke-width": 2 }));
    defs.append(hatch);
    map.append(defs, cells, ice, officers);
  }

  const iso = (input) => input.value ? new Date(input.value).toISOString() : "";

  async function refresh() {
    const params = new URLSearchParams();
    if (form.from.value) params.set("from", iso(form.from));
    if (form.to.value) params.set("to", iso(form.to));
    if (form.type.value) params.set("type", form.type.value);
    params.set("cold_km", form.cold_km.value || "3");
    const summary = document.getElementById("summary");
    try {
      const data = await jj.api("/api/heatmap?" + params);
      const chosen = form.type.value;
      form.type.replaceChildren(jj.el("option", { value: "" }, "全部 All"), ...data.types.map((t) => jj.el("option", { value: t }, t)));
      form.type.value = chosen;
      draw(data);
      summary.textContent = data.incidents + " 起警情 incidents · " + data.officers.length + " 名在岗警员 officers on duty · " + data.cold_cells + " 个冰区 cold cells";
      map.setAttribute("data-ready", "1");
    } catch (err) {
      summary.textContent = "错误 error: " + err.message;
    }
  }

  // A station's own incident: one ref per filled-in form, so a second press (or a retry) is the same ticket.
  const entry = document.getElementById("incident");
  const newRef = () => "web-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
  let ref = newRef();
  entry.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { how: entry.how.value, type: entry.incident_type.value, priority: Number(entry.priority.value),
                   address: entry.address.value, text: entry.text.value, ref };
    if (entry.reporter.value) body.reporter = entry.reporter.value;
    if (entry.occurred_at.value) body.occurred_at = iso(entry.occurred_at);
    const status = document.getElementById("entered");
    const answer = await jj.request("POST", "/api/incidents", body);
    if (!answer.ok) {
      const near = (answer.body.details || {}).candidates || [];
      status.textContent = "错误 error: " + (answer.body.error || answer.status) + (near.length ? " · " + near.join(" / ") : "");
      return;
    }
    status.textContent = answer.body.number + " · " + (answer.body.station || "辖区不明 no station") +
      (answer.body.major_incident ? " · 重大警情已报 alert raised" : "");
    entry.reset();
    ref = newRef();
    refresh();
  });

  form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  jj.whenLoggedIn((me) => {
    entry.hidden = !["station", "supervisor", "admin"].includes(me.role);
    refresh();
  });
})();
