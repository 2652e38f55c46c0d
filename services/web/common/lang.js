// The one way every page chooses its language (English or French). Load it before the page's
// own script (both `defer`). The language is, in order: `?lang=en|fr` in the address (how links
// between the pages carry it: each service has its own origin, so its own storage), the last
// choice in this browser (localStorage "eo-language"), the browser's language.
// The #language-toggle button switches it; <html lang>, the toggle's text and the links marked
// `data-eo-link` follow, and the page hears of it through EOLanguage.subscribe.
"use strict";

window.EOLanguage = (() => {
  const STORAGE_KEY = "eo-language";
  const EVENT = "eo:language";
  const LANGUAGES = ["en", "fr"];
  // The toggle names the other language, in that language.
  const TOGGLE = { en: { text: "Français", lang: "fr" }, fr: { text: "English", lang: "en" } };

  function fromAddress() {
    const asked = new URLSearchParams(window.location.search).get("lang");
    return LANGUAGES.includes(asked) ? asked : null;
  }

  function fromStorage() {
    try {
      const saved = localStorage.getItem(STORAGE_KEY);
      return LANGUAGES.includes(saved) ? saved : null;
    } catch (_) {
      return null; // storage may be disabled
    }
  }

  function fromBrowser() {
    const preferred = (navigator.languages && navigator.languages[0]) || navigator.language || "en";
    return preferred.toLowerCase().startsWith("fr") ? "fr" : "en";
  }

  function remember(lang) {
    try { localStorage.setItem(STORAGE_KEY, lang); } catch (_) { /* not kept */ }
  }

  let current = fromAddress() || fromStorage() || fromBrowser();
  if (fromAddress()) remember(current);

  /** `url` (absolute or relative) with `?lang=` set to the current language. */
  function link(url) {
    const target = new URL(url, window.location.href);
    target.searchParams.set("lang", current);
    return target.href;
  }

  function apply() {
    document.documentElement.lang = current;
    const toggle = document.getElementById("language-toggle");
    if (toggle) {
      toggle.textContent = TOGGLE[current].text;
      toggle.lang = TOGGLE[current].lang;
    }
    for (const anchor of document.querySelectorAll("a[data-eo-link]")) {
      anchor.href = link(anchor.getAttribute("href"));
    }
  }

  function set(lang) {
    if (!LANGUAGES.includes(lang) || lang === current) return;
    current = lang;
    remember(lang);
    // An address that names the language keeps naming the one shown (reload, bookmark).
    if (fromAddress()) window.history.replaceState(window.history.state, "", link(window.location.href));
    apply();
    document.dispatchEvent(new CustomEvent(EVENT, { detail: { lang } }));
  }

  /** Calls `listener(lang)` now and on every switch. */
  function subscribe(listener) {
    document.addEventListener(EVENT, (event) => listener(event.detail.lang));
    listener(current);
  }

  apply();
  const toggle = document.getElementById("language-toggle");
  if (toggle) toggle.addEventListener("click", () => set(current === "en" ? "fr" : "en"));

  return Object.freeze({ get lang() { return current; }, set, subscribe, link });
})();
