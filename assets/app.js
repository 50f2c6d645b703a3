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
    presenceAfter: null,
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
    await loadDevices();
    state.presenceAfter = null;
    state.timers.push(setInterval(pollPresence, 3000));
    state.timers.push(setInterval(loadDevices, 30000));
    state.timers.push(setInterval(refreshSent, 1000));
    state.timers.push(setInterval(() => state.selected && loadCommands(state.selected), 3000));
    state.timers.push(setInterval(refreshSensors, 5000));
    pollPresence();
    showView(state.view);
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
  for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showView(b.dataset.view));

  // ---- Devices and the tree -------------------------------------------------
  async function loadDevices() {
    const t0 = performance.now();
    const list = records((await api("GET", "/v1/devices")).text);
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
    inner.style.height = rows.length * ROW + "px";
    renderTree();
  }
  const ROW = 22;
  function ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return Math.round(s) + " s ago";
    if (s < 5400) return Math.round(s / 60) + " min ago";
    if (s < 172800) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function stateClass(st) { return ["online", "offline", "unreachable"].includes(st) ? st : "unknown"; }
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
        dot.className = "dot " + stateClass(d.state);
        dot.title = d.state || "never seen";
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
    renderDeviceMeta(d);
    if (state.view !== "map") showView("device");
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
    const dl = $("device-meta");
    dl.replaceChildren();
    for (const k of ["state", "last_seen", "parent", "gateway", "kind", "latitude", "longitude", "location", "tags", "owner", "description"]) {
      if (!d[k]) continue;
      const dt = document.createElement("dt"); dt.textContent = k.replace("_", " ");
      const dd = document.createElement("dd"); dd.textContent = k === "last_seen" ? `${d[k]} (${ago(d[k])})` : d[k];
      dl.append(dt, dd);
    }
  }

  // Live updates: presence events every 3 s (state changes appear without
  // a reload), the whole list every 30 s (last seen, new devices).
  async function pollPresence() {
    try {
      const from = state.presenceAfter === null
        ? "since=" + q(new Date(Date.now() - 60000).toISOString())
        : "after=" + state.presenceAfter;
      const evs = records((await api("GET", "/v1/presence/events?" + from)).text);
      let changed = false;
      for (const e of evs) {
        state.presenceAfter = Math.max(state.presenceAfter ?? 0, +e.index);
        const d = state.byId.get(e.device);
        if (d) { d.state = e.state; if (e.last_seen) d.last_seen = e.last_seen; changed = true; }
      }
      if (state.presenceAfter === null) state.presenceAfter = 0;
      if (changed) {
        renderTree();
        if (state.view === "map") drawMap(false);
        if (state.selected && state.byId.has(state.selected)) renderDeviceMeta(state.byId.get(state.selected));
      }
    } catch (e) { /* next round */ }
  }

  // ---- Messages and commands ------------------------------------------------
  const sent = []; // {device, seq, kind, sensor, value, status}
  $("send-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const id = state.selected;
    const form = { kind: $("send-kind").value, value: $("send-value").value };
    if ($("send-sensor").value) form.sensor = $("send-sensor").value;
    try {
      const r = parseCsv((await api("POST", `/v1/devices/${q(id)}/inbox`, form)).text)[0];
      // Rows for a device behind a gateway wait in the gateway's inbox.
      const d = state.byId.get(id), gw = d && d.parent && state.byId.get(d.parent);
      const inbox = gw && gw.gateway === "true" ? gw.id : id;
      sent.unshift({ device: id, inbox, seq: r[1], kind: form.kind, sensor: form.sensor || "", value: form.value, status: "queued" });
      $("send-value").value = "";
      renderSent();
    } catch (e) { sent.unshift({ device: id, seq: "", kind: form.kind, sensor: form.sensor || "", value: form.value, status: "refused: " + e.message }); renderSent(); }
  });
  function renderSent() {
    const rows = sent.filter((s) => s.device === state.selected);
    $("sent").tBodies[0].replaceChildren(...rows.map((s) => tr([s.seq, s.kind, s.sensor, s.value, s.status], "status-" + s.status)));
  }
  // A row stays in the inbox until the device acknowledges it; gone means
  // acknowledged.
  async function refreshSent() {
    const inboxes = [...new Set(sent.filter((s) => s.status === "queued").map((s) => s.inbox))];
    for (const id of inboxes) {
      try {
        const pending = new Set(records((await api("GET", `/v1/devices/${q(id)}/inbox`)).text).map((r) => r.seq));
        for (const s of sent) if (s.inbox === id && s.status === "queued" && !pending.has(s.seq)) s.status = "acknowledged";
      } catch (e) { /* next round */ }
    }
    if (inboxes.length) renderSent();
  }

  // ---- Map --------------------------------------------------------------------
  // Web Mercator, so optional tiles ({z}/{x}/{y}) line up with the outline.
  const map = { zoom: 0, cx: 128, cy: 128, fitted: false, hits: [], tiles: new Map() };
  state.map = map;
  function project(lon, lat) {
    const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
    return [((lon + 180) / 360) * 256, (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * 256];
  }
  function fitMap() {
    const c = $("map"), pts = state.devices.filter((d) => isFinite(d.lat) && isFinite(d.lon)).map((d) => project(d.lon, d.lat));
    let x0 = 0, x1 = 256, y0 = 40, y1 = 200;
    if (pts.length) {
      x0 = Math.min(...pts.map((p) => p[0])); x1 = Math.max(...pts.map((p) => p[0]));
      y0 = Math.min(...pts.map((p) => p[1])); y1 = Math.max(...pts.map((p) => p[1]));
    }
    const w = Math.max(x1 - x0, 0.02), h = Math.max(y1 - y0, 0.02);
    map.zoom = Math.max(0, Math.min(18, Math.log2(Math.min(c.clientWidth / (w * 1.3), c.clientHeight / (h * 1.3)))));
    map.cx = (x0 + x1) / 2; map.cy = (y0 + y1) / 2;
  }
  const COLORS = { online: "#2a9d3f", offline: "#d62828", unreachable: "#f18f01", unknown: "#9aa3ad" };
  function drawMap(fit) {
    const c = $("map");
    const dpr = window.devicePixelRatio || 1;
    const W = c.clientWidth, H = c.clientHeight;
    if (!W || !H) return;
    if (c.width !== W * dpr || c.height !== H * dpr) { c.width = W * dpr; c.height = H * dpr; }
    if (fit === true && !map.fitted) { fitMap(); map.fitted = true; }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.fillStyle = "#cfe3f3"; g.fillRect(0, 0, W, H);
    const k = Math.pow(2, map.zoom);
    const sx = (x) => (x - map.cx) * k + W / 2, sy = (y) => (y - map.cy) * k + H / 2;
    if (state.tileUrl) drawTiles(g, W, H, k);
    // World outline (shipped in the binary), repeated east and west.
    g.fillStyle = state.tileUrl ? "rgba(0,0,0,0)" : "#f1efe6"; g.strokeStyle = "#8c8a80"; g.lineWidth = 0.7;
    for (const shift of [-256, 0, 256]) {
      if (sx(shift) > W || sx(shift + 256) < 0) continue;
      g.beginPath();
      for (const ring of window.OVERLORD_WORLD || []) {
        for (let i = 0; i < ring.length; i += 2) {
          const p = project(ring[i], ring[i + 1]);
          const x = sx(p[0] + shift), y = sy(p[1]);
          if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
        }
        g.closePath();
      }
      g.fill(); g.stroke();
    }
    // Devices: a dot each, or a grid cluster when several share a cell.
    const term = $("search").value.trim().toLowerCase();
    const CELL = 28, cells = new Map();
    for (const d of state.devices) {
      if (!isFinite(d.lat) || !isFinite(d.lon)) continue;
      if (term && !d.search.includes(term)) continue;
      if (!d.px) d.px = project(d.lon, d.lat);
      const x = sx(d.px[0]), y = sy(d.px[1]);
      if (x < -CELL || y < -CELL || x > W + CELL || y > H + CELL) continue;
      const key = Math.floor(x / CELL) + "," + Math.floor(y / CELL);
      let cell = cells.get(key);
      if (!cell) { cell = { x: 0, y: 0, n: 0, devs: [], st: {} }; cells.set(key, cell); }
      cell.x += x; cell.y += y; cell.n++; cell.devs.push(d);
      const st = stateClass(d.state); cell.st[st] = (cell.st[st] || 0) + 1;
    }
    map.hits = [];
    g.font = "11px system-ui, sans-serif"; g.textAlign = "center"; g.textBaseline = "middle";
    for (const cell of cells.values()) {
      const x = cell.x / cell.n, y = cell.y / cell.n;
      if (cell.n === 1) {
        const d = cell.devs[0];
        g.beginPath(); g.arc(x, y, 5, 0, 2 * Math.PI);
        g.fillStyle = COLORS[stateClass(d.state)]; g.fill();
        g.lineWidth = state.selected === d.id ? 3 : 1; g.strokeStyle = "#fff"; g.stroke();
        map.hits.push({ x, y, r: 8, d });
      } else {
        // A cluster: coloured by its worst state, sized by its count.
        const worst = ["offline", "unreachable", "unknown", "online"].find((s) => cell.st[s]);
        const r = Math.min(22, 9 + Math.log2(cell.n) * 2);
        g.beginPath(); g.arc(x, y, r, 0, 2 * Math.PI);
        g.fillStyle = COLORS[worst]; g.globalAlpha = 0.85; g.fill(); g.globalAlpha = 1;
        g.lineWidth = 2; g.strokeStyle = "#fff"; g.stroke();
        g.fillStyle = "#fff"; g.fillText(String(cell.n), x, y);
        map.hits.push({ x, y, r, cluster: cell });
      }
    }
    document.body.dataset.mapDrawn = String(cells.size);
  }
  function drawTiles(g, W, H, k) {
    const z = Math.max(0, Math.min(19, Math.round(map.zoom)));
    const n = Math.pow(2, z), size = 256 * k / n;
    const x0 = Math.floor(((map.cx - W / 2 / k) / 256) * n), x1 = Math.floor(((map.cx + W / 2 / k) / 256) * n);
    const y0 = Math.max(0, Math.floor(((map.cy - H / 2 / k) / 256) * n)), y1 = Math.min(n - 1, Math.floor(((map.cy + H / 2 / k) / 256) * n));
    for (let ty = y0; ty <= y1; ty++) for (let tx = x0; tx <= x1; tx++) {
      const wx = ((tx % n) + n) % n;
      const url = state.tileUrl.replace("{z}", z).replace("{x}", wx).replace("{y}", ty);
      let img = map.tiles.get(url);
      if (!img) {
        img = new Image(); img.onload = () => drawMap(false); img.src = url; map.tiles.set(url, img);
        if (map.tiles.size > 500) map.tiles.delete(map.tiles.keys().next().value);
      }
      if (img.complete && img.naturalWidth) g.drawImage(img, (tx * 256 / n - map.cx) * k + W / 2, (ty * 256 / n - map.cy) * k + H / 2, size + 0.5, size + 0.5);
    }
  }
  (function mapEvents() {
    const c = $("map");
    let drag = null;
    c.addEventListener("mousedown", (e) => { drag = { x: e.offsetX, y: e.offsetY, cx: map.cx, cy: map.cy, moved: false }; });
    c.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const k = Math.pow(2, map.zoom);
      if (Math.abs(e.offsetX - drag.x) + Math.abs(e.offsetY - drag.y) > 3) drag.moved = true;
      map.cx = drag.cx - (e.offsetX - drag.x) / k; map.cy = drag.cy - (e.offsetY - drag.y) / k;
      drawMap(false);
    });
    window.addEventListener("mouseup", () => { setTimeout(() => { drag = null; }, 0); });
    c.addEventListener("click", (e) => {
      if (drag && drag.moved) return;
      const hit = map.hits.find((h) => (h.x - e.offsetX) ** 2 + (h.y - e.offsetY) ** 2 <= h.r * h.r);
      if (!hit) return;
      if (hit.cluster) { zoomAt(e.offsetX, e.offsetY, 2); return; }
      const d = hit.d;
      $("map-info").textContent = `${d.name || d.id} (${d.id}) — ${d.state || "never seen"}, last seen ${ago(d.last_seen)}, ${d.latitude}, ${d.longitude}${d.location ? ", " + d.location : ""}`;
      state.selected = d.id; drawMap(false); renderDeviceMeta(d); loadSensors(d.id); renderTree();
    });
    c.addEventListener("wheel", (e) => { e.preventDefault(); zoomAt(e.offsetX, e.offsetY, e.deltaY < 0 ? 1.5 : 1 / 1.5); }, { passive: false });
    $("map-in").addEventListener("click", () => zoomAt(c.clientWidth / 2, c.clientHeight / 2, 2));
    $("map-out").addEventListener("click", () => zoomAt(c.clientWidth / 2, c.clientHeight / 2, 0.5));
    $("map-fit").addEventListener("click", () => { fitMap(); drawMap(false); });
    window.addEventListener("resize", () => { if (state.view === "map") drawMap(false); });
  })();
  function zoomAt(x, y, f) {
    const c = $("map"), k = Math.pow(2, map.zoom);
    const wx = map.cx + (x - c.clientWidth / 2) / k, wy = map.cy + (y - c.clientHeight / 2) / k;
    map.zoom = Math.max(0, Math.min(20, map.zoom + Math.log2(f)));
    const k2 = Math.pow(2, map.zoom);
    map.cx = wx - (x - c.clientWidth / 2) / k2; map.cy = wy - (y - c.clientHeight / 2) / k2;
    drawMap(false);
  }

  // ---- Charts -------------------------------------------------------------------
  const chart = { plot: null, from: null, to: null, zoomed: false, busy: false };
  const PALETTE = ["#1d6fb8", "#d62828", "#2a9d3f", "#8e44ad", "#f18f01", "#16a085"];
  $("device-chart").addEventListener("click", () => {
    const id = state.selected;
    $("chart-device").value = id;
    const nums = (state.sensors.get(id) || []).map((s) => s.sensor).filter((s) => /^[NIL]/.test(s));
    $("chart-sensors").value = nums.slice(0, 4).join(",");
    showView("chart");
    chart.zoomed = false; drawChart();
  });
  $("chart-form").addEventListener("submit", (ev) => { ev.preventDefault(); chart.zoomed = false; drawChart(); });
  $("chart-reset").addEventListener("click", () => { chart.zoomed = false; drawChart(); });
  async function drawChart() {
    if (chart.busy) return;
    const id = $("chart-device").value.trim();
    const sensors = $("chart-sensors").value.split(",").map((s) => s.trim().toUpperCase()).filter(Boolean);
    if (!id || !sensors.length) return;
    if (!chart.zoomed) {
      chart.to = Date.now() / 1000 + 5;
      chart.from = chart.to - +$("chart-range").value;
    }
    const box = $("chart");
    const width = Math.max(300, box.clientWidth || 800);
    const buckets = Math.min(4096, Math.max(10, Math.floor(width)));
    const path = `/v1/devices/${q(id)}/readings?sensors=${q(sensors.join(","))}&from=${chart.from.toFixed(3)}&to=${chart.to.toFixed(3)}&buckets=${buckets}`;
    chart.busy = true;
    let rows;
    try { rows = parseCsv((await api("GET", path)).text); }
    catch (e) { $("chart-status").textContent = "Cannot draw: " + e.message; chart.busy = false; return; }
    chart.busy = false;
    const head = rows.shift();
    const xs = rows.map((r) => Date.parse(r[0]) / 1000);
    const data = [xs];
    const series = [{}];
    const bands = [];
    sensors.forEach((s, i) => {
      const col = PALETTE[i % PALETTE.length];
      data.push(rows.map((r) => (r[1 + 2 * i + 1] === "" ? null : +r[1 + 2 * i + 1])));
      data.push(rows.map((r) => (r[1 + 2 * i] === "" ? null : +r[1 + 2 * i])));
      series.push({ label: sensorName(id, s) + " max", stroke: col, width: 1.5 });
      series.push({ label: sensorName(id, s) + " min", stroke: col, width: 1, dash: [4, 3] });
      bands.push({ series: [1 + 2 * i, 2 + 2 * i], fill: col + "22" });
    });
    const opts = {
      width, height: 320, series, bands,
      scales: { x: { time: true, min: chart.from, max: chart.to } },
      cursor: { drag: { x: true, y: false } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 5) return;
          chart.from = u.posToVal(u.select.left, "x"); chart.to = u.posToVal(u.select.left + u.select.width, "x");
          chart.zoomed = true;
          drawChart(); // ask the server again: finer buckets for the narrower range
        }],
      },
    };
    if (chart.plot) chart.plot.destroy();
    box.replaceChildren();
    chart.plot = new uPlot(opts, data, box);
    const n = rows.length;
    $("chart-status").textContent = `${id}: ${head.slice(1).join(", ")} — ${n} bucket${n === 1 ? "" : "s"} with data of ${buckets} (min/max per pixel)${chart.zoomed ? ", zoomed" : ""}`;
    document.body.dataset.chartRows = String(n);
  }
  // Live tail: redraw the newest range every 5 s unless zoomed in.
  setInterval(() => { if (state.view === "chart" && $("chart-live").checked && !chart.zoomed && chart.plot && !$("app").hidden) drawChart(); }, 5000);

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
    for (const k of ["name", "device", "sensor", "min", "max", "message"]) { const v = $("alert-" + k).value.trim(); if (v) form[k] = v; }
    try {
      // Changing an alert replaces it: delete the old one, then create.
      if (state.alertNames && state.alertNames.has(form.name)) await api("DELETE", `/v1/alerts/${q(form.name)}`);
      await api("POST", "/v1/alerts", form);
      $("alert-status").textContent = `Saved ${form.name}.`;
      loadAlerts();
    } catch (e) { $("alert-status").textContent = e.message; }
  });
  startSession();
})();
