// The supervisor's staffing panel: seats per half hour for the coming days (GET /api/staffing/plan),
// drawn as SVG: the suggested seats (Erlang C, the center's 95 % within 3 s), Erlang A's for the same target,
// NENA's target (90 % within 15 s), and the seats that answered calls in the same half hour in history.
"use strict";
const staffing = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const pad = (n) => String(n).padStart(2, "0");
  const pct = (v) => v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%";
  const node = (tag, attrs = {}, text) => {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const SERIES = [
    { key: "seen", label: "历史在岗 seats seen (history)", color: "#5d6b7a", get: (r) => r.seats_seen },
    { key: "nena", label: "NENA 90% ≤15 s (Erlang C)", color: "#7fd3ff", get: (r) => r.nena_erlang_c.seats, dash: "2 3" },
    { key: "erlang_a", label: "95% ≤3 s Erlang A", color: "#f5b841", get: (r) => r.center_erlang_a ? r.center_erlang_a.seats : null, dash: "6 4" },
    { key: "suggested", label: "建议 suggested: 95% ≤3 s Erlang C", color: "#3ecf8e", get: (r) => r.suggested_seats, width: 2.5 },
  ];

  function localTime(us) {
    const d = new Date(us / 1000);
    return { day: (d.getMonth() + 1) + "/" + d.getDate(), hm: pad(d.getHours()) + ":" + pad(d.getMinutes()), d };
  }

  function draw(plan) {
    const rows = plan.half_hours;
    const svg = $("staffing-chart");
    const W = 1100, H = 300, L = 44, R = 52, T = 26, B = 30;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.replaceChildren();
    const n = rows.length;
    const top = Math.max(1, ...rows.map((r) => Math.max(r.suggested_seats, r.seats_seen || 0, r.nena_erlang_c.seats)));
    const ymax = Math.ceil(top * 1.1);
    const cmax = Math.max(1, ...rows.map((r) => r.calls)) * 1.1;
    const x = (i) => L + (W - L - R) * i / n;
    const y = (v) => H - B - (H - T - B) * v / ymax;
    const yc = (v) => H - B - (H - T - B) * v / cmax;
    // grid and axes: seats on the left, forecast calls per half hour on the right
    for (let k = 0; k <= 4; k++) {
      const v = Math.round(ymax * k / 4);
      svg.append(node("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#2a3846" }));
      svg.append(node("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", fill: "#93a4b8", "font-size": 11 }, String(v)));
      svg.append(node("text", { x: W - R + 6, y: yc(cmax * k / 4) + 4, fill: "#6f8194", "font-size": 11 },
        String(Math.round(cmax * k / 4))));
    }
    svg.append(node("text", { x: 4, y: 12, fill: "#93a4b8", "font-size": 11 }, "座席 seats"));
    svg.append(node("text", { x: W - 4, y: 12, fill: "#6f8194", "font-size": 11, "text-anchor": "end" }, "来电 calls/30 min"));
    // day boundaries (center time as the browser shows it)
    rows.forEach((r, i) => {
      const t = localTime(r.start_us);
      if (t.hm === "00:00" || i === 0) {
        svg.append(node("line", { x1: x(i), x2: x(i), y1: T, y2: H - B, stroke: "#2a3846" }));
        svg.append(node("text", { x: x(i) + 3, y: H - B + 16, fill: "#93a4b8", "font-size": 11 }, t.day));
      }
    });
    // forecast calls: a faint line on the right axis
    let calls = "";
    rows.forEach((r, i) => { calls += (calls ? " L " : "M ") + (x(i) + x(i + 1)) / 2 + " " + yc(r.calls); });
    svg.append(node("path", { d: calls, fill: "none", stroke: "#c9d6e3", "stroke-width": 1, opacity: 0.35, class: "calls" }));
    // seat series as steps
    for (const s of SERIES) {
      let d = "";
      rows.forEach((r, i) => {
        const v = s.get(r);
        if (v === null || v === undefined) return;
        d += (d ? " L " : "M ") + x(i) + " " + y(v) + " L " + x(i + 1) + " " + y(v);
      });
      if (!d) continue;
      const attrs = { d, fill: "none", stroke: s.color, "stroke-width": s.width || 1.5, class: "series-" + s.key };
      if (s.dash) attrs["stroke-dasharray"] = s.dash;
      svg.append(node("path", attrs));
    }
    // one hover strip per half hour with its figures
    rows.forEach((r, i) => {
      const t = localTime(r.start_us);
      const a = r.center_erlang_a;
      const tip = `${t.day} ${t.hm}  来电 calls ${r.calls}  (${r.erlangs} Erl)\n` +
        `建议 suggested ${r.suggested_seats}: SL ${pct(r.center_erlang_c.service_level)}, occupancy ${pct(r.center_erlang_c.occupancy)}\n` +
        (a ? `Erlang A ${a.seats}: SL ${pct(a.service_level)}, abandon ${pct(a.abandonment)}\n` : "") +
        `NENA ${r.nena_erlang_c.seats}: SL ${pct(r.nena_erlang_c.service_level)}\n` +
        `历史在岗 seen ${r.seats_seen === null ? "–" : r.seats_seen}`;
      const strip = node("rect", { x: x(i), y: T, width: Math.max(1, x(i + 1) - x(i)), height: H - T - B,
        fill: "transparent", "data-index": String(i) });
      strip.append(node("title", {}, tip));
      svg.append(strip);
    });
    const legend = $("staffing-legend");
    legend.replaceChildren(...SERIES.map((s) => {
      const item = jj.el("span", { class: "legend-item" });
      const swatch = jj.el("span", { class: "swatch", style: `background:${s.color}` });
      item.append(swatch, document.createTextNode(" " + s.label));
      return item;
    }), jj.el("span", { class: "legend-item" }, "— 预测来电 forecast calls (faint, right axis)"));
  }

  function summarise(plan) {
    const rows = plan.half_hours;
    const f = plan.forecast, a = plan.assumptions, h = plan.history;
    const peak = rows.reduce((m, r) => Math.max(m, r.suggested_seats), 0);
    const seatHours = rows.reduce((s, r) => s + r.suggested_seats / 2, 0);
    const seenHours = rows.reduce((s, r) => s + (r.seats_seen || 0) / 2, 0);
    const short = rows.filter((r) => r.seats_seen !== null && r.seats_seen < r.suggested_seats).length;
    $("staffing-peak").textContent = String(peak);
    $("staffing-hours").textContent = Math.round(seatHours) + " / " + Math.round(seenHours);
    $("staffing-short").textContent = short + " / " + rows.length;
    const hold = f.holdout && f.holdout.mae_holt_winters !== undefined
      ? `留出周 held-out week MAE: Holt-Winters ${f.holdout.mae_holt_winters}, seasonal-naive ${f.holdout.mae_seasonal_naive} calls/30 min (mean ${f.holdout.mean_calls}). `
      : "";
    $("staffing-note").textContent =
      `预测 forecast: ${f.method} — ${f.reason}. ${hold}` +
      `历史 history: ${h.calls} calls, ${h.half_hours / 48} days, abandoned ${pct(h.abandonment)}. ` +
      `处理时长 handling ${a.handle_s} s (ring + talk + wrap-up ${h.wrap_up_s} s), answer delay ${a.answer_delay_s} s, ` +
      `patience ${a.patience_s === null ? "– (no abandoned calls: Erlang C only)" : a.patience_s + " s"}. ` +
      `${a.roster}.`;
  }

  async function load() {
    const status = $("staffing-status");
    const days = $("staffing-days").value;
    status.textContent = "计算中 planning…";
    try {
      const plan = await jj.api(`/api/staffing/plan?days=${days}`);
      draw(plan);
      summarise(plan);
      status.textContent = "";
      document.body.dataset.staffing = String(plan.half_hours.length);
    } catch (err) {
      $("staffing-chart").replaceChildren();
      status.textContent = "无法排班 no plan: " + err.message;
      document.body.dataset.staffing = "error";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const select = $("staffing-days");
    if (select) select.addEventListener("change", load);
  });
  return { load };
})();
