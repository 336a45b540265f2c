// Keeps a dashboard page current without reloading it: the page's main
// element says how (data-refresh: every N seconds; data-events: on each
// event of a server-sent stream). Each update fetches the page again and
// swaps in its main element. Without this script the pages work the same,
// only still.
(function () {
  "use strict";

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.getElementById("content");
    var cur = document.getElementById("content");
    if (!fresh || !cur) return;
    // Keep open what the reader opened.
    var open = {};
    cur.querySelectorAll("details").forEach(function (d, i) { open[i] = d.open; });
    fresh.querySelectorAll("details").forEach(function (d, i) { if (i in open) d.open = open[i]; });
    cur.replaceWith(fresh);
    document.title = doc.title;
  }

  function refresh() {
    return fetch(location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.redirected) { location.reload(); return; } // signed out: show the login form
        if (r.ok || r.status === 404) return r.text().then(swap);
      })
      .catch(function () { /* the daemon is away: try again on the next tick */ });
  }

  function main() { return document.getElementById("content"); }

  function schedule() {
    var m = main();
    if (!m) return;
    if (m.dataset.events && window.EventSource) { follow(m.dataset.events); return; }
    var every = Number(m.dataset.refresh);
    if (every > 0) setTimeout(function () { refresh().then(schedule); }, every * 1000);
  }

  function follow(url) {
    var es = new EventSource(url);
    var pending = false;
    function soon() {
      if (pending) return;
      pending = true;
      setTimeout(function () { pending = false; refresh(); }, 250);
    }
    es.addEventListener("step", soon);
    es.addEventListener("job", function (e) {
      var ev = {};
      try { ev = JSON.parse(e.data); } catch (err) { /* a malformed event still means a change */ }
      if (ev.status === "succeeded" || ev.status === "failed") {
        es.close();
        refresh().then(schedule);
        return;
      }
      soon();
    });
    // The stream broke (or the daemon restarted): poll until it can be
    // followed again, if the job still runs.
    es.onerror = function () {
      es.close();
      setTimeout(function () { refresh().then(schedule); }, 5000);
    };
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", schedule);
  else schedule();
})();
