// The heat map: H3 cells as SVG polygons from our own data; no tile server.
// Lat/lon are projected equirectangularly around the map's centre, which is
// exact enough over a city.
"use strict";
(() => {
  const W = 1000, H = 700, PAD = 20;
  const form = document.getElementById("query");
  const map = document.getElementById("map");

  const colour = jj.heat, node = jj.svg;
  const projector = (points) => jj.projector(points, W, H, PAD);

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
      // Cold only because officers were mobilised away as support: what the mobilisation costs the city.
      if (cell.left_by_support) ice.append(node("polygon", { points: d, fill: "none", stroke: "#ff4d6d", "stroke-width": 2.5,
                                                         "stroke-dasharray": "6 3", class: "left-by-support", "data-cell": cell.cell }));
    }
    for (const officer of data.officers) {
      const [x, y] = project([officer.lat, officer.lon]);
      const dot = node("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 6, class: "officer", "data-badge": officer.badge,
                                   fill: officer.mobilised ? "#c77dff" : officer.status === "available" ? "#3ecf8e" : "#f5b841",
                                   stroke: "#0b1219", "stroke-width": 1.5 });
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
      summary.textContent = data.incidents + " 起警情 incidents · " + data.officers.length + " 名在岗警员 officers on duty · " + data.cold_cells + " 个冰区 cold cells" +
        (data.mobilised.length ? " · " + data.mobilised.length + " 名增援调出 mobilised, " + data.left_by_support + " 个因此变冷 left cold" : "");
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

  // Support for a major incident: the picks, then each one's ladder as it is rung, until every one has ended.
  const mobilise = document.getElementById("mobilise");
  const support = document.getElementById("support");
  const STATES = { picked: "已选 picked", ringing: "呼叫中 ringing", on_the_way: "已出发 on the way",
                   escalated: "转值班台 escalated", unanswered: "无人应答 unanswered", stood_down: "已解除 stood down" };
  const TIERS = { named: "指定 named", station: "本所 station", neighbour: "邻所 neighbour", county: "分局 county" };
  let watching = null;

  function units(text) {
    return text.split(/[,，\s]+/).filter(Boolean).map((part) => {
      const [station, n] = part.split(/[:：]/);
      return { station, officers: Number(n || 1) };
    });
  }

  async function watch(number) {
    const answer = await jj.request("GET", "/api/tickets/" + encodeURIComponent(number) + "/mobilisation");
    if (!answer.ok) return;
    const rows = answer.body.picks.map((p) => jj.el("tr", { "data-badge": p.badge, "data-state": p.state,
      title: p.name + " · " + (p.distance_m / 1000).toFixed(2) + " km · ETA " + Math.round(p.eta_s / 60) + " min" }));
    answer.body.picks.forEach((p, i) => rows[i].append(
      jj.el("td", {}, p.badge), jj.el("td", {}, p.station + " · " + (TIERS[p.tier] || p.tier)),
      jj.el("td", { class: "state" }, STATES[p.state] || p.state)));
    support.tBodies[0].replaceChildren(...rows);
    support.hidden = false;
    const c = answer.body.counts;
    const last = answer.body.requests[answer.body.requests.length - 1] || {};
    const short = (last.short || 0) + Object.values(last.units_short || {}).reduce((a, b) => a + b, 0);
    const status = document.getElementById("mobilised");
    status.textContent = number + " · " + (c.on_the_way || 0) + " 出发 on the way · " + (c.escalated || 0) +
      " 转值班台 escalated · " + (c.unanswered || 0) + " 无应答 unanswered · " + (c.ringing || 0) + " 呼叫中 ringing" +
      (short ? " · 缺 " + short + " 名 short" : "") + (answer.body.running ? "" : " · 完成 done");
    status.dataset.done = answer.body.running ? "" : "1";
    clearTimeout(watching);
    if (answer.body.running) watching = setTimeout(() => watch(number), 1000);
    else refresh();  // the coverage the mobilised officers left behind
  }

  mobilise.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { officers: Number(mobilise.officers.value || 0) };
    if (mobilise.units.value.trim()) body.units = units(mobilise.units.value);
    const number = mobilise.number.value.trim();
    const status = document.getElementById("mobilised");
    status.dataset.done = "";
    const answer = await jj.request("POST", "/api/tickets/" + encodeURIComponent(number) + "/mobilise", body);
    if (!answer.ok) { status.textContent = "错误 error: " + (answer.body.error || answer.status); return; }
    const short = answer.body.short + Object.values(answer.body.units_short).reduce((a, b) => a + b, 0);
    status.textContent = answer.body.picks.length + " 名已调集 picked" + (short ? " · 缺 " + short + " 名 short" : "");
    watch(number);
  });

  // A declared major incident's ticket is the one to mobilise for, unless the supervisor types another.
  async function majorTicket() {
    const answer = await jj.request("GET", "/api/major-incident");
    const current = answer.ok && answer.body.current;
    if (current && current.ticket && !mobilise.number.value) mobilise.number.value = current.ticket;
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  jj.whenLoggedIn((me) => {
    entry.hidden = !["station", "supervisor", "admin"].includes(me.role);
    mobilise.hidden = !["supervisor", "admin"].includes(me.role);
    if (!mobilise.hidden) majorTicket();
    refresh();
  });
})();
