// The reporter's status page (/s/<token>): the ticket's phase, and the officers' distance and expected arrival,
// pushed over a WebSocket on every change; read once over HTTP first. No log-in: the link's token is all.
"use strict";
(() => {
  const token = location.pathname.split("/").pop();
  const $ = (id) => document.getElementById(id);
  const stats = { updates: 0, lastAt: null };
  window.reporterStats = stats;

  function distance(m) { return m >= 1000 ? (m / 1000).toFixed(1) + " 公里" : Math.round(m) + " 米"; }
  function minutes(s) { return s < 60 ? "不到 1 分钟" : "约 " + Math.round(s / 60) + " 分钟"; }

  function show(status) {
    stats.updates += 1;
    stats.lastAt = Date.now();
    document.body.dataset.phase = status.phase;
    if (status.phase === "ended" || status.error_id === "link-ended") {
      $("message").textContent = "警情已处置完毕，此链接已失效";
      $("officers-panel").hidden = true;
      return;
    }
    if (status.error_id) { $("message").textContent = "链接无效或已过期"; return; }
    $("number").textContent = status.number;
    $("message").textContent = status.message;
    $("message").className = "big" + (status.phase === "arrived" ? " good" : "");
    $("updated").textContent = "更新于 " + new Date(status.updated_at).toLocaleTimeString("zh-CN");
    const box = $("officers");
    box.replaceChildren();
    for (const o of status.officers) {
      const div = document.createElement("div");
      div.className = "officer";
      div.dataset.badge = o.badge;
      const who = document.createElement("div");
      who.className = "dim";
      who.textContent = o.unit + " · 警号 " + o.badge;
      div.append(who);
      const line = document.createElement("div");
      line.className = "meter";
      if (o.arrived) { line.textContent = "已到达"; line.classList.add("good"); }
      else if (o.distance_m !== null) {
        line.innerHTML = "";
        const d = document.createElement("span"); d.className = "distance"; d.textContent = distance(o.distance_m);
        const e = document.createElement("div"); e.className = "eta dim"; e.textContent = "预计 " + minutes(o.eta_s) + " 到达";
        line.append(d);
        div.append(line, e);
        box.append(div);
        continue;
      } else { line.textContent = "位置更新中"; }
      div.append(line);
      box.append(div);
    }
    $("officers-panel").hidden = status.officers.length === 0;
  }

  async function once() {
    const resp = await fetch("/api/status/" + encodeURIComponent(token), { cache: "no-store" });
    const body = await resp.json().catch(() => ({}));
    show(resp.ok ? body : Object.assign({ phase: resp.status === 410 ? "ended" : "error" }, body));
    return resp.ok;
  }

  let wait = 1000;
  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/api/status/" + encodeURIComponent(token) + "/ws");
    ws.onopen = () => { $("live").textContent = "实时"; $("live").className = "status live"; wait = 1000; };
    ws.onmessage = (event) => {
      const status = JSON.parse(event.data);
      show(status);
      if (status.phase === "ended") ws.close();
    };
    ws.onclose = () => {
      $("live").textContent = "重新连接…"; $("live").className = "status down";
      if (document.body.dataset.phase === "ended") { $("live").textContent = ""; return; }
      setTimeout(() => once().then((ok) => { if (ok) connect(); }).catch(() => setTimeout(connect, wait)), wait);
      wait = Math.min(wait * 2, 15000);
    };
  }

  once().then((ok) => { if (ok) connect(); }).catch(() => { $("message").textContent = "网络不可用，稍后重试"; });
})();
