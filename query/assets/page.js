// The analytics page: reads GET /analytics?from=&to= (JSON; per hour, day or week of a time
// zone) and GET /analytics/total from the origin that served it, draws the rows as an SVG
// chart and a table under the range's exact totals, and refreshes every few seconds. No
// library, nothing from another origin.
"use strict";

const HOUR = 3600000;
const REFRESH_MS = 5000;
const KEY = "analytics.readKey";
const SERIES = [
  ["unique_users", "users"],
  ["clicks", "clicks"],
  ["impressions", "impressions"],
];

const ZONES = ["UTC", "Europe/London", "Europe/Paris", "America/New_York", "America/Los_Angeles", "Asia/Tokyo", "Australia/Sydney"];

const $ = (id) => document.getElementById(id);
let last = "";
let timer = null;

function view() {
  return document.querySelector('input[name="view"]:checked').value;
}

// The browser's zone first (UTC when it names none), then a few common ones.
function zones() {
  let own = "UTC";
  try {
    own = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch (e) {
    own = "UTC";
  }
  for (const z of [own, ...ZONES.filter((z) => z !== own)]) {
    $("tz").appendChild(new Option(z, z));
  }
}

// Every row is labelled by its start, `hour` (with the zone's offset for day and week rows).
const label = (r) => r.hour;

function span() {
  const chosen = document.querySelector('input[name="span"]:checked').value;
  const now = Date.now();
  if (chosen !== "custom") {
    const hours = Number(chosen);
    const end = Math.floor(now / HOUR) * HOUR + HOUR;
    return { from: end - hours * HOUR, to: end };
  }
  const from = Date.parse($("from").value + "Z");
  const to = Date.parse($("to").value + "Z");
  if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from) {
    return null;
  }
  return { from, to };
}

function status(text, error) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", Boolean(error));
}

function askKey(message) {
  $("key-message").textContent = message;
  $("key").hidden = false;
  $("key-input").focus();
}

async function load() {
  const range = span();
  if (!range) {
    status("Choose a custom range whose end is after its start.", true);
    return;
  }
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) {
    headers.Authorization = "Bearer " + key;
  }
  const tz = $("tz").value;
  const rowsOf = view() === "hour" && tz === "UTC" ? "" : `&interval=${view()}&tz=${encodeURIComponent(tz)}`;
  let response, total;
  try {
    [response, total] = await Promise.all([
      fetch(`/analytics?from=${range.from}&to=${range.to}${rowsOf}`, { headers }),
      fetch(`/analytics/total?from=${range.from}&to=${range.to}`, { headers }),
    ]);
  } catch (e) {
    status("The analytics service cannot be reached; retrying.", true);
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    status("This service needs an API key with the read scope.", true);
    askKey(key ? "That key was not accepted (401): check it, or ask for a new one." : "Enter a key with the read scope to see the numbers.");
    return;
  }
  if (response.status === 403) {
    sessionStorage.removeItem(KEY);
    status("This key may not read analytics (403): it lacks the read scope.", true);
    askKey("That key lacks the read scope (403): enter a read key.");
    return;
  }
  if (response.status === 400 && tz !== "UTC") {
    // The service cannot build this zone's rows (a fractional offset, or a zone it does not
    // know): fall back to UTC and say why.
    const why = (await response.text()).trim();
    $("tz-note").textContent = `Rows cannot be shown in ${tz} (${why}); showing UTC instead.`;
    $("tz-note").hidden = false;
    $("tz").value = "UTC";
    last = "";
    return load();
  }
  if (!response.ok) {
    const text = (await response.text()).trim();
    status(`The analytics service answered ${response.status}: ${text} Retrying.`, true);
    return;
  }
  if (total.ok) {
    totals(await total.json());
  }
  const body = await response.text();
  $("key").hidden = true;
  status("Updated " + new Date().toISOString().slice(11, 19) + " UTC; refreshes every 5 s.", false);
  if (body === last) {
    return; // nothing changed: leave the DOM alone (no flicker)
  }
  last = body;
  const rows = JSON.parse(body);
  // The open row: the last one that has started.
  const now = Date.now();
  const started = rows.filter((r) => Date.parse(label(r)) <= now);
  const open = started.length ? Date.parse(label(started[started.length - 1])) : NaN;
  for (const el of document.querySelectorAll(".view-name")) {
    el.textContent = view();
  }
  $("first-col").textContent = `${view()[0].toUpperCase()}${view().slice(1)} (${tz})`;
  table(rows, open);
  chart(rows, open);
}

