// Overlord dashboard: charts (uPlot; the server sends min/max per pixel).
// A part of app.js, which calls window.overlordParts.chart(ui).
"use strict";
(window.overlordParts = window.overlordParts || {}).chart = function (ui) {
  const { $, state, api, q, parseCsv, showView } = ui;
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
      series.push({ label: s + " max", stroke: col, width: 1.5 });
      series.push({ label: s + " min", stroke: col, width: 1, dash: [4, 3] });
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

  return chart;
};
