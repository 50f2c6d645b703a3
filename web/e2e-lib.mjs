// What the browser tests share (web/e2e.mjs, web/e2e-truth.mjs): Chromium
// through playwright-core, checks that print "ok - ..." or throw, pixel
// counts, logging in, and a runner that screenshots and exits non-zero on
// the first failed check.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

/** An environment variable the Rust side must set. */
export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
export const URL_ = env("OVERLORD_URL");
export const OUT = env("OVERLORD_OUT");
mkdirSync(OUT, { recursive: true });

/** Throw (failing the test) unless `cond`; print the claim when it holds. */
const started = Date.now();
export function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  console.log(`ok - ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

/** Poll `fn` in the page until it returns a truthy value (bounded). */
export async function until(page, fn, arg, what, timeout = 20000) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout, polling: 50 })).jsonValue();
  } catch (e) {
    throw new Error(`timed out waiting for ${what}`);
  }
}

/** Count pixels of the canvas `selector` within `tol` of [r, g, b]. */
export async function countColour(page, selector, rgb, tol = 12) {
  return page.evaluate(([sel, rgb, tol]) => {
    const c = document.querySelector(sel);
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - rgb[0]) <= tol && Math.abs(d[i + 1] - rgb[1]) <= tol && Math.abs(d[i + 2] - rgb[2]) <= tol) n++;
    }
    return n;
  }, [selector, rgb, tol]);
}

/** Open the dashboard and log in as OVERLORD_USER; the click's time. */
export async function login(page) {
  await page.goto(URL_ + "/");
  await page.waitForSelector("#login-form", { state: "visible" });
  await page.fill("#login-name", env("OVERLORD_USER"));
  await page.fill("#login-password", env("OVERLORD_PASSWORD"));
  const t0 = Date.now();
  await page.click("#login-submit");
  return t0;
}

/**
 * Launch Chromium, open a page with `pageOptions` (viewport, touch) and
 * run `body(t)` with t = { browser, page, pageErrors, foreign }. On a
 * failure: a screenshot `failure-NAME.png`, the error, exit code 1.
 */
export async function run(name, pageOptions, body) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = await browser.newPage(pageOptions);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // (A refused request is logged by Chromium as "Failed to load resource";
  // an expected 401 is not a page error.)
  page.on("console", (m) => { if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text()); });
  // No request may leave this server (no CDN, no tiles unless configured).
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(URL_)) foreign.push(r.url()); });
  try {
    await body({ browser, page, pageErrors, foreign });
  } catch (e) {
    await page.screenshot({ path: `${OUT}/failure-${name}.png` }).catch(() => {});
    console.error(String((e && e.stack) || e));
    if (pageErrors.length) console.error("page errors: " + pageErrors.join("; "));
    await browser.close();
    process.exit(1);
  }
  await browser.close();
}
