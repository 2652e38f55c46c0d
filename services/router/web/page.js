// What the provider inbox and the referral tracker share: their common text, signing in with a
// token (kept in sessionStorage only, checked with GET /api/v1/me), calls to the router's API
// (problems shown as people read them; a 401 signs out), polling while the tab is visible,
// idempotency keys, and formatting. Load after /common/lang.js and terms.js, before the page.
"use strict";

window.EOPage = (() => {
  const TOKEN_KEY = "eo-router-token";

  const COMMON = {
    en: {
      skip: "Skip to main content",
      sign_in_heading: "Sign in",
      token_label: "Access token",
      token_hint: "Paste the token you were given. It is kept in this browser tab only, and forgotten when you sign out or close the tab.",
      sign_in: "Sign in",
      checking: "Checking the token…",
      token_missing: "Paste your access token first.",
      token_wrong: "This token was not accepted: it is unknown, mistyped or revoked. Check it and try again.",
      wrong_role: (role, wanted) => `This token is for ${role}. This page needs the token of ${wanted}.`,
      who: (me) => me.role === "provider" ? `Signed in for ${me.provider_name || me.provider_id}.`
        : me.role === "ow" ? `Signed in for the Ontario Works system ${me.system}.`
        : "Signed in as an administrator: you see every party’s records.",
      sign_out: "Sign out",
      signed_out: "You are signed out.",
      session_ended: "You were signed out: the router no longer accepts your token. Sign in again.",
      service_down: "The router is not answering right now. This page will catch up when it does.",
      unexpected: (status) => `The router answered with an error (HTTP ${status}). Please try again.`,
      sent: "Sent; waiting for the router…",
      page_links: "Other pages",
      finder_link: "Find an Employment Ontario office",
      inbox_link: "Provider inbox",
      tracker_link: "Referral tracker",
      none: "None",
      locale: "en-CA",
      km: (km) => `${km.toLocaleString("en-CA", { maximumFractionDigits: 1 })} km`,
    },
    fr: {
      skip: "Passer au contenu principal",
      sign_in_heading: "Connexion",
      token_label: "Jeton d’accès",
      token_hint: "Collez le jeton qui vous a été remis. Il est gardé dans cet onglet seulement, et oublié quand vous vous déconnectez ou fermez l’onglet.",
      sign_in: "Se connecter",
      checking: "Vérification du jeton…",
      token_missing: "Collez d’abord votre jeton d’accès.",
      token_wrong: "Ce jeton n’a pas été accepté : il est inconnu, mal saisi ou révoqué. Vérifiez-le et réessayez.",
      wrong_role: (role, wanted) => `Ce jeton est pour le rôle « ${role} ». Cette page demande un jeton du rôle « ${wanted} ».`,
      who: (me) => me.role === "provider" ? `Connecté pour ${me.provider_name || me.provider_id}.`
        : me.role === "ow" ? `Connecté pour le système d’Ontario au travail ${me.system}.`
        : "Connecté comme administrateur : vous voyez les dossiers de toutes les parties.",
      sign_out: "Se déconnecter",
      signed_out: "Vous êtes déconnecté.",
      session_ended: "Vous avez été déconnecté : le routeur n’accepte plus votre jeton. Reconnectez-vous.",
      service_down: "Le routeur ne répond pas pour le moment. Cette page se mettra à jour dès qu’il répondra.",
      unexpected: (status) => `Le routeur a répondu par une erreur (HTTP ${status}). Veuillez réessayer.`,
      sent: "Envoyé; en attente du routeur…",
      page_links: "Autres pages",
      finder_link: "Trouver un bureau d’Emploi Ontario",
      inbox_link: "Boîte de réception des fournisseurs",
      tracker_link: "Suivi des aiguillages",
      none: "Aucun",
      locale: "fr-CA",
      km: (km) => `${km.toLocaleString("fr-CA", { maximumFractionDigits: 1 })} km`,
    },
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  /** Sets a node's text only when it changes, so a refresh does not disturb assistive tech. */
  function setText(node, value) {
    if (node.textContent !== value) node.textContent = value;
  }

  /** Thrown by `request` after a 401 has signed the person out: the caller just stops. */
  class SignedOut extends Error {}
  /** The router could not be reached (or answered with something that is not JSON). */
  class Unreachable extends Error {}

  const page = { config: null, text: null, lang: "en", me: null, said: {} };

  const t = () => page.text;

  // -- calls to the router's API ---------------------------------------------------------------

  function token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch (_) { return null; }
  }

  /** `{ ok, status, body }` of one call; `Unreachable` when there is no answer, `SignedOut`
   * (after signing out) on a 401. `key` becomes the Idempotency-Key header. */
  async function request(method, path, { body, key, bearer } = {}) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${bearer || token() || ""}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers["Idempotency-Key"] = key;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    } catch (_) {
      throw new Unreachable();
    }
    let parsed = null;
    if ((response.headers.get("content-type") || "").includes("json")) {
      try { parsed = await response.json(); } catch (_) { throw new Unreachable(); }
    }
    if (response.status === 401 && !bearer) {
      signOut(() => t().session_ended, true);
      throw new SignedOut();
    }
    if (response.status >= 502 && response.status <= 504) throw new Unreachable();
    return { ok: response.ok, status: response.status, body: parsed };
  }

  /** What a problem document says, for people: its detail and each field's message. */
  function problemText(body, status) {
    if (!body) return t().unexpected(status);
    const parts = [];
    if (body.detail) parts.push(body.detail);
    for (const error of body.errors || []) {
      if (error.message && !parts.includes(error.message)) parts.push(error.message);
    }
    if (!parts.length && body.title) parts.push(body.title);
    return parts.length ? parts.join(" ") : t().unexpected(status);
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    // Outside a secure context randomUUID is missing; getRandomValues is not.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // One key per distinct write (path and body): a double click, or a retry after no answer,
  // sends the same message id, so the router acts once. A write refused before it was
  // published forgets its key, so a corrected one is a new message.
  const keys = new Map();

  /** POSTs `body` to `path` with an Idempotency-Key: `{ ok, message, status }`. */
  async function send(path, body) {
    const action = `${path} ${JSON.stringify(body)}`;
    if (!keys.has(action)) keys.set(action, newKey());
    let result;
    try {
      result = await request("POST", path, { body, key: keys.get(action) });
    } catch (exc) {
      if (exc instanceof Unreachable) return { ok: false, message: t().service_down, status: 0 };
      // Signed out (a 401): the sign-in form says why; the action's card is gone.
      if (exc instanceof SignedOut) return { ok: false, message: "", status: 401 };
      throw exc;
    }
    if (result.ok) return { ok: true, message: t().sent, status: result.status, body: result.body };
    keys.delete(action);
    return { ok: false, message: problemText(result.body, result.status), status: result.status };
  }

  // -- polling ---------------------------------------------------------------------------------

  /** Runs `task` now and then every `ms` while the tab is visible (never two at once). */
  function poll(task, ms) {
    let timer = null;
    let stopped = false;
    let running = false;
    async function tick() {
      clearTimeout(timer);
      if (stopped) return;
      if (!document.hidden && !running) {
        running = true;
        try { await task(); } catch (exc) { if (!(exc instanceof SignedOut)) console.warn(exc); } finally { running = false; }
      }
      if (!stopped && !document.hidden) timer = setTimeout(tick, ms);
    }
    const onVisible = () => { if (!document.hidden) tick(); };
    document.addEventListener("visibilitychange", onVisible);
    tick();
    return {
      now: tick,
      stop() {
        stopped = true;
        clearTimeout(timer);
        document.removeEventListener("visibilitychange", onVisible);
      },
    };
  }

  // -- lists that refresh in place -------------------------------------------------------------

  /** Makes `list` show `items` in order, one card per key, kept across refreshes so focus and
   * half-filled forms survive: `create(item)` builds a card ({ node, ... }) the first time,
   * `update(card)` fills it (card.data is the item) every time. When a card that held the focus
   * goes, the focus moves to `fallback`. The keys that are new are returned. */
  function syncList(list, items, keyOf, cards, create, update, fallback) {
    const wanted = new Set(items.map(keyOf));
    let focusLost = false;
    for (const [key, card] of cards) {
      if (wanted.has(key)) continue;
      if (card.node.contains(document.activeElement)) focusLost = true;
      card.node.remove();
      cards.delete(key);
    }
    const added = [];
    items.forEach((item, index) => {
      const key = keyOf(item);
      let card = cards.get(key);
      if (!card) {
        card = create(item);
        cards.set(key, card);
        added.push(key);
      }
      card.data = item;
      update(card);
      const here = list.children[index];
      if (here !== card.node) list.insertBefore(card.node, here || null);
    });
    if (focusLost) fallback.focus();
    return added;
  }

  /** A definition list of `keys`: { node, dt: {key: node}, dd: {key: node} }, labels filled later. */
  function factList(keys) {
    const facts = { node: el("dl", { class: "facts" }), dt: {}, dd: {} };
    for (const key of keys) {
      facts.dt[key] = el("dt");
      facts.dd[key] = el("dd");
      facts.node.append(facts.dt[key], facts.dd[key]);
    }
    return facts;
  }

  // -- formatting ------------------------------------------------------------------------------

  function dateTime(iso) {
    if (!iso) return "";
    return new Intl.DateTimeFormat(t().locale, { dateStyle: "medium", timeStyle: "short" }).format(new Date(iso));
  }

  function names(kind, codes) {
    return codes && codes.length ? codes.map((code) => window.EOTerms.name(kind, code, page.lang)).join(", ") : t().none;
  }

  const name = (kind, code) => window.EOTerms.name(kind, code, page.lang);

  // -- signing in and out ----------------------------------------------------------------------

  /** Shows `message()` in the sign-in form's `id` (none: clears it); said again, in the new
   * language, on a switch. */
  function say(id, message) {
    page.said[id] = message || null;
    $(id).textContent = message ? message() : "";
  }

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("signed-in").hidden = !signedIn;
    $("session-bar").hidden = !signedIn;
  }

  function refusal(me) {
    if (page.config.roles.includes(me.role)) return null;
    return t().wrong_role(name("role", me.role), name("role", page.config.roles[0]));
  }

  async function signIn(event) {
    event.preventDefault();
    const field = $("token");
    const given = field.value.trim();
    say("token-error", null);
    field.removeAttribute("aria-invalid");
    if (!given) return tokenError(() => t().token_missing);
    if (page.signingIn) return;
    page.signingIn = true;
    say("sign-in-status", () => t().checking);
    let result;
    try {
      result = await request("GET", "/api/v1/me", { bearer: given });
    } catch (_) {
      return tokenError(() => t().service_down);
    } finally {
      page.signingIn = false;
      say("sign-in-status", null);
    }
    if (result.status === 401) return tokenError(() => t().token_wrong);
    if (!result.ok || !result.body) return tokenError(() => problemText(result.body, result.status));
    const me = result.body;
    if (refusal(me)) return tokenError(() => refusal(me));
    try { sessionStorage.setItem(TOKEN_KEY, given); } catch (_) { /* this page works until reload */ }
    field.value = "";
    enter(me, true);
  }

  function tokenError(message) {
    say("token-error", message);
    $("token").setAttribute("aria-invalid", "true");
    $("token").focus();
  }

  function enter(me, moveFocus) {
    page.me = me;
    setText($("who"), t().who(me));
    showSignedIn(true);
    page.config.onSignedIn(me);
    if (moveFocus) $(page.config.focusAfterSignIn).focus();
  }

  function signOut(message, asError) {
    // `message`: a function of the current text, so it follows a language switch.
    const wasIn = page.me !== null;
    try { sessionStorage.removeItem(TOKEN_KEY); } catch (_) { /* nothing kept */ }
    page.me = null;
    keys.clear();
    if (wasIn) page.config.onSignedOut();
    showSignedIn(false);
    say("token-error", asError ? message : null);
    say("sign-in-status", asError ? null : message);
    $("token").focus();
  }

  /** A token kept from earlier in this tab signs in again without asking (a reload). */
  async function resume() {
    if (!token()) return;
    try {
      const result = await request("GET", "/api/v1/me");
      if (!result.ok || !result.body) return;
      const me = result.body;
      if (refusal(me)) {
        say("token-error", () => refusal(me));
        return;
      }
      enter(me, false);
    } catch (exc) {
      if (exc instanceof Unreachable) say("token-error", () => t().service_down);
    }
  }

  // -- language --------------------------------------------------------------------------------

  function applyLanguage(lang) {
    page.lang = lang;
    page.text = { ...COMMON[lang], ...page.config.text[lang] };
    document.title = page.text.title;
    for (const node of document.querySelectorAll("[data-i18n]")) {
      const value = page.text[node.dataset.i18n];
      if (typeof value === "string") setText(node, value);
    }
    if (page.me) setText($("who"), page.text.who(page.me));
    for (const [id, message] of Object.entries(page.said)) if (message) setText($(id), message());
    page.config.onLanguage(lang);
  }

  /** The trimmed text of a required field, or null after marking it invalid with `missing`
   * (shown in `errorNode`) and focusing it. */
  function requiredText(field, errorNode, missing) {
    const value = field.value.trim();
    errorNode.textContent = "";
    field.removeAttribute("aria-invalid");
    if (value) return value;
    errorNode.textContent = missing;
    field.setAttribute("aria-invalid", "true");
    field.focus();
    return null;
  }

  /** Starts the page: `config` = { text: {en, fr}, roles, focusAfterSignIn, onSignedIn(me),
   * onSignedOut(), onLanguage(lang) }. */
  function start(config) {
    page.config = config;
    window.EOLanguage.subscribe(applyLanguage);
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut(() => t().signed_out, false));
    resume();
  }

  return Object.freeze({
    $, el, setText, t, start, request, send, problemText, poll, dateTime, names, name,
    syncList, factList, requiredText,
    SignedOut, Unreachable,
    get lang() { return page.lang; },
    get me() { return page.me; },
  });
})();
