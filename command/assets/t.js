// The analytics tracker, served by the command at /t.js. Include it once per page:
//   <script src="https://collector.example/t.js" data-key="ak_…" defer></script>
// with a browser key. It counts an impression for each element marked
// data-analytics="name" once at least half of it has been visible for a second (once per
// element and page view), and a click for each click on one. Events carry a random id (a
// re-sent event counts once), are kept in localStorage until the collector took them
// (at most 500, none older than 12 hours), sent compressed every few seconds and by
// sendBeacon when the page is hidden, and retried after a 503 or 429 as Retry-After says.
// window.analytics.identify(id) replaces the anonymous user id. No dependencies.
(function () {
  "use strict";
  var me = document.currentScript;
  if (!me || window.analytics) return;
  var KEY = me.getAttribute("data-key") || "";
  var BASE = new URL(me.src).origin + "/analytics/batch";
  var Q = "analytics.queue", U = "analytics.user";
  var MAX = 500, MAX_AGE = 12 * 3600e3, EVERY = 3000, SEEN = 1000;
  var queue = load(), next = 0, sending = false, seen = new WeakSet();

  function rid() {
    var b = new Uint8Array(12);
    crypto.getRandomValues(b);
    return Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
  }
  function store(k, v) {
    try { localStorage.setItem(k, v); } catch (e) { /* full or disabled: memory only */ }
  }
  function read(k) {
    try { return localStorage.getItem(k); } catch (e) { return null; }
  }
  function load() {
    try {
      var q = JSON.parse(read(Q) || "[]");
      return Array.isArray(q) ? q : [];
    } catch (e) { return []; }
  }
  function save() {
    var old = Date.now() - MAX_AGE;
    queue = queue.filter(function (e) { return e.timestamp > old; }).slice(-MAX);
    store(Q, JSON.stringify(queue));
  }
  var user = read(U);
  if (!user) { user = "anon-" + rid(); store(U, user); }

  function track(event) {
    queue.push({ timestamp: Date.now(), user: user, event: event, id: rid() });
    save();
  }
  function ndjson(batch) {
    return batch.map(function (e) { return JSON.stringify(e); }).join("\n") + "\n";
  }
  // Drops the events the collector took (by id: more may have been queued meanwhile).
  function taken(batch) {
    var ids = {};
    batch.forEach(function (e) { ids[e.id] = 1; });
    queue = load().filter(function (e) { return !ids[e.id]; });
    save();
  }
  function gzip(text) {
    if (!window.CompressionStream) return Promise.resolve(null);
    var stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
    return new Response(stream).blob();
  }
  function send() {
    queue = load();
    if (sending || !queue.length || Date.now() < next) return;
    var batch = queue.slice(0, 200), text = ndjson(batch);
    sending = true;
    gzip(text).then(function (zipped) {
      var headers = { "Content-Type": "application/x-ndjson", Authorization: "Bearer " + KEY };
      if (zipped) headers["Content-Encoding"] = "gzip";
      return fetch(BASE, { method: "POST", headers: headers, body: zipped || text, keepalive: true, credentials: "omit" });
    }).then(function (r) {
      if (r.ok || r.status === 400 || r.status === 413) {
        taken(batch); // a 400 or 413 would be refused again: not retried
      } else if (r.status === 503 || r.status === 429) {
        next = Date.now() + 1000 * (parseInt(r.headers.get("Retry-After"), 10) || 5);
      } else {
        next = Date.now() + 30000; // a refused key: try again later, quietly
      }
    }, function () {
      next = Date.now() + 5000; // the collector is unreachable
    }).then(function () { sending = false; });
  }
  // On leaving: the rest by beacon, plain text (no preflight); kept until a later page
  // load's fetch is answered, which its ids make harmless.
  function leave() {
    queue = load();
    if (queue.length && navigator.sendBeacon) {
      navigator.sendBeacon(BASE + "?key=" + encodeURIComponent(KEY), new Blob([ndjson(queue.slice(0, 200))], { type: "text/plain" }));
    }
  }

  var timers = new Map();
  var watch = new IntersectionObserver(function (entries) {
    entries.forEach(function (en) {
      var el = en.target;
      if (en.intersectionRatio >= 0.5 && !seen.has(el)) {
        if (!timers.has(el)) timers.set(el, setTimeout(function () {
          timers.delete(el);
          if (seen.has(el)) return;
          seen.add(el);
          watch.unobserve(el);
          track("impression");
        }, SEEN));
      } else if (timers.has(el)) {
        clearTimeout(timers.get(el));
        timers.delete(el);
      }
    });
  }, { threshold: [0, 0.5] });
  function scan(root) {
    if (root.querySelectorAll) root.querySelectorAll("[data-analytics]").forEach(function (el) { if (!seen.has(el)) watch.observe(el); });
    if (root.matches && root.matches("[data-analytics]") && !seen.has(root)) watch.observe(root);
  }
  new MutationObserver(function (changes) {
    changes.forEach(function (c) { c.addedNodes.forEach(scan); });
  }).observe(document.documentElement, { childList: true, subtree: true });
  scan(document);
  document.addEventListener("click", function (ev) {
    if (ev.target.closest && ev.target.closest("[data-analytics]")) track("click");
  }, true);
  addEventListener("pagehide", leave);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") leave();
  });
  setInterval(send, EVERY);
  setTimeout(send, 0);

  window.analytics = {
    identify: function (id) {
      if (id) { user = String(id); store(U, user); }
    },
    flush: send,
  };
})();
