// Overlord dashboard: charts (uPlot; the server sends min/max per pixel).
// A part of app.js, which calls window.overlordParts.chart(ui).
"use strict";
(window.overlordParts = window.overlordParts || {}).chart = function (ui) {
  const { $, state, api, q, parseCsv, showView } = ui;
  // ---- Charts -------------------------------------------------------------------
  const chart = { plot: null, from: null, to: null, zoomed: false, busy: false, layout: [] };
  state.chart = chart; // the uPlot instance and each sensor's kind and scale, for tests
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
  // ---- Axes -----------------------------------------------------------------
  // Booleans (L sensors) are not numbers on a number's axis: each gets a
  // lane at the foot of the chart (BOOL_LANE of the height each, at most
  // BOOL_MAX in all), drawn as a filled step from off to on, with its own
  // off/on axis; the number scales keep their data above the lanes.
  // Numbers share an axis while their magnitudes (largest absolute value)
  // are within SAME_SCALE of each other; others get their own axis (at
  // most NUM_AXES; more join the closest).
  const BOOL_LANE = 0.14, BOOL_MAX = 0.5, SAME_SCALE = 10, NUM_AXES = 3;
  function magnitude(l) {
    let m = 0;
    for (const a of [l.min, l.max]) for (const v of a) if (v != null) m = Math.max(m, Math.abs(v));
    return m || 1;
  }
  /** Scales, axes and the kind of each sensor of `cols` ({sensor, min, max}). */
  function layout(cols, name = (s) => s) {
    const bools = cols.filter((l) => l.sensor[0] === "L");
    const lanes = Math.min(BOOL_MAX, BOOL_LANE * bools.length), lane = bools.length ? lanes / bools.length : 0;
    const scales = {}, boolAxes = [], groups = [];
    const out = cols.map((l) => {
      if (l.sensor[0] === "L") {
        const j = bools.indexOf(l), f0 = (j + 0.2) * lane, f1 = (j + 0.8) * lane, span = 1 / (f1 - f0);
        const scale = "b" + j;
        scales[scale] = { auto: false, range: () => [-f0 * span, -f0 * span + span] };
        boolAxes.push({ scale, side: 1, size: 40, label: name(l.sensor), grid: { show: false }, splits: () => [0, 1], values: (u, vs) => vs.map((v) => (v ? "on" : "off")) });
        return { ...l, kind: "boolean", scale };
      }
      const m = magnitude(l);
      let g = groups.find((g) => Math.max(m, g.m) / Math.min(m, g.m) <= SAME_SCALE);
      if (!g && groups.length >= NUM_AXES) {
        g = groups.reduce((a, b) => (Math.abs(Math.log(b.m / m)) < Math.abs(Math.log(a.m / m)) ? b : a));
      }
      if (!g) {
        g = { m, scale: "n" + groups.length, names: [] };
        groups.push(g);
        scales[g.scale] = { range: (u, lo, hi) => numberRange(lo, hi, lanes) };
      }
      g.names.push(l.sensor);
      return { ...l, kind: "number", scale: g.scale };
    });
    const axes = groups.map((g, i) => ({ scale: g.scale, side: i === 0 ? 3 : 1, ...(i ? { size: 75 } : {}), label: g.names.map(name).join(", "), grid: { show: i === 0 } }));
    axes.push(...boolAxes);
    return { scales, axes, sensors: out.map(({ sensor, kind, scale, min, max }) => ({ sensor, kind, scale, min, max })) };
  }
  // The data's range, 5% padded, reaching down far enough that the data
  // stay above the boolean lanes (the fraction `lanes` of the height).
  function numberRange(lo, hi, lanes) {
    if (lo == null || hi == null) return [0, 1];
    const pad = hi > lo ? (hi - lo) * 0.05 : Math.max(Math.abs(hi) * 0.05, 1);
    lo -= pad; hi += pad;
    return [lo - ((hi - lo) * lanes) / (1 - lanes), hi];
  }
  function chartHeight() { return window.matchMedia("(max-width: 600px)").matches ? 260 : 320; }

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
    const col = (c) => rows.map((r) => (r[c] === "" || r[c] === undefined ? null : +r[c]));
    // Legends and axis titles say "Label (N1, unit)" for labelled sensors.
    const name = (s) => ui.sensorName(id, s);
    const lay = layout(sensors.map((s, i) => ({ sensor: s, min: col(1 + 2 * i), max: col(2 + 2 * i) })), name);
    chart.layout = lay.sensors;
    const data = [xs], series = [{}], bands = [];
    lay.sensors.forEach((l, i) => {
      const c = PALETTE[i % PALETTE.length];
      if (l.kind === "boolean") {
        // One step line, filled: on when it was on at any time of the slice.
        data.push(l.max);
        series.push({ label: name(l.sensor), scale: l.scale, stroke: c, width: 1.5, fill: c + "44", fillTo: 0,
          paths: uPlot.paths.stepped({ align: 1 }), value: (u, v) => (v == null ? "–" : v >= 0.5 ? "on" : "off") });
        return;
      }
      data.push(l.max, l.min);
      const n = series.length;
      series.push({ label: name(l.sensor) + " max", scale: l.scale, stroke: c, width: 1.5 });
      series.push({ label: name(l.sensor) + " min", scale: l.scale, stroke: c, width: 1, dash: [4, 3] });
      bands.push({ series: [n, n + 1], fill: c + "22" });
    });
    const opts = {
      width, height: chartHeight(), series, bands,
      scales: { x: { time: true, min: chart.from, max: chart.to }, ...lay.scales },
      axes: [{}, ...lay.axes],
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
  // A new width (a phone turned) draws again for the new number of pixels.
  let lastWidth = 0;
  window.addEventListener("resize", () => {
    const w = $("chart").clientWidth;
    if (state.view === "chart" && chart.plot && w !== lastWidth) { lastWidth = w; drawChart(); }
  });
  // Live tail: redraw the newest range every 5 s unless zoomed in.
  setInterval(() => { if (state.view === "chart" && $("chart-live").checked && !chart.zoomed && chart.plot && !$("app").hidden) drawChart(); }, 5000);

  return chart;
};
