// Score visibility on the review page: hidden by default (judge faces before scores), remembered per browser.
document.addEventListener("DOMContentLoaded", function () {
  var box = document.getElementById("show-scores");
  if (!box) return;
  var apply = function () { document.body.classList.toggle("show-scores", box.checked); };
  box.checked = window.localStorage.getItem("lookalike-show-scores") === "1";
  apply();
  box.addEventListener("change", function () {
    window.localStorage.setItem("lookalike-show-scores", box.checked ? "1" : "0");
    apply();
  });
});
