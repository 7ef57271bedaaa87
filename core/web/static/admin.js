// The admins' page: add users, reset passwords, change roles, disable and re-enable.
"use strict";
(() => {
  const ROLES = ["call_taker", "supervisor", "admin", "officer", "station", "gateway"];
  const status = document.getElementById("users-status");

  function say(text, bad) { status.textContent = text; status.classList.toggle("bad", !!bad); }

  async function act(method, path, body, done) {
    const answer = await jj.request(method, path, body);
    if (answer.ok) say(done);
    else say(answer.body.error || "失败 failed", true);
    await load();
    return answer.ok;
  }

  function row(user) {
    const tr = jj.el("tr", { "data-user": user.username });
    tr.append(jj.el("td", {}, user.username));
    const role = jj.el("select", { "class": "role", "aria-label": "role of " + user.username });
    for (const r of ROLES) { const o = jj.el("option", { value: r }, r); if (r === user.role) o.selected = true; role.append(o); }
    const roleCell = jj.el("td");
    roleCell.append(role);
    tr.append(roleCell);
    const station = jj.el("input", { "class": "station", size: "8", value: user.station || "", "aria-label": "station of " + user.username });
    const stationCell = jj.el("td");
    stationCell.append(station);
    tr.append(stationCell);
    const state = [user.disabled ? "已停用 disabled" : "正常 active"];
    if (user.must_change_password) state.push("须改密码 must change password");
    tr.append(jj.el("td", { "class": "state" }, state.join(" · ")));
    const actions = jj.el("td");
    const saveRole = jj.el("button", { type: "button", "class": "save-role" }, "改角色 Set role");
    saveRole.onclick = () => act("POST", `/api/users/${encodeURIComponent(user.username)}/role`,
      { role: role.value, station: station.value.trim() || null }, `${user.username}: ${role.value}`);
    const password = jj.el("input", { type: "password", "class": "new-password", size: "10", minlength: "8", placeholder: "新密码 new", autocomplete: "new-password" });
    const reset = jj.el("button", { type: "button", "class": "reset" }, "重置密码 Reset");
    reset.onclick = () => act("POST", `/api/users/${encodeURIComponent(user.username)}/password`,
      { password: password.value }, `${user.username}: 密码已重置 password reset`);
    const toggle = jj.el("button", { type: "button", "class": "toggle" }, user.disabled ? "启用 Enable" : "停用 Disable");
    toggle.onclick = () => act("POST", `/api/users/${encodeURIComponent(user.username)}/disabled`,
      { disabled: !user.disabled }, `${user.username}: ${user.disabled ? "已启用 enabled" : "已停用 disabled"}`);
    actions.append(saveRole, " ", password, reset, " ", toggle);
    tr.append(actions);
    return tr;
  }

  async function load() {
    const { users } = await jj.api("/api/users");
    document.getElementById("users").replaceChildren(...users.map(row));
  }

  jj.whenLoggedIn(async (me) => {
    if (me.role !== "admin") { say("仅限管理员 Admins only", true); return; }
    const form = document.getElementById("add-user");
    for (const r of ROLES) form.role.append(jj.el("option", { value: r }, r));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = form.querySelector(".error");
      const body = { username: form.username.value.trim(), role: form.role.value, password: form.password.value,
                     station: form.station.value.trim() || null };
      const answer = await jj.request("POST", "/api/users", body);
      error.textContent = answer.ok ? "" : (answer.body.error || "失败 failed");
      if (answer.ok) { form.reset(); say(`${body.username}: 已添加 added`); await load(); }
    });
    await load();
  });
})();
