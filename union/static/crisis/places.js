// Area search for the hotline console: suggestions from the gazetteer as the operator types.
(function () {
  var input = document.querySelector("input[data-places]");
  if (!input) return;
  var list = document.getElementById(input.getAttribute("list"));
  var timer = null;
  input.addEventListener("input", function () {
    clearTimeout(timer);
    var q = input.value.trim();
    if (q.length < 2) return;
    timer = setTimeout(function () {
      fetch(input.getAttribute("data-places") + "?q=" + encodeURIComponent(q), {credentials: "same-origin"})
        .then(function (r) { return r.json(); })
        .then(function (data) {
          list.innerHTML = "";
          data.places.forEach(function (p) {
            var option = document.createElement("option");
            option.value = p.label;
            option.textContent = p.pincode;
            list.appendChild(option);
          });
        }).catch(function () {});
    }, 150);
  });
})();
