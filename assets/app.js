// Overlord dashboard: plain JS, no framework. It uses the same HTTP API as
// scripts (CSV), authenticated by the HttpOnly session cookie that
// POST /v1/login sets; every state-changing request carries the session's
// CSRF token in X-Overlord-CSRF.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = {
    csrf: "",
    user: "",
    tileUrl: "",
    devices: [], // rows of GET /v1/devices, as objects
    byId: new Map(),
    selected: null,
    expanded: new Set(), // device ids whose sensors are shown in the tree
    sensors: new Map(), // device id -> [{sensor,time,value}]
    rows: [], // visible tree rows
    view: "device",
    presenceAfter: null, // index of the last presence event applied
    presenceSince: "", // when the session's first device list was read
    timers: [],
  };
  window.overlord = state; // for tests and the curious

  // ---- CSV (RFC 4180) ---------------------------------------------------
  function parseCsv(text) {
    const rows = [];
    let row = [], field = "", i = 0, quoted = false;
    while (i < text.length) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') { field += '"'; i += 2; continue; }
          quoted = false; i++; continue;
        }
        field += c; i++; continue;
      }
      if (c === '"') { quoted = true; i++; continue; }
      if (c === ",") { row.push(field); field = ""; i++; continue; }
      if (c === "\n" || c === "\r") {
        row.push(field); rows.push(row); row = []; field = "";
        i += c === "\r" && text[i + 1] === "\n" ? 2 : 1; continue;
      }
      field += c; i++;
    }
    if (field !== "" || row.length) { row.push(field); rows.push(row); }
    return rows;
  }
  function records(text) {
    const rows = parseCsv(text);
    const head = rows.shift() || [];
    return rows.map((r) => Object.fromEntries(head.map((h, i) => [h, r[i] ?? ""])));
  }

  // ---- HTTP ---------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      const parts = parseCsv(body)[0] || [];
      super(parts[0] === "error" ? parts.slice(2).join(",") || parts[1] : "HTTP " + status);
      this.status = status; this.code = parts[1] || "";
    }
  }
  async function api(method, path, form) {
    // X-Overlord-CSRF goes with every request: the token proves the page
    // is ours on changes, and its presence tells the server not to answer
    // 401 with a Basic challenge (the browser's own password dialog).
    const opts = { method, headers: { "X-Overlord-CSRF": state.csrf }, credentials: "same-origin" };
    if (form) {
      opts.headers["Content-Type"] = "application/x-www-form-urlencoded";
      opts.body = new URLSearchParams(form).toString();
    }
    const r = await fetch(path, opts);
    const text = await r.text();
    if (r.status === 401 && path !== "/v1/login") { showLogin(); throw new ApiError(r.status, text); }
    if (!r.ok) throw new ApiError(r.status, text);
    return { text, headers: r.headers };
  }
  const q = encodeURIComponent;

  // ---- Log in / out -------------------------------------------------------
  function showLogin(msg) {
    state.timers.forEach(clearInterval); state.timers = [];
    $("app").hidden = true; $("login").hidden = false;
    $("login-error").textContent = msg || "";
    $("login-name").focus();
  }
  async function startSession() {
    let s;
    try { s = records((await api("GET", "/v1/session")).text)[0]; } catch (e) { showLogin(); return; }
    state.csrf = s.csrf; state.user = s.user; state.tileUrl = s.tile_url || "";
    $("whoami").textContent = s.user + " (" + s.role + ")";
    $("login").hidden = true; $("app").hidden = false;
    state.presenceAfter = null; state.presenceSince = "";
    await loadDevices();
    state.timers.push(setInterval(pollPresence, 3000));
    state.timers.push(setInterval(loadDevices, 30000));
    state.timers.push(setInterval(refreshSent, 1000));
    state.timers.push(setInterval(() => state.selected && loadCommands(state.selected), 3000));
    state.timers.push(setInterval(refreshSensors, 5000));
    pollPresence();
    showView(state.view);
    const again = /^#device=(.+)$/.exec(location.hash);
    if (again && state.byId.has(decodeURIComponent(again[1]))) selectDevice(decodeURIComponent(again[1]), false);
  }
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      await api("POST", "/v1/login", { name: $("login-name").value, password: $("login-password").value });
      $("login-password").value = "";
      await startSession();
    } catch (e) { $("login-error").textContent = e.message; }
  });
  $("logout").addEventListener("click", async () => {
    try { await api("POST", "/v1/logout"); } catch (e) { /* the session is gone either way */ }
    state.csrf = "";
    showLogin("Logged out.");
  });

  // ---- Views ----------------------------------------------------------------
  function showView(v) {
    state.view = v;
    for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + v;
    for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.view === v);
    if (v === "map") drawMap(true);
    if (v === "alerts") loadAlerts();
  }
  const phone = () => window.matchMedia("(max-width: 600px)").matches;
  for (const b of document.querySelectorAll(".tab")) {
    b.addEventListener("click", () => {
      showView(b.dataset.view);
      // On a phone the views are below the tree: show the one picked.
      if (phone()) $("views").scrollIntoView({ block: "start" });
    });
  }

  // ---- Devices and the tree -------------------------------------------------
  async function loadDevices() {
    const t0 = performance.now();
    const r = await api("GET", "/v1/devices");
    const list = records(r.text);
    // The presence feed is read from the time of this first list on (the
    // server's clock: the reply's Date), never from its start: replaying
    // old events over the list drew devices in states they had left.
    if (!state.presenceSince) {
      const at = Date.parse(r.headers.get("Date") || "");
      state.presenceSince = new Date(isFinite(at) ? at : Date.now() - 60000).toISOString();
    }
    for (const d of list) {
      d.lat = d.latitude === "" ? NaN : +d.latitude;
      d.lon = d.longitude === "" ? NaN : +d.longitude;
      d.search = (d.id + " " + d.name + " " + d.tags + " " + d.location).toLowerCase();
    }
    state.devices = list;
    state.byId = new Map(list.map((d) => [d.id, d]));
    buildTree();
    if (state.view === "map") drawMap(false);
    if (state.selected && state.byId.has(state.selected)) renderDeviceMeta(state.byId.get(state.selected));
    state.loadMs = performance.now() - t0;
    document.body.dataset.devices = String(list.length);
  }

  function buildTree() {
    const term = $("search").value.trim().toLowerCase();
    const children = new Map();
    const roots = [];
    for (const d of state.devices) {
      if (d.parent && state.byId.has(d.parent)) {
        if (!children.has(d.parent)) children.set(d.parent, []);
        children.get(d.parent).push(d);
      } else roots.push(d);
    }
    const rows = [];
    const match = (d) => !term || d.search.includes(term);
    const push = (d, depth) => {
      rows.push({ d, depth });
      if (state.expanded.has(d.id)) {
        for (const s of state.sensors.get(d.id) || []) rows.push({ s, d, depth: depth + 1 });
      }
    };
    // Gateways first, then the rest; each followed by the devices below it.
    roots.sort((a, b) => (b.gateway === "true") - (a.gateway === "true") || a.id.localeCompare(b.id));
    for (const d of roots) {
      const kids = children.get(d.id) || [];
      const keptKids = kids.filter(match);
      if (!match(d) && keptKids.length === 0) continue;
      push(d, 0);
      for (const k of keptKids) push(k, 1);
    }
    state.rows = rows;
    const shown = rows.filter((r) => !r.s).length;
    $("tree-count").textContent = term ? `${shown} of ${state.devices.length} devices` : `${state.devices.length} devices`;
    const inner = $("tree").firstElementChild;
    measureRow();
    inner.style.height = rows.length * ROW + "px";
    renderTree();
  }
  // Row height of the tree: CSS --row (taller on a phone, for fingers).
  let ROW = 22;
  function measureRow() { ROW = parseFloat(getComputedStyle($("tree")).getPropertyValue("--row")) || 22; }
  function ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function stateClass(st) { return ["online", "offline", "unreachable"].includes(st) ? st : "unknown"; }
  // The state to show, by the server's rule (presence.rs, state_in): a
  // device whose gateway is offline is unreachable, whatever its own last
  // event said. The tree, the map and the details all show this.
  function shownState(d) {
    const p = d.parent && state.byId.get(d.parent);
    return p && p.state === "offline" ? "unreachable" : stateClass(d.state);
  }
  function renderTree() {
    const box = $("tree"), inner = box.firstElementChild;
    const first = Math.max(0, Math.floor(box.scrollTop / ROW) - 5);
    const last = Math.min(state.rows.length, first + Math.ceil((box.clientHeight || 600) / ROW) + 10);
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      const r = state.rows[i];
      const el = document.createElement("div");
      el.style.top = i * ROW + "px";
      el.style.paddingLeft = 4 + r.depth * 16 + "px";
      if (r.s) {
        el.className = "row sensor";
        const s = r.s, unit = s.unit ? " " + s.unit : "", label = s.label ? " · " + s.label : "";
        el.textContent = s.time ? `${s.sensor} = ${s.value}${unit}${label}  (${ago(s.time)})` : `${s.sensor}${label}`;
        if (s.description) el.title = s.description;
      } else {
        const d = r.d;
        el.className = "row device" + (state.selected === d.id ? " selected" : "");
        el.dataset.id = d.id;
        const dot = document.createElement("span");
        const st = shownState(d);
        dot.className = "dot " + st;
        dot.title = st === "unknown" ? "never seen" : st;
        const label = document.createElement("span");
        label.textContent = (d.gateway === "true" ? "▣ " : "") + (d.name || d.id) + (d.name && d.name !== d.id ? ` (${d.id})` : "");
        const seen = document.createElement("span");
        seen.className = "seen";
        seen.textContent = ago(d.last_seen);
        el.append(dot, label, seen);
      }
      frag.append(el);
    }
    inner.replaceChildren(frag);
  }
  $("tree").addEventListener("scroll", renderTree);
  window.addEventListener("resize", () => { if (!$("app").hidden) buildTree(); });
  $("tree").addEventListener("click", (ev) => {
    const el = ev.target.closest(".row.device");
    if (el) selectDevice(el.dataset.id, true);
  });
  $("search").addEventListener("input", () => { buildTree(); if (state.view === "map") drawMap(false); });

  async function selectDevice(id, toggle) {
    const d = state.byId.get(id);
    if (!d) return;
    if (toggle && state.selected === id && state.expanded.has(id)) state.expanded.delete(id);
    else state.expanded.add(id);
    state.selected = id;
    history.replaceState(null, "", "#device=" + q(id)); // a reload shows it again
    renderDeviceMeta(d);
    if (state.view !== "map") showView("device");
    // On a phone the details are below the tree: bring them into view.
    if (toggle && phone()) $("views").scrollIntoView({ block: "start" });
    renderSent();
    loadInbox(id).catch(() => {});
    await loadSensors(id);
    buildTree();
    loadCommands(id);
  }
  // The device's command history from the server (GET /v1/devices/ID/commands):
  // it outlives the page. Hidden for callers who may not send to the device.
  async function loadCommands(id) {
    try {
      const rows = records((await api("GET", `/v1/devices/${q(id)}/commands?limit=20`)).text);
      if (state.selected !== id) return;
      $("commands").tBodies[0].replaceChildren(...rows.map((r) =>
        tr([r.seq, r.state, r.queued, r.delivered, r.done, r.sensor, r.value, r.result], "state-" + r.state)));
      $("commands-panel").hidden = false;
    } catch (e) { $("commands-panel").hidden = true; }
  }
  async function loadSensors(id) {
    try {
      const rows = records((await api("GET", `/v1/devices/${q(id)}/sensors?labels=1`)).text);
      state.sensors.set(id, rows);
      if (state.selected === id) {
        const body = $("device-sensors").tBodies[0];
        body.replaceChildren(...rows.map((r) => tr([sensorName(id, r.sensor), r.time, r.value])));
      }
    } catch (e) { /* shown as no sensors */ }
  }
  // Last values of the devices open in the tree, every 5 s (at most 10).
  async function refreshSensors() {
    const ids = [...state.expanded].slice(-10);
    for (const id of ids) await loadSensors(id);
    if (ids.length) buildTree(); // sensor rows are part of the tree's rows
  }
  // "Label (N1, °C)" for a sensor with labels (GET .../sensors?labels=1),
  // else its wire name.
  function sensorName(id, sensor) {
    const s = (state.sensors.get(id) || []).find((r) => r.sensor === sensor);
    if (!s || !s.label) return sensor;
    return `${s.label} (${sensor}${s.unit ? ", " + s.unit : ""})`;
  }
  function tr(cells, cls) {
    const row = document.createElement("tr");
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; row.append(td); }
    if (cls) row.className = cls;
    return row;
  }
  function renderDeviceMeta(d) {
    $("device-empty").hidden = true; $("device").hidden = false;
    $("device-title").textContent = d.name && d.name !== d.id ? `${d.name} (${d.id})` : d.id;
    $("device-map").hidden = !(isFinite(d.lat) && isFinite(d.lon));
    const dl = $("device-meta");
    dl.replaceChildren();
    for (const k of ["state", "last_seen", "parent", "gateway", "kind", "latitude", "longitude", "location", "tags", "owner", "description"]) {
      if (!d[k]) continue;
      const dt = document.createElement("dt"); dt.textContent = k.replace("_", " ");
      const dd = document.createElement("dd");
      dd.textContent = k === "last_seen" ? `${d[k]} (${ago(d[k])})` : k === "state" ? shownState(d) : d[k];
      dl.append(dt, dd);
    }
  }

  // Live updates: presence events every 3 s (state changes appear without
  // a reload), the whole list every 30 s (last seen, new devices).
  async function pollPresence() {
    try {
      // Before the first event: every event since the first device list
      // (the same time on every poll, so nothing in between is missed);
      // then after the last one applied.
      const from = state.presenceAfter === null
        ? "since=" + q(state.presenceSince)
        : "after=" + state.presenceAfter;
      const evs = records((await api("GET", "/v1/presence/events?" + from)).text);
      let changed = false, gateway = false;
      for (const e of evs) {
        state.presenceAfter = Math.max(state.presenceAfter ?? 0, +e.index);
        const d = state.byId.get(e.device);
        if (d) { d.state = e.state; if (e.last_seen) d.last_seen = e.last_seen; changed = true; }
        if (d && d.gateway === "true") gateway = true;
      }
      // A gateway's change changes the devices behind it without events of
      // their own: coming back, each is again what it was (only the server
      // knows), so the list is read again.
      if (gateway) await loadDevices();
      else if (changed) {
        renderTree();
        if (state.view === "map") drawMap(false);
        if (state.selected && state.byId.has(state.selected)) renderDeviceMeta(state.byId.get(state.selected));
      }
    } catch (e) { /* next round */ }
    document.body.dataset.presencePolls = String(+(document.body.dataset.presencePolls || 0) + 1);
  }

  // ---- Messages and commands ------------------------------------------------
  // The list under the form is the device's inbox as the server keeps it
  // (GET /v1/devices/ID/inbox: every row waiting for the device, whoever
  // sent it; for a device behind a gateway, its rows in the gateway's
  // inbox), so it survives a reload. A row this page saw waiting and then
  // gone was acknowledged by the device; the server keeps no record of
  // acknowledged rows, so after a reload only waiting ones are listed.
  const inboxes = new Map(); // device id -> Map(seq -> row with a status)
  const refused = []; // sends the server refused: {device, kind, sensor, value, status}
  const ACKED_KEPT = 50; // acknowledged rows remembered per device
  $("send-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = state.selected;
    const form = { kind: $("send-kind").value, value: $("send-value").value };
    if ($("send-sensor").value) form.sensor = $("send-sensor").value;
    try {
      const r = parseCsv((await api("POST", `/v1/devices/${q(id)}/inbox`, form)).text)[0];
      // Listed at once, in case the device takes it before the next look.
      inboxOf(id).set(r[1], { seq: r[1], kind: form.kind, time: new Date().toISOString(), from: "user:" + state.user, sensor: form.sensor || "", value: form.value, status: "queued" });
      $("send-value").value = "";
      renderSent();
      await loadInbox(id);
    } catch (e) {
      refused.unshift({ device: id, seq: "", kind: form.kind, time: "", from: "", sensor: form.sensor || "", value: form.value, status: "refused: " + e.message });
      refused.length = Math.min(refused.length, ACKED_KEPT);
      renderSent();
    }
  });
  function inboxOf(id) {
    if (!inboxes.has(id)) inboxes.set(id, new Map());
    return inboxes.get(id);
  }
  const noInbox = new Set(); // devices whose inbox this user may not see (read-only grants)
  async function loadInbox(id) {
    if (noInbox.has(id)) return;
    let rows;
    try { rows = records((await api("GET", `/v1/devices/${q(id)}/inbox`)).text); }
    catch (e) { if (e.status === 403 || e.status === 404) noInbox.add(id); throw e; }
    const known = inboxOf(id), waiting = new Set(rows.map((r) => r.seq));
    for (const r of rows) known.set(r.seq, { ...r, status: "queued" });
    for (const row of known.values()) if (row.status === "queued" && !waiting.has(row.seq)) row.status = "acknowledged";
    const acked = [...known.values()].filter((r) => r.status !== "queued").sort((a, b) => a.seq - b.seq);
    for (const r of acked.slice(0, Math.max(0, acked.length - ACKED_KEPT))) known.delete(r.seq);
    if (id === state.selected) renderSent();
  }
  function renderSent() {
    const id = state.selected;
    const rows = [...refused.filter((s) => s.device === id), ...[...inboxOf(id).values()].sort((a, b) => b.seq - a.seq)];
    $("sent").tBodies[0].replaceChildren(...rows.map((s) => tr([s.seq, s.kind, s.time, s.from, s.sensor, s.value, s.status], "status-" + s.status.split(":")[0])));
  }
  // Every second while a row is waiting (the selected device's, and at
  // most 10 others'), else every 5 s for the selected device.
  let sentTick = 0;
  async function refreshSent() {
    if ($("app").hidden) return;
    const ids = [...inboxes].filter(([, m]) => [...m.values()].some((r) => r.status === "queued")).map(([id]) => id).slice(0, 10);
    const sel = state.selected;
    if (sel && !noInbox.has(sel) && !ids.includes(sel) && sentTick++ % 5 === 0) ids.push(sel);
    for (const id of ids) {
      try { await loadInbox(id); } catch (e) { /* next round */ }
    }
  }

  // ---- Map and charts (map.js, chart.js) -----------------------------------------
  const ui = { $, state, api, q, parseCsv, records, stateClass, shownState, ago, renderDeviceMeta, loadSensors, renderTree, showView, sensorName };
  const drawMap = window.overlordParts.map(ui).draw;
  window.overlordParts.chart(ui);

  // ---- Alerts -------------------------------------------------------------------
  function table(el, text, extra) {
    const rows = parseCsv(text);
    const head = rows.shift() || [];
    el.tHead.replaceChildren(tr(extra ? [...head, ""] : head));
    el.tBodies[0].replaceChildren(...rows.map((r) => {
      const row = tr(r);
      if (extra) { const td = document.createElement("td"); extra(Object.fromEntries(head.map((h, i) => [h, r[i]])), td); row.append(td); }
      return row;
    }));
  }
  async function loadAlerts() {
    try {
      const text = (await api("GET", "/v1/alerts")).text;
      state.alertNames = new Set(records(text).map((a) => a.name));
      table($("alerts"), text, (a, td) => {
        const ev = document.createElement("button"); ev.textContent = "history";
        ev.addEventListener("click", () => loadEvents(a.name));
        const ed = document.createElement("button"); ed.textContent = "edit";
        ed.addEventListener("click", () => {
          for (const k of ["name", "device", "sensor", "min", "max", "message"]) $("alert-" + k).value = a[k] ?? "";
        });
        const del = document.createElement("button"); del.textContent = "delete";
        del.addEventListener("click", async () => {
          try { await api("DELETE", `/v1/alerts/${q(a.name)}`); loadAlerts(); } catch (e) { $("alert-status").textContent = e.message; }
        });
        td.append(ev, " ", ed, " ", del);
      });
    } catch (e) { $("alert-status").textContent = e.message; }
  }
  async function loadEvents(name) {
    $("events-title").textContent = `Firing history of ${name}`;
    try { table($("alert-events"), (await api("GET", `/v1/alerts/${q(name)}/events`)).text); }
    catch (e) { $("alert-status").textContent = e.message; }
  }
  $("alert-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = {};
    for (const k of ["name", "device", "sensor", "min", "max", "message", "to_target"]) { const v = $("alert-" + k).value.trim(); if (v) form[k] = v; }
    try {
      // Changing an alert replaces it: delete the old one, then create.
      if (state.alertNames && state.alertNames.has(form.name)) await api("DELETE", `/v1/alerts/${q(form.name)}`);
      await api("POST", "/v1/alerts", form);
      $("alert-status").textContent = `Saved ${form.name}.`;
      loadAlerts();
    } catch (e) { $("alert-status").textContent = e.message; }
  });
  // What the other panels' scripts (targets.js, channels.js) use.
  state.ui = { api, table, q, records, tr };
  startSession();
})();
