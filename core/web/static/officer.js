// The officer's phone page: sign on and off, share the position while on duty, the incident card pushed when
// he is sent (over /api/events, his own tickets only), navigation, arrival (with the position) and clearing.
// A lost connection reconnects and catches up from /api/officers/<badge>.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SEND_EVERY_MS = 5000;   // a fix is sent at most this often, and at least this often while on duty
  const MOVED_M = 15;           // ...or at once when he moved more than this
  const LABELS = { available: "在岗 On duty", off_duty: "下岗 Off duty", ringing: "来电中 Ringing",
                   dispatched: "出警中 Sent", on_scene: "在现场 On scene" };
  const stats = { sent: 0, cards: 0, lastSentAt: null, reconnects: 0 };
  window.officerStats = stats;
  let badge = null, officer = null, fix = null, lastSent = null, watchId = null, ticket = null;
  let incidentAt = null;

  function metres(a, b) {
    const r = 6371000, rad = Math.PI / 180;
    const dLat = (b.lat - a.lat) * rad, dLon = (b.lon - a.lon) * rad;
    const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dLon / 2) ** 2;
    return 2 * r * Math.asin(Math.min(1, Math.sqrt(h)));
  }

  function showOfficer(view) {
    officer = view;
    $("duty-state").textContent = LABELS[view.status] || view.status;
    $("duty-state").className = "big " + (view.status === "off_duty" ? "dim" : "good");
    $("duty-since").textContent = "自 " + new Date(view.status_changed_at_us / 1000).toLocaleTimeString("zh-CN");
    $("station").textContent = view.name + " · " + view.station;
    const onDuty = view.status !== "off_duty";
    $("duty-toggle").textContent = onDuty ? "下岗 Sign off" : "上岗 Sign on";
    $("duty-toggle").disabled = ["ringing", "dispatched", "on_scene"].includes(view.status);
    $("arrived").hidden = view.status === "on_scene";
    $("clear-box").hidden = view.status !== "on_scene";
    if (onDuty) startSharing(); else stopSharing();
  }

  async function refresh() {
    const answer = await jj.request("GET", "/api/officers/" + encodeURIComponent(badge));
    if (!answer.ok) return;
    showOfficer(answer.body);
    if (answer.body.ticket && ["dispatched", "on_scene", "ringing"].includes(answer.body.status)) {
      if (answer.body.ticket !== ticket || $("incident").hidden) await loadBriefing(answer.body.ticket);
    } else if (!answer.body.ticket) {
      ticket = null;
      $("incident").hidden = true;
    }
  }

  async function loadBriefing(number) {
    const answer = await jj.request("GET", "/api/tickets/" + encodeURIComponent(number) + "/briefing");
    if (answer.ok) showIncident(answer.body);
  }

  function list(title, items) {
    if (!items || !items.length) return null;
    const box = document.createElement("div");
    const h = document.createElement("div"); h.className = "dim"; h.textContent = title;
    const ul = document.createElement("ul");
    for (const text of items) { const li = document.createElement("li"); li.textContent = text; ul.append(li); }
    box.append(h, ul);
    return box;
  }

  // A photo or video the center kept is served with the bearer token, which <img src> cannot send.
  const mediaUrls = [];
  async function kept(url) {
    const resp = await fetch(url, { headers: { "Authorization": "Bearer " + jj.token() } });
    if (!resp.ok) throw new Error(resp.statusText);
    const u = URL.createObjectURL(await resp.blob());
    mediaUrls.push(u);
    return u;
  }

  function showIncident(b) {
    ticket = b.number;
    stats.cards += 1;
    $("incident").hidden = false;
    $("i-number").textContent = b.number;
    const c = b.classification;
    $("i-type").textContent = c ? (c.label || c.type) + " · " + (c.priority_label || ("P" + c.priority)) : "未分类 Unclassified";
    const tags = $("i-tags"); tags.replaceChildren();
    for (const k of b.keywords || []) { const t = document.createElement("span"); t.className = "tag kw"; t.textContent = k.word || k; tags.append(t); }
    const caller = b.caller || {};
    if ((caller.earlier_tickets || []).length) {
      const t = document.createElement("span"); t.className = "tag warn";
      t.textContent = "重复报警 Repeat caller ×" + caller.earlier_tickets.length; tags.append(t);
    }
    const loc = b.location;
    incidentAt = loc && loc.lat !== null ? { lat: loc.lat, lon: loc.lon } : null;
    $("i-address").textContent = loc ? (loc.address || (loc.lat.toFixed(5) + ", " + loc.lon.toFixed(5))) : "位置待定 Location pending";
    $("navigate").hidden = !incidentAt;
    if (incidentAt) {
      const name = encodeURIComponent(loc.address || b.number);
      $("navigate").href = "https://uri.amap.com/navigation?to=" + incidentAt.lon + "," + incidentAt.lat + "," + name + "&mode=car&coordinate=wgs84&callnative=1";
    }
    showDistance();
    const warnings = (b.danger_warnings || []).map((w) => "⚠ " + (w.text || w.note || JSON.stringify(w)));
    $("i-warnings").replaceChildren(...[list("危险提示 Danger", warnings)].filter(Boolean));
    $("i-warnings").className = warnings.length ? "bad" : "";
    $("i-text").textContent = b.report_text || "";
    const media = $("i-media"); media.replaceChildren();
    for (const u of mediaUrls.splice(0)) URL.revokeObjectURL(u);
    for (const a of b.attachments || []) {
      if (a.kind === "photo") {
        const img = document.createElement("img"); img.alt = "现场照片"; media.append(img);
        if (a.kept) kept(a.url).then((u) => { img.src = u; }, () => { img.alt = "照片未能加载 Photo not loaded"; });
        else img.src = a.url;
      } else {
        const link = document.createElement("a"); link.href = a.url; link.textContent = "视频 Video"; link.target = "_blank"; media.append(link);
        // A kept video is played in the card, fetched on the tap: a link cannot carry the token either.
        if (a.kept) link.onclick = (event) => {
          event.preventDefault();
          kept(a.url).then((u) => { const v = document.createElement("video"); v.controls = true; v.style.maxWidth = "100%"; v.src = u; link.replaceWith(v); },
                           () => { link.textContent = "视频未能加载 Video not loaded"; });
        };
      }
    }
    const g = b.guidance || {};
    $("i-guidance").replaceChildren(...[list("先控制 Secure", g.secure), list("要问 Ask", g.ask), list("法律要点 Legal", g.legal)].filter(Boolean));
    const here = (b.earlier_incidents_here || []).map((e) => e.located_at.slice(0, 10) + " " + (e.type || "") + " " + (e.address || ""));
    $("i-history").replaceChildren(...[list("此处既往警情 Earlier here", here)].filter(Boolean));
  }

  function showDistance() {
    if (!incidentAt || !fix) { $("i-distance").textContent = ""; return; }
    const m = metres(fix, incidentAt);
    $("i-distance").textContent = "距离 " + (m >= 1000 ? (m / 1000).toFixed(1) + " km" : Math.round(m) + " m");
  }

  // -- position ---------------------------------------------------------------------------
  async function send(position, force) {
    const now = Date.now();
    if (!force && lastSent && now - lastSent.at < SEND_EVERY_MS && metres(lastSent, position) < MOVED_M) return;
    const body = { lat: position.lat, lon: position.lon };
    if (position.accuracy !== undefined && position.accuracy !== null) body.accuracy_m = Math.round(position.accuracy);
    const answer = await jj.request("POST", "/api/officers/" + encodeURIComponent(badge) + "/location", body);
    if (answer.ok) {
      lastSent = { lat: position.lat, lon: position.lon, at: now };
      stats.sent += 1; stats.lastSentAt = now;
      $("pos-state").textContent = "已共享 " + position.lat.toFixed(5) + ", " + position.lon.toFixed(5) +
        (body.accuracy_m !== undefined ? " ±" + body.accuracy_m + " m" : "") + " · " + new Date(now).toLocaleTimeString("zh-CN");
      $("pos-state").className = "good";
    }
  }

  function startSharing() {
    if (watchId !== null) return;
    if (!navigator.geolocation) { $("pos-state").textContent = "此设备无定位，请手动输入"; $("manual").open = true; return; }
    watchId = navigator.geolocation.watchPosition((p) => {
      fix = { lat: p.coords.latitude, lon: p.coords.longitude, accuracy: p.coords.accuracy };
      showDistance();
      send(fix, false);
    }, (err) => {
      $("pos-state").textContent = "定位失败：" + err.message + "，请手动输入"; $("pos-state").className = "bad";
      $("manual").open = true;
    }, { enableHighAccuracy: true, maximumAge: 2000, timeout: 15000 });
    // Standing still sends nothing new from the phone: the last fix is repeated so it stays fresh.
    sharing = setInterval(() => { if (fix) send(fix, true); }, SEND_EVERY_MS);
  }
  let sharing = null;

  function stopSharing() {
    if (watchId !== null) navigator.geolocation.clearWatch(watchId);
    if (sharing) clearInterval(sharing);
    watchId = null; sharing = null;
    $("pos-state").textContent = "未共享 (下岗)"; $("pos-state").className = "dim";
  }

  // -- the stream ---------------------------------------------------------------------------
  let wait = 1000;
  function connect() {
    const ws = new WebSocket(jj.socketUrl("/api/events"), jj.socketProtocols());
    ws.onopen = () => { $("live").textContent = "在线"; $("live").className = "status live"; wait = 1000; refresh(); };
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      // The pushed briefing first (at once), then the full card (guidance, background, the report itself).
      if (message.type === "briefing") { showIncident(message); loadBriefing(message.number); refresh(); }
      else if (message.type === "step" || message.step) refresh();
    };
    ws.onclose = () => {
      $("live").textContent = "重新连接…"; $("live").className = "status down";
      stats.reconnects += 1;
      setTimeout(connect, wait);
      wait = Math.min(wait * 2, 15000);
    };
  }

  function wire() {
    $("duty-toggle").onclick = async () => {
      $("duty-error").textContent = "";
      const status = officer && officer.status === "off_duty" ? "available" : "off_duty";
      const answer = await jj.request("POST", "/api/officers/" + encodeURIComponent(badge) + "/status", { status });
      if (!answer.ok) { $("duty-error").textContent = answer.body.error || "失败"; return; }
      showOfficer(answer.body);
      if (status === "available" && fix) send(fix, true);
    };
    $("arrived").onclick = async () => {
      $("incident-error").textContent = "";
      const at = fix || manualFix();
      if (!at) { $("incident-error").textContent = "需要位置：请允许定位或手动输入"; $("manual").open = true; return; }
      const answer = await jj.request("POST", "/api/tickets/" + encodeURIComponent(ticket) + "/arrived",
        { badge, lat: at.lat, lon: at.lon });
      if (!answer.ok) { $("incident-error").textContent = answer.body.error || "失败"; return; }
      await refresh();
      $("disposition").focus();
    };
    $("clear").onclick = async () => {
      $("incident-error").textContent = "";
      const disposition = $("disposition").value.trim();
      if (!disposition) { $("incident-error").textContent = "请填写处置结果"; $("disposition").focus(); return; }
      const answer = await jj.request("POST", "/api/tickets/" + encodeURIComponent(ticket) + "/clear", { disposition });
      if (!answer.ok) { $("incident-error").textContent = answer.body.error || "失败"; return; }
      $("disposition").value = "";
      await refresh();
    };
    $("m-send").onclick = () => { const at = manualFix(); if (at) { fix = at; showDistance(); send(at, true); } };
  }

  function manualFix() {
    const lat = parseFloat($("m-lat").value), lon = parseFloat($("m-lon").value);
    if (!(lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180)) return null;
    return { lat, lon, accuracy: null };
  }

  jj.whenLoggedIn(async (me) => {
    if (me.role !== "officer") { $("duty-error").textContent = "此页面供民警使用 (role officer)"; return; }
    badge = me.username;
    wire();
    await refresh();
    connect();
    document.body.dataset.ready = "1";
  });
})();
