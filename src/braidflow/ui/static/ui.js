// The dashboard's one script (served by the app: nothing from the network).
// It follows what changes without reloading the page, and checks the JSON a
// form sends before it is sent.
"use strict";
(function () {
  const PERIOD = 1500; // ms between two looks at the store
  const state = { polls: 0, swaps: 0 };
  window.braidflowUI = state;

  // A part of the page is left as it is while a person works in it.
  function busy(section) {
    const focused = document.activeElement;
    if (focused && focused !== document.body && section.contains(focused)) return true;
    for (const field of section.querySelectorAll("textarea, input[type=text], input[type=search]")) {
      if (field.value !== field.defaultValue) return true;
    }
    return false;
  }

  function swap(text) {
    const fresh = new DOMParser().parseFromString(text, "text/html");
    for (const part of fresh.querySelectorAll("[data-live]")) {
      const old = document.getElementById(part.id);
      if (!old || old.outerHTML === part.outerHTML || busy(old)) continue;
      old.replaceWith(document.importNode(part, true));
      state.swaps += 1;
    }
    const version = fresh.body.dataset.version;
    if (version !== undefined) document.body.dataset.version = version;
    check(document);
  }

  async function look() {
    if (document.hidden) return; // a tab out of sight asks nothing of the store
    state.polls += 1;
    const body = document.body;
    if (body.dataset.poll === "run") {
      const answer = await fetch(`/runs/${body.dataset.run}/version`, { cache: "no-store" });
      if (!answer.ok) return;
      const now = await answer.json();
      if (now.version === body.dataset.version && now.status !== "running") return;
    }
    const page = await fetch(location.href, { cache: "no-store" });
    if (page.ok) swap(await page.text());
  }

  function follow() {
    if (!document.body.dataset.poll) return;
    const again = () => {
      look().catch(() => {}).finally(() => setTimeout(again, PERIOD));
    };
    setTimeout(again, PERIOD);
  }

  // JSON fields: data-json="any" takes any JSON value, "object" a JSON object.
  function problem(field) {
    if (field.dataset.optional !== undefined && field.value.trim() === "") return "";
    let value;
    try {
      value = JSON.parse(field.value);
    } catch (error) {
      return `not JSON: ${error.message}` + (field.dataset.json === "any" ? ' (a text goes in "quotes")' : "");
    }
    if (field.dataset.json === "object" && (value === null || typeof value !== "object" || Array.isArray(value))) {
      return "shared must be a JSON object: { ... }";
    }
    return "";
  }

  function check(root) {
    for (const form of root.querySelectorAll("form[data-check]")) {
      if (form.dataset.checked) continue;
      form.dataset.checked = "yes";
      const say = form.querySelector(".json-error");
      const fields = [...form.querySelectorAll("[data-json]")];
      const show = () => {
        const found = fields.map(problem).filter(Boolean);
        fields.forEach((field) => field.classList.toggle("invalid", problem(field) !== ""));
        if (say) say.textContent = found[0] || "";
        return found.length === 0;
      };
      fields.forEach((field) => field.addEventListener("input", show));
      form.addEventListener("submit", (event) => {
        if (!show()) event.preventDefault();
      });
    }
  }

  // A run's page sent back to a form it refused (a bad answer, a bad fork)
  // is at the action's address, which only takes a POST: the address is made
  // the run page's, so that following the store, a reload and the page's own
  // links (?at=...) go to the page, not to the action.
  function settle() {
    const run = document.body.dataset.run;
    if (document.body.dataset.poll === "run" && run && location.pathname !== `/runs/${run}`) {
      history.replaceState(null, "", `/runs/${run}`);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    settle();
    check(document);
    follow();
  });
})();
