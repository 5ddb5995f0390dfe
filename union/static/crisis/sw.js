// Service worker of the team app. A push carries only {"type": "offer", "offer": id}
// (or another type with an id); the details are fetched after login, never pushed.
self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

function targetFor(data) {
  if (data.type === "offer") return "/crisis/offers/" + data.offer;
  if (data.type === "escalation") return "/crisis/incidents/" + data.incident;
  return "/crisis/team";
}

self.addEventListener("push", function (event) {
  var data = {};
  try { data = event.data ? event.data.json() : {}; } catch (e) { data = {}; }
  var url = targetFor(data);
  event.waitUntil(
    self.clients.matchAll({type: "window", includeUncontrolled: true}).then(function (clients) {
      clients.forEach(function (client) { client.postMessage(data); });
      // A neutral text: the lock screen of a seized phone must not tell what this is.
      return self.registration.showNotification("Sangha", {
        body: "Open the app", tag: data.type + ":" + (data.offer || data.incident || ""),
        requireInteraction: true, renotify: true, data: {url: url}, vibrate: [300, 100, 300, 100, 300]
      });
    })
  );
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = (event.notification.data && event.notification.data.url) || "/crisis/team";
  event.waitUntil(self.clients.matchAll({type: "window", includeUncontrolled: true}).then(function (clients) {
    for (var i = 0; i < clients.length; i++) {
      if ("focus" in clients[i]) { clients[i].navigate(url); return clients[i].focus(); }
    }
    return self.clients.openWindow(url);
  }));
});
