// The copy button of the page that shows a new key, and small helps of the
// create form. Everything on the key pages works without JavaScript; the copy
// button stays hidden without it.
(function () {
  "use strict";

  function announce(id, text) {
    var status = document.querySelector('[data-copy-status-for="' + id + '"]');
    if (status) { status.textContent = text; }
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function fallbackCopy(element) {
    // Plain-HTTP pages (other than localhost) have no Clipboard API.
    selectText(element);
    try { return document.execCommand("copy"); } catch (error) { return false; }
  }

  document.querySelectorAll("[data-copy-target]").forEach(function (button) {
    var id = button.getAttribute("data-copy-target");
    var source = document.getElementById(id);
    if (!source) { return; }
    button.hidden = false;
    var label = button.textContent;
    // The page gives these words in its own language.
    var copied = button.getAttribute("data-copied-label") || "Copied";
    var copiedStatus = button.getAttribute("data-copied-status") || "Key copied to the clipboard.";
    var blockedStatus = button.getAttribute("data-blocked-status") ||
      "Copying is blocked here: the key is selected, press Ctrl+C or \u2318C.";
    button.addEventListener("click", function () {
      var text = source.textContent.trim();
      var done = function (ok) {
        if (ok) {
          button.textContent = copied;
          announce(id, copiedStatus);
          window.setTimeout(function () { button.textContent = label; }, 2000);
        } else {
          selectText(source);
          announce(id, blockedStatus);
        }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { done(true); },
          function () { done(fallbackCopy(source)); }
        );
      } else {
        done(fallbackCopy(source));
      }
    });
  });

  // Typing a date in the create form picks the "On a date" choice.
  document.querySelectorAll("[data-selects]").forEach(function (input) {
    var radio = document.getElementById(input.getAttribute("data-selects"));
    if (!radio) { return; }
    input.addEventListener("input", function () { radio.checked = true; });
    input.addEventListener("focus", function () { radio.checked = true; });
  });

  // The confirmation for a live key with admin shows while that is what the
  // create form would make (without script it always shows; the server
  // asks for it only then).
  document.querySelectorAll("[data-admin-confirm]").forEach(function (box) {
    var form = box.closest("form");
    if (!form) { return; }
    var update = function () {
      var admin = form.querySelector("input[data-grants-admin]:checked");
      var live = form.querySelector('input[name="environment"][value="live"]:checked');
      box.hidden = !(admin && live);
    };
    form.addEventListener("change", update);
    update();
  });
})();
