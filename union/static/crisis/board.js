// Countdowns tick every second; the dispatcher board reloads its data every 3 seconds.
(function () {
  function tick() {
    document.querySelectorAll(".countdown").forEach(function (el) {
      var s = Math.max(0, parseInt(el.getAttribute("data-seconds"), 10) - 1);
      el.setAttribute("data-seconds", s);
      el.textContent = s + "s";
    });
  }
  setInterval(tick, 1000);
  var board = document.getElementById("board");
  if (!board) return;
  // The page's own (translated) names for kinds and statuses; the API sends codes.
  function names(attr) {
    try { return JSON.parse(board.getAttribute(attr) || "{}"); } catch (e) { return {}; }
  }
  var kinds = names("data-kinds"), labels = names("data-labels");
  var offerLabels = names("data-offer-labels"), teamLabels = names("data-team-labels");
  function text(tag, value, cls) {
    var el = document.createElement(tag);
    if (cls) el.className = cls;
    el.textContent = value;
    return el;
  }
  function refresh() {
    fetch(board.getAttribute("data-source"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        var list = document.getElementById("incidents");
        list.innerHTML = "";
        document.getElementById("open-count").textContent = data.incidents.length;
        data.incidents.forEach(function (i) {
          var li = document.createElement("li");
          li.className = "incident";
          li.setAttribute("data-id", i.id);
          li.setAttribute("data-status", i.status);
          var a = document.createElement("a");
          a.href = "/crisis/incidents/" + i.id;
          a.appendChild(text("strong", i.reference));
          a.appendChild(document.createTextNode(" " + (kinds[i.kind] || i.kind) + " · " + (i.area || "—") + " · " + (i.branch || "")));
          li.appendChild(a);
          li.appendChild(text("span", labels[i.status] || i.status, "badge status-" + i.status));
          i.offers.forEach(function (o) {
            var badge = text("span", o.team + ": " + (offerLabels[o.status] || o.status) + " ", "badge offer");
            if (o.seconds_left !== null) {
              var c = text("span", o.seconds_left + "s", "countdown");
              c.setAttribute("data-seconds", o.seconds_left);
              badge.appendChild(c);
            }
            li.appendChild(badge);
          });
          list.appendChild(li);
        });
        var teams = document.getElementById("teams");
        teams.innerHTML = "";
        data.teams.forEach(function (t) {
          var li = document.createElement("li");
          li.setAttribute("data-team", t.id);
          li.appendChild(text("strong", t.name));
          li.appendChild(document.createTextNode(" "));
          li.appendChild(text("span", teamLabels[t.status] || t.status, "badge team-" + t.status));
          li.appendChild(text("span", " " + (t.branch || ""), "muted"));
          teams.appendChild(li);
        });
      }).catch(function () {});
  }
  setInterval(refresh, 3000);
})();
