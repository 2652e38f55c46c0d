// The Ontario Works referral tracker: the system's referrals, newest first, filtered by status,
// office and dates and paged with "More"; each one's history with the explanation of every
// decision, its offers, and cancel or withdraw with a reason. Statuses refresh every second
// while the tab is visible. No build step, no framework.
"use strict";

(() => {
  const { $, el, setText } = window.EOPage;
  const P = window.EOPage;

  const TEXT = {
    en: {
      title: "Referral tracker – Ontario Works",
      heading: "Referral tracker",
      sign_in_intro: "Sign in with your Ontario Works system’s token to follow its referrals.",
      filters_heading: "Find referrals",
      filter_status: "Status",
      any_status: "Any status",
      filter_office: "Office",
      filter_office_hint: "The office id, for example smiths-falls",
      filter_from: "Referred from",
      filter_to: "Referred to",
      apply_filters: "Apply filters",
      clear_filters: "Clear filters",
      referrals_heading: "Referrals",
      referrals_empty: "No referrals match these filters.",
      more: "More referrals",
      shown: (n, more) => `${n} referral${n === 1 ? "" : "s"} shown${more ? "; more are available" : ""}.`,
      client: (ref) => `Client ${ref}`,
      status: "Status",
      office: "Referring office",
      office_value: (source) => `${source.office_id} (${source.system})`,
      needs: "Needs",
      language: "Language",
      provider: "Provider and office",
      provider_value: (r, km) => `${r.site_name || r.site_id} (${r.provider_id})${km ? `, ${km} from the client` : ""}`,
      no_provider: "Not placed yet",
      created: "Referred",
      updated: "Last change",
      show: "Show history",
      hide: "Hide history",
      for_client: (ref) => ` of client ${ref}`,
      loading: "Loading…",
      history: "History",
      offers: "Offers",
      no_offers: "No office has been offered this referral.",
      attempt: (n) => `Offer ${n}`,
      offer_value: (o, km, offered, due) => `${o.site_id} (${o.provider_id}), ${km}; offered ${offered}, answer by ${due}`,
      at_site: (site, provider, km) => `${site} (${provider})${km ? `, ${km}` : ""}`,
      now_status: (s) => `now ${s}`,
      refused: (why) => `Not applied: ${why}`,
      reason: (why) => `Reason: ${why}`,
      code: (what) => `Outcome or reason: ${what}`,
      explanation: (rule) => `Why: ${rule}.`,
      excluded: (list) => `Offices left out: ${list}.`,
      cancel_heading: "Cancel this referral",
      withdraw_heading: "Withdraw this referral",
      cancel_hint: "Before a provider accepts, the referral is cancelled. After, it is withdrawn and the provider is told why.",
      cancel_reason: "Reason",
      reason_hint: "Required. The provider may read it. No personal information.",
      cancel_send: "Cancel the referral",
      withdraw_send: "Withdraw the referral",
      reason_missing: "Give a reason.",
      cancel_done: (ref, status) => `Client ${ref}: the referral is now ${status.toLowerCase()}.`,
      closed: "This referral is closed; nothing more can change it.",
    },
    fr: {
      title: "Suivi des aiguillages – Ontario au travail",
      heading: "Suivi des aiguillages",
      sign_in_intro: "Connectez-vous avec le jeton de votre système d’Ontario au travail pour suivre ses aiguillages.",
      filters_heading: "Trouver des aiguillages",
      filter_status: "État",
      any_status: "Tous les états",
      filter_office: "Bureau",
      filter_office_hint: "L’identifiant du bureau, par exemple smiths-falls",
      filter_from: "Aiguillés à partir du",
      filter_to: "Aiguillés jusqu’au",
      apply_filters: "Appliquer les filtres",
      clear_filters: "Effacer les filtres",
      referrals_heading: "Aiguillages",
      referrals_empty: "Aucun aiguillage ne correspond à ces filtres.",
      more: "Plus d’aiguillages",
      shown: (n, more) => `${n} aiguillage${n > 1 ? "s" : ""} affiché${n > 1 ? "s" : ""}${more ? "; il y en a d’autres" : ""}.`,
      client: (ref) => `Client ${ref}`,
      status: "État",
      office: "Bureau d’origine",
      office_value: (source) => `${source.office_id} (${source.system})`,
      needs: "Besoins",
      language: "Langue",
      provider: "Fournisseur et bureau",
      provider_value: (r, km) => `${r.site_name || r.site_id} (${r.provider_id})${km ? `, à ${km} de la personne` : ""}`,
      no_provider: "Pas encore placé",
      created: "Aiguillé le",
      updated: "Dernier changement",
      show: "Afficher l’historique",
      hide: "Masquer l’historique",
      for_client: (ref) => ` du client ${ref}`,
      loading: "Chargement…",
      history: "Historique",
      offers: "Offres",
      no_offers: "Aucun bureau ne s’est vu offrir cet aiguillage.",
      attempt: (n) => `Offre ${n}`,
      offer_value: (o, km, offered, due) => `${o.site_id} (${o.provider_id}), ${km}; offerte le ${offered}, réponse attendue d’ici le ${due}`,
      at_site: (site, provider, km) => `${site} (${provider})${km ? `, ${km}` : ""}`,
      now_status: (s) => `maintenant : ${s}`,
      refused: (why) => `Non appliqué : ${why}`,
      reason: (why) => `Motif : ${why}`,
      code: (what) => `Résultat ou motif : ${what}`,
      explanation: (rule) => `Pourquoi : ${rule}.`,
      excluded: (list) => `Bureaux écartés : ${list}.`,
      cancel_heading: "Annuler cet aiguillage",
      withdraw_heading: "Retirer cet aiguillage",
      cancel_hint: "Avant qu’un fournisseur l’accepte, l’aiguillage est annulé. Après, il est retiré et le fournisseur en est informé.",
      cancel_reason: "Motif",
      reason_hint: "Obligatoire. Le fournisseur peut le lire. Aucun renseignement personnel.",
      cancel_send: "Annuler l’aiguillage",
      withdraw_send: "Retirer l’aiguillage",
      reason_missing: "Indiquez un motif.",
      cancel_done: (ref, status) => `Client ${ref} : l’aiguillage est maintenant ${status.toLowerCase()}.`,
      closed: "Cet aiguillage est fermé; plus rien ne peut le changer.",
    },
  };

  //: contracts/referrals.py TERMINAL_STATUSES, and the states that hold a place (withdraw, not cancel).
  const CLOSED = new Set(["unmatched", "cancelled", "rejected", "completed", "not_started", "ended_early", "withdrawn"]);
  const HOLDING = new Set(["accepted", "in_service"]);
  const STATUSES = Object.keys(window.EOTerms.NAMES.status);
  const PAGE_SIZE = Number($("referral-list").dataset.pageSize) || 50;
  const MAX_REFRESH = 200;
  const POLL_MS = 1000;

  const cards = new Map(); // referral_id -> card
  const done = new Map(); // referral_id -> { from, text }
  // What is shown; `generation` changes with the filters, so an answer to an older question
  // (a poll that was under way) is dropped.
  const list = { items: [], next: null, filters: {}, generation: 0 };
  let poller = null;
  const t = () => P.t();

  // -- filters -----------------------------------------------------------------------------------

  function fillStatusOptions() {
    const select = $("filter-status");
    if (select.options.length !== STATUSES.length + 1) {
      select.replaceChildren(el("option", { value: "" }), ...STATUSES.map((s) => el("option", { value: s })));
    }
    setText(select.options[0], t().any_status);
    STATUSES.forEach((s, i) => setText(select.options[i + 1], P.name("status", s)));
  }

  function readFilters() {
    return {
      status: $("filter-status").value,
      office: $("filter-office").value.trim(),
      from: $("filter-from").value,
      to: $("filter-to").value,
    };
  }

  function query(filters, limit, cursor) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(filters)) if (value) params.set(key, value);
    params.set("limit", String(limit));
    if (cursor) params.set("cursor", cursor);
    return `/api/v1/referrals?${params}`;
  }

  async function applyFilters(event) {
    if (event) event.preventDefault();
    list.filters = readFilters();
    list.generation += 1;
    list.items = [];
    list.next = null;
    for (const card of cards.values()) card.node.remove();
    cards.clear();
    await load(true);
  }

  function clearFilters() {
    for (const id of ["filter-status", "filter-office", "filter-from", "filter-to"]) $(id).value = "";
    applyFilters();
  }

  // -- the list ----------------------------------------------------------------------------------

  /** Reloads what is shown (at least a page): statuses change in place, new referrals appear. */
  async function load(announce) {
    const limit = Math.min(MAX_REFRESH, Math.max(PAGE_SIZE, list.items.length));
    const generation = list.generation;
    const result = await get(query(list.filters, limit));
    if (!result || generation !== list.generation) return;
    const kept = list.items.length > limit ? list.items.slice(result.items.length) : [];
    list.items = [...result.items, ...kept.filter((r) => !result.items.some((x) => x.referral_id === r.referral_id))];
    if (!kept.length) list.next = result.next;
    render();
    if (announce) setText($("status"), t().shown(list.items.length, Boolean(list.next)));
    await refreshDetails();
  }

  async function more() {
    if (!list.next) return;
    const generation = list.generation;
    const result = await get(query(list.filters, PAGE_SIZE, list.next));
    if (!result || generation !== list.generation) return;
    const seen = new Set(list.items.map((r) => r.referral_id));
    list.items = [...list.items, ...result.items.filter((r) => !seen.has(r.referral_id))];
    list.next = result.next;
    render();
    setText($("status"), t().shown(list.items.length, Boolean(list.next)));
    // The button is gone when there is no more: keep the keyboard on the list.
    if (!list.next) $("referrals-heading").focus();
  }

  /** The body of a GET, or null after showing why there is none. */
  async function get(path) {
    let result;
    try {
      result = await P.request("GET", path);
    } catch (exc) {
      if (exc instanceof P.Unreachable) setText($("error"), t().service_down);
      if (exc instanceof P.SignedOut) return null;
      throw exc;
    }
    if (!result.ok) {
      setText($("error"), P.problemText(result.body, result.status));
      return null;
    }
    setText($("error"), "");
    return result.body;
  }

  function render() {
    P.syncList($("referral-list"), list.items, (r) => r.referral_id, cards, referralCard, fillReferral, $("referrals-heading"));
    $("referrals-empty").hidden = list.items.length > 0;
    $("more").hidden = !list.next;
    for (const [id, write] of done) {
      const card = cards.get(id);
      if (!card || card.data.status === write.from) continue;
      setText($("status"), write.text(card.data));
      done.delete(id);
    }
  }

  // -- one referral ------------------------------------------------------------------------------

  function referralCard(summary) {
    const id = summary.referral_id;
    const p = {};
    p.client = el("span", { class: "client" });
    p.badge = el("span", { class: "badge status-label" });
    p.heading = el("h3", { id: `referral-${id}-heading`, tabindex: "-1" }, p.client, p.badge);
    p.facts = P.factList(["office", "needs", "language", "provider", "created", "updated"]);
    p.toggleLabel = el("span");
    p.toggleFor = el("span", { class: "visually-hidden" });
    p.toggle = el("button", {
      type: "button", class: "secondary", id: `referral-${id}-toggle`, "aria-expanded": "false", "aria-controls": `referral-${id}-detail`,
    }, p.toggleLabel, p.toggleFor);

    p.historyHeading = el("h4");
    p.history = el("ol", { class: "history", id: `referral-${id}-history` });
    p.offersHeading = el("h4");
    p.offers = el("ul", { class: "offers", id: `referral-${id}-offers` });
    p.detailError = el("p", { class: "error", role: "alert" });
    p.closed = el("p", { class: "hint", hidden: true });

    p.formHeading = el("h4", { id: `cancel-${id}-heading` });
    p.formHint = el("p", { class: "hint" });
    p.reasonLabel = el("label", { for: `cancel-reason-${id}` });
    p.reason = el("textarea", {
      id: `cancel-reason-${id}`, name: "reason", maxlength: "500", rows: "2", required: true,
      "aria-describedby": `cancel-hint-${id} cancel-error-${id}`,
    });
    p.reasonHint = el("p", { class: "hint", id: `cancel-hint-${id}` });
    p.reasonError = el("p", { class: "field-error", id: `cancel-error-${id}`, role: "alert" });
    p.send = el("button", { type: "submit", class: "danger", id: `cancel-send-${id}` });
    p.form = el("form", { id: `cancel-${id}`, class: "cancel-form", novalidate: true, "aria-labelledby": `cancel-${id}-heading` },
      p.formHeading, p.formHint,
      el("div", { class: "field" }, p.reasonLabel, p.reason, p.reasonHint),
      p.reasonError,
      el("div", { class: "actions" }, p.send));

    p.detail = el("div", { class: "detail", id: `referral-${id}-detail`, hidden: true },
      p.detailError, p.historyHeading, p.history, p.offersHeading, p.offers, p.closed, p.form);
    const node = el("li", { class: "card referral", id: `referral-${id}`, "data-referral-id": id },
      el("article", { "aria-labelledby": `referral-${id}-heading` }, p.heading, p.facts.node, el("div", { class: "actions" }, p.toggle), p.detail));
    const card = { node, parts: p, view: null, shownAs: null, busy: false };
    p.toggle.addEventListener("click", () => toggleDetail(card));
    p.form.addEventListener("submit", (event) => sendCancel(event, card));
    return card;
  }

  function fillReferral(card) {
    const text = t();
    const { parts: p, data: r } = card;
    card.node.dataset.status = r.status;
    setText(p.client, text.client(r.client_ref));
    setText(p.badge, P.name("status", r.status));
    const { dt, dd } = p.facts;
    setText(dt.office, text.office);
    setText(dd.office, text.office_value(r.source));
    setText(dt.needs, text.needs);
    setText(dd.needs, P.names("service", r.needs));
    setText(dt.language, text.language);
    setText(dd.language, P.name("language", r.language));
    setText(dt.provider, text.provider);
    setText(dd.provider, r.provider_id ? text.provider_value(r, r.distance_km == null ? "" : text.km(r.distance_km)) : text.no_provider);
    setText(dt.created, text.created);
    setText(dd.created, P.dateTime(r.created_at));
    setText(dt.updated, text.updated);
    setText(dd.updated, P.dateTime(r.updated_at));
    const open = !p.detail.hidden;
    setText(p.toggleLabel, open ? text.hide : text.show);
    setText(p.toggleFor, text.for_client(r.client_ref));
    fillDetail(card);
  }

  async function toggleDetail(card) {
    const p = card.parts;
    const open = p.detail.hidden;
    p.detail.hidden = !open;
    p.toggle.setAttribute("aria-expanded", String(open));
    setText(p.toggleLabel, open ? t().hide : t().show);
    if (open) {
      if (!card.view) setText(p.historyHeading, t().loading);
      await loadDetail(card);
    }
  }

  async function loadDetail(card) {
    let result;
    try {
      result = await P.request("GET", `/api/v1/referrals/${card.data.referral_id}`);
    } catch (exc) {
      if (exc instanceof P.Unreachable) setText(card.parts.detailError, t().service_down);
      return;
    }
    if (!result.ok) {
      setText(card.parts.detailError, P.problemText(result.body, result.status));
      return;
    }
    setText(card.parts.detailError, "");
    card.view = result.body;
    fillDetail(card);
  }

  async function refreshDetails() {
    const open = [...cards.values()].filter((card) => !card.parts.detail.hidden);
    await Promise.all(open.map(loadDetail));
  }

  /** History, offers and the cancel form; the lists are rebuilt only when they change. */
  function fillDetail(card) {
    const text = t();
    const p = card.parts;
    const view = card.view;
    if (!view) return;
    setText(p.historyHeading, text.history);
    setText(p.offersHeading, text.offers);
    const shownAs = `${P.lang} ${view.history.length} ${view.offers.map((o) => o.state).join()}`;
    if (card.shownAs !== shownAs) {
      card.shownAs = shownAs;
      p.history.replaceChildren(...view.history.map(historyItem));
      p.offers.replaceChildren(...(view.offers.length ? view.offers.map(offerItem) : [el("li", { text: text.no_offers })]));
    }
    const status = card.data.status;
    const closed = CLOSED.has(status) || CLOSED.has(view.status);
    if (closed && p.form.contains(document.activeElement)) p.heading.focus();
    p.form.hidden = closed;
    p.closed.hidden = !closed;
    setText(p.closed, text.closed);
    const withdraw = HOLDING.has(status);
    setText(p.formHeading, withdraw ? text.withdraw_heading : text.cancel_heading);
    setText(p.formHint, text.cancel_hint);
    setText(p.reasonLabel, text.cancel_reason);
    setText(p.reasonHint, text.reason_hint);
    setText(p.send, withdraw ? text.withdraw_send : text.cancel_send);
  }

  function historyItem(entry) {
    const text = t();
    const what = [`${P.dateTime(entry.at)} – ${P.name("event", entry.event)}`];
    if (!entry.refused) what.push(text.now_status(P.name("status", entry.status)));
    if (entry.site_id) {
      what.push(text.at_site(entry.site_id, entry.provider_id, entry.distance_km == null ? "" : text.km(entry.distance_km)));
    }
    const item = el("li", { class: entry.refused ? "refused" : null, "data-event": entry.event }, el("span", { text: what.join(", ") }));
    if (entry.refused) item.append(el("span", { class: "reason", text: text.refused(entry.reason || "") }));
    else if (entry.reason) item.append(el("span", { class: "reason", text: text.reason(entry.reason) }));
    if (entry.code) {
      const code = window.EOTerms.progressCodes(entry.status, P.lang).find((c) => c.code === entry.code);
      item.append(el("span", { class: "reason", text: text.code(code ? code.name : entry.code) }));
    }
    if (entry.explanation) {
      const ex = entry.explanation;
      // The router writes the explanation in English: say so to screen readers in French.
      item.append(el("span", { class: "explanation" },
        document.createTextNode(`${text.explanation(P.name("rule", ex.rule))} `),
        el("span", { lang: "en", text: ex.text })));
      const counts = Object.entries(ex.excluded || {}).filter(([, n]) => n > 0);
      if (counts.length) {
        item.append(el("span", { class: "explanation", text: text.excluded(counts.map(([rule, n]) => `${P.name("excluded", rule)} ${n}`).join(", ")) }));
      }
    }
    return item;
  }

  function offerItem(offer) {
    const text = t();
    return el("li", { "data-state": offer.state },
      el("strong", { text: `${text.attempt(offer.attempt)} – ${P.name("offer_state", offer.state)}: ` }),
      document.createTextNode(text.offer_value(offer, text.km(offer.distance_km), P.dateTime(offer.offered_at), P.dateTime(offer.expires_at))));
  }

  async function sendCancel(event, card) {
    event.preventDefault();
    if (card.busy) return;
    const p = card.parts;
    const r = card.data;
    const reason = P.requiredText(p.reason, p.reasonError, t().reason_missing);
    if (reason === null) return;
    card.busy = true;
    p.send.setAttribute("aria-disabled", "true");
    const result = await P.send(`/api/v1/referrals/${r.referral_id}/cancel`, { reason });
    card.busy = false;
    p.send.removeAttribute("aria-disabled");
    if (!result.ok) {
      p.reasonError.textContent = result.message;
      return;
    }
    p.reason.value = "";
    setText($("status"), result.message);
    done.set(r.referral_id, { from: r.status, text: (now) => t().cancel_done(now.client_ref, P.name("status", now.status)) });
    if (poller) poller.now();
  }

  // -- wiring ------------------------------------------------------------------------------------

  function onLanguage() {
    fillStatusOptions();
    for (const card of cards.values()) fillReferral(card);
    if (list.items.length) setText($("status"), t().shown(list.items.length, Boolean(list.next)));
  }

  function clear() {
    if (poller) poller.stop();
    poller = null;
    cards.clear();
    done.clear();
    list.items = [];
    list.next = null;
    list.generation += 1;
    $("referral-list").replaceChildren();
    for (const id of ["status", "error"]) $(id).textContent = "";
  }

  $("filters").addEventListener("submit", applyFilters);
  $("clear-filters").addEventListener("click", clearFilters);
  $("more").addEventListener("click", more);
  P.start({
    text: TEXT,
    roles: ["ow", "admin"],
    focusAfterSignIn: "filters-heading",
    onSignedIn() {
      clear();
      list.filters = readFilters();
      let first = true;
      poller = P.poll(async () => {
        await load(first);
        first = false;
      }, POLL_MS);
    },
    onSignedOut: clear,
    onLanguage,
  });
})();
