// docket's dashboard: keeps relative times current, refreshes the page's content every
// few seconds without a full reload (paused while the tab is hidden, a form is being
// used, or the user pressed "Live"), and asks before destructive actions.
(() => {
  "use strict";
  const REFRESH_MS = 3000;
  const units = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];

  function span(seconds) {
    seconds = Math.abs(seconds);
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    const whole = Math.floor(seconds);
    for (let i = 0; i < units.length; i++) {
      const [size, unit] = units[i];
      if (whole >= size) {
        let text = Math.floor(whole / size) + " " + unit;
        const rest = whole % size;
        if (i + 1 < units.length && rest) {
          const [smaller, smallerUnit] = units[i + 1];
          if (Math.floor(rest / smaller)) text += " " + Math.floor(rest / smaller) + " " + smallerUnit;
        }
        return text;
      }
    }
    return whole + " s";
  }

  function relative(ts) {
    const delta = ts - Date.now() / 1000;
    if (Math.abs(delta) < 1) return "just now";
    return delta > 0 ? "in " + span(delta) : span(delta) + " ago";
  }

  function tick() {
    for (const el of document.querySelectorAll("#docket-dashboard time[data-ts]")) {
      el.textContent = relative(parseFloat(el.dataset.ts));
    }
  }

  let live = true;
  let busy = false;

  function interacting() {
    const active = document.activeElement;
    if (active && active.closest("#docket-main form, #docket-main details")) return true;
    return document.querySelector("#docket-main details[open]") !== null;
  }

  async function refresh() {
    const main = document.getElementById("docket-main");
    if (!main || !live || busy || document.hidden || interacting()) return;
    busy = true;
    try {
      const response = await fetch(main.dataset.refreshUrl, {
        headers: { "X-Docket-Fragment": "1" },
        credentials: "same-origin",
      });
      if (response.ok && (response.headers.get("content-type") || "").startsWith("text/html")) {
        main.innerHTML = await response.text();
        main.dataset.refreshedAt = String(Date.now());
        tick();
      }
    } catch (error) {
      // The next round tries again; a dashboard must not break while Redis restarts.
    } finally {
      busy = false;
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-confirm]");
    if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    const toggle = event.target.closest("[data-live-toggle]");
    if (!toggle) return;
    live = !live;
    toggle.setAttribute("aria-pressed", String(live));
    if (live) refresh();
  });

  document.addEventListener("DOMContentLoaded", () => {
    tick();
    setInterval(tick, 1000);
    setInterval(refresh, REFRESH_MS);
  });
})();
