// Overlord dashboard: the map (Web Mercator canvas: the land outline from
// world.js, optional tiles, device dots and clusters). A part of app.js,
// which calls window.overlordParts.map(ui) with the helpers it shares.
"use strict";
(window.overlordParts = window.overlordParts || {}).map = function (ui) {
  const { $, state, shownState, ago, renderDeviceMeta, loadSensors, renderTree } = ui;
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
  // The outline's rings in world units, with their boxes; projected once.
  let world = null;
  function outline() {
    if (world) return world;
    world = (window.OVERLORD_WORLD || []).map((ring) => {
      const pts = new Float64Array(ring.length);
      let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (let i = 0; i < ring.length; i += 2) {
        const [x, y] = project(ring[i], ring[i + 1]);
        pts[i] = x; pts[i + 1] = y;
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
      return { pts, x0, x1, y0, y1 };
    });
    return world;
  }
  const LAND = "#f1efe6";
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
    // World outline (shipped in the binary), repeated east and west. Each
    // ring is drawn in every copy whose box meets the canvas: a ring may lie
    // partly outside one world-width (Eurasia crosses the antimeridian), so
    // culling a copy by its nominal [0, 256] drew Europe, Africa and Asia as
    // sea once zoomed in.
    g.fillStyle = state.tileUrl ? "rgba(0,0,0,0)" : LAND; g.strokeStyle = "#8c8a80"; g.lineWidth = 0.7;
    g.beginPath();
    for (const r of outline()) {
      if (sy(r.y1) < 0 || sy(r.y0) > H) continue;
      for (const shift of [-256, 0, 256]) {
        if (sx(r.x0 + shift) > W || sx(r.x1 + shift) < 0) continue;
        const p = r.pts;
        g.moveTo(sx(p[0] + shift), sy(p[1]));
        for (let i = 2; i < p.length; i += 2) g.lineTo(sx(p[i] + shift), sy(p[i + 1]));
        g.closePath();
      }
    }
    g.fill(); g.stroke();
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
      const st = shownState(d); cell.st[st] = (cell.st[st] || 0) + 1;
    }
    map.hits = [];
    g.font = "11px system-ui, sans-serif"; g.textAlign = "center"; g.textBaseline = "middle";
    for (const cell of cells.values()) {
      const x = cell.x / cell.n, y = cell.y / cell.n;
      if (cell.n === 1) {
        const d = cell.devs[0];
        g.beginPath(); g.arc(x, y, 5, 0, 2 * Math.PI);
        g.fillStyle = COLORS[shownState(d)]; g.fill();
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
    // Pointer events: a mouse or one finger drags, two fingers pinch.
    const pts = new Map(); // pointer id -> {x, y} on the canvas
    let drag = null, pinch = null;
    const pos = (e) => { const b = c.getBoundingClientRect(); return { x: e.clientX - b.left, y: e.clientY - b.top }; };
    const startDrag = (p, moved) => { drag = { x: p.x, y: p.y, cx: map.cx, cy: map.cy, moved }; };
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      pts.set(e.pointerId, pos(e));
      if (pts.size === 1) { startDrag(pos(e), false); pinch = null; }
      if (pts.size === 2) {
        const [a, b] = [...pts.values()];
        pinch = { d: Math.hypot(a.x - b.x, a.y - b.y), zoom: map.zoom };
        if (drag) drag.moved = true;
      }
    });
    c.addEventListener("pointermove", (e) => {
      if (!pts.has(e.pointerId)) return;
      pts.set(e.pointerId, pos(e));
      if (pinch && pts.size >= 2) {
        const [a, b] = [...pts.values()], d = Math.hypot(a.x - b.x, a.y - b.y);
        if (pinch.d > 0 && d > 0) zoomAt((a.x + b.x) / 2, (a.y + b.y) / 2, Math.pow(2, pinch.zoom + Math.log2(d / pinch.d) - map.zoom));
        return;
      }
      if (!drag) return;
      const p = pos(e), k = Math.pow(2, map.zoom);
      if (Math.abs(p.x - drag.x) + Math.abs(p.y - drag.y) > 3) drag.moved = true;
      map.cx = drag.cx - (p.x - drag.x) / k; map.cy = drag.cy - (p.y - drag.y) / k;
      drawMap(false);
    });
    const up = (e) => {
      pts.delete(e.pointerId);
      if (pts.size < 2) pinch = null;
      if (pts.size === 1) startDrag([...pts.values()][0], true); // the finger left goes on dragging
      if (pts.size === 0) setTimeout(() => { drag = null; }, 0);
    };
    c.addEventListener("pointerup", up);
    c.addEventListener("pointercancel", up);
    c.addEventListener("click", (e) => {
      if (drag && drag.moved) return;
      // A finger is coarser than a mouse: a wider circle counts as the dot.
      const slack = window.matchMedia("(pointer: coarse)").matches ? 10 : 0;
      const hit = map.hits.find((h) => (h.x - e.offsetX) ** 2 + (h.y - e.offsetY) ** 2 <= (h.r + slack) ** 2);
      if (!hit) return;
      if (hit.cluster) { zoomAt(e.offsetX, e.offsetY, 2); return; }
      const d = hit.d;
      $("map-info").textContent = `${d.name || d.id} (${d.id}) — ${shownState(d).replace("unknown", "never seen")}, last seen ${ago(d.last_seen)}, ${d.latitude}, ${d.longitude}${d.location ? ", " + d.location : ""}`;
      state.selected = d.id; drawMap(false); renderDeviceMeta(d); loadSensors(d.id); renderTree();
    });
    c.addEventListener("wheel", (e) => { e.preventDefault(); zoomAt(e.offsetX, e.offsetY, e.deltaY < 0 ? 1.5 : 1 / 1.5); }, { passive: false });
    $("map-in").addEventListener("click", () => zoomAt(c.clientWidth / 2, c.clientHeight / 2, 2));
    $("map-out").addEventListener("click", () => zoomAt(c.clientWidth / 2, c.clientHeight / 2, 0.5));
    $("map-fit").addEventListener("click", () => { fitMap(); drawMap(false); });
    window.addEventListener("resize", () => { if (state.view === "map") drawMap(false); });
  })();
  // "Show on map" in a device's details: the map, centred on it, close in.
  $("device-map").addEventListener("click", () => {
    const d = state.byId.get(state.selected);
    if (!d || !isFinite(d.lat) || !isFinite(d.lon)) return;
    [map.cx, map.cy] = project(d.lon, d.lat);
    map.zoom = 10; map.fitted = true;
    ui.showView("map");
  });
  function zoomAt(x, y, f) {
    const c = $("map"), k = Math.pow(2, map.zoom);
    const wx = map.cx + (x - c.clientWidth / 2) / k, wy = map.cy + (y - c.clientHeight / 2) / k;
    map.zoom = Math.max(0, Math.min(20, map.zoom + Math.log2(f)));
    const k2 = Math.pow(2, map.zoom);
    map.cx = wx - (x - c.clientWidth / 2) / k2; map.cy = wy - (y - c.clientHeight / 2) / k2;
    drawMap(false);
  }

  return { draw: drawMap };
};
