// Refreshes the overview's live part in place (no page reload), submits filter selects on change, and
// fills in the parts a page loads after itself.
"use strict";
(function () {
  var PERIOD = 5000;
  function refresh() {
    var live = document.getElementById("live");
    // Not while the page is hidden, nor while someone is using the filter form (it would be replaced).
    if (!live || document.hidden || live.contains(document.activeElement) && document.activeElement.form) { return; }
    fetch(live.getAttribute("data-refresh"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 401) { location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null) { live.innerHTML = html; live.setAttribute("data-refreshed", String(Date.now())); }
      })
      .catch(function () { /* the gateway may be restarting: try again next period */ });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (document.getElementById("live")) { setInterval(refresh, PERIOD); }
    // Parts that take the server longer (the load-profile chart) arrive after the page.
    document.querySelectorAll("[data-src]").forEach(function (box) {
      fetch(box.getAttribute("data-src"), {credentials: "same-origin", headers: {"X-Requested-With": "pollerd"}})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null) { box.innerHTML = html; box.setAttribute("data-loaded", "1"); } })
        .catch(function () { /* the link in the box still works */ });
    });
    // Delegated: the filter selects are replaced with every refresh.
    document.addEventListener("change", function (ev) {
      var s = ev.target;
      if (s && s.hasAttribute && s.hasAttribute("data-autosubmit") && s.form) { s.form.submit(); }
    });
  });
}());
