// Drives Debian's Chromium (headless, through playwright-core) against the analytics page;
// run by e2e/tests/page.rs, which starts the stack, posts known events and passes:
//   PLAYWRIGHT_DIR, CHROMIUM_BIN   the tools (deploy/local/install-deps.sh WITH_BROWSER=1)
//   PAGE_URL                       the page (query service or front door)
//   COMMAND_URL                    where to POST the new event
//   EXPECT                         JSON {hour, unique_users, clicks, impressions}: a row the
//                                  table must show, the current hour
//   EXPECT_TOTAL                   JSON {unique_users, clicks, impressions}: the last 24 hours
//                                  exact totals before NEW_USER's click
//   NEW_USER                       the user of the event posted while the page is open
//   KEYED_URL, READ_KEY, WRITE_KEY the page of a query that requires keys
//   SCREENSHOT                     where to write the screenshot
// Exits 1 with one line per problem.
import { createRequire } from "node:module";

const env = process.env;
const require = createRequire(env.PLAYWRIGHT_DIR + "/");
const { chromium } = require("playwright-core");

const problems = [];
const expect = JSON.parse(env.EXPECT);
const expectTotal = JSON.parse(env.EXPECT_TOTAL);
const origin = new URL(env.PAGE_URL).origin;

async function cells(page, hour) {
  return page.evaluate((h) => {
    const row = document.querySelector(`#table tbody tr[data-hour="${h}"]`);
    return row ? [...row.children].map((c) => c.textContent) : null;
  }, hour);
}

