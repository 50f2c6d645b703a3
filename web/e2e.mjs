// End-to-end test of the dashboard in real headless Chromium, driven by
// playwright-core. Run by tests/dashboard.rs, which starts the server,
// seeds it, plays the device that acknowledges commands, and passes:
//
//   OVERLORD_URL, OVERLORD_USER, OVERLORD_PASSWORD, OVERLORD_DEVICE,
//   OVERLORD_GATEWAY, OVERLORD_OUT (screenshot directory),
//   OVERLORD_BENCH=N (P7: only measure tree and map with N devices).
//
// Exits non-zero with a message on the first failed check.
import { env, URL_, OUT, check, countColour as countIn, login as loginAs, run } from "./e2e-lib.mjs";

await run("tour", { viewport: { width: 1280, height: 800 } }, async ({ page, pageErrors, foreign }) => {
  const countColour = (sel, rgb, tol) => countIn(page, sel, rgb, tol);
  const login = () => loginAs(page);
  if (process.env.OVERLORD_BENCH) {
    // P7: log in and time until the tree and the map of N devices are up.
    const n = process.env.OVERLORD_BENCH;
    const t0 = await login();
    await page.waitForSelector(`body[data-devices="${n}"]`, { timeout: 60000 });
    await page.waitForSelector("#tree .row.device");
    const tTree = Date.now() - t0;
    const loadMs = await page.evaluate(() => window.overlord.loadMs);
    const t1 = Date.now();
    await page.click('button[data-view="map"]');
    await page.waitForSelector("body[data-map-drawn]");
    const tMap = Date.now() - t1;
    // A redraw (pan/zoom) and a search over every device, timed in the page.
    const redraw = await page.evaluate(() => {
      const t = performance.now();
      document.getElementById("map-in").click();
      return performance.now() - t;
    });
    const search = await page.evaluate(() => {
      const s = document.getElementById("search");
      const t = performance.now();
      s.value = "dev-1234";
      s.dispatchEvent(new Event("input"));
      return performance.now() - t;
    });
    const scroll = await page.evaluate(() => {
      const s = document.getElementById("search");
      s.value = ""; s.dispatchEvent(new Event("input"));
      const t = performance.now();
      const tree = document.getElementById("tree");
      tree.scrollTop = tree.scrollHeight / 2;
      tree.dispatchEvent(new Event("scroll"));
      return performance.now() - t;
    });
    await page.screenshot({ path: `${OUT}/p7-map.png` });
    console.log(JSON.stringify({
      devices: +n, login_to_tree_ms: tTree, fetch_parse_tree_ms: Math.round(loadMs),
      map_first_draw_ms: tMap, map_zoom_redraw_ms: Math.round(redraw),
      search_ms: Math.round(search), tree_scroll_ms: Math.round(scroll),
    }));
    check(pageErrors.length === 0, "no page errors: " + pageErrors.join("; "));
  } else {
    const dev = env("OVERLORD_DEVICE"), gw = env("OVERLORD_GATEWAY");
    // 1. Log in.
    await login();
    await page.waitForSelector("#app", { state: "visible" });
    check(await page.isHidden("#login"), "the login form is gone after logging in");
    const cookies = await page.context().cookies();
    const sc = cookies.find((c) => c.name === "overlord_session");
    check(sc && sc.httpOnly && sc.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
    check(await page.evaluate(() => document.cookie.includes("overlord_session")) === false, "page scripts cannot read the session cookie");

    // 2. The tree: gateway, device below it, online, sensors with last value.
    const gwRow = page.locator(`#tree .row.device[data-id="${gw}"]`);
    const devRow = page.locator(`#tree .row.device[data-id="${dev}"]`);
    await devRow.waitFor();
    const pad = async (l) => parseInt(await l.evaluate((e) => e.style.paddingLeft), 10);
    check((await pad(devRow)) > (await pad(gwRow)), "the device is drawn below its gateway");
    check(await devRow.locator(".dot.online").count() === 1, "the device that sent readings is online");
    await devRow.click();
    await page.waitForSelector("#tree .row.sensor");
    const sensorText = await page.locator("#tree .row.sensor").first().textContent();
    check(/^N1 = -?\d/.test(sensorText), `the tree shows the sensor's last value (${sensorText})`);
    check(sensorText.includes("°C") && sensorText.includes("Air temperature"), `the tree shows the sensor's unit and label (${sensorText})`);
    check((await page.textContent("#device-title")).includes(dev), "the device's details are shown");
    await page.fill("#search", "no-such-thing");
    check((await page.textContent("#tree-count")).startsWith("0 of"), "search filters the tree");
    await page.fill("#search", "greenhouse");
    await devRow.waitFor();
    check((await page.locator("#tree .row.device").count()) >= 1, "search by tag finds the device");
    await page.fill("#search", "");
    // Live: a device that was never heard from reports; its dot turns green
    // and its new value appears, without reloading the page.
    const dev2 = env("OVERLORD_DEVICE2"), tok2 = env("OVERLORD_DEVICE2_TOKEN");
    const row2 = page.locator(`#tree .row.device[data-id="${dev2}"]`);
    check(await row2.locator(".dot.unknown").count() === 1, "a device never heard from is grey");
    await row2.click();
    const r = await fetch(`${URL_}/v1/readings?device=${dev2}&token=${tok2}&N7=42.5`);
    check(r.status === 200, "the second device sends a reading");
    await page.waitForSelector(`#tree .row.device[data-id="${dev2}"] .dot.online`, { timeout: 10000 });
    check(true, "the tree shows it online without a reload");
    await page.waitForFunction(() => [...document.querySelectorAll("#tree .row.sensor")].some((e) => e.textContent.startsWith("N7 = 42.5")), null, { timeout: 10000 });
    check(true, "and its new value");
    await devRow.click();
    await page.screenshot({ path: `${OUT}/1-tree.png` });

    // 3. The map: world outline and the device as a green dot; click it.
    await page.click('button[data-view="map"]');
    await page.waitForSelector("body[data-map-drawn]");
    const land = await countColour("#map", [0xf1, 0xef, 0xe6], 2);
    const green = await countColour("#map", [0x2a, 0x9d, 0x3f], 10);
    check(land > 1000, `the world outline is drawn (${land} land pixels)`);
    check(green > 20, `the online device is a green dot (${green} pixels)`);
    const hit = await page.evaluate((id) => {
      const h = window.overlord.map.hits.find((h) => h.d && h.d.id === id);
      return h && { x: h.x, y: h.y };
    }, dev);
    check(!!hit, "the device has a dot on the map");
    await page.locator("#map").click({ position: hit });
    await page.waitForFunction((id) => document.getElementById("map-info").textContent.includes(id), dev);
    check(true, "clicking the dot shows the device");
    await page.screenshot({ path: `${OUT}/2-map.png` });

    // 4. A chart of the seeded readings.
    await page.click('button[data-view="device"]');
    await page.click("#device-chart");
    await page.waitForSelector("body[data-chart-rows]");
    const rows = +(await page.getAttribute("body", "data-chart-rows"));
    check(rows >= 10, `the chart has ${rows} buckets of data`);
    check(await page.locator("#chart .u-over").count() === 1, "uPlot drew the chart");
    const legend = await page.textContent("#chart .u-legend");
    check(legend.includes("Air temperature"), `the legend names the sensor by its label (${legend})`);
    const blue = await countColour("#chart canvas", [0x1d, 0x6f, 0xb8], 40);
    check(blue > 100, `the series is drawn (${blue} pixels of its colour)`);
    await page.screenshot({ path: `${OUT}/3-chart.png` });
    // Zoom: drag across the middle; the server is asked again for the narrower range.
    const box = await page.locator("#chart .u-over").boundingBox();
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
    await page.waitForFunction(() => document.getElementById("chart-status").textContent.includes("zoomed"));
    check(true, "dragging zooms and redraws from the server");

    // 5. Send a command and see it go from queued to acknowledged.
    await page.click('button[data-view="device"]');
    await page.selectOption("#send-kind", "command");
    await page.fill("#send-sensor", "L1");
    await page.fill("#send-value", "true");
    await page.click("#send-submit");
    await page.waitForSelector("#sent tbody tr");
    // The board acts 2 s after the row arrives; the page polls every second.
    await page.waitForTimeout(1300);
    const first = await page.textContent("#sent tbody tr td:last-child");
    check(first === "queued", `the command is listed as queued while the board has not acknowledged it (${first})`);
    await page.waitForSelector("#sent tr.status-acknowledged", { timeout: 20000 });
    check(true, "the simulated device acknowledged the command");
    // The server's record of it, which a reload would show again.
    await page.waitForSelector("#commands tr.state-acknowledged", { timeout: 20000 });
    check(true, "the command history from the server shows it acknowledged");
    await page.screenshot({ path: `${OUT}/4-command.png` });

    // 6. Alerts: create one from the page, see it listed.
    await page.click('button[data-view="alerts"]');
    await page.fill("#alert-name", "too-hot");
    await page.fill("#alert-device", dev);
    await page.fill("#alert-sensor", "N1");
    await page.fill("#alert-max", "100");
    await page.click("#alert-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#alerts tbody").textContent.includes("too-hot"));
    check(true, "an alert created in the page is listed");

    // 6b. Targets: create a webhook, send it a test, see the attempt in
    // its delivery history (a loopback URL: the server refuses it, since
    // private addresses are not allowed by default).
    await page.click('button[data-view="targets"]');
    await page.fill("#target-name", "ops");
    await page.fill("#target-to", "http://127.0.0.1:9/hook");
    await page.fill("#target-secret", "s3cret");
    await page.click("#target-form button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#targets tbody").textContent.includes("http://127.0.0.1:9/hook"));
    const listed = await page.textContent("#targets tbody");
    check(!listed.includes("s3cret"), "a target created in the page is listed, without its secret");
    await page.click('#targets tbody tr:first-child button:has-text("test")');
    await page.waitForFunction(() => document.querySelector("#target-deliveries tbody").textContent.includes("refused"), null, { timeout: 20000 });
    const hist = await page.textContent("#target-deliveries tbody");
    check(hist.includes("evt-") && hist.includes("failed"), "the test notification's attempt is in the delivery history");
    await page.screenshot({ path: `${OUT}/4b-targets.png` });

    // 7. Log out: back to the form, and the old cookie no longer works.
    await page.click("#logout");
    await page.waitForSelector("#login-form", { state: "visible" });
    // (With the dashboard's header, as the page sends it: without it the
    // 401 carries a Basic challenge and Chromium would wait for a dialog.)
    const status = await page.evaluate(async () => (await fetch("/v1/devices", { headers: { "X-Overlord-CSRF": "" } })).status);
    check(status === 401, "after logging out the API answers 401");
    await page.screenshot({ path: `${OUT}/5-logged-out.png` });

    check(pageErrors.length === 0, "no errors in the page: " + pageErrors.join("; "));
    check(foreign.length === 0, "nothing was loaded from another origin: " + foreign.join(", "));
  }
});
