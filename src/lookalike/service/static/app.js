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

// Back on the review page after a verdict (its form posts to #c<rank>, kept across the redirect): focus that
// candidate's card, so the keyboard and a screen reader carry on from it, and show the confirmation ("Recorded: ...")
// on the card instead of at the top of a long page.
document.addEventListener("DOMContentLoaded", function () {
  if (!/^#c\d+$/.test(window.location.hash)) return;
  var card = document.getElementById(window.location.hash.slice(1));
  if (!card || !card.classList.contains("cand")) return;
  var form = card.querySelector(".verdict-form");
  document.querySelectorAll("main > .flash").forEach(function (flash) { card.insertBefore(flash, form); });
  card.focus();
});
