// Quick exit: leave for a neutral site and replace this page in the history, so
// "back" does not return here. Works as a plain link without JavaScript.
(function () {
  var url = document.body.getAttribute("data-quick-exit");
  function leave(event) {
    if (event) event.preventDefault();
    try { sessionStorage.clear(); } catch (e) {}
    // End the session too, so Back cannot reopen the member's pages; keepalive lets
    // the request finish after the page is gone.
    var token = document.querySelector("input[name=csrf_token]");
    var done = Promise.resolve();
    if (token) {
      try {
        var body = new URLSearchParams();
        body.set("csrf_token", token.value);
        done = fetch("/logout", {method: "POST", body: body, credentials: "same-origin", keepalive: true})
          .catch(function () {});
      } catch (e) {}
    }
    // Wait for the logout at most 400 ms: leaving fast matters more.
    Promise.race([done, new Promise(function (r) { setTimeout(r, 400); })]).then(function () {
      window.location.replace(url);
    });
  }
  var button = document.getElementById("quick-exit");
  if (button) button.addEventListener("click", leave);
  // Pressing Escape three times quickly also leaves.
  var presses = [];
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var now = Date.now();
    presses = presses.filter(function (t) { return now - t < 1500; });
    presses.push(now);
    if (presses.length >= 3) leave();
  });
})();
