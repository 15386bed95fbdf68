// Drives Debian's Chromium (headless, playwright-core) through a page of another origin that
// includes the tracker (/t.js) from the front door; run by e2e/tests/browser_ingest.rs:
//   PLAYWRIGHT_DIR, CHROMIUM_BIN   the tools (deploy/local/install-deps.sh WITH_BROWSER=1)
//   PAGE_URL                       the page, on its own origin
//   RUN                            "1": views, clicks, a reload, a sign-in
//                                  (analytics.identify), a close; "2": views and clicks
//                                  while the test stops the command and starts it again
//   SIGNAL_DIR                     run 2: writes `stop` when the page is loaded, waits for
//                                  `back` before the page's queue must drain
// Prints one JSON line {impressions, clicks} of what was shown and clicked, then problems,
// one per line; exits 1 if there are any.
import { createRequire } from "node:module";
import { existsSync, writeFileSync } from "node:fs";

const env = process.env;
const require = createRequire(env.PLAYWRIGHT_DIR + "/");
const { chromium } = require("playwright-core");
const problems = [];
const done = { impressions: 0, clicks: 0 };
const run = env.RUN;

async function view(page, i) {
  await page.evaluate((id) => document.getElementById(id).scrollIntoView({ block: "center" }), `item-${i}`);
  await page.waitForTimeout(1600); // half visible for a second: one impression
  done.impressions += 1;
}

async function click(page, i) {
  await page.click(`#item-${i}`);
  done.clicks += 1;
}

async function queued(page) {
  return page.evaluate(() => JSON.parse(localStorage.getItem("analytics.queue") || "[]").length);
}

async function drained(page, ms, what) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if ((await queued(page)) === 0) return;
    await page.waitForTimeout(250);
  }
  problems.push(`${what}: ${await queued(page)} events still queued`);
}

const browser = await chromium.launch({ executablePath: env.CHROMIUM_BIN, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(env.PAGE_URL, { waitUntil: "load" });
  await page.waitForFunction(() => window.analytics && typeof window.analytics.identify === "function", null, { timeout: 15000 })
    .catch(() => problems.push("the tracker did not load"));

  if (run === "1") {
    for (let i = 0; i < 10; i++) {
      await view(page, i);
      if (i % 3 === 0) await click(page, i);
    }
    // A new page view of the same visitor: its own impressions, the same user.
    await page.reload({ waitUntil: "load" });
    // The site signs the visitor in: its own id from now on.
    await page.evaluate(() => window.analytics.identify("customer-42"));
    await view(page, 2);
    await click(page, 2);
    // Closed at once: what the interval did not send yet goes by beacon.
    await page.close({ runBeforeUnload: true });
  } else {
    writeFileSync(`${env.SIGNAL_DIR}/stop`, "");
    // The test stops the command now; the events below get 503s (or no CORS answer) until
    // it is back, and are kept and retried.
    await page.waitForTimeout(1500);
    for (const i of [1, 4, 7]) await view(page, i);
    await click(page, 4);
    await click(page, 7);
    const deadline = Date.now() + 60000;
    while (!existsSync(`${env.SIGNAL_DIR}/back`) && Date.now() < deadline) await page.waitForTimeout(200);
    await drained(page, 30000, "after the command came back");
    await page.close({ runBeforeUnload: true });
  }
  // Run 2 sees the outage's failed requests on the console; nothing else may be there.
  const unexpected = run === "1" ? errors : errors.filter((e) => !/503|Failed to load resource|CORS|Failed to fetch/.test(e));
  for (const e of unexpected) problems.push(`console error: ${e}`);
  // A beacon leaves after its page closed: give it a moment before the browser goes.
  await new Promise((r) => setTimeout(r, 2000));
} finally {
  await browser.close();
}
console.log(JSON.stringify(done));
for (const p of problems) console.log(p);
process.exit(problems.length ? 1 : 0);
