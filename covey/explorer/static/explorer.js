// Covey Explorer: keeps a page current while the network runs. Without this script the pages
// still work (and reload themselves through <noscript>); with it, the page body is swapped in
// place whenever the index moves, so scrolling and the search box are left alone.
(function () {
  "use strict";
  var body = document.body;
  var interval = parseInt(body.getAttribute("data-refresh-ms") || "2000", 10);
  var stamp = body.getAttribute("data-stamp");
  var live = document.getElementById("live");
  var busy = false;

  function setLive(state, text) {
    if (!live) { return; }
    live.className = "live" + (state ? " " + state : "");
    live.textContent = text;
  }

  function refresh() {
    return fetch(window.location.href, { cache: "no-store", headers: { "X-Covey-Refresh": "1" } })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html");
        ["content", "status"].forEach(function (id) {
          var fresh = next.getElementById(id);
          var current = document.getElementById(id);
          if (fresh && current) { current.innerHTML = fresh.innerHTML; }
        });
        live = document.getElementById("live");
        body.setAttribute("data-stamp", stamp);
      });
  }

  function tick() {
    if (busy || document.hidden) { return schedule(); }
    busy = true;
    fetch("/api/status", { cache: "no-store" })
      .then(function (response) { return response.json(); })
      .then(function (status) {
        var next = status.stamp;
        if (next !== stamp) {
          stamp = next;
          setLive("flash", "updating");
          return refresh().then(function () { setLive("", "live"); });
        }
        setLive("", "live");
      })
      .catch(function () { setLive("offline", "offline, retrying"); })
      .then(function () { busy = false; schedule(); });
  }

  function schedule() { window.setTimeout(tick, interval); }
  schedule();
})();