async function waitRow(page, hour, want, what) {
  const deadline = Date.now() + 30000;
  let got = null;
  while (Date.now() < deadline) {
    got = await cells(page, hour);
    if (got && got[1] === String(want.unique_users) && got[2] === String(want.clicks) && got[3] === String(want.impressions)) {
      return got;
    }
    await page.waitForTimeout(200);
  }
  problems.push(`${what}: the row of ${hour} shows ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  return got;
}

async function totalsShown(page) {
  return page.evaluate(() => ["total-users", "total-clicks", "total-impressions"].map((id) => document.getElementById(id).textContent));
}

async function waitTotals(page, want, what) {
  const wanted = [want.unique_users, want.clicks, want.impressions].map(String);
  const deadline = Date.now() + 30000;
  let got = null;
  while (Date.now() < deadline) {
    got = await totalsShown(page);
    if (JSON.stringify(got) === JSON.stringify(wanted)) return;
    await page.waitForTimeout(200);
  }
  problems.push(`${what}: the totals show ${JSON.stringify(got)}, expected ${JSON.stringify(wanted)}`);
}

async function waitRows(page, count, what) {
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline && (await page.locator("#table tbody tr").count()) !== count) await page.waitForTimeout(200);
  const n = await page.locator("#table tbody tr").count();
  if (n !== count) problems.push(`${what}: ${n} rows, not ${count}`);
}

const browser = await chromium.launch({ executablePath: env.CHROMIUM_BIN, args: ["--no-sandbox"] });
try {
  // The page defaults to the browser's time zone: pinned, so that hourly rows are UTC's.
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, timezoneId: "UTC" });
  const page = await context.newPage();
  const errors = [];
  const foreign = [];
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => { if (new URL(r.url()).origin !== origin) foreign.push(r.url()); });

  await page.goto(env.PAGE_URL, { waitUntil: "load" });
  const first = await waitRow(page, expect.hour, expect, "first load");
  if (first && !first[0].includes("(open)")) problems.push(`the current hour is not marked open: ${first[0]}`);
  const rows = await page.locator("#table tbody tr").count();
  if (rows !== 24) problems.push(`the default range shows ${rows} rows, not 24`);
  const ctr = first ? first[4] : "";
  const wantCtr = expect.impressions > 0 ? (100 * expect.clicks / expect.impressions).toFixed(1) + " %" : "—";
  if (first && ctr !== wantCtr) problems.push(`click-through rate ${ctr}, expected ${wantCtr}`);
  if (await page.locator("#chart polyline").count() !== 3) problems.push("the chart does not draw three series");
  await waitTotals(page, expectTotal, "first load");

  // A new event while the page is open appears after the next refresh.
  const posted = await fetch(`${env.COMMAND_URL}/analytics?timestamp=${Date.now()}&user=${encodeURIComponent(env.NEW_USER)}&click`, { method: "POST" });
  if (posted.status !== 204) problems.push(`POST answered ${posted.status}`);
  const after = { ...expect, unique_users: expect.unique_users + 1, clicks: expect.clicks + 1 };
  await waitRow(page, expect.hour, after, "after a new POST");
  await waitTotals(page, { ...expectTotal, unique_users: expectTotal.unique_users + 1, clicks: expectTotal.clicks + 1 }, "after a new POST");

  // Days, then weeks, in UTC and in Paris: one row per calendar bucket the 24 hours touch.
  const end = Math.floor(Date.now() / 3600000) * 3600000 + 3600000;
  const days = (end - 86400000) % 86400000 === 0 ? 1 : 2;
  await page.check('input[name="view"][value="day"]');
  await waitRows(page, days, "day view");
  const head = await page.textContent("#first-col");
  if (head !== "Day (UTC)") problems.push(`the day view's first column is ${head}`);
  await page.selectOption("#tz", "Europe/Paris");
  const paris = await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#table tbody tr")];
    return rows.length > 0 && rows.every((r) => /T00:00:00\+0[12]:00$/.test(r.dataset.hour));
  }, null, { timeout: 15000 }).catch(() => null);
  if (!paris) problems.push("Paris days do not start at midnight +01:00/+02:00");
  await page.check('input[name="view"][value="week"]');
  await page.waitForFunction(() => document.getElementById("first-col").textContent === "Week (Europe/Paris)", null, { timeout: 15000 }).catch(() => problems.push("the week view did not load"));
  await page.check('input[name="view"][value="hour"]');
  await page.selectOption("#tz", "UTC");

  // Seven days: 168 rows.
  await page.check('input[name="span"][value="168"]');
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline && (await page.locator("#table tbody tr").count()) !== 168) await page.waitForTimeout(200);
  const week = await page.locator("#table tbody tr").count();
  if (week !== 168) problems.push(`seven days show ${week} rows`);
  await page.check('input[name="span"][value="24"]');
  await waitRow(page, expect.hour, after, "back to 24 hours");
  await page.screenshot({ path: env.SCREENSHOT, fullPage: false });

  // Readable at 320 px: nothing wider than the screen but the table's own scroll area.
  await page.setViewportSize({ width: 320, height: 800 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  if (width > 320) problems.push(`at 320 px the page is ${width} px wide`);
  // Keyboard: the table's scroll area and the range controls take focus.
  await page.focus('input[name="span"][value="24"]');
  await page.keyboard.press("Tab");
  if (!(await page.evaluate(() => document.activeElement && document.activeElement.tagName))) problems.push("nothing takes the focus");

  // A browser in a zone that cannot be built from UTC hours: UTC rows, with a note.
  const kolkata = await browser.newContext({ timezoneId: "Asia/Kolkata" });
  const india = await kolkata.newPage();
  india.on("pageerror", (e) => errors.push(String(e)));
  await india.goto(env.PAGE_URL, { waitUntil: "load" });
  await india.locator("#tz-note").waitFor({ state: "visible", timeout: 15000 }).catch(() => problems.push("no note for Asia/Kolkata"));
  const note = await india.textContent("#tz-note");
  if (!/Asia\/(Kolkata|Calcutta)/.test(note) || !note.includes("+05:30")) problems.push(`the zone note says: ${note}`);
  await waitRow(india, expect.hour, after, "Asia/Kolkata falls back to UTC");
  await kolkata.close();

  // With keys: the page asks for a read key, says why a key is refused, then shows the numbers.
  if (env.KEYED_URL) {
    const keyed = await context.newPage();
    keyed.on("pageerror", (e) => errors.push(String(e)));
    await keyed.goto(env.KEYED_URL, { waitUntil: "load" });
    await keyed.locator("#key-input").waitFor({ state: "visible", timeout: 15000 });
    const status1 = await keyed.textContent("#status");
    if (!status1.includes("API key")) problems.push(`without a key the page says: ${status1}`);
    await keyed.fill("#key-input", env.WRITE_KEY);
    await keyed.click('#key button[type="submit"]');
    await keyed.waitForFunction(() => document.getElementById("status").textContent.includes("403"), null, { timeout: 15000 }).catch(() => problems.push("a write key did not get the 403 message"));
    await keyed.fill("#key-input", env.READ_KEY);
    await keyed.click('#key button[type="submit"]');
    await waitRow(keyed, expect.hour, after, "with the read key");
    const stored = await keyed.evaluate(() => [sessionStorage.getItem("analytics.readKey"), localStorage.length]);
    if (stored[0] !== env.READ_KEY || stored[1] !== 0) problems.push(`the key is not (only) in session storage: ${stored}`);
  }

  // The 401s of the keyed page are expected; anything else on the console is not.
  const unexpected = errors.filter((e) => !e.includes("401") && !e.includes("403") && !e.includes("400"));
  for (const e of unexpected) problems.push(`console error: ${e}`);
  for (const u of foreign) problems.push(`request to another origin: ${u}`);
} finally {
  await browser.close();
}
for (const p of problems) console.log(p);
console.log(`${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
