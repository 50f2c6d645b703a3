// Browser tests that the dashboard tells the truth (issue 19), run by
// tests/dashboard_truth.rs with OVERLORD_SCENARIO set to one of:
//
//   restart  tree and map colours equal the API's states after a restart
//            (a dead gateway, its devices unreachable), and follow it live
//   map      land is land at several zoom levels on several continents
//   chart    a boolean and numbers of other scales get their own axes
//   commands pending commands are listed again after a reload
//   phone    a 390x844 touch screen: no sideways scroll, panels usable
//
// Besides the variables of e2e-lib.mjs, each scenario reads its own
// (documented where it starts). Exits non-zero on the first failed check.
import { env, URL_, OUT, check, until, login, run } from "./e2e-lib.mjs";

const scenario = env("OVERLORD_SCENARIO");
const desktop = { viewport: { width: 1280, height: 800 } };

/** Ask a device's own endpoint as the device (as a board would). */
async function deviceGet(path) {
  const r = await fetch(URL_ + path);
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.text();
}

/** `id -> state` from GET /v1/devices, asked by the page's session. */
async function apiStates(page) {
  return page.evaluate(async () => {
    const r = await fetch("/v1/devices", { headers: { "X-Overlord-CSRF": window.overlord.csrf } });
    const [head, ...rows] = (await r.text()).trim().split("\n").map((l) => l.split(","));
    const id = head.indexOf("id"), st = head.indexOf("state");
    return Object.fromEntries(rows.map((r) => [r[id], r[st]]));
  });
}

/** What the tree shows: `id -> {cls, colour}`, with the legend's colours. */
async function treeStates(page) {
  return page.evaluate(() => {
    const colour = (el) => getComputedStyle(el).backgroundColor;
    const legend = {};
    for (const i of document.querySelectorAll(".legend i")) legend[i.className] = colour(i);
    const rows = {};
    for (const row of document.querySelectorAll("#tree .row.device")) {
      const dot = row.querySelector(".dot");
      rows[row.dataset.id] = { cls: [...dot.classList].find((c) => c !== "dot"), colour: colour(dot) };
    }
    return { legend, rows };
  });
}

/** Differences between the tree and the API; empty when they agree. */
function treeVsApi(tree, api) {
  const bad = [];
  for (const [id, st] of Object.entries(api)) {
    const row = tree.rows[id];
    if (!row) { bad.push(`${id} is not in the tree`); continue; }
    if (row.cls !== st) bad.push(`${id}: API ${st}, tree ${row.cls}`);
    if (row.colour !== tree.legend[st]) bad.push(`${id}: ${st} is ${tree.legend[st]} in the legend, the dot ${row.colour}`);
  }
  return bad;
}

