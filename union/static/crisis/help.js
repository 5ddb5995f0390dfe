// "Use my location": optional; the page works without it (area or landmark).
(function () {
  var button = document.getElementById("use-location");
  if (!button || !navigator.geolocation) return;
  var status = document.getElementById("location-status");
  button.hidden = false;
  button.addEventListener("click", function () {
    status.textContent = "…";
    navigator.geolocation.getCurrentPosition(function (pos) {
      document.getElementById("lat").value = pos.coords.latitude.toFixed(6);
      document.getElementById("lon").value = pos.coords.longitude.toFixed(6);
      status.textContent = "✓ " + pos.coords.latitude.toFixed(4) + ", " + pos.coords.longitude.toFixed(4);
    }, function () { status.textContent = "✗"; }, {enableHighAccuracy: true, timeout: 15000, maximumAge: 60000});
  });
})();
