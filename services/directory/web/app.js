// The office finder: a static page over the directory's public JSON API
// (/api/v1/taxonomy, /api/v1/communities, /api/v1/sites/nearest). No build step, no framework.
// The language is the shared switch's (/common/lang.js, loaded first).
"use strict";

const TEXT = {
  en: {
    title: "Find an Employment Ontario office",
    heading: "Find an Employment Ontario office",
    skip: "Skip to results",
    intro: "Offices near a client, nearest first. Search by postal code, community or your current location.",
    origin: "Where is the client?",
    postal_code: "Postal code",
    postal_code_hint: "For example K7C 1X5",
    or: "or",
    community: "Community",
    community_hint: "Start typing for suggestions, for example Almonte",
    use_location: "Use my location",
    filters: "Filters",
    services: "Services (all of)",
    language_of_service: "Language of service",
    any: "Any",
    lang_en: "English",
    lang_fr: "French",
    accessibility: "Accessibility (all of)",
    accepting: "Accepting referrals now",
    search: "Search",
    print: "Print list",
    results: "Results",
    loading: "Loading…",
    attribution: "Postal code and place coordinates: GeoNames (CC BY 4.0) and Statistics Canada. Distances are straight-line.",
    page_links: "Other pages",
    inbox_link: "Provider inbox: offers and caseload",
    tracker_link: "Referral tracker for Ontario Works staff",
    searching: "Searching…",
    found: (n, where) => n === 1 ? `1 office found near ${where}.` : `${n} offices found near ${where}.`,
    no_results: (where) => `No office matches these filters near ${where}. Try fewer filters.`,
    need_origin: "Enter a postal code or a community, or use your location.",
    invalid_postal: (v) => `“${v}” is not a Canadian postal code. Use the form A1A 1A1.`,
    unknown_postal: (v) => `The postal code “${v}” was not found. Check it, or search by community.`,
    unknown_community: (v) => `The community “${v}” was not found. Check the spelling or choose a suggestion.`,
    invalid_input: (d) => `The search could not be run: ${d}`,
    service_down: "The office directory is not answering right now. Please try again in a minute.",
    taxonomy_down: "The list of services could not be loaded: the office directory is not answering.",
    locating: "Finding your location…",
    located: "Using your current location.",
    location_denied: "Your location is not available (permission denied or not supported). Enter a postal code or a community instead.",
    your_location: "your location",
    distance: (km) => `${km.toLocaleString("en-CA", { maximumFractionDigits: 1 })} km`,
    provider: "Provider",
    address: "Address",
    phone: "Phone",
    hours: "Hours",
    hours_unknown: "Hours not listed; call ahead.",
    phone_unknown: "Not listed",
    services_label: "Services",
    languages_label: "Languages",
    accessibility_label: "Accessibility",
    accessibility_none: "None listed",
    referrals: "Referrals",
    accepting_yes: "Accepting referrals",
    accepting_no: "Not accepting referrals now",
    verified: "Last verified",
    verified_never: "Not yet verified",
    directions: (name) => `Directions to ${name}`,
    opens_new: "(OpenStreetMap, opens in a new tab)",
    closed: "Closed",
    weekdays: { mon: "Monday", tue: "Tuesday", wed: "Wednesday", thu: "Thursday", fri: "Friday", sat: "Saturday", sun: "Sunday" },
    languages: { en: "English", fr: "French" },
    locale: "en-CA",
  },
  fr: {
    title: "Trouver un bureau d’Emploi Ontario",
    heading: "Trouver un bureau d’Emploi Ontario",
    skip: "Passer aux résultats",
    intro: "Les bureaux près d’un client, du plus proche au plus éloigné. Cherchez par code postal, par localité ou selon votre position actuelle.",
    origin: "Où se trouve le client?",
    postal_code: "Code postal",
    postal_code_hint: "Par exemple K7C 1X5",
    or: "ou",
    community: "Localité",
    community_hint: "Commencez à taper pour voir des suggestions, par exemple Almonte",
    use_location: "Utiliser ma position",
    filters: "Filtres",
    services: "Services (tous ceux-ci)",
    language_of_service: "Langue de service",
    any: "Toutes",
    lang_en: "Anglais",
    lang_fr: "Français",
    accessibility: "Accessibilité (tous ces critères)",
    accepting: "Accepte des aiguillages maintenant",
    search: "Rechercher",
    print: "Imprimer la liste",
    results: "Résultats",
    loading: "Chargement…",
    attribution: "Coordonnées des codes postaux et des localités : GeoNames (CC BY 4.0) et Statistique Canada. Les distances sont à vol d’oiseau.",
    page_links: "Autres pages",
    inbox_link: "Boîte de réception des fournisseurs : offres et dossiers",
    tracker_link: "Suivi des aiguillages pour le personnel d’Ontario au travail",
    searching: "Recherche en cours…",
    found: (n, where) => n === 1 ? `1 bureau trouvé près de ${where}.` : `${n} bureaux trouvés près de ${where}.`,
    no_results: (where) => `Aucun bureau ne correspond à ces filtres près de ${where}. Essayez avec moins de filtres.`,
    need_origin: "Entrez un code postal ou une localité, ou utilisez votre position.",
    invalid_postal: (v) => `« ${v} » n’est pas un code postal canadien. Utilisez la forme A1A 1A1.`,
    unknown_postal: (v) => `Le code postal « ${v} » est introuvable. Vérifiez-le ou cherchez par localité.`,
    unknown_community: (v) => `La localité « ${v} » est introuvable. Vérifiez l’orthographe ou choisissez une suggestion.`,
    invalid_input: (d) => `La recherche n’a pas pu être faite : ${d}`,
    service_down: "Le répertoire des bureaux ne répond pas pour le moment. Veuillez réessayer dans une minute.",
    taxonomy_down: "La liste des services n’a pas pu être chargée : le répertoire des bureaux ne répond pas.",
    locating: "Recherche de votre position…",
    located: "Votre position actuelle est utilisée.",
    location_denied: "Votre position n’est pas disponible (permission refusée ou non prise en charge). Entrez plutôt un code postal ou une localité.",
    your_location: "votre position",
    distance: (km) => `${km.toLocaleString("fr-CA", { maximumFractionDigits: 1 })} km`,
    provider: "Organisme",
    address: "Adresse",
    phone: "Téléphone",
    hours: "Heures",
    hours_unknown: "Heures non indiquées; téléphonez avant de vous déplacer.",
    phone_unknown: "Non indiqué",
    services_label: "Services",
    languages_label: "Langues",
    accessibility_label: "Accessibilité",
    accessibility_none: "Aucune indication",
    referrals: "Aiguillages",
    accepting_yes: "Accepte des aiguillages",
    accepting_no: "N’accepte pas d’aiguillages pour le moment",
    verified: "Dernière vérification",
    verified_never: "Pas encore vérifié",
    directions: (name) => `Itinéraire vers ${name}`,
    opens_new: "(OpenStreetMap, s’ouvre dans un nouvel onglet)",
    closed: "Fermé",
    weekdays: { mon: "lundi", tue: "mardi", wed: "mercredi", thu: "jeudi", fri: "vendredi", sat: "samedi", sun: "dimanche" },
    languages: { en: "anglais", fr: "français" },
    locale: "fr-CA",
  },
};

