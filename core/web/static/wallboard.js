// The wallboard: one WebSocket, a snapshot per message, redrawn in place (no reload).
"use strict";
(() => {
  const STATE_NAMES = { available: "空闲", ringing: "振铃", on_call: "通话", wrap_up: "整理", paused: "暂停", logged_out: "未登录" };
  const CALL_STATES = { received: "进线", queued: "排队", ringing: "振铃" };
  const $ = (id) => document.getElementById(id);

  const seconds = (s) => s < 60 ? s.toFixed(0) + " s" : Math.floor(s / 60) + ":" + String(Math.floor(s % 60)).padStart(2, "0");

  function share(id, figures) {
    const node = $(id);
    node.className = "value";
    if (figures.share === null) { node.textContent = "–"; }
    else {
      node.textContent = (figures.share * 100).toFixed(1) + "%";
      node.classList.add(figures.share >= 0.9 ? "good" : figures.share >= 0.75 ? "warn" : "bad");
    }
    $(id + "-sub").textContent = figures.answered_fast + " / " + figures.counted;
  }

  function drawPosture(posture) {
    const banner = $("surge-banner");
    banner.hidden = !posture || posture.mode !== "surge";
    if (banner.hidden) return;
    const since = new Date(posture.since * 1000).toLocaleTimeString("zh-CN", { hour12: false });
    const how = posture.source === "declared" ? "督察宣布 declared by " + (posture.by || "-") : "自动 automatic";
    banner.textContent = "应急状态 SURGE · 整理时间暂停 wrap-up suspended · " + how + " · " + since + " · " + posture.reason;
  }

  function draw(board) {
    drawPosture(board.posture);
    $("waiting-count").textContent = board.waiting.count;
    $("waiting-count").className = "value " + (board.waiting.count === 0 ? "good" : board.waiting.count < 5 ? "warn" : "bad");
    $("longest-wait").textContent = seconds(board.waiting.longest_s);
    $("longest-wait").className = "value " + (board.waiting.longest_s <= board.answer_target_s ? "good" : "bad");
    share("share-today", board.answered_within_target.today);
    share("share-hour", board.answered_within_target.last_hour);
    $("reports-waiting").textContent = board.reports_waiting.count;
    $("reports-waiting").className = "value " + (board.reports_waiting.count ? "warn" : "good");
    $("reports-waiting-sub").textContent = board.reports_waiting.count ? "oldest " + seconds(board.reports_waiting.longest_s) : "";
    $("conferences").textContent = board.conferences.count;
    $("alerts-count").textContent = board.alerts.count;
    $("alerts-count").className = "value " + (board.alerts.count ? "bad" : "good");

    const states = $("seat-states");
    states.replaceChildren(...Object.entries(board.seats.by_state).map(([state, n]) => {
      const tile = jj.el("div", { class: "tile", "data-state": state });
      tile.append(jj.el("div", { class: "label" }, (STATE_NAMES[state] || state) + " " + state), jj.el("div", { class: "value" }, String(n)));
      return tile;
    }));
    $("seat-list").replaceChildren(...board.seats.list.map((seat) =>
      jj.el("div", { class: "seat " + seat.state, title: seat.reason || "" }, seat.seat + " " + (STATE_NAMES[seat.state] || seat.state))));

    $("waiting-list").replaceChildren(...board.waiting.calls.map((call) => {
      const row = jj.el("tr", { "data-number": call.number });
      row.append(jj.el("td", {}, call.number), jj.el("td", {}, call.caller_id),
                 jj.el("td", {}, CALL_STATES[call.state] || call.state), jj.el("td", {}, seconds(call.wait_s)));
      return row;
    }));
    $("alert-list").replaceChildren(...board.alerts.open.map((alert) => {
      const row = jj.el("tr");
      row.append(jj.el("td", {}, alert.kind), jj.el("td", {}, alert.message));
      return row;
    }));
  }

  function connect() {
    const status = $("status");
    const ws = new WebSocket(jj.socketUrl("/api/wallboard/ws"), jj.socketProtocols());
    ws.onopen = () => { status.textContent = "● 实时 live"; status.className = "status live"; };
    ws.onmessage = (event) => draw(JSON.parse(event.data));
    ws.onclose = () => {
      status.textContent = "● 断开，重连中 reconnecting"; status.className = "status down";
      setTimeout(connect, 2000);
    };
  }

  jj.whenLoggedIn(() => {
    connect();
    jj.watchMajor((incident) => {
      $("major-banner").hidden = !incident;
      $("major-banner").textContent = incident ? jj.majorText(incident) : "";
    });
  });
})();
