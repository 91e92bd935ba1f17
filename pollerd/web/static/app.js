// Refreshes the overview's live part in place (no page reload) and submits filter selects on change.
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
    // Delegated: the filter selects are replaced with every refresh.
    document.addEventListener("change", function (ev) {
      var s = ev.target;
      if (s && s.hasAttribute && s.hasAttribute("data-autosubmit") && s.form) { s.form.submit(); }
    });
  });
}());
