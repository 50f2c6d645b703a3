// Browser tests that the dashboard tells the truth (issue 19), run by
// tests/dashboard_truth.rs with OVERLORD_SCENARIO set to one of:
//
//   restart  tree and map colours equal the API's states after a restart
//            (a dead gateway, its devices unreachable), and follow it live
//   map      land is land at several zoom levels on several continents
//   chart    a boolean and numbers of other scales get their own axes
//   commands pending commands are listed again after a reload
//   phone    a 390x844 touch screen: no sideways scroll, panels usable
//   channels the Channels panel shows a channel's description, its
//            members' labels and its latest item
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

async function chart({ page }) {
  // OVERLORD_DEVICE with an hour of N1 (18..25), N3 (~1013) and L2.
  const dev = env("OVERLORD_DEVICE");
  await login(page);
  await page.waitForSelector("#app", { state: "visible" });
  await page.click('button[data-view="chart"]');
  await page.fill("#chart-device", dev);
  await page.fill("#chart-sensors", "N1,N3,L2");
  await page.selectOption("#chart-range", "21600");
  await page.click("#chart-draw");
  await page.waitForSelector("body[data-chart-rows]");
  const m = await page.evaluate(() => {
    const u = window.overlord.chart.plot;
    const series = u.series.slice(1).map((s) => ({ label: s.label, scale: s.scale }));
    const scale = (label) => u.series.find((s) => s.label === label || s.label === label + " max")?.scale;
    const n1 = scale("N1"), n3 = scale("N3"), l2 = series.find((s) => s.label.startsWith("L2"))?.scale;
    const n1min = Math.min(...u.data[u.series.findIndex((s) => s.label === "N1 min")].filter((v) => v != null));
    return {
      series, n1, n3, l2, n1Range: [u.scales[n1].min, u.scales[n1].max],
      // Pixels from the top: larger is lower on the screen.
      l2OnY: u.valToPos(1, l2), n1LowestY: u.valToPos(n1min, n1), height: u.bbox.height / (window.devicePixelRatio || 1),
    };
  });
  console.log(JSON.stringify(m));
  check(m.l2 && m.l2 !== m.n1, `the boolean L2 is not drawn on N1's axis (L2: ${m.l2}, N1: ${m.n1})`);
  check(m.n3 !== m.n1, `N3 (~1013) has its own axis, not N1's (18..25) (N3: ${m.n3}, N1: ${m.n1})`);
  check(m.n1Range[0] > 0 && m.n1Range[1] < 100, `N1's axis spans its own values (${m.n1Range.map((v) => v.toFixed(1)).join("..")})`);
  check(m.l2OnY > m.n1LowestY, `L2's "on" (y ${m.l2OnY.toFixed(0)}) is drawn below N1's lowest value (y ${m.n1LowestY.toFixed(0)})`);
  // The legend says on/off for the boolean where the cursor is.
  const over = await page.locator("#chart .u-over").boundingBox();
  await page.mouse.move(over.x + over.width * 0.9, over.y + over.height / 2);
  const shown = await until(page, () => {
    for (const row of document.querySelectorAll("#chart .u-legend .u-series")) {
      const label = row.querySelector(".u-label")?.textContent;
      if (label === "L2") return row.querySelector(".u-value")?.textContent || "";
    }
    return null;
  }, null, "a legend row for L2");
  check(["on", "off"].includes(shown), `the legend shows L2 as on/off (${shown})`);
  await page.screenshot({ path: `${OUT}/truth-chart.png` });
}

async function commands({ page }) {
  // OVERLORD_DEVICE behind OVERLORD_GATEWAY (token OVERLORD_GATEWAY_TOKEN),
  // which reads its inbox only when told to here.
  const dev = env("OVERLORD_DEVICE"), gw = env("OVERLORD_GATEWAY"), gwToken = env("OVERLORD_GATEWAY_TOKEN");
  await login(page);
  await page.click(`#tree .row.device[data-id="${dev}"]`);
  await page.selectOption("#send-kind", "command");
  await page.fill("#send-sensor", "L1");
  await page.fill("#send-value", "true");
  await page.click("#send-submit");
  await page.waitForSelector("#sent tr.status-queued");
  const cells = (sel) => page.$$eval(sel, (tds) => tds.map((td) => td.textContent));
  // A reload: the page starts again from what the server has.
  await page.reload();
  await page.waitForSelector("#app", { state: "visible" });
  await page.click(`#tree .row.device[data-id="${dev}"]`);
  await page.waitForSelector("#sent tbody tr", { timeout: 10000 }).catch(() => {});
  const row = await cells("#sent tbody tr:first-child td");
  check(row.length === 7 && row[1] === "command" && row[3] === "user:ann" && row[4] === "L1" && row[5] === "true" && row[6] === "queued",
    `after a reload the command is listed, waiting (${row.join(" | ")})`);
  check((await page.textContent("#device-title")).includes(dev), "the reloaded page shows the same device");
  // The gateway takes it and acknowledges: the page sees it go.
  const inbox = await (await fetch(`${URL_}/v1/inbox?device=${gw}&token=${gwToken}`)).text();
  const seq = inbox.trim().split("\n").slice(1).map((l) => +l.split(",")[0]).pop();
  check(seq === +row[0], `the gateway holds the row the page lists (seq ${seq})`);
  const ack = await fetch(`${URL_}/v1/inbox/ack?device=${gw}&token=${gwToken}&upto=${seq}`);
  check(ack.ok, "the gateway acknowledged it");
  await page.waitForSelector("#sent tr.status-acknowledged", { timeout: 20000 });
  check(true, "the page shows the command acknowledged");
  await page.screenshot({ path: `${OUT}/truth-commands.png` });
}

