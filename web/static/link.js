// LinkHub's only script: the live parts of the link pages. Every page works
// without it (forms and reloads); with it, the list of waiting devices, the
// code's countdown and the page after Approve update by themselves.
// Served by the hub (CSP script-src 'self'), no library, no inline script.
"use strict";

(function () {
  // How often to ask: small JSON answers, so a few seconds costs the hub little
  // (docs/performance.md, "Live pages").
  var WAITING_EVERY_MS = 3000;
  var PROGRESS_EVERY_MS = 2000;

  function getJson(url, then) {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (body) { if (body) then(body); })
      .catch(function () { /* the hub restarting: the next round tries again */ });
  }

  // Ask again later; while the tab is hidden, not at all (a phone in a pocket).
  function every(ms, run) {
    function tick() {
      if (!document.hidden) run();
      window.setTimeout(tick, ms);
    }
    window.setTimeout(tick, ms);
  }

  // --- /link: devices waiting to be linked -------------------------------------------
  var waiting = document.querySelector("[data-waiting-url]");
  if (waiting) {
    var list = waiting.querySelector(".waiting-list");
    var empty = waiting.querySelector(".waiting-empty");
    every(WAITING_EVERY_MS, function () {
      getJson(waiting.getAttribute("data-waiting-url"), function (body) {
        var items = body.waiting.map(function (req) {
          var li = document.createElement("li");
          li.className = "entry waiting-device";
          var a = document.createElement("a");
          a.className = "waiting-name";
          a.href = req.confirm_url;
          a.textContent = req.name;
          var facts = document.createElement("span");
          facts.className = "waiting-facts";
          facts.textContent = [req.model, req.address, "asked " + req.asked, req.time_left]
            .filter(Boolean).join(" · ");
          li.append(a, " ", facts);
          return li;
        });
        list.replaceChildren.apply(list, items);
        empty.hidden = items.length > 0;
      });
    });
  }

  // --- the confirm page: the code's time left --------------------------------------------
  var countdown = document.querySelector(".countdown[data-expires-at]");
  if (countdown) {
    // The hub's clock decides expiry: count from its "now", not the phone's.
    var skewS = parseFloat(countdown.getAttribute("data-now")) - Date.now() / 1000;
    var expiresAt = parseFloat(countdown.getAttribute("data-expires-at"));
    var words = function (seconds) {  // as web/timefmt.py's remaining()
      if (seconds <= 0) return "expired";
      if (seconds < 60) return "expires in less than a minute";
      if (seconds < 3600) return "expires in " + Math.floor(seconds / 60) + " min";
      return "expires in " + Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    };
    var show = function () {
      var left = Math.floor(expiresAt - (Date.now() / 1000 + skewS));
      countdown.textContent = words(left);
      if (left > 0) return true;
      document.querySelector(".expired-note").hidden = false;
      var approve = document.querySelector("button.approve");
      if (approve) approve.disabled = true;
      return false;
    };
    var timer = window.setInterval(function () { if (!show()) window.clearInterval(timer); }, 1000);
  }

  // --- after Approve: following the device -------------------------------------------------
  var progress = document.querySelector("[data-progress-url]");
  if (progress) {
    var message = document.querySelector(".progress-message");
    var follow = function (body) {
      progress.setAttribute("data-step", body.step);
      progress.querySelector('[data-step="connected"]').classList.toggle("done", body.connected);
      progress.querySelector('[data-step="synced"]').classList.toggle("done", body.synced);
      message.textContent = body.message;
      var late = body.step === "late" || body.step === "sync_late";
      message.classList.toggle("message", late);
      message.classList.toggle("message-warning", late);
    };
    var poll = function () {
      if (progress.getAttribute("data-step") === "done") return;
      getJson(progress.getAttribute("data-progress-url"), follow);
    };
    every(PROGRESS_EVERY_MS, poll);
  }

  // --- a device's page: its state and its settings' sync, as they change --------------------
  var deviceStatus = document.querySelector("[data-status-url]");
  if (deviceStatus) {
    var sync = document.querySelector(".sync-status");
    // Every 2 s with controls on the page (a reading or a switch flipped in Home
    // Assistant shows soon), every 5 s otherwise.
    every(document.querySelector("[data-component-live]") ? 2000 : 5000, function () {
      getJson(deviceStatus.getAttribute("data-status-url"), function (body) {
        // The hub renders the state line (its own template, escaped there): the
        // same markup as the page, so the two never say different things.
        var fresh = new DOMParser().parseFromString(body.state_html, "text/html").body;
        deviceStatus.replaceChildren.apply(deviceStatus, Array.prototype.slice.call(fresh.childNodes));
        if (sync) {
          sync.textContent = body.sync;
          sync.setAttribute("data-synced", body.synced ? "yes" : "no");
        }
        // Each component's state (and its on/off button), rendered by the hub too;
        // the sliders and fields a person may be using are left alone.
        Object.keys(body.components || {}).forEach(function (key) {
          var live = document.querySelector('[data-component-live="' + CSS.escape(key) + '"]');
          if (!live) return;
          var part = new DOMParser().parseFromString(body.components[key], "text/html").body;
          live.replaceChildren.apply(live, Array.prototype.slice.call(part.childNodes));
        });
      });
    });
  }

  // --- after an error: the person's attention on what went wrong ------------------------
  var error = document.getElementById("page-error");
  if (error && !document.querySelector("[autofocus]")) error.focus();
})();

// --- copy buttons (recovery codes, the two-factor key) ----------------------------------
(function () {
  if (!navigator.clipboard) return;  // plain HTTP on a LAN address: no clipboard API
  document.querySelectorAll("[data-copy-from]").forEach(function (button) {
    var source = document.querySelector(button.getAttribute("data-copy-from"));
    if (!source) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = source.getAttribute("data-copy-text") ||
        Array.prototype.map.call(source.querySelectorAll("code"), function (c) { return c.textContent; }).join("\n");
      navigator.clipboard.writeText(text).then(function () { button.textContent = "Copied"; });
    });
  });
})();
