// mcp-tunnel console: the only script. Copy buttons for values shown once; everything
// else works without JavaScript.
"use strict";
document.addEventListener("click", (ev) => {
  const btn = ev.target.closest("[data-copy]");
  if (!btn) return;
  const field = document.getElementById(btn.dataset.copy);
  const status = document.getElementById(btn.dataset.copy + "-status");
  if (!field) return;
  field.select();
  const done = () => { if (status) status.textContent = "Copied to the clipboard."; };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, () => {
      if (status) status.textContent = "Copy failed: select the text and copy it by hand.";
    });
  } else {
    document.execCommand("copy");
    done();
  }
});