async function phone({ page }) {
  // OVERLORD_DEVICE with an hour of N1 and a place.
  const dev = env("OVERLORD_DEVICE");
  const W = page.viewportSize().width, H = page.viewportSize().height;
  // No sideways scrolling: nothing is wider than the screen.
  const noSideways = async (where) => {
    // (A phone widens its layout to fit a page wider than the screen, so
    // the page is compared with the screen's width, not innerWidth.)
    const m = await page.evaluate(() => ({ doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, win: window.innerWidth }));
    check(m.doc <= W && m.body <= W && m.win === W, `${where}: no sideways scroll (page ${m.doc} px, layout ${m.win} px, screen ${W} px)`);
  };
  const box = (sel) => page.locator(sel).boundingBox();
  await login(page);
  await page.waitForSelector("#app", { state: "visible" });
  await noSideways("the tree");
  // The tabs: in a bar at the foot of the screen, big enough for a thumb.
  for (const v of ["device", "map", "chart", "alerts", "channels"]) {
    const b = await box(`button[data-view="${v}"]`);
    check(b.height >= 44 && b.y + b.height <= H && b.y >= H * 0.8, `the ${v} tab is at the foot of the screen and ${b.height.toFixed(0)} px tall`);
  }
  const row = page.locator(`#tree .row.device[data-id="${dev}"]`);
  const r = await row.boundingBox();
  check(r.height >= 36 && r.width >= W * 0.8, `a tree row is a finger's size (${r.width.toFixed(0)}x${r.height.toFixed(0)})`);
  await row.tap();
  await page.waitForFunction((id) => document.getElementById("device-title").textContent.includes(id), dev);
  const t = await box("#device-title");
  check(t.y >= 0 && t.y < H && t.x + t.width <= W, "tapping a device brings its details into view");
  await page.waitForSelector("#device-sensors tbody tr");
  await noSideways("a device's details");
  await page.screenshot({ path: `${OUT}/truth-phone-device.png` });

  await page.tap('button[data-view="map"]');
  await page.waitForSelector("body[data-map-drawn]");
  const m = await box("#map");
  check(m.width >= W - 40 && m.x >= 0 && m.x + m.width <= W && m.height >= 250, `the map fills the width (${m.width.toFixed(0)}x${m.height.toFixed(0)})`);
  await noSideways("the map");
  const hit = await page.evaluate((id) => window.overlord.map.hits.find((h) => h.d && h.d.id === id), dev);
  check(!!hit, "the device has a dot on the map");
  // A tap a little beside the dot still finds it (a finger is not a mouse).
  await page.touchscreen.tap(m.x + hit.x + 9, m.y + hit.y);
  await page.waitForFunction((id) => document.getElementById("map-info").textContent.includes(id), dev);
  check(true, "tapping the dot shows the device");
  await page.screenshot({ path: `${OUT}/truth-phone-map.png` });

  await page.tap('button[data-view="device"]');
  await page.tap("#device-chart");
  await page.waitForSelector("body[data-chart-rows]");
  const c = await box("#chart canvas");
  check(c.x >= 0 && c.x + c.width <= W, `the chart fits the screen (${c.x.toFixed(0)}..${(c.x + c.width).toFixed(0)} of ${W})`);
  await noSideways("the chart");
  await page.screenshot({ path: `${OUT}/truth-phone-chart.png` });

  await page.tap('button[data-view="alerts"]');
  await page.waitForSelector("#alerts thead tr");
  await noSideways("the alerts");
  await page.screenshot({ path: `${OUT}/truth-phone-alerts.png` });

  await page.tap('button[data-view="channels"]');
  await page.waitForSelector("#channels thead tr");
  await noSideways("the channels");
}

async function channels({ page }) {
  // OVERLORD_CHANNEL with OVERLORD_DESCRIPTION, one member labelled
  // OVERLORD_LABEL and one item of OVERLORD_VALUE (the texts hold markup).
  const name = env("OVERLORD_CHANNEL"), description = env("OVERLORD_DESCRIPTION");
  const label = env("OVERLORD_LABEL"), value = env("OVERLORD_VALUE");
  await login(page);
  await page.waitForSelector("#app", { state: "visible" });
  await page.click('button[data-view="channels"]');
  const cells = (sel) => page.$$eval(sel, (tds) => tds.map((td) => td.textContent));
  await page.waitForSelector("#channels tbody tr");
  const row = await cells("#channels tbody tr:first-child td");
  check(row.includes(name) && row.includes(description), `the channel is listed with its description (${row.join(" | ")})`);
  await page.click('#channels tbody tr:first-child button:has-text("open")');
  await page.waitForSelector("#channel-members tbody tr");
  const member = await cells("#channel-members tbody tr:first-child td");
  check(member.join(",") === `gh3,N1,${label}`, `the member is shown with its label (${member.join(" | ")})`);
  await page.waitForSelector("#channel-items tbody tr");
  const item = await cells("#channel-items tbody tr:first-child td");
  check(item[2] === "gh3" && item[3] === "N1" && item[4] === value, `the latest item is shown with its value (${item.join(" | ")})`);
  check(await page.$$eval("#view-channels b, #view-channels i", (e) => e.length) === 0, "the server's text is shown as text, never as markup");
  await page.screenshot({ path: `${OUT}/truth-channels.png` });
}

const scenarios = { restart, map, chart, commands, phone, channels };
if (!scenarios[scenario]) throw new Error(`no scenario '${scenario}'`);
const phoneScreen = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
await run(scenario, scenario === "phone" ? phoneScreen : desktop, async (t) => {
  await scenarios[scenario](t);
  check(t.pageErrors.length === 0, "no errors in the page: " + t.pageErrors.join("; "));
  check(t.foreign.length === 0, "nothing was loaded from another origin: " + t.foreign.join(", "));
});
