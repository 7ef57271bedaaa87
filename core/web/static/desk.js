// The call-taker's desk. Driven by the call: the seat's WebSocket pops the ticket the moment the seat
// rings or answers; every action is one key; every refusal says why (its error_id and message).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const KEEP = "jiejing.desk.ticket";
  const STEP_LABELS = {
    received: "接入 received", queued: "排队 queued", seat_ringing: "振铃 ringing", seat_no_answer: "未接 no answer",
    answered: "接听 answered", hung_up: "挂断 hung up", abandoned: "放弃 abandoned", closed: "结案 closed",
    located: "定位 located", dispatch_requested: "派警 dispatch", officer_ringing: "民警振铃 officer ringing",
    officer_no_answer: "未应答 no answer", officer_joined: "民警加入 officer joined", ladder_exhausted: "无人应答 nobody answered",
    callback_requested: "回拨 call back", callback_answered: "回拨接通 reporter answered", callback_failed: "回拨失败 call back failed", callback_ended: "回拨结束 call back ended",
    arrived: "到达 arrived", cleared: "处置完毕 cleared", classified: "分类 classified", note_added: "记录 note",
    handed_over: "移交 handed over", repeat_linked: "重复来电 repeat", reported: "文字报警 reported", taken: "接收 taken",
    handset_located: "手机定位 handset (AML)",
    caller_silent: "静默来电 silent caller", caller_spoke: "开口说话 caller spoke", prompt_played: "提示音 prompt",
    question_asked: "提问 question", caller_key: "按键 key", sms_sent: "短信发出 SMS sent", sms_received: "短信回复 SMS reply",
    auto_callback_due: "自动回拨 call-back due", auto_callback_skipped: "不回拨 no call-back",
    auto_callback_started: "回拨呼出 calling back", auto_callback_ringing: "回拨振铃 ringing",
    auto_callback_answered: "回拨接通 answered", auto_callback_failed: "回拨未通 not reached",
    auto_callback_connected: "回拨转坐席 connected", auto_callback_ended: "回拨结束 ended",
    auto_callback_cancelled: "回拨取消 cancelled", auto_callback_redialled: "再次来电 called again",
    auto_callback_gave_up: "回拨放弃 gave up", dispatch_proposed: "建议派警 dispatch proposed",
  };
  const stats = window.deskStats = { pops: [], keys: 0, keysAtDispatch: null, dispatchedAt: null };
  let desk = null, seat = null, ticket = null, plan = null, suggestion = null, point = null, project = null, unproject = null;
  let reports = [], socket = null, scanTimer = null, waitTimer = null;

  // -- talking to the API -------------------------------------------------------------------
  const call = jj.request;

  function say(text, ok) {
    const box = $("message");
    box.textContent = text;
    box.className = ok ? "ok" : "refused";
  }

  function refused(what, answer) {
    const id = answer.body.error_id ? " [" + answer.body.error_id + "]" : "";
    say("✗ " + what + "：" + (answer.body.error || ("HTTP " + answer.status)) + id, false);
    document.body.dataset.lastError = answer.body.error_id || String(answer.status);
  }

  // -- the seat -----------------------------------------------------------------------------
  function showSeat(view) {
    seat = view && view.state !== "logged_out" ? view : null;
    const state = seat ? seat.state : "logged_out";
    const label = { available: "空闲 available", ringing: "振铃 ringing", on_call: "通话 on call", wrap_up: "话后 wrap-up",
                    paused: "暂停 paused", logged_out: "未登录座席 no seat" }[state] || state;
    const box = $("seat-state");
    box.className = "seat-state " + state;
    box.dataset.state = state;
    box.textContent = (seat ? seat.seat + " · " : "") + label + (seat && seat.reason ? " (" + seat.reason + ")" : "");
    if (seat) startPhone(seat.seat); else stopPhone();
    $("seat-form").hidden = !!seat;
    $("seat-controls").hidden = !seat;
    $("pause").hidden = !seat || state === "paused";
    $("unpause").hidden = !seat || !(state === "paused" || state === "wrap_up");
    clearInterval(waitTimer);
    if (seat && state === "wrap_up" && desk) {
      const ends = seat.since_us / 1000 + desk.wrap_up_s * 1000;
      const tick = () => { box.textContent = seat.seat + " · 话后 wrap-up " + Math.max(0, Math.ceil((ends - Date.now()) / 1000)) + " s"; };
      tick();
      waitTimer = setInterval(tick, 500);
    }
  }

  async function seatAction(action, body) {
    const name = seat ? seat.seat : $("seat-name").value.trim();
    if (!name) { say("✗ 请输入座席号 enter a seat name", false); $("seat-name").focus(); return; }
    const answer = await call("POST", "/api/seats/" + encodeURIComponent(name) + "/" + action, body || {});
    if (!answer.ok) { refused(action, answer); return; }
    showSeat(answer.body);
    say("✓ " + name + " " + action, true);
  }

  // -- the browser as the seat's phone (WebRTC), when the seat has one ----------------------
  // A seat with a browser phone (GET /api/phone answers its credentials) registers from this page with
  // JsSIP; a seat with a desk phone or softphone (unknown-phone) keeps it, and the desk only shows the calls.
  const PHONE_LABELS = { connecting: "话机连接中 connecting", registered: "话机就绪 phone ready", ringing: "来电振铃 ringing",
                         "in-call": "通话中 in call", ended: "话机就绪 phone ready", unregistered: "话机未注册 unregistered",
                         disconnected: "话机断开 disconnected", error: "话机故障 phone error" };
  window.phoneLog = [];
  let phoneSeat = null;

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      if (document.querySelector('script[src="' + src + '"]')) { resolve(); return; }
      const tag = document.createElement("script");
      tag.src = src;
      tag.onload = resolve;
      tag.onerror = () => reject(new Error(src + " could not be loaded"));
      document.head.append(tag);
    });
  }

  function phoneState(state, detail) {
    window.phoneLog.push({ state, detail, at: Date.now() });
    const box = $("phone-state");
    box.textContent = PHONE_LABELS[state] || state;
    box.dataset.state = state;
    box.className = "seat-state " + ({ registered: "available", ended: "available", ringing: "ringing", "in-call": "on_call" }[state] || "paused");
    $("answer").hidden = state !== "ringing";
    $("hangup").hidden = !(state === "ringing" || state === "in-call");
    if (state === "error") say("✗ 话机 phone: " + ((detail && detail.error) || "error") + " [phone-error]", false);
  }

  async function startPhone(name) {
    if (phoneSeat === name) return;
    const answer = await call("GET", "/api/phone?seat=" + encodeURIComponent(name));
    if (!answer.ok) return;  // no browser phone for this seat: its own phone rings
    try {
      await loadScript("/vendor/jssip.min.js");
      await loadScript("/static/webphone.js");
    } catch (err) { say("✗ 话机 phone: " + err.message + " [web-vendor-missing]", false); return; }
    phoneSeat = name;
    $("phone").hidden = false;
    const a = answer.body;
    window.JiejingPhone.start({ wsUrl: a.ws_url, sipUri: a.sip_uri, password: a.password, iceServers: a.ice_servers,
                                autoAnswer: false, audio: $("remote-audio"), onState: phoneState });
  }

  function stopPhone() {
    if (!phoneSeat) return;
    phoneSeat = null;
    $("phone").hidden = true;
    if (window.JiejingPhone) window.JiejingPhone.stop();
  }

  const phoneRinging = () => phoneSeat && window.JiejingPhone && window.JiejingPhone.state === "ringing";

  // -- the ticket on screen -----------------------------------------------------------------
  function show(data, event) {
    if (ticket && data.number === ticket.number && data.updated_at_us < ticket.updated_at_us) return;
    const fresh = !ticket || ticket.number !== data.number;
    ticket = data;
    sessionStorage.setItem(KEEP, data.number);
    $("no-call").hidden = true;
    $("call-body").hidden = false;
    $("call-event").textContent = event ? ({ ringing: "振铃中 ringing", answered: "已接听 answered" }[event] || "") : "";
    $("t-number").textContent = data.number;
    $("t-state").textContent = data.state;
    const cls = data.triage && data.triage.classification;
    $("t-priority").textContent = cls ? cls.type_label + " · " + cls.priority_label : "未分类 unclassified";
    $("t-priority").className = "badge" + (cls ? " p" + cls.priority : "");
    $("t-caller").textContent = data.caller_id || "–";
    $("t-name").textContent = data.caller_name || "";
    const answered = data.steps.find((s) => s.step === "answered");
    const start = data.steps[0];
    $("t-wait").textContent = answered && start ? ((answered.at_us - start.at_us) / 1e6).toFixed(1) + " s" : "–";
    const report = data.steps[0] && data.steps[0].step === "reported" ? data.steps[0].detail : null;
    $("t-report").hidden = !report;
    if (report) {
      const media = (report.media || []).length ? " · 附件 media: " + report.media.length : "";
      $("t-report").textContent = "文字报警 " + (report.channel || "") + "：" + (report.text || "") + media;
    }
    const flags = $("t-flags");
    flags.replaceChildren();
    if (data.triage && data.triage.repeat_of) flags.append(jj.el("span", { class: "flag" }, "重复来电 repeat of " + data.triage.repeat_of));
    if (data.triage && data.triage.prank) flags.append(jj.el("span", { class: "flag" }, "骚扰号码 known prank number"));
    if (data.warnings) {
      $("t-warnings").replaceChildren(...data.warnings.map((w) => jj.el("li", {}, "⚠ " + w.kind + "：" + w.text)));
    }
    if (data.earlier) {
      $("t-earlier").replaceChildren(...(data.earlier.length ? data.earlier.map((e) => jj.el("li", {}, e.number + " · " + e.state + " · " + new Date(e.created_at).toLocaleString("zh-CN", { hour12: false })))
        : [jj.el("li", { class: "note" }, "无 none")]));
    }
    const located = [...data.steps].reverse().find((s) => s.step === "located");
    const place = data.incident || (located && located.detail);
    $("t-location").textContent = place ? (place.address || "") + " (" + Number(place.lat).toFixed(5) + ", " + Number(place.lon).toFixed(5) + ") · " + (place.station || "–") : "未定位 not located";
    $("t-location").className = place ? "" : "note";
    // Where a measured position came from: "AML · GNSS ±8 m · 12 s ago"; a handset fix kept aside is shown too.
    const aside = [...data.steps].reverse().find((s) => s.step === "handset_located");
    const how = [located && fixText(located.detail.fix)];
    if (aside && (!located || aside.seq > located.seq)) how.push("未采用 not applied: " + fixText(aside.detail.fix) + " (" + Number(aside.detail.lat).toFixed(5) + ", " + Number(aside.detail.lon).toFixed(5) + ") " + (aside.detail.kept_aside || ""));
    if (how.some(Boolean)) $("t-location").textContent += " · " + how.filter(Boolean).join(" · ");
    $("t-steps").replaceChildren(...data.steps.map((s) => {
      const who = s.detail.badge ? " " + s.detail.badge : s.detail.seat ? " " + s.detail.seat : s.detail.to ? " → " + s.detail.to : s.detail.key ? " " + s.detail.key : "";
      const li = jj.el("li", { class: s.step }, new Date(s.at).toLocaleTimeString("zh-CN", { hour12: false }) + " " + (STEP_LABELS[s.step] || s.step) + who);
      return li;
    }));
    drawPoint(place ? [place.lat, place.lon] : null);
    showSilent(data, fresh);
    if (fresh) { plan = null; $("plan").tBodies[0].replaceChildren(); $("notes").value = ""; $("notes-marked").textContent = ""; suggestion = null; showSuggestion(); }
  }

  const FIX_METHODS = { gnss: "GNSS", wifi: "Wi-Fi", cell: "基站 cell" };
  function fixText(fix) {
    if (!fix || fix.source !== "aml") return fix && fix.source === "network" ? "网络定位 network" : "";
    const age = Math.max(0, Math.round((Date.now() - Date.parse(fix.positioned_at)) / 1000));
    const method = FIX_METHODS[fix.method] ? " · " + FIX_METHODS[fix.method] : "";
    const floor = fix.floor ? " · " + fix.floor + "楼 floor" : "";
    return "AML" + method + " ±" + Math.round(fix.radius_m) + " m" + floor + " · " + (age < 120 ? age + " s" : Math.round(age / 60) + " min") + " ago";
  }

  function clearTicket() {
    ticket = null;
    sessionStorage.removeItem(KEEP);
    $("no-call").hidden = false;
    $("call-body").hidden = true;
  }

  function need(what) {
    if (!ticket) { say("✗ " + what + "：没有选中的警情 no ticket on screen [no-ticket]", false); return false; }
    return true;
  }

  async function reloadTicket() {
    if (!ticket) return;
    const answer = await call("GET", "/api/tickets/" + ticket.number);
    if (answer.ok) show(Object.assign({}, ticket, answer.body));
  }

  // -- notes, keywords, suggestion, classification ------------------------------------------
  function marked(text, hits) {
    const box = $("notes-marked");
    box.replaceChildren();
    let at = 0;
    for (const hit of hits) {
      box.append(document.createTextNode(text.slice(at, hit.start)));
      box.append(jj.el("mark", { class: "kw", "data-list": hit.list || "" }, text.slice(hit.start, hit.end)));
      at = hit.end;
    }
    box.append(document.createTextNode(text.slice(at)));
  }

  function showSuggestion(routing) {
    $("suggestion").textContent = suggestion ? "建议 Suggestion: " + suggestion.type_label + " · " + suggestion.priority_label + " (" + suggestion.because + ")" : "建议 Suggestion: –";
    $("accept").disabled = !suggestion;
    $("routing").textContent = routing ? "将触发 Routing: " + routing.target + " (" + routing.mode + ", " + routing.reason + ")" : "";
  }

  async function scan() {
    const text = $("notes").value;
    const body = { text };
    if (ticket) { body.number = ticket.number; body.type = $("type").value; body.priority = Number($("priority").value); }
    const answer = await call("POST", "/api/desk/scan", body);
    if (!answer.ok) return;
    marked(text, answer.body.keywords);
    suggestion = answer.body.suggestion;
    showSuggestion(answer.body.routing);
  }

  async function saveNote() {
    if (!need("记录 note")) return;
    const text = $("notes").value.trim();
    if (!text) { say("✗ 记录为空 the note is empty [empty-note]", false); return; }
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/notes", { text });
    if (!answer.ok) { refused("记录 note", answer); return; }
    say("✓ 已记录 note saved" + (answer.body.major_incident ? " · 重大警情已告警 major incident alerted: " + answer.body.keywords.join(", ") : ""), true);
    show(Object.assign({}, ticket, answer.body.ticket));
    $("notes").value = "";
  }

  async function classify(type, priority) {
    if (!need("分类 classify")) return;
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/classify", { type, priority });
    if (!answer.ok) { refused("分类 classify", answer); return; }
    const r = answer.body;
    say("✓ 已分类 classified " + r.classification.type_label + " · " + r.classification.priority_label +
        (r.decision ? " → " + r.decision.target + (r.handover && r.handover.done ? " ✓" : r.handover ? " ✗ " + (r.handover.error || "") : "") : ""), !(r.handover && r.handover.error));
    await reloadTicket();
  }

  // -- location, map ------------------------------------------------------------------------
  async function drawMap() {
    const answer = await call("GET", "/api/heatmap");
    if (!answer.ok) return;
    const data = answer.body;
    const map = $("map");
    const points = data.cells.flatMap((c) => c.boundary);
    if (!points.length) return;
    const W = 600, H = 420, PAD = 10;
    const lats = points.map((p) => p[0]), lons = points.map((p) => p[1]);
    const k = Math.cos(((Math.min(...lats) + Math.max(...lats)) / 2) * Math.PI / 180);
    const minX = Math.min(...lons) * k, maxX = Math.max(...lons) * k, minY = Math.min(...lats), maxY = Math.max(...lats);
    const scale = Math.min((W - 2 * PAD) / (maxX - minX || 1e-6), (H - 2 * PAD) / (maxY - minY || 1e-6));
    const offX = (W - (maxX - minX) * scale) / 2, offY = (H - (maxY - minY) * scale) / 2;
    project = ([lat, lon]) => [offX + (lon * k - minX) * scale, offY + (maxY - lat) * scale];
    unproject = ([x, y]) => [maxY - (y - offY) / scale, ((x - offX) / scale + minX) / k];
    const node = (tag, attrs) => { const n = document.createElementNS(SVG, tag); for (const [a, v] of Object.entries(attrs)) n.setAttribute(a, v); return n; };
    const cells = node("g", {});
    for (const cell of data.cells) {
      cells.append(node("polygon", { points: cell.boundary.map(project).map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" "),
                                    fill: "#16212d", stroke: "#2c3e50", "stroke-width": 1 }));
    }
    const officers = node("g", {});
    for (const o of data.officers) {
      const [x, y] = project([o.lat, o.lon]);
      officers.append(node("circle", { cx: x, cy: y, r: 4, fill: o.status === "available" ? "#3ecf8e" : "#f5b841", "data-badge": o.badge }));
    }
    map.replaceChildren(cells, officers, node("g", { id: "pin" }));
    map.dataset.ready = "1";
    if (ticket) show(ticket);
  }

  function drawPoint(latlon) {
    const pin = document.getElementById("pin");
    if (!pin || !project) return;
    pin.replaceChildren();
    const where = point || latlon;
    if (!where) return;
    const [x, y] = project(where);
    const c = document.createElementNS(SVG, "circle");
    c.setAttribute("cx", x); c.setAttribute("cy", y); c.setAttribute("r", 7); c.setAttribute("fill", point ? "#7fd3ff" : "#ff5c5c");
    c.setAttribute("stroke", "white"); c.setAttribute("stroke-width", 2);
    pin.append(c);
  }

  // keep: the address is only the text of the position already set (Ctrl+Enter), not a place to look up.
  async function locate(keep) {
    if (!need("定位 locate")) return;
    const located = ticket.incident;
    const address = $("address").value.trim();
    // a clicked point (with the address as its text), else the gazetteer's place of that name,
    // else the location already set
    const where = point || ((keep === true || !address) && located ? [located.lat, located.lon] : null);
    if (!where && !address) { say("✗ 定位：请输入地址或在地图上点击位置 type an address or click the map [no-point]", false); return; }
    const body = where ? { lat: where[0], lon: where[1] } : {};
    if (address) body.address = address;
    const answer = await call("PUT", "/api/tickets/" + ticket.number + "/location", body);
    if (!answer.ok) {
      refused("定位 locate", answer);
      const candidates = (answer.body.details || {}).candidates || [];
      if (candidates.length) {
        showPlaces(candidates.map((name) => ({ name })));
        $("map-point").textContent = "可选 choose: " + candidates.join(" · ");
      }
      return;
    }
    point = null;
    $("map-point").textContent = "";
    say("✓ 已定位 located · " + (answer.body.incident ? (answer.body.incident.address || "") + " " + (answer.body.incident.station || "") : ""), true);
    await reloadTicket();
  }

  // The gazetteer's places whose name contains what is typed, as the address field's choices.
  let placesAsked = 0;
  function showPlaces(places) {
    $("places").replaceChildren(...places.map((p) => jj.el("option", { value: p.name })));
  }
  async function suggestPlaces() {
    const q = $("address").value.trim();
    const asked = ++placesAsked;
    if (!q) { showPlaces([]); return; }
    const answer = await call("GET", "/api/places?q=" + encodeURIComponent(q));
    if (asked === placesAsked && answer.ok) showPlaces(answer.body.places);
  }

  // -- dispatch, hand-over, close -----------------------------------------------------------
  async function preview() {
    if (!need("派警预览 preview")) return;
    const answer = await call("GET", "/api/dispatch/preview/" + ticket.number);
    if (!answer.ok) { refused("派警预览 preview", answer); plan = null; return; }
    plan = answer.body;
    const body = $("plan").tBodies[0];
    const officer = plan.choice.officer;
    const rows = [];
    if (officer) rows.push(["民警 officer", officer.badge + " " + officer.name, (officer.distance_m / 1000).toFixed(2) + " km", "ETA " + Math.round(officer.eta_s / 60) + " min"]);
    for (const rung of plan.ladder.slice(officer ? 1 : 0)) rows.push([rung.kind, rung.endpoint, "", ""]);
    body.replaceChildren(...rows.map((r) => { const tr = jj.el("tr"); r.forEach((c) => tr.append(jj.el("td", {}, c))); return tr; }));
    say("派警预览 preview: " + (officer ? officer.badge + " · " + (officer.distance_m / 1000).toFixed(2) + " km · ETA " + Math.round(officer.eta_s / 60) + " min — Enter 派警 dispatch" : "无可用民警 no officer; ladder " + plan.ladder.length), true);
    $("dispatch").focus();
  }

  async function dispatch() {
    if (!need("派警 dispatch")) return;
    stats.keysAtDispatch = stats.keys;
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/dispatch");
    if (!answer.ok) { refused("派警 dispatch", answer); return; }
    stats.dispatchedAt = Date.now();
    say("✓ 派警中 dispatching — 阶梯 ladder on screen", true);
  }

  async function handOver(target) {
    if (!need("移交 hand over")) return;
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/handover", { target });
    if (!answer.ok && !(answer.body.handover)) { refused("移交 " + target, answer); return; }
    const done = answer.body.handover && answer.body.handover.done;
    if (done) say("✓ 已移交 handed over → " + target, true);
    else refused("移交 " + target, { status: answer.status, body: { error: (answer.body.handover && answer.body.handover.error) || answer.body.error, error_id: answer.body.error_id || "handover-failed" } });
    await reloadTicket();
  }

  async function closeTicket() {
    if (!need("结案 close")) return;
    const disposition = $("disposition").value.trim();
    if (!disposition) { say("✗ 结案：请填写处置结果 enter a disposition [no-disposition]", false); $("disposition").focus(); return; }
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/close", { disposition, by: desk.user.username });
    if (!answer.ok) { refused("结案 close", answer); return; }
    say("✓ 已结案 closed " + ticket.number, true);
    $("disposition").value = "";
    show(Object.assign({}, ticket, answer.body));
  }

  // -- text reports ---------------------------------------------------------------------------
  async function loadReports() {
    const answer = await call("GET", "/api/tickets?status=reported&order=oldest&limit=20");
    if (!answer.ok) return;
    reports = answer.body.tickets || [];
    $("reports-count").textContent = reports.length + " 条待接收 waiting";
    $("reports").tBodies[0].replaceChildren(...reports.map((r) => {
      const tr = jj.el("tr", { "data-number": r.number });
      tr.append(jj.el("td", {}, r.number), jj.el("td", {}, r.caller_id || ""), jj.el("td", {}, new Date(r.created_at).toLocaleTimeString("zh-CN", { hour12: false })));
      return tr;
    }));
  }

  async function takeOldest() {
    if (!reports.length) { say("✗ 没有待接收的文字报警 no report waiting [no-report]", false); return; }
    const number = reports[0].number;
    const answer = await call("POST", "/api/tickets/" + number + "/take", seat ? { seat: seat.seat } : {});
    if (!answer.ok) { refused("接收 take", answer); await loadReports(); return; }
    say("✓ 已接收 taken " + number, true);
    const full = await call("GET", "/api/tickets/" + number);
    show(full.ok ? full.body : answer.body);
    if (socket && socket.readyState === 1) socket.send(JSON.stringify({ watch: number }));
    await loadReports();
  }

  async function callBack() {
    if (!need("回拨 call back")) return;
    if (!seat) { say("✗ 回拨：请先登录座席 log in to a seat first [no-seat]", false); return; }
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/callback", { seat: seat.seat });
    if (!answer.ok) { refused("回拨 call back", answer); return; }
    say("✓ 回拨中 calling back " + (answer.body.to || ""), true);
  }

  // -- a silent caller: the flag, the prompt, yes/no questions answered by keys, SMS -----------
  // The steps say it all (caller_silent, caller_key …): the panel is drawn from the ticket, live.
  const SILENT_STEPS = ["caller_silent", "caller_spoke", "prompt_played", "question_asked", "caller_key", "sms_sent", "sms_received"];
  const ANSWERS = { yes: "是 yes", no: "否 no", cannot_speak: "无法说话 cannot speak" };
  let silentOpen = false;
  const clock = (s) => new Date(s.at).toLocaleTimeString("zh-CN", { hour12: false });

  function showSilent(data, fresh) {
    if (fresh) silentOpen = false;
    const steps = data.steps.filter((s) => SILENT_STEPS.includes(s.step));
    const last = [...steps].reverse().find((s) => s.step === "caller_silent" || s.step === "caller_spoke");
    const flagged = !!last && last.step === "caller_silent";
    const keys = steps.filter((s) => s.step === "caller_key");
    $("silent").hidden = !(silentOpen || steps.length);
    $("silent-flag").hidden = !flagged;
    $("silent-cannot").hidden = !keys.some((k) => k.detail.answer === "cannot_speak");
    const prompt = [...steps].reverse().find((s) => s.step === "prompt_played");
    $("silent-note").textContent = flagged ? "接听后 " + last.detail.after_s + " s 无声 no speech since the answer" +
      (prompt ? " · 提示音 prompt " + clock(prompt) + " " + (prompt.detail.outcome === "played" ? "✓" : "✗ " + prompt.detail.outcome) : "") : "";
    $("silent-keys").replaceChildren(...keys.map((k) => jj.el("li", { class: "key", "data-key": k.detail.key },
      clock(k) + " 按键 key " + k.detail.key + (k.detail.answer ? " = " + ANSWERS[k.detail.answer] : "") +
      (k.detail.question ? " · 问 " + k.detail.question : ""))));
    $("sms-thread").replaceChildren(...steps.filter((s) => s.step === "sms_sent" || s.step === "sms_received").map((s) =>
      jj.el("li", { class: s.step }, clock(s) + (s.step === "sms_sent" ? " → " : " ← ") + s.detail.text)));
  }

  function openSilent(focus) {
    if (!need("静默来电 silent caller")) return;
    silentOpen = true;
    $("silent").hidden = false;
    if (focus) $(focus).focus();
  }

  async function playPrompt() {
    if (!need("提示音 prompt")) return;
    openSilent();
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/prompt");
    if (!answer.ok) { refused("提示音 prompt", answer); return; }
    say("✓ 正在播放提示音 playing the prompt (按两次5 press 5 twice)", true);
  }

  async function ask() {
    if (!need("提问 question")) return;
    const text = $("question").value.trim();
    if (!text) { say("✗ 问题为空 the question is empty [empty-text]", false); return; }
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/questions", { text });
    if (!answer.ok) { refused("提问 question", answer); return; }
    $("question").value = "";
    say("✓ 已记录问题，请口头提问 ask it aloud: 是按1 yes 1 · 否按2 no 2", true);
    show(Object.assign({}, ticket, answer.body));
  }

  async function sendSms() {
    if (!need("短信 SMS")) return;
    const text = $("sms-text").value.trim();
    if (!text) { say("✗ 短信为空 the message is empty [empty-text]", false); return; }
    const answer = await call("POST", "/api/tickets/" + ticket.number + "/sms", { text });
    if (!answer.ok) { refused("短信 SMS", answer); return; }
    $("sms-text").value = "";
    say("✓ 短信已排队发送 SMS queued to " + answer.body.to, true);
    await reloadTicket();
  }

  // -- the room's posture: a badge while wrap-up is suspended for a surge --------------------
  const POSTURE_EVERY_MS = 5000;
  async function posture() {
    const answer = await call("GET", "/api/posture");
    if (!answer.ok) return;
    const badge = $("surge-badge");
    badge.hidden = answer.body.mode !== "surge";
    badge.title = answer.body.reason || "";
  }

  // -- the live connection ------------------------------------------------------------------
  function connect() {
    socket = new WebSocket(jj.socketUrl("/api/desk/ws"), jj.socketProtocols());
    socket.onopen = () => {
      $("link").className = "status live";
      $("link").title = "实时连接 live";
      if (ticket) socket.send(JSON.stringify({ watch: ticket.number }));
    };
    socket.onmessage = (event) => {
      const m = JSON.parse(event.data);
      if (m.type === "hello" || m.type === "seat") showSeat(m.seat);
      else if (m.type === "pop") {
        show(m.ticket, m.event);
        stats.pops.push({ number: m.ticket.number, event: m.event, rendered_ms: performance.timeOrigin + performance.now() });
        if (m.event === "answered") stats.keys = 0;
      } else if (m.type === "ticket" && ticket && m.ticket.number === ticket.number) show(m.ticket);
      else if (m.type === "reports") loadReports();
    };
    socket.onclose = () => {
      $("link").className = "status down";
      $("link").title = "连接中断，重连中 reconnecting";
      setTimeout(async () => { await restore(); connect(); }, 1000);
    };
  }

  async function restore() {
    const answer = await call("GET", "/api/desk");
    if (!answer.ok) return;
    desk = answer.body;
    showSeat(desk.seat);
    if (desk.call) show(desk.call);
    else {
      const kept = sessionStorage.getItem(KEEP);
      if (kept) {
        const again = await call("GET", "/api/tickets/" + kept);
        if (again.ok && again.body.state !== "closed") show(again.body);
        else clearTicket();
      }
    }
  }

  // -- keys -----------------------------------------------------------------------------------
  const typing = (el) => el && (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT");

  function onKey(event) {
    stats.keys += 1;
    const target = event.target;
    if (event.key === "Escape") { target.blur && target.blur(); return; }
    // Enter in a field does the field's action and hands the keys back to the desk.
    // The seat's name too: the form is hidden once the seat is logged in, and the keys must be the desk's at once,
    // not wait for the browser to move the focus off a hidden field.
    const submit = {
      notes: saveNote, address: locate, disposition: closeTicket, "seat-name": () => seatAction("login"),
      question: ask, "sms-text": sendSms,
      "pause-reason": () => seatAction("pause", { reason: $("pause-reason").value.trim() }),
      type: () => classify($("type").value, Number($("priority").value)),
      priority: () => classify($("type").value, Number($("priority").value)),
    }[target.id];
    if (target.id === "address" && event.key === "Enter" && event.ctrlKey) { event.preventDefault(); target.blur(); locate(true); return; }
    if (submit && event.key === "Enter" && !event.shiftKey) { event.preventDefault(); target.blur(); submit(); return; }
    if (typing(target) || event.ctrlKey || event.altKey || event.metaKey) return;
    if (event.key === "Enter" && phoneRinging()) { event.preventDefault(); window.JiejingPhone.answer(); return; }
    if (event.key === "Enter" && plan && target.tagName !== "BUTTON") { event.preventDefault(); dispatch(); return; }
    const actions = {
      n: () => $("notes").focus(), a: () => suggestion ? classify(suggestion.type, suggestion.priority) : say("✗ 没有建议 no suggestion [no-suggestion]", false),
      c: () => $("type").focus(), l: () => $("address").focus(), d: preview, f: () => handOver("anti_fraud"),
      h: () => handOver("hotline_12345"), s: () => handOver("local_station"), x: () => $("disposition").focus(),
      t: takeOldest, b: callBack, k: playPrompt, q: () => openSilent("question"), m: () => openSilent("sms-text"),
      p: () => seat && (seat.state === "paused" || seat.state === "wrap_up") ? seatAction("unpause") : $("pause-reason").focus(),
    };
    const act = actions[event.key.toLowerCase()];
    if (act) { event.preventDefault(); act(); }
  }

  // -- start ----------------------------------------------------------------------------------
  async function ready() {
    await restore();
    $("type").replaceChildren(...desk.types.map((t) => jj.el("option", { value: t.type }, t.label + " " + t.type)));
    $("priority").replaceChildren(...desk.priorities.map((p) => jj.el("option", { value: String(p.priority) }, p.priority + " " + p.label)));
    $("priority").value = "3";
    $("seat-form").addEventListener("submit", (e) => { e.preventDefault(); seatAction("login"); });
    $("seat-logout").onclick = () => seatAction("logout");
    $("pause").onclick = () => seatAction("pause", { reason: $("pause-reason").value.trim() });
    $("unpause").onclick = () => seatAction("unpause");
    $("accept").onclick = () => suggestion && classify(suggestion.type, suggestion.priority);
    $("classify").onclick = () => classify($("type").value, Number($("priority").value));
    $("locate").onclick = locate;
    $("preview").onclick = preview;
    $("dispatch").onclick = dispatch;
    for (const t of ["anti_fraud", "hotline_12345", "local_station"]) $("h-" + t).onclick = () => handOver(t);
    $("close").onclick = closeTicket;
    $("answer").onclick = () => window.JiejingPhone && window.JiejingPhone.answer();
    $("hangup").onclick = () => window.JiejingPhone && window.JiejingPhone.hangup();
    $("take").onclick = takeOldest;
    $("callback").onclick = callBack;
    $("prompt").onclick = playPrompt;
    $("sms-send").onclick = sendSms;
    $("notes").addEventListener("input", () => { clearTimeout(scanTimer); scanTimer = setTimeout(scan, 150); });
    let placesTimer = null;
    $("address").addEventListener("input", () => { clearTimeout(placesTimer); placesTimer = setTimeout(suggestPlaces, 150); });
    $("type").addEventListener("change", scan);
    $("map").addEventListener("click", (event) => {
      if (!unproject) return;
      const box = $("map").getBoundingClientRect();
      const vb = $("map").viewBox.baseVal;
      const s = Math.min(box.width / vb.width, box.height / vb.height);
      const x = (event.clientX - box.left - (box.width - vb.width * s) / 2) / s;
      const y = (event.clientY - box.top - (box.height - vb.height * s) / 2) / s;
      point = unproject([x, y]);
      $("map-point").textContent = point[0].toFixed(5) + ", " + point[1].toFixed(5) + " — 定位 Locate / L Enter";
      drawPoint(null);
    });
    document.addEventListener("keydown", onKey);
    await drawMap();
    await loadReports();
    connect();
    posture();
    setInterval(posture, POSTURE_EVERY_MS);
    jj.watchMajor((incident) => {
      $("major-badge").hidden = !incident;
      $("major-badge").textContent = incident ? jj.majorText(incident) : "";
    });
    document.body.dataset.ready = "1";
  }

  jj.whenLoggedIn(ready);
})();