const state = {
  lang: window.EOLanguage.lang,
  terms: { services: [], accessibility: [] },
  names: {},
  coords: null,
  last: null, // { body, where } of the last successful search, re-rendered on a language switch
  suggestTimer: null,
};

const $ = (id) => document.getElementById(id);
const t = () => TEXT[state.lang];

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

// -- language ------------------------------------------------------------------------------------

function applyLanguage(lang) {
  state.lang = lang;
  const text = t();
  document.title = text.title;
  for (const node of document.querySelectorAll("[data-i18n]")) {
    const value = text[node.dataset.i18n];
    if (typeof value === "string") node.textContent = value;
  }
  renderTerms();
  if (state.last) renderResults(state.last.body, state.last.where);
}

// -- taxonomy (service and accessibility names in both languages) --------------------------------

async function loadTaxonomy() {
  try {
    const response = await fetch("/api/v1/taxonomy", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    state.terms = { services: body.services, accessibility: body.accessibility };
    for (const term of [...body.services, ...body.accessibility]) state.names[term.code] = term;
    renderTerms();
  } catch (_) {
    for (const id of ["services", "accessibility"]) {
      const box = $(id);
      box.querySelectorAll("p, div").forEach((n) => n.remove());
      box.append(el("p", { class: "field-error", text: t().taxonomy_down }));
    }
  }
}

function termName(code) {
  const term = state.names[code];
  if (!term) return code;
  return state.lang === "fr" ? term.name_fr : term.name_en;
}

function renderTerms() {
  for (const kind of ["services", "accessibility"]) {
    const terms = state.terms[kind];
    if (!terms.length) continue;
    const box = $(kind);
    const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
    box.querySelectorAll("p, div").forEach((n) => n.remove());
    for (const term of terms) {
      const id = `${kind}-${term.code}`;
      box.append(
        el("div", { class: "check" },
          el("input", { type: "checkbox", id, name: kind, value: term.code, checked: checked.has(term.code) }),
          el("label", { for: id, text: termName(term.code) })),
      );
    }
  }
}

// -- community suggestions -----------------------------------------------------------------------

function suggestCommunities() {
  clearTimeout(state.suggestTimer);
  const prefix = $("community").value.trim();
  if (prefix.length < 2) return;
  state.suggestTimer = setTimeout(async () => {
    try {
      const url = `/api/v1/communities?${new URLSearchParams({ prefix, limit: "8" })}`;
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const body = await response.json();
      const list = $("community-suggestions");
      list.replaceChildren(...body.communities.map((name) => el("option", { value: name })));
    } catch (_) { /* suggestions are a convenience; the search reports an outage */ }
  }, 150);
}

// -- location ------------------------------------------------------------------------------------

function useLocation() {
  const note = $("location-note");
  if (!navigator.geolocation) {
    note.textContent = t().location_denied;
    return;
  }
  note.textContent = t().locating;
  navigator.geolocation.getCurrentPosition(
    (position) => {
      state.coords = { lat: position.coords.latitude, lon: position.coords.longitude };
      $("postal-code").value = "";
      $("community").value = "";
      note.textContent = t().located;
      search();
    },
    () => {
      state.coords = null;
      note.textContent = t().location_denied;
    },
    { timeout: 10000, maximumAge: 300000 },
  );
}

// -- search --------------------------------------------------------------------------------------

function clearErrors() {
  $("origin-error").textContent = "";
  $("error").textContent = "";
  for (const id of ["postal-code", "community"]) $(id).removeAttribute("aria-invalid");
}

function originQuery() {
  const postal = $("postal-code").value.trim();
  const community = $("community").value.trim();
  if (postal) return { params: { postal_code: postal }, where: postal.toUpperCase(), field: "postal-code" };
  if (community) return { params: { community }, where: community, field: "community" };
  if (state.coords) {
    return { params: { lat: state.coords.lat.toFixed(5), lon: state.coords.lon.toFixed(5) }, where: null, field: null };
  }
  return null;
}

function showFieldError(fieldId, message) {
  if (fieldId) {
    $(fieldId).setAttribute("aria-invalid", "true");
    $(fieldId).focus();
  }
  $("origin-error").textContent = message;
  $("status").textContent = "";
}

async function search(event) {
  if (event) event.preventDefault();
  clearErrors();
  const origin = originQuery();
  if (!origin) {
    showFieldError("postal-code", t().need_origin);
    return;
  }
  const params = new URLSearchParams(origin.params);
  for (const box of document.querySelectorAll("#services input:checked")) params.append("service", box.value);
  for (const box of document.querySelectorAll("#accessibility input:checked")) params.append("accessibility", box.value);
  const language = document.querySelector("input[name=language]:checked").value;
  if (language) params.set("language", language);
  if ($("accepting").checked) params.set("accepting", "true");
  params.set("limit", "10");

  $("status").textContent = t().searching;
  $("search-button").disabled = true;
  let response;
  try {
    response = await fetch(`/api/v1/sites/nearest?${params}`, { headers: { Accept: "application/json" } });
  } catch (_) {
    return serviceDown();
  } finally {
    $("search-button").disabled = false;
  }
  if (response.status >= 500) return serviceDown();
  let body;
  try {
    body = await response.json();
  } catch (_) {
    return serviceDown();
  }
  if (!response.ok) return problem(body, origin);
  state.last = { body, where: origin.where };
  renderResults(body, origin.where);
  $("results-heading").focus();
}

function serviceDown() {
  state.last = null;
  $("result-list").replaceChildren();
  $("status").textContent = "";
  $("error").textContent = t().service_down;
}

function problem(body, origin) {
  const text = t();
  const value = Object.values(origin.params)[0];
  const messages = {
    "Invalid postal code": text.invalid_postal(value),
    "Unknown postal code": text.unknown_postal(value),
    "Unknown community": text.unknown_community(value),
  };
  const message = messages[body.title] || text.invalid_input(body.detail || body.title || "");
  state.last = null;
  $("result-list").replaceChildren();
  showFieldError(origin.field, message);
}

// -- results -------------------------------------------------------------------------------------

function renderResults(body, where) {
  const text = t();
  const place = where || text.your_location;
  const list = $("result-list");
  list.replaceChildren(...body.results.map((match) => resultItem(match, body.origin)));
  $("status").textContent = body.results.length ? text.found(body.results.length, place) : text.no_results(place);
}

function resultItem(match, origin) {
  const text = t();
  const { site, provider } = match;
  const address = site.address;
  const street = [address.address_1, address.address_2].filter(Boolean).join(", ");
  const town = [address.city, address.province, address.postal_code].filter(Boolean).join(" ");
  const directions = `https://www.openstreetmap.org/directions?route=${origin.lat}%2C${origin.lon}%3B${site.lat}%2C${site.lon}`;
  const verified = site.last_verified
    ? new Intl.DateTimeFormat(text.locale, { dateStyle: "long", timeZone: "UTC" }).format(new Date(`${site.last_verified}T00:00:00Z`))
    : text.verified_never;

  const facts = el("dl", { class: "facts" });
  const fact = (label, value) => facts.append(el("dt", { text: label }), el("dd", {}, value));
  fact(text.address, el("span", {}, street, el("br"), town));
  fact(text.phone, site.phone || provider.phone
    ? el("a", { href: `tel:${(site.phone || provider.phone).replace(/[^0-9+]/g, "")}`, text: site.phone || provider.phone })
    : document.createTextNode(text.phone_unknown));
  fact(text.hours, hoursList(site.hours));
  fact(text.services_label, document.createTextNode(site.services.map(termName).join(", ")));
  fact(text.languages_label, document.createTextNode(site.languages.map((l) => text.languages[l] || l).join(", ")));
  fact(text.accessibility_label, document.createTextNode(site.accessibility.length ? site.accessibility.map(termName).join(", ") : text.accessibility_none));
  fact(text.referrals, document.createTextNode(site.accepting_referrals && site.reserved < site.capacity ? text.accepting_yes : text.accepting_no));
  fact(text.verified, document.createTextNode(verified));

  return el("li", { class: "card result" },
    el("article", {},
      el("h3", {},
        el("span", { class: "site-name", text: site.name }),
        el("span", { class: "distance", text: ` – ${text.distance(match.distance_km)}` })),
      el("p", { class: "provider", text: provider.name }),
      facts,
      el("p", { class: "directions no-print" },
        el("a", { href: directions, target: "_blank", rel: "noopener", text: text.directions(site.name) }),
        el("span", { class: "visually-hidden", text: ` ${text.opens_new}` }))));
}

function hoursList(hours) {
  const text = t();
  if (!hours || !hours.length) return document.createTextNode(text.hours_unknown);
  const list = el("ul", { class: "hours" });
  for (const slot of hours) {
    list.append(el("li", { text: `${text.weekdays[slot.weekday] || slot.weekday} ${slot.opens}–${slot.closes}` }));
  }
  return list;
}

// -- wiring --------------------------------------------------------------------------------------

function start() {
  $("search-form").addEventListener("submit", search);
  $("use-location").addEventListener("click", useLocation);
  $("print-button").addEventListener("click", () => window.print());
  $("community").addEventListener("input", () => {
    if ($("community").value) { $("postal-code").value = ""; state.coords = null; }
    suggestCommunities();
  });
  $("postal-code").addEventListener("input", () => {
    if ($("postal-code").value) { $("community").value = ""; state.coords = null; }
  });
  window.EOLanguage.subscribe(applyLanguage);
  loadTaxonomy();
}

start();
