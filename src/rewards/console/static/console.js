// rewards console: progressive enhancement only; every page works without it.
// An element with data-poll-url has its content replaced by that URL's HTML every
// data-poll-seconds (default 1) until the answer carries data-done.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const box of document.querySelectorAll("[data-poll-url]")) {
    const every = 1000 * Number(box.dataset.pollSeconds || 1);
    const poll = async () => {
      const answer = await fetch(box.dataset.pollUrl, { credentials: "same-origin" });
      if (!answer.ok) return;
      box.innerHTML = await answer.text();
      if (!box.querySelector("[data-done]")) setTimeout(poll, every);
    };
    if (!box.querySelector("[data-done]")) setTimeout(poll, every);
  }
});
