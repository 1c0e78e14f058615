// The invite page's buttons beyond plain links: copying the link, and the phone's share sheet for the chat
// apps that have no web share address (WeChat, KakaoTalk). A file of its own: the CSP allows no inline script.
(() => {
  "use strict";

  const status = document.getElementById("status");

  // Said in the page's live region, as the server's messages are.
  function announce(text) {
    if (!status || !text) return;
    const message = document.createElement("p");
    message.className = "message";
    message.textContent = text;
    status.replaceChildren(message);
  }

  function select(element) {
    const range = document.createRange();
    range.selectNodeContents(element);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  const copy = document.getElementById("copy-link");
  if (copy && navigator.clipboard) {
    const source = document.getElementById(copy.dataset.copy);
    copy.hidden = false;
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        announce(copy.dataset.copied);
      } catch {
        // Refused (no permission, an old browser): the link is selected for the member to copy.
        select(source);
        announce(copy.dataset.copyFailed);
      }
    });
  }

  // Without a share sheet, these links go on to the QR code and its hint, as they do without JavaScript.
  if (navigator.share) {
    for (const link of document.querySelectorAll("[data-share-sheet]")) {
      link.addEventListener("click", (event) => {
        event.preventDefault();
        navigator.share({ text: link.dataset.shareText, url: link.dataset.shareUrl }).catch(() => {
          // Closed without sharing: nothing to say.
        });
      });
    }
  }
})();
