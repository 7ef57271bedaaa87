// The supervisor's page: satisfaction rates, the day's spot checks and report, follow-ups, alerts, the journal.
// Each panel loads on its own: a part that is not mounted (e.g. the survey without Twilio) says so and
// leaves the others working.
"use strict";
(() => {
  const CRITERIA = ["speed", "attitude", "classification", "dispatch", "script"];
  const CRITERIA_NAMES = { speed: "速度", attitude: "态度", classification: "分类", dispatch: "派警", script: "规范" };
  const ORIGINS = { survey: "短信回访 survey", complaint: "投诉 complaint" };
  const $ = (id) => document.getElementById(id);
  const range = $("range");
  let me = null;

  const pad = (n) => String(n).padStart(2, "0");
  const isoDate = (d) => d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
  const compact = (value) => value.replaceAll("-", "");  // 2026-11-29 -> 20261129, the API's day
  const when = (iso) => iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "–";
  const num = (v) => v === null || v === undefined ? "–" : Number(v).toFixed(2);

  function rate(r) {
    if (!r || r.rate === null) return "–";
    return (r.rate * 100).toFixed(1) + "% (" + r.satisfied + "/" + r.rated + ")";
  }

  function row(cells, attrs = {}) {
    const tr = jj.el("tr", attrs);
    for (const cell of cells) tr.append(cell instanceof Node ? cell : jj.el("td", {}, String(cell)));
    return tr;
  }

  function message(tbody, text, columns) {
    const tr = jj.el("tr");
    tr.append(jj.el("td", { colspan: String(columns), class: "note" }, text));
    tbody.replaceChildren(tr);
  }

  function level(node, share, good, fair) {
    node.classList.remove("good", "warn", "bad");
    if (share !== null) node.classList.add(share >= good ? "good" : share >= fair ? "warn" : "bad");
  }

  // -- satisfaction --------------------------------------------------------------------------

  async function loadRates() {
    const from = compact(range.from.value), to = compact(range.to.value);
    const names = { day: "rates-day", station: "rates-station", seat: "rates-seat" };
    try {
      const [byDay, byStation, bySeat] = await Promise.all(["day", "station", "seat"].map((by) =>
        jj.api(`/api/survey/rates?from=${from}&to=${to}&by=${by}`)));
      for (const [by, answer] of [["day", byDay], ["station", byStation], ["seat", bySeat]]) {
        const tbody = $(names[by]);
        if (!answer.rates.length) { message(tbody, "无回复 no replies", 5); continue; }
        tbody.replaceChildren(...answer.rates.map((r) => row([
          r[by] || "未关联 unassigned", r.responses, rate(r.intake), rate(r.dispatch), r.complaints,
        ], { "data-group": r[by] || "" })));
      }
      const total = (key) => byDay.rates.reduce((acc, r) => [acc[0] + r[key].satisfied, acc[1] + r[key].rated], [0, 0]);
      for (const [key, id] of [["intake", "intake"], ["dispatch", "dispatch"]]) {
        const [ok, n] = total(key);
        const node = $(id + "-rate");
        node.textContent = n ? (ok / n * 100).toFixed(1) + "%" : "–";
        level(node, n ? ok / n : null, 0.9, 0.75);
        $(id + "-sub").textContent = ok + " / " + n + " · " + range.from.value + " – " + range.to.value;
      }
      $("rates-note").textContent = "";
    } catch (error) {
      for (const id of Object.values(names)) $(id).replaceChildren();
      $("rates-note").textContent = "满意度不可用 rates unavailable（短信回访未启用？survey not enabled?）: " + error.message;
    }
  }

  // -- spot checks ---------------------------------------------------------------------------

  async function loadSample() {
    const day = compact(range.day.value);
    const tbody = $("sample-list");
    const select = document.querySelector("#score-form select[name=ticket]");
    let sample;
    try {
      sample = await jj.api(`/api/quality/draws/${day}`);
    } catch (error) {
      $("no-sample").hidden = false;
      $("sample-meta").textContent = "";
      message(tbody, "未抽样 not drawn: " + error.message, 11);
      select.replaceChildren();
      $("scored-count").textContent = "–";
      $("scored-sub").textContent = range.day.value;
      return null;
    }
    $("no-sample").hidden = true;
    $("sample-meta").textContent = `· ${sample.calls.length} / ${sample.population} 通 calls · 种子 seed ${sample.seed} · ${sample.drawn_by}`;
    tbody.replaceChildren(...sample.calls.map((c) => row([
      c.ticket, c.shift, c.seat,
      ...CRITERIA.map((k) => c.scores ? String(c.scores[k]) : "·"),
      c.total === null ? "未评 –" : num(c.total), c.comment || "", c.scored_by || "",
    ], { "data-ticket": c.ticket, class: c.scores ? "scored" : "unscored" })));
    const chosen = select.value;
    select.replaceChildren(...sample.calls.map((c) =>
      jj.el("option", { value: c.ticket }, c.ticket + " · " + c.seat + (c.scores ? " ✓" : ""))));
    const firstOpen = sample.calls.find((c) => !c.scores);
    // Keep the call being scored; once it has its score, move on to the next one without.
    const keep = sample.calls.some((c) => c.ticket === chosen && !c.scores);
    select.value = keep ? chosen : (firstOpen || sample.calls[0] || {}).ticket || "";
    const scored = sample.calls.filter((c) => c.scores).length;
    $("scored-count").textContent = scored + " / " + sample.calls.length;
    $("scored-sub").textContent = range.day.value;
    return sample;
  }

  function reportRows(tbody, groups, label) {
    const entries = Object.entries(groups);
    if (!entries.length) { message(tbody, "无 none", 9); return; }
    tbody.replaceChildren(...entries.map(([name, g]) => row([
      label(name), g.sampled, g.scored, ...CRITERIA.map((k) => num(g.average[k])), num(g.total),
    ], { "data-group": name })));
  }

  async function loadReport(sample) {
    const heads = ["report-head-seat", "report-head-station"];
    for (const [i, id] of heads.entries()) {
      $(id).replaceChildren(row([i ? "派出所 Station" : "座席 Seat", "抽 Sampled", "评 Scored",
        ...CRITERIA.map((k) => CRITERIA_NAMES[k] + " " + k), "均分 Avg"].map((t) => jj.el("th", {}, t))));
    }
    $("publish-form").hidden = true;
    if (sample === null) {
      message($("report-seats"), "未抽样 not drawn", 9);
      message($("report-stations"), "未抽样 not drawn", 9);
      $("report-meta").textContent = "";
      return;
    }
    try {
      const report = await jj.api(`/api/quality/reports/${compact(range.day.value)}`);
      reportRows($("report-seats"), { ...report.seats }, (n) => n);
      const center = report.center;
      const centerRow = row(["全中心 Center", center.sampled, center.scored, ...CRITERIA.map((k) => num(center.average[k])), num(center.total)],
        { class: "total" });
      $("report-seats").append(centerRow);
      reportRows($("report-stations"), report.stations, (n) => n === "unassigned" ? "未关联 unassigned" : n);
      $("report-meta").textContent = report.published
        ? `· 已发布 published ${when(report.published_at)} · ${report.published_by}` : "· 未发布 draft (computed now)";
      $("publish-form").hidden = report.published;
    } catch (error) {
      message($("report-seats"), error.message, 9);
    }
  }

  // -- follow-ups ----------------------------------------------------------------------------

  function left(deadline) {
    const hours = (new Date(deadline).getTime() - Date.now()) / 3_600_000;
    const abs = Math.abs(hours);
    const text = abs >= 48 ? (abs / 24).toFixed(1) + " d" : abs.toFixed(1) + " h";
    return hours < 0 ? "超时 overdue " + text : "剩 " + text;
  }

  async function loadFollowUps() {
    const tbody = $("follow-up-list");
    const select = document.querySelector("#answer-form select[name=id]");
    try {
      const { follow_ups: items } = await jj.api("/api/complaints?state=open");
      if (!items.length) message(tbody, "无待回访 nothing open", 7);
      else tbody.replaceChildren(...items.map((f) => row([
        String(f.id), f.ticket, ORIGINS[f.origin] || f.origin, f.reason, f.station || "–", when(f.deadline), left(f.deadline),
      ], { "data-id": String(f.id), class: f.state })));
      const chosen = select.value;
      select.replaceChildren(...items.map((f) =>
        jj.el("option", { value: String(f.id) }, "#" + f.id + " · " + f.ticket + (f.state === "overdue" ? " · 超时" : ""))));
      if (items.some((f) => String(f.id) === chosen)) select.value = chosen;
      const overdue = items.filter((f) => f.state === "overdue").length;
      $("follow-up-count").textContent = items.length;
      $("follow-up-count").className = "value " + (overdue ? "bad" : items.length ? "warn" : "good");
      $("overdue-sub").textContent = "其中超时 overdue: " + overdue;
    } catch (error) {
      message(tbody, "不可用 unavailable: " + error.message, 7);
    }
  }

  // -- playback ------------------------------------------------------------------------------

  // The audio element cannot send the bearer token: the file is fetched with it and played from memory.
  // Every playback is journaled by the server before it sends the file.
  async function play(number) {
    const status = $("play-status"), player = $("player");
    status.textContent = "…";
    status.classList.remove("bad");
    try {
      const ticket = await jj.api(`/api/tickets/${encodeURIComponent(number)}`);
      const recording = ticket.recordings[0];
      if (!recording) { status.textContent = "无录音 no recording"; return; }
      const resp = await fetch(`/api/tickets/${encodeURIComponent(number)}/recordings/${recording.sha256}`,
                               { headers: { "Authorization": "Bearer " + jj.token() } });
      if (!resp.ok) throw new Error((await resp.json()).error || resp.statusText);
      if (player.src) URL.revokeObjectURL(player.src);
      player.src = URL.createObjectURL(await resp.blob());
      player.hidden = false;
      player.dataset.ticket = number;
      status.textContent = `${number} · ${recording.duration_s ? recording.duration_s.toFixed(0) + " s · " : ""}已记入日志 journaled`;
      await player.play().catch(() => {});  // a browser may want a gesture first; the controls are there
    } catch (error) {
      status.textContent = "不能播放 cannot play: " + error.message;
      status.classList.add("bad");
    }
  }

  // A ticket's dossier (ticket, steps, journal entries, anchor) as a JSON file, for a court or a complaint;
  // `jiejing dossier check` verifies it away from the center. The export is journaled by the server.
  async function exportDossier(number) {
    const status = $("play-status");
    status.classList.remove("bad");
    try {
      const resp = await fetch(`/api/tickets/${encodeURIComponent(number)}/dossier`,
                               { headers: { "Authorization": "Bearer " + jj.token() } });
      if (!resp.ok) throw new Error((await resp.json()).error || resp.statusText);
      const text = await resp.text();
      const dossier = JSON.parse(text);
      const link = jj.el("a", { href: URL.createObjectURL(new Blob([text], { type: "application/json" })),
                                download: `dossier-${number}.json`, id: "dossier-link" });
      document.body.append(link);
      link.click();
      link.remove();
      status.textContent = `${number} · 卷宗已导出 dossier exported: ${dossier.journal.length} 条日志 entries` +
        (dossier.anchors.length ? " · 含签名锚点 anchored" : "");
      status.dataset.dossier = number;
    } catch (error) {
      status.textContent = "不能导出 cannot export: " + error.message;
      status.classList.add("bad");
    }
  }

  // -- alerts --------------------------------------------------------------------------------

  const whenUs = (us) => us ? new Date(us / 1000).toLocaleString("zh-CN", { hour12: false }) : "–";

  async function loadAlerts() {
    const tbody = $("alert-list");
    try {
      const { alerts } = await jj.api("/api/alerts");
      if (!alerts.length) { message(tbody, "无未处理告警 no open alert", 7); return; }
      tbody.replaceChildren(...alerts.map((a) => {
        const acked = a.acknowledged_at_us ? a.acknowledged_by + " · " + whenUs(a.acknowledged_at_us) : null;
        const ackCell = jj.el("td");
        if (acked) ackCell.textContent = acked;
        else ackCell.append(jj.el("button", { type: "button", class: "ack" }, "确认 Acknowledge"));
        const resolveCell = jj.el("td");
        resolveCell.append(jj.el("input", { class: "resolution", maxlength: "2000", placeholder: "处理结果 what was done",
                                            "aria-label": "resolution of alert " + a.id }),
                           jj.el("button", { type: "button", class: "resolve" }, "已处理 Resolve"),
                           jj.el("span", { class: "error" }));
        return row([String(a.id), a.kind, a.ref, a.message, whenUs(a.created_at_us), ackCell, resolveCell],
                   { "data-id": String(a.id), class: acked ? "acknowledged" : "new" });
      }));
    } catch (error) {
      message(tbody, "不可用 unavailable: " + error.message, 7);
    }
  }

  async function alertAction(tr, action) {
    const error = tr.querySelector(".error");
    error.textContent = "";
    let body;
    if (action === "resolve") {
      const resolution = tr.querySelector(".resolution").value.trim();
      if (!resolution) { error.textContent = "请写明处理结果 say what was done"; return; }
      body = { resolution };
    }
    const answer = await jj.request("POST", `/api/alerts/${tr.dataset.id}/${action}`, body);
    if (!answer.ok) { error.textContent = answer.body.error || "失败 failed"; return; }
    await loadAlerts();
  }

  // -- journal -------------------------------------------------------------------------------

  async function loadJournal() {
    const box = $("journal-detail");
    const state = $("journal-state");
    try {
      const { journal: j, retention: r } = await jj.api("/api/journal/status");
      state.textContent = j.ok ? "完整 intact" : "异常 " + j.findings_total;
      state.className = "value " + (j.ok ? "good" : "bad");
      $("journal-box").className = "panel " + (j.ok ? "intact" : "tampered");
      $("journal-sub").textContent = j.entries + " 条 entries · " + when(j.checked_at);
      const lines = [
        `${j.ok ? "✔ 校验通过 verified" : "✘ 发现问题 findings: " + j.findings_total} · ${j.entries} 条记录 entries · ` +
          `${j.anchors_checked} 个签名锚点 anchors checked${j.anchored ? "" : "（未配置锚点 no anchor file）"} · ` +
          `${j.pending} 条待入链 pending · 校验于 checked ${when(j.checked_at)}（${j.duration_s} s；录音文件未重算 recordings not re-hashed）`,
      ];
      for (const note of j.notes) lines.push("注 note: " + note);
      for (const f of j.findings) lines.push(`✘ ${f.kind}${f.seq ? " #" + f.seq : ""}: ${f.message}`);
      if (!r.enabled) lines.push("保留期 Retention: 永久保存 kept forever (JIEJING_RETENTION_DAYS = 0)");
      else {
        const res = r.last_result;
        lines.push(`保留期 Retention: ${r.retention_days} 天 days · 上次清理 last run ${when(r.last_run_at)}` +
          (res ? ` · 删除 expired ${res.tickets} 警单 tickets, ${res.recordings} 录音 recordings` : "") +
          ` · 下次 next ${when(r.next_run_at)}` + (r.last_error ? ` · ✘ ${r.last_error}` : ""));
      }
      box.replaceChildren(...lines.map((text) => jj.el("p", { class: text.startsWith("✘") ? "bad" : "" }, text)));
    } catch (error) {
      state.textContent = "–";
      box.replaceChildren(jj.el("p", { class: "bad" }, "校验不可用 verification unavailable: " + error.message));
    }
  }

  // -- forms ---------------------------------------------------------------------------------

  async function submit(form, action) {
    const error = form.querySelector(".error"), done = form.querySelector(".done");
    error.textContent = "";
    if (done) done.textContent = "";
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  }

  function post(path, body) {
    return jj.api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  }

  async function refreshSpotChecks() {
    await loadReport(await loadSample());
  }

  function wireForms() {
    for (const name of CRITERIA) {
      const select = document.querySelector(`#score-form select[name=${name}]`);
      select.replaceChildren(...[5, 4, 3, 2, 1].map((n) => jj.el("option", { value: String(n) }, String(n))));
    }
    const score = $("score-form");
    score.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(score, async () => {
        const scores = Object.fromEntries(CRITERIA.map((k) => [k, Number(score[k].value)]));
        const comment = score.comment.value.trim() || null;
        const saved = await post(`/api/quality/draws/${compact(range.day.value)}/scores`,
          { ticket: score.ticket.value, by: me.username, scores, comment });
        score.comment.value = "";
        score.querySelector(".done").textContent = "已保存 saved " + saved.ticket + " · " + num(saved.total);
        await refreshSpotChecks();
      });
    });
    const draw = $("draw-form");
    draw.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(draw, async () => {
        const size = draw.size.value ? Number(draw.size.value) : null;
        await post("/api/quality/draws", { day: compact(range.day.value), by: me.username, size });
        await refreshSpotChecks();
      });
    });
    const publish = $("publish-form");
    publish.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(publish, async () => {
        await post(`/api/quality/reports/${compact(range.day.value)}/publish`, { by: me.username });
        await refreshSpotChecks();
      });
    });
    const answer = $("answer-form");
    answer.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(answer, async () => {
        const caller = answer.caller.value.trim() || null;
        const saved = await post(`/api/complaints/${answer.id.value}/answer`,
          { answer: answer.answer.value, by: me.username, caller });
        answer.answer.value = "";
        answer.caller.value = "";
        answer.querySelector(".done").textContent = "已答复 answered #" + saved.id;
        await loadFollowUps();
      });
    });
    $("play").addEventListener("click", () => play(score.ticket.value));
    $("dossier").addEventListener("click", () => exportDossier(score.ticket.value));
    $("alert-list").addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-id]");
      if (!tr) return;
      if (event.target.classList.contains("ack")) alertAction(tr, "acknowledge");
      else if (event.target.classList.contains("resolve")) alertAction(tr, "resolve");
    });
    $("follow-up-list").addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-id]");
      if (tr) answer.id.value = tr.dataset.id;
    });
    $("sample-list").addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-ticket]");
      if (tr) score.ticket.value = tr.dataset.ticket;
    });
  }

  async function loadAll() {
    await Promise.all([loadRates(), refreshSpotChecks(), loadFollowUps(), loadAlerts(), loadJournal(), staffing.load()]);
    $("loaded").textContent = "更新于 updated " + new Date().toLocaleTimeString("zh-CN", { hour12: false });
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  }

  jj.whenLoggedIn((user) => {
    me = user;
    const today = new Date();
    const weekAgo = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6);
    range.day.value = isoDate(today);
    range.from.value = isoDate(weekAgo);
    range.to.value = isoDate(today);
    wireForms();
    majorPanel.start();
    range.addEventListener("submit", (event) => { event.preventDefault(); loadAll(); });
    loadAll();
  });
})();
