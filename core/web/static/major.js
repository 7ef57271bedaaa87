// The supervisor's major-incident panel: declare one (type, place, optionally on a ticket), upload the message
// new 110 callers hear while they wait ("if you are calling about the fire at …, press 1"), end it.
"use strict";
const majorPanel = (() => {
  const $ = (id) => document.getElementById(id);
  const when = (t) => new Date(t * 1000).toLocaleTimeString("zh-CN", { hour12: false });

  function draw(state) {
    const current = state.current;
    const kinds = $("major-declare").kind;
    if (!kinds.options.length) {
      for (const k of state.kinds) kinds.append(jj.el("option", { value: k.kind }, k.label));
    }
    $("major-declare").hidden = !!current;
    $("major-declared").hidden = !current;
    $("major-current").hidden = !current;
    $("major-box").classList.toggle("declared", !!current);
    if (!current) {
      $("major-state").textContent = "未宣布 none declared";
      return;
    }
    const message = current.message.recorded
      ? "来电听到录音 callers hear the recorded message"
      : "来电听到通用提示（请上传录音）callers hear the generic prompt: upload a recording";
    $("major-current").textContent = "重大事件 MAJOR INCIDENT · " + current.title + " · 警单 " + current.ticket +
      " · " + (current.declared_by || "-") + " " + when(current.declared_at) + " · " + message;
    $("major-state").textContent = "已宣布 declared · 按 1 的来电关联到 " + current.ticket;
  }

  async function load() {
    try {
      draw(await jj.api("/api/major-incident"));
    } catch (err) {
      $("major-state").textContent = "无法读取 unavailable: " + err.message;
    }
  }

  async function act(form, method, path, body, headers) {
    const error = form.querySelector(".error");
    const done = form.querySelector(".done");
    error.textContent = "";
    if (done) done.textContent = "";
    const resp = await fetch(path, { method, body, headers: Object.assign({ "Authorization": "Bearer " + jj.token() }, headers) });
    let answer = {};
    try { answer = await resp.json(); } catch (err) { answer = {}; }
    if (!resp.ok) {
      error.textContent = answer.error || resp.statusText;
      return null;
    }
    draw(answer);
    return answer;
  }

  function wire() {
    const declare = $("major-declare");
    declare.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { kind: declare.kind.value };
      for (const name of ["address", "ticket", "reason"]) if (declare[name].value.trim()) body[name] = declare[name].value.trim();
      for (const name of ["lat", "lon"]) if (declare[name].value !== "") body[name] = Number(declare[name].value);
      if (await act(declare, "POST", "/api/major-incident", JSON.stringify(body), { "Content-Type": "application/json" })) {
        declare.reset();
      }
    });
    const message = $("major-message");
    message.addEventListener("submit", async (event) => {
      event.preventDefault();
      const file = message.file.files[0];
      if (!file) return;
      if (await act(message, "PUT", "/api/major-incident/message", file, { "Content-Type": "audio/wav" })) {
        message.querySelector(".done").textContent = "已上传 uploaded";
        message.reset();
      }
    });
    const end = $("major-end");
    end.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = end.reason.value.trim() ? { reason: end.reason.value.trim() } : {};
      if (await act(end, "POST", "/api/major-incident/end", JSON.stringify(body), { "Content-Type": "application/json" })) {
        end.reset();
      }
    });
  }

  // Started by the page once logged in (supervisor.js).
  function start() {
    wire();
    load();
    setInterval(load, 5000);  // another supervisor may declare or end it
  }

  return { start };
})();