async function restart({ page }) {
  // OVERLORD_GATEWAY (offline since the restart), OVERLORD_CHILDREN
  // (behind it: unreachable), OVERLORD_LATE (reports while the page is
  // open), and the tokens OVERLORD_GATEWAY_TOKEN, OVERLORD_LATE_TOKEN.
  const gw = env("OVERLORD_GATEWAY"), late = env("OVERLORD_LATE");
  const children = env("OVERLORD_CHILDREN").split(",");
  await login(page);
  await page.waitForSelector(`#tree .row.device[data-id="${late}"]`);
  // A barrier: this device's report reaches the tree through the presence
  // feed, so every poll before it (the feed's history) has been applied.
  await deviceGet(`/v1/readings?device=${late}&token=${env("OVERLORD_LATE_TOKEN")}&N1=1`);
  await page.waitForSelector(`#tree .row.device[data-id="${late}"] .dot.online`, { timeout: 20000 });
  const api = await apiStates(page);
  check(api[gw] === "offline" && children.every((c) => api[c] === "unreachable"),
    `the API says the gateway is offline and the devices behind it unreachable (${JSON.stringify(api)})`);
  const bad = treeVsApi(await treeStates(page), api);
  check(bad.length === 0, "every dot in the tree has the API's state and the legend's colour for it: " + bad.join("; "));

  // The map: the dot at each device's place has the colour of its state.
  await page.click('button[data-view="map"]');
  await page.waitForSelector("body[data-map-drawn]");
  const dots = await page.evaluate(() => {
    const c = document.getElementById("map"), g = c.getContext("2d"), dpr = window.devicePixelRatio || 1;
    return window.overlord.map.hits.filter((h) => h.d).map((h) => {
      const p = g.getImageData(Math.round(h.x * dpr), Math.round(h.y * dpr), 1, 1).data;
      return { id: h.d.id, rgb: `rgb(${p[0]}, ${p[1]}, ${p[2]})` };
    });
  });
  const legend = (await treeStates(page)).legend;
  const wrong = dots.filter((d) => d.rgb !== legend[api[d.id]]).map((d) => `${d.id} (${api[d.id]}) is ${d.rgb}`);
  const missing = Object.keys(api).filter((id) => !dots.some((d) => d.id === id));
  check(missing.length === 0, "every device has its own dot on the map: missing " + missing.join(", "));
  check(wrong.length === 0, "every dot on the map has its state's colour: " + wrong.join("; "));

  // The gateway comes back: it and the devices behind it follow the API
  // without a reload.
  await deviceGet(`/v1/readings?device=${gw}&token=${env("OVERLORD_GATEWAY_TOKEN")}`);
  await page.click('button[data-view="device"]');
  let last = ["the API never said the gateway is online"];
  const deadline = Date.now() + 20000;
  for (;;) {
    const now = await apiStates(page);
    if (now[gw] === "online") last = treeVsApi(await treeStates(page), now);
    if (now[gw] === "online" && last.length === 0) break;
    if (Date.now() > deadline) break;
    await page.waitForTimeout(100);
  }
  check(last.length === 0 && (await apiStates(page))[gw] === "online",
    "after the gateway is back, the tree follows the API without a reload: " + last.join("; "));
  await page.screenshot({ path: `${OUT}/truth-restart.png` });
}

async function map({ page }) {
  // OVERLORD_PLACES: "id:lat:lon,..." — devices inland on each continent.
  const places = env("OVERLORD_PLACES").split(",").map((p) => p.split(":"));
  await login(page);
  for (const [id, lat, lon] of places) {
    await page.fill("#search", "");
    await page.click(`#tree .row.device[data-id="${id}"]`);
    await page.click('button[data-view="device"]');
    await page.click("#device-map");
    await page.waitForSelector("#view-map", { state: "visible" });
    // No dots (a search that matches nothing), so the pixel at the
    // device's place (the centre) is the outline's.
    await page.fill("#search", "no-such-device");
    const seen = [];
    for (const zoomOut of [0, 3, 3, 2, 1]) {
      for (let i = 0; i < zoomOut; i++) await page.click("#map-out");
      const px = await page.evaluate(() => {
        const c = document.getElementById("map"), m = window.overlord.map;
        const d = c.getContext("2d").getImageData(Math.floor(c.width / 2), Math.floor(c.height / 2), 1, 1).data;
        return { zoom: Math.round(m.zoom), rgb: [d[0], d[1], d[2]] };
      });
      const land = px.rgb[0] === 0xf1 && px.rgb[1] === 0xef && px.rgb[2] === 0xe6;
      seen.push(`zoom ${px.zoom}: ${land ? "land" : "sea " + px.rgb.join(",")}`);
    }
    check(seen.every((s) => s.endsWith("land")), `${id} (${lat}, ${lon}) is on land at every zoom: ${seen.join("; ")}`);
    if (id === places[0][0]) await page.screenshot({ path: `${OUT}/truth-map-${id}.png` });
  }
}

const scenarios = { restart, map };
if (!scenarios[scenario]) throw new Error(`no scenario '${scenario}'`);
await run(scenario, desktop, async (t) => {
  await scenarios[scenario](t);
  check(t.pageErrors.length === 0, "no errors in the page: " + t.pageErrors.join("; "));
  check(t.foreign.length === 0, "nothing was loaded from another origin: " + t.foreign.join(", "));
});
