// The team app: turn on push alerts (service worker + PushManager), poll for offers
// as a second path, and share the team's location when asked.
(function () {
  var config = document.getElementById("team-config");
  var csrf = config ? config.getAttribute("data-csrf") : "";
  function api(method, url, body) {
    return fetch(url, {method: method, credentials: "same-origin", cache: "no-store",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: body ? JSON.stringify(body) : undefined});
  }
  function b64ToBytes(b64) {
    var pad = "=".repeat((4 - b64.length % 4) % 4);
    var raw = atob((b64 + pad).replace(/-/g, "+").replace(/_/g, "/"));
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  var panel = document.getElementById("push-panel");
  function subscribe(registration) {
    return fetch("/api/push/vapid-public-key").then(function (r) { return r.json(); }).then(function (data) {
      return registration.pushManager.subscribe({userVisibleOnly: true, applicationServerKey: b64ToBytes(data.key)});
    }).then(function (sub) {
      return api("POST", "/api/push/subscriptions", sub.toJSON());
    }).then(function (r) { if (r.ok && panel) panel.hidden = true; });
  }
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js", {scope: "/"}).then(function (registration) {
      window.unionSW = registration;
      if (!("PushManager" in window)) return;
      registration.pushManager.getSubscription().then(function (sub) {
        if (sub) { api("POST", "/api/push/subscriptions", sub.toJSON()); return; }
        if (panel) panel.hidden = false;
        var button = document.getElementById("push-enable");
        if (button) button.addEventListener("click", function () { subscribe(registration); });
      });
    }).catch(function () {});
    navigator.serviceWorker.addEventListener("message", function (event) {
      if (event.data && event.data.type === "offer") window.location.href = "/crisis/offers/" + event.data.offer;
    });
  }
  // Polling is the second path: an alert still shows when push is blocked or slow.
  var list = document.getElementById("offer-list");
  var known = {};
  document.querySelectorAll("[data-offer]").forEach(function (el) { known[el.getAttribute("data-offer")] = true; });
  function poll() {
    api("GET", "/api/crisis/offers").then(function (r) { return r.json(); }).then(function (data) {
      data.offers.forEach(function (o) {
        if (known[o.id]) return;
        known[o.id] = true;
        var empty = document.getElementById("no-offers");
        if (empty) empty.remove();
        var li = document.createElement("li");
        li.className = "offer";
        li.setAttribute("data-offer", o.id);
        var a = document.createElement("a");
        a.className = "button primary";
        a.href = "/crisis/offers/" + o.id;
        a.textContent = "⚠ " + o.reference;
        li.appendChild(a);
        list.appendChild(li);
        if (navigator.vibrate) navigator.vibrate([300, 100, 300]);
      });
    }).catch(function () {});
  }
  if (list) setInterval(poll, 5000);
  document.querySelectorAll(".share-location").forEach(function (button) {
    if (!navigator.geolocation) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.geolocation.getCurrentPosition(function (pos) {
        api("POST", "/api/crisis/teams/" + button.getAttribute("data-team") + "/location",
            {lat: pos.coords.latitude, lon: pos.coords.longitude}).then(function (r) {
          button.textContent = r.ok ? "✓" : "✗";
        });
      }, function () { button.textContent = "✗"; }, {enableHighAccuracy: true, timeout: 15000});
    });
  });
})();
