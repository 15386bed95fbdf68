// The analytics page: reads GET /analytics?from=&to= (JSON) from the origin that served it,
// draws the hours as an SVG chart and a table, and refreshes every few seconds. No library,
// nothing from another origin.
"use strict";

const HOUR = 3600000;
const REFRESH_MS = 5000;
const KEY = "analytics.readKey";
const SERIES = [
  ["unique_users", "users"],
  ["clicks", "clicks"],
  ["impressions", "impressions"],
];

const $ = (id) => document.getElementById(id);
let last = "";
let timer = null;

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
  let response;
  try {
    response = await fetch(`/analytics?from=${range.from}&to=${range.to}`, { headers });
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
  if (!response.ok) {
    const text = (await response.text()).trim();
    status(`The analytics service answered ${response.status}: ${text} Retrying.`, true);
    return;
  }
  const body = await response.text();
  $("key").hidden = true;
  status("Updated " + new Date().toISOString().slice(11, 19) + " UTC; refreshes every 5 s.", false);
  if (body === last) {
    return; // nothing changed: leave the DOM alone (no flicker)
  }
  last = body;
  const rows = JSON.parse(body);
  const open = Math.floor(Date.now() / HOUR) * HOUR;
  table(rows, open);
  chart(rows, open);
}

function ctr(r) {
  return r.impressions > 0 ? (100 * r.clicks / r.impressions).toFixed(1) + " %" : "—";
}

function table(rows, open) {
  const body = document.createElement("tbody");
  for (const r of rows.slice().reverse()) {
    const tr = document.createElement("tr");
    const isOpen = Date.parse(r.hour) === open;
    if (isOpen) {
      tr.className = "open";
    }
    const hour = r.hour.slice(0, 16).replace("T", " ") + (isOpen ? " (open)" : "");
    for (const [i, v] of [hour, r.unique_users, r.clicks, r.impressions, ctr(r)].entries()) {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) {
        cell.scope = "row";
      }
      cell.textContent = String(v);
      tr.appendChild(cell);
    }
    tr.dataset.hour = r.hour;
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
  const openIndex = rows.findIndex((r) => Date.parse(r.hour) === open);
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
  first.textContent = rows.length ? rows[0].hour.slice(5, 16).replace("T", " ") : "";
  g.appendChild(first);
  $("chart").replaceChildren(g);
}

function schedule() {
  clearInterval(timer);
  load();
  timer = setInterval(load, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
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