function totals(t) {
  $("total-users").textContent = String(t.unique_users);
  $("total-clicks").textContent = String(t.clicks);
  $("total-impressions").textContent = String(t.impressions);
  $("total-ctr").textContent = ctr(t);
}

function ctr(r) {
  return r.impressions > 0 ? (100 * r.clicks / r.impressions).toFixed(1) + " %" : "—";
}

function table(rows, open) {
  const body = document.createElement("tbody");
  for (const r of rows.slice().reverse()) {
    const tr = document.createElement("tr");
    const isOpen = Date.parse(label(r)) === open;
    if (isOpen) {
      tr.className = "open";
    }
    const length = view() === "hour" ? 16 : 10;
    const hour = label(r).slice(0, length).replace("T", " ") + (isOpen ? " (open)" : "");
    for (const [i, v] of [hour, r.unique_users, r.clicks, r.impressions, ctr(r)].entries()) {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) {
        cell.scope = "row";
      }
      cell.textContent = String(v);
      tr.appendChild(cell);
    }
    tr.dataset.hour = label(r);
    body.appendChild(tr);
  }
  $("table").replaceChild(body, $("table").tBodies[0]);
}

function svg(name, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) {
    el.setAttribute(k, String(v));
  }
  return el;
}

function chart(rows, open) {
  const W = 800, H = 260, top = 10, bottom = 20, left = 40;
  const max = Math.max(1, ...rows.flatMap((r) => [r.unique_users, r.clicks, r.impressions]));
  const step = rows.length > 1 ? (W - left) / (rows.length - 1) : 0;
  const x = (i) => left + i * step;
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const g = svg("g", {});
  for (const frac of [0, 0.5, 1]) {
    g.appendChild(svg("line", { class: "grid", x1: left, x2: W, y1: y(max * frac), y2: y(max * frac) }));
    const label = svg("text", { x: 2, y: y(max * frac) + 4 });
    const v = max * frac;
    label.textContent = Number.isInteger(v) ? String(v) : v.toFixed(1);
    g.appendChild(label);
  }
  const openIndex = rows.findIndex((r) => Date.parse(label(r)) === open);
  if (openIndex >= 0) {
    const w = Math.max(step, 6);
    g.appendChild(svg("rect", { class: "open", x: x(openIndex) - w / 2, y: top, width: w, height: H - top - bottom }));
    const label = svg("text", { x: Math.min(x(openIndex) - w / 2, W - 40), y: H - 5 });
    label.textContent = "open";
    g.appendChild(label);
  }
  for (const [field, cls] of SERIES) {
    const points = rows.map((r, i) => `${x(i)},${y(r[field])}`).join(" ");
    g.appendChild(svg("polyline", { class: cls, points }));
  }
  const first = svg("text", { x: left, y: H - 5 });
  first.textContent = rows.length ? label(rows[0]).slice(5, 16).replace("T", " ") : "";
  g.appendChild(first);
  $("chart").replaceChildren(g);
}

function schedule() {
  clearInterval(timer);
  load();
  timer = setInterval(load, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  zones();
  for (const input of document.querySelectorAll('input[name="view"]')) {
    input.addEventListener("change", () => {
      last = "";
      schedule();
    });
  }
  $("tz").addEventListener("change", () => {
    $("tz-note").hidden = true;
    last = "";
    schedule();
  });
  for (const input of document.querySelectorAll('input[name="span"]')) {
    input.addEventListener("change", () => {
      $("custom").hidden = input.value !== "custom" || !input.checked;
      last = "";
      if (input.value !== "custom") {
        schedule();
      }
    });
  }
  const now = Math.floor(Date.now() / HOUR) * HOUR;
  $("from").value = new Date(now - 23 * HOUR).toISOString().slice(0, 16);
  $("to").value = new Date(now + HOUR).toISOString().slice(0, 16);
  $("range").addEventListener("submit", (e) => {
    e.preventDefault();
    last = "";
    schedule();
  });
  $("key").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("key-input").value.trim());
    $("key-input").value = "";
    last = "";
    schedule();
  });
  schedule();
});
