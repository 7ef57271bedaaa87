// Shared by the operations pages: log-in, the token, authenticated fetches.
// The token lives in sessionStorage: it goes when the browser tab closes.
"use strict";
const jj = (() => {
  const KEY = "jiejing.token";
  const token = () => sessionStorage.getItem(KEY);

  // One authenticated request: {ok, status, body}; a refusal's body carries its error and error_id.
  async function request(method, path, body) {
    const options = { method, headers: { "Authorization": "Bearer " + token() } };
    if (body !== undefined) { options.headers["Content-Type"] = "application/json"; options.body = JSON.stringify(body); }
    const resp = await fetch(path, options);
    if (resp.status === 401) { sessionStorage.removeItem(KEY); location.reload(); }
    let answer = {};
    try { answer = await resp.json(); } catch (err) { answer = {}; }
    return { ok: resp.ok, status: resp.status, body: answer };
  }

  async function api(path, options = {}) {
    const headers = Object.assign({ "Authorization": "Bearer " + token() }, options.headers || {});
    const resp = await fetch(path, Object.assign({}, options, { headers }));
    if (resp.status === 401) { sessionStorage.removeItem(KEY); location.reload(); }
    if (!resp.ok) throw new Error((await resp.json()).error || resp.statusText);
    return resp.json();
  }

  function showLogin(onReady) {
    const form = document.getElementById("login");
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = form.querySelector(".error");
      error.textContent = "";
      const body = JSON.stringify({ username: form.username.value, password: form.password.value });
      const resp = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" }, body });
      const answer = await resp.json();
      if (!resp.ok) { error.textContent = answer.error || "登录失败"; return; }
      sessionStorage.setItem(KEY, answer.token);
      form.hidden = true;
      start(onReady);
    });
  }

  // A password someone else set (a new account, a reset): the user chooses his own before anything else.
  function showPasswordChange(onReady) {
    const form = el("form", { id: "password-change" });
    form.innerHTML = '<h2>请设置您自己的密码 Choose your own password</h2>' +
      '<p>此密码由管理员设置，须先修改。The password was set by an administrator: change it first.</p>' +
      '<label>当前密码 Current<input name="current" type="password" autocomplete="current-password" required></label>' +
      '<label>新密码 New (8+)<input name="new" type="password" autocomplete="new-password" minlength="8" required></label>' +
      '<label>再输一次 Again<input name="again" type="password" autocomplete="new-password" minlength="8" required></label>' +
      '<div class="error"></div><button type="submit">修改 Change</button>';
    document.body.insertBefore(form, document.getElementById("content"));
    form.current.focus();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = form.querySelector(".error");
      error.textContent = "";
      if (form.new.value !== form.again.value) { error.textContent = "两次输入不一致 The two differ"; return; }
      const answer = await request("POST", "/api/password", { current: form.current.value, new: form.new.value });
      if (!answer.ok) { error.textContent = answer.body.error || "修改失败"; return; }
      form.remove();
      start(onReady);
    });
  }

  async function start(onReady) {
    const me = await api("/api/me");
    if (me.must_change_password) { showPasswordChange(onReady); return; }
    document.querySelectorAll(".who").forEach((el) => { el.textContent = me.username + " · " + me.role; });
    document.querySelectorAll(".logout").forEach((el) => {
      el.hidden = false;
      el.onclick = async () => { await api("/api/logout", { method: "POST" }); sessionStorage.removeItem(KEY); location.reload(); };
    });
    document.getElementById("content").hidden = false;
    onReady(me);
  }

  // Run onReady(user) once logged in, showing the log-in form first if needed.
  function whenLoggedIn(onReady) {
    if (token()) start(onReady).catch(() => showLogin(onReady));
    else showLogin(onReady);
  }

  // The token travels as a WebSocket subprotocol, never in the URL (servers and proxies log URLs).
  function socketUrl(path) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + path;
  }

  function socketProtocols() {
    return ["jiejing", "jiejing.bearer." + token()];
  }

  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- maps drawn in SVG (heat map, situation) -------------------------------------------------
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A cell's fill for ``value`` of ``max``: dark when nothing, then pale yellow → orange → red, on a log scale.
  function heat(value, max) {
    if (!(value > 0)) return "#16212d";
    const t = Math.min(1, Math.log1p(value) / Math.log1p(Math.max(max, 1e-6)));
    const stops = [[255, 243, 176], [255, 140, 26], [193, 18, 31]];
    const [a, b, u] = t < 0.5 ? [stops[0], stops[1], t * 2] : [stops[1], stops[2], (t - 0.5) * 2];
    return "rgb(" + a.map((v, i) => Math.round(v + (b[i] - v) * u)).join(",") + ")";
  }

  // [lat, lon] → [x, y] in a w × h drawing with pad around it, fitted to ``points`` (equirectangular, true at
  // the points' middle latitude: a city is small enough).
  function projector(points, w, h, pad) {
    const lats = points.map((p) => p[0]), lons = points.map((p) => p[1]);
    const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2;
    const k = Math.cos(lat0 * Math.PI / 180);
    const minX = Math.min(...lons) * k, maxX = Math.max(...lons) * k;
    const minY = Math.min(...lats), maxY = Math.max(...lats);
    const scale = Math.min((w - 2 * pad) / Math.max(maxX - minX, 1e-6), (h - 2 * pad) / Math.max(maxY - minY, 1e-6));
    const offX = (w - (maxX - minX) * scale) / 2, offY = (h - (maxY - minY) * scale) / 2;
    return ([lat, lon]) => [offX + (lon * k - minX) * scale, offY + (maxY - lat) * scale];
  }

  // -- a declared major incident, as the room is told of it (desk badge, wallboard banner) ------
  const MAJOR_EVERY_MS = 5000;

  function majorText(incident) {
    return "重大事件 MAJOR INCIDENT · " + incident.title + " · 来电按 1 关联 press 1 → " + incident.ticket;
  }

  // ``show(incident or null)`` now and every few seconds while the page is open (a poll: declarations are rare).
  function watchMajor(show) {
    const look = async () => {
      const answer = await request("GET", "/api/major-incident");
      if (answer.ok) show(answer.body.current);
    };
    look();
    setInterval(look, MAJOR_EVERY_MS);
  }

  return { api, request, whenLoggedIn, socketUrl, socketProtocols, el, token, svg, heat, projector, majorText,
           watchMajor };
})();
