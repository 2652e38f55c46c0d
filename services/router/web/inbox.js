// The provider inbox: the offers open to this provider, each with the time left to answer
// (accept, or decline with a reason), and its caseload with the progress actions. Polls the
// router's API every second while the tab is visible. No build step, no framework.
"use strict";

(() => {
  const { $, el, setText } = window.EOPage;
  const P = window.EOPage;

  const TEXT = {
    en: {
      title: "Provider inbox – Employment Ontario referrals",
      heading: "Provider inbox",
      sign_in_intro: "Sign in with your organization’s provider token to see the referrals offered to you.",
      offers_heading: "Open offers",
      offers_intro: "Referrals offered to you, soonest deadline first. New offers appear here by themselves.",
      offers_empty: "No open offers right now.",
      caseload_heading: "Caseload",
      caseload_intro: "Referrals you accepted. Report what happened; Ontario Works sees it at once.",
      caseload_empty: "No accepted referrals in progress.",
      client: (ref) => `Client ${ref}`,
      left: (d, h, m) => d ? `${d} day${d > 1 ? "s" : ""} ${h} h left` : h ? `${h} h ${m} min left` : `${m} min left`,
      overdue: "Overdue",
      answer_by: (when) => ` · answer by ${when}`,
      needs: "Needs",
      language: "Language",
      accessibility_needs: "Accessibility needs",
      distance: "Distance",
      office: "Office",
      referred_by: "Referred by",
      referred_by_value: (source) => `Ontario Works office ${source.office_id} (${source.system})`,
      distance_value: (km, site) => `${km} from the client to ${site}`,
      offered_at: "Offered",
      accepted_at: "Accepted",
      updated_at: "Last change",
      accept: "Accept",
      decline: "Decline",
      for_client: (ref) => ` the offer for client ${ref}`,
      decline_heading: "Decline this offer",
      decline_reason: "Reason for declining",
      decline_hint: "Ontario Works reads it, and the referral goes to the next office. No personal information.",
      decline_send: "Send the decline",
      keep_offer: "Keep the offer",
      reason_missing: "Give a reason for declining.",
      new_offers: (refs) => refs.length === 1 ? `New offer: client ${refs[0]}.` : `${refs.length} new offers: clients ${refs.join(", ")}.`,
      accepted_done: (ref) => `Accepted: client ${ref} is now in your caseload.`,
      declined_done: (ref) => `Declined: the offer for client ${ref} is closed.`,
      offer_closed: (ref) => `The offer for client ${ref} is no longer open.`,
      act_in_service: "Started",
      act_completed: "Completed",
      act_not_started: "Not started",
      act_ended_early: "Ended early",
      for_case: (ref) => ` for client ${ref}`,
      report_heading: (what) => `Report: ${what}`,
      outcome: "Outcome",
      reason: "Reason",
      choose: "Choose…",
      code_missing: (what) => `Choose the ${what.toLowerCase()}.`,
      note: "Note (optional)",
      note_hint: "At most 200 characters. No personal information: no names, phone numbers or case numbers.",
      send_report: "Send the report",
      cancel_report: "Cancel",
      report_done: (ref, status) => `Recorded for client ${ref}: ${status}.`,
    },
    fr: {
      title: "Boîte de réception des fournisseurs – aiguillages d’Emploi Ontario",
      heading: "Boîte de réception des fournisseurs",
      sign_in_intro: "Connectez-vous avec le jeton de fournisseur de votre organisme pour voir les aiguillages qui vous sont offerts.",
      offers_heading: "Offres ouvertes",
      offers_intro: "Les aiguillages qui vous sont offerts, l’échéance la plus proche en premier. Les nouvelles offres s’affichent ici d’elles-mêmes.",
      offers_empty: "Aucune offre ouverte pour le moment.",
      caseload_heading: "Dossiers en cours",
      caseload_intro: "Les aiguillages que vous avez acceptés. Indiquez ce qui s’est passé; Ontario au travail le voit aussitôt.",
      caseload_empty: "Aucun aiguillage accepté en cours.",
      client: (ref) => `Client ${ref}`,
      left: (d, h, m) => d ? `Il reste ${d} jour${d > 1 ? "s" : ""} ${h} h` : h ? `Il reste ${h} h ${m} min` : `Il reste ${m} min`,
      overdue: "Échéance dépassée",
      answer_by: (when) => ` · répondre d’ici le ${when}`,
      needs: "Besoins",
      language: "Langue",
      accessibility_needs: "Besoins d’accessibilité",
      distance: "Distance",
      office: "Bureau",
      referred_by: "Aiguillé par",
      referred_by_value: (source) => `Bureau d’Ontario au travail ${source.office_id} (${source.system})`,
      distance_value: (km, site) => `${km} entre la personne et ${site}`,
      offered_at: "Offert le",
      accepted_at: "Accepté le",
      updated_at: "Dernier changement",
      accept: "Accepter",
      decline: "Refuser",
      for_client: (ref) => ` l’offre pour le client ${ref}`,
      decline_heading: "Refuser cette offre",
      decline_reason: "Motif du refus",
      decline_hint: "Ontario au travail le lit, et l’aiguillage passe au bureau suivant. Aucun renseignement personnel.",
      decline_send: "Envoyer le refus",
      keep_offer: "Garder l’offre",
      reason_missing: "Indiquez le motif du refus.",
      new_offers: (refs) => refs.length === 1 ? `Nouvelle offre : client ${refs[0]}.` : `${refs.length} nouvelles offres : clients ${refs.join(", ")}.`,
      accepted_done: (ref) => `Acceptée : le client ${ref} fait maintenant partie de vos dossiers.`,
      declined_done: (ref) => `Refusée : l’offre pour le client ${ref} est fermée.`,
      offer_closed: (ref) => `L’offre pour le client ${ref} n’est plus ouverte.`,
      act_in_service: "Commencé",
      act_completed: "Terminé",
      act_not_started: "Non commencé",
      act_ended_early: "Terminé avant la fin",
      for_case: (ref) => ` pour le client ${ref}`,
      report_heading: (what) => `Signaler : ${what}`,
      outcome: "Résultat",
      reason: "Motif",
      choose: "Choisir…",
      code_missing: (what) => `Choisissez le ${what.toLowerCase()}.`,
      note: "Note (facultative)",
      note_hint: "200 caractères au plus. Aucun renseignement personnel : ni nom, ni numéro de téléphone, ni numéro de dossier.",
      send_report: "Envoyer le rapport",
      cancel_report: "Annuler",
      report_done: (ref, status) => `Enregistré pour le client ${ref} : ${status}.`,
    },
  };

  //: What a provider may report from each state (services/router/lifecycle.py).
  const NEXT = { accepted: ["in_service", "not_started"], in_service: ["completed", "ended_early"] };
  const PROGRESS = ["in_service", "completed", "not_started", "ended_early"];
  const POLL_MS = 1000;

  const offers = new Map(); // offer_id -> card
  const cases = new Map(); // referral_id -> card
  // Writes sent and not yet seen acted on: key -> { offer: true } or { from: status }, and
  // the text that says it is done.
  const done = new Map();
  let known = null; // offer ids seen so far (null until the first load)
  let poller = null;
  const t = () => P.t();

  function timeLeft(expiresAt) {
    const ms = new Date(expiresAt).getTime() - Date.now();
    if (ms <= 0) return null;
    const minutes = Math.max(1, Math.floor(ms / 60000));
    return t().left(Math.floor(minutes / 1440), Math.floor((minutes % 1440) / 60), minutes % 60);
  }

  function siteName(item) {
    return item.site_name || item.site_id;
  }

  // -- offers ------------------------------------------------------------------------------------

  function offerCard(offer) {
    const id = offer.offer_id;
    const p = {};
    p.client = el("span", { class: "client" });
    p.heading = el("h3", { id: `offer-${id}-heading`, tabindex: "-1" }, p.client);
    p.timeLeft = el("span", { class: "time-left" });
    p.deadline = el("span", { class: "deadline-at" });
    p.deadlineLine = el("p", { class: "deadline" }, p.timeLeft, p.deadline);
    p.facts = P.factList(["needs", "language", "accessibility", "distance", "referred_by", "offered_at"]);
    p.acceptLabel = el("span");
    p.acceptFor = el("span", { class: "visually-hidden" });
    p.accept = el("button", { type: "button", class: "primary", id: `accept-${id}` }, p.acceptLabel, p.acceptFor);
    p.declineLabel = el("span");
    p.declineFor = el("span", { class: "visually-hidden" });
    p.decline = el("button", {
      type: "button", class: "secondary", id: `decline-${id}`, "aria-expanded": "false", "aria-controls": `decline-form-${id}`,
    }, p.declineLabel, p.declineFor);
    p.error = el("p", { class: "field-error", id: `offer-error-${id}`, role: "alert" });

    p.formHeading = el("h4", { id: `decline-form-${id}-heading` });
    p.reasonLabel = el("label", { for: `decline-reason-${id}` });
    p.reason = el("textarea", {
      id: `decline-reason-${id}`, name: "reason", maxlength: "500", required: true, rows: "3",
      "aria-describedby": `decline-hint-${id} decline-error-${id}`,
    });
    p.reasonHint = el("p", { class: "hint", id: `decline-hint-${id}` });
    p.reasonError = el("p", { class: "field-error", id: `decline-error-${id}`, role: "alert" });
    p.send = el("button", { type: "submit", class: "primary", id: `decline-send-${id}` });
    p.keep = el("button", { type: "button", class: "secondary", id: `decline-keep-${id}` });
    p.form = el("form", { id: `decline-form-${id}`, class: "decline-form", novalidate: true, hidden: true, "aria-labelledby": `decline-form-${id}-heading` },
      p.formHeading,
      el("div", { class: "field" }, p.reasonLabel, p.reason, p.reasonHint),
      p.reasonError,
      el("div", { class: "actions" }, p.send, p.keep));

    const node = el("li", { class: "card offer", id: `offer-${id}`, "data-offer-id": id },
      el("article", { "aria-labelledby": `offer-${id}-heading` },
        p.heading, p.deadlineLine, p.facts.node,
        el("div", { class: "actions" }, p.accept, p.decline), p.error, p.form));
    const card = { node, parts: p, busy: false };
    p.accept.addEventListener("click", () => accept(card));
    p.decline.addEventListener("click", () => openDecline(card, true));
    p.keep.addEventListener("click", () => openDecline(card, false));
    p.form.addEventListener("submit", (event) => sendDecline(event, card));
    return card;
  }

  function fillOffer(card) {
    const text = t();
    const { parts: p, data: offer } = card;
    setText(p.client, text.client(offer.client_ref));
    const left = timeLeft(offer.expires_at);
    card.node.classList.toggle("overdue", left === null);
    setText(p.timeLeft, left || text.overdue);
    setText(p.deadline, text.answer_by(P.dateTime(offer.expires_at)));
    const { dt, dd } = p.facts;
    setText(dt.needs, text.needs);
    setText(dd.needs, P.names("service", offer.needs));
    setText(dt.language, text.language);
    setText(dd.language, P.name("language", offer.language));
    setText(dt.accessibility, text.accessibility_needs);
    setText(dd.accessibility, P.names("accessibility", offer.accessibility_needs));
    setText(dt.distance, text.distance);
    setText(dd.distance, text.distance_value(P.t().km(offer.distance_km), siteName(offer)));
    setText(dt.referred_by, text.referred_by);
    setText(dd.referred_by, text.referred_by_value(offer.source));
    setText(dt.offered_at, text.offered_at);
    setText(dd.offered_at, P.dateTime(offer.offered_at));
    setText(p.acceptLabel, text.accept);
    setText(p.acceptFor, text.for_client(offer.client_ref));
    setText(p.declineLabel, text.decline);
    setText(p.declineFor, text.for_client(offer.client_ref));
    setText(p.formHeading, text.decline_heading);
    setText(p.reasonLabel, text.decline_reason);
    setText(p.reasonHint, text.decline_hint);
    setText(p.send, text.decline_send);
    setText(p.keep, text.keep_offer);
  }

  function busy(card, on) {
    card.busy = on;
    // aria-disabled, not disabled: a disabled button loses the keyboard focus.
    for (const button of card.node.querySelectorAll("button")) {
      if (on) button.setAttribute("aria-disabled", "true");
      else button.removeAttribute("aria-disabled");
    }
  }

  async function accept(card) {
    if (card.busy) return;
    const offer = card.data;
    busy(card, true);
    card.parts.error.textContent = "";
    const result = await P.send(`/api/v1/offers/${offer.offer_id}/accept`);
    busy(card, false);
    after(result, card.parts.error, offer.offer_id, {
      text: () => t().accepted_done(offer.client_ref),
      // Refused after all (the deadline passed first, say): the offer closes, the case is not ours.
      unless: (caseload) => !caseload.has(offer.referral_id) && t().offer_closed(offer.client_ref),
    });
  }

  function openDecline(card, open) {
    const p = card.parts;
    p.form.hidden = !open;
    p.decline.setAttribute("aria-expanded", String(open));
    if (open) p.reason.focus();
    else p.decline.focus();
  }

  async function sendDecline(event, card) {
    event.preventDefault();
    if (card.busy) return;
    const p = card.parts;
    const offer = card.data;
    const reason = P.requiredText(p.reason, p.reasonError, t().reason_missing);
    if (reason === null) return;
    busy(card, true);
    const result = await P.send(`/api/v1/offers/${offer.offer_id}/decline`, { reason });
    busy(card, false);
    after(result, p.reasonError, offer.offer_id, { text: () => t().declined_done(offer.client_ref) });
  }

  /** After a write: a polite "sent" and a refresh, or the problem where the action was. */
  function after(result, errorNode, key, write) {
    if (result.ok) {
      setText($("status"), result.message);
      done.set(key, { offer: true, ...write });
      if (poller) poller.now();
    } else {
      errorNode.textContent = result.message;
    }
  }

  function renderOffers(items) {
    const added = P.syncList($("offer-list"), items, (o) => o.offer_id, offers, offerCard, fillOffer, $("offers-heading"));
    $("offers-empty").hidden = items.length > 0;
    if (known === null) {
      known = new Set(added);
      return;
    }
    const fresh = added.filter((id) => !known.has(id));
    for (const id of fresh) {
      known.add(id);
      offers.get(id).node.classList.add("new-offer");
    }
    if (fresh.length) setText($("offers-news"), t().new_offers(fresh.map((id) => offers.get(id).data.client_ref)));
  }

  // -- caseload ----------------------------------------------------------------------------------

  function caseCard(entry) {
    const id = entry.referral_id;
    const p = {};
    p.client = el("span", { class: "client" });
    p.badge = el("span", { class: "badge" });
    p.heading = el("h3", { id: `case-${id}-heading`, tabindex: "-1" }, p.client, p.badge);
    p.facts = P.factList(["needs", "language", "accessibility", "office", "referred_by", "accepted_at", "updated_at"]);
    p.actions = {};
    const buttons = el("div", { class: "actions progress-actions" });
    for (const status of PROGRESS) {
      const label = el("span");
      const forClient = el("span", { class: "visually-hidden" });
      const button = el("button", {
        type: "button", class: "secondary", id: `progress-${status}-${id}`, "data-status": status,
        "aria-expanded": "false", "aria-controls": `progress-form-${id}`, hidden: true,
      }, label, forClient);
      p.actions[status] = { button, label, forClient };
      buttons.append(button);
    }
    p.error = el("p", { class: "field-error", id: `case-error-${id}`, role: "alert" });

    p.formHeading = el("h4", { id: `progress-form-${id}-heading` });
    p.codeLabel = el("label", { for: `progress-code-${id}` });
    p.code = el("select", { id: `progress-code-${id}`, name: "code", required: true, "aria-describedby": `progress-error-${id}` });
    p.codeField = el("div", { class: "field" }, p.codeLabel, p.code);
    p.noteLabel = el("label", { for: `progress-note-${id}` });
    p.note = el("textarea", { id: `progress-note-${id}`, name: "note", maxlength: "200", rows: "2", "aria-describedby": `progress-note-hint-${id}` });
    p.noteHint = el("p", { class: "hint", id: `progress-note-hint-${id}` });
    p.formError = el("p", { class: "field-error", id: `progress-error-${id}`, role: "alert" });
    p.send = el("button", { type: "submit", class: "primary", id: `progress-send-${id}` });
    p.cancel = el("button", { type: "button", class: "secondary", id: `progress-cancel-${id}` });
    p.form = el("form", { id: `progress-form-${id}`, class: "progress-form", novalidate: true, hidden: true, "aria-labelledby": `progress-form-${id}-heading` },
      p.formHeading, p.codeField,
      el("div", { class: "field" }, p.noteLabel, p.note, p.noteHint),
      p.formError,
      el("div", { class: "actions" }, p.send, p.cancel));

    const node = el("li", { class: "card case", id: `case-${id}`, "data-referral-id": id },
      el("article", { "aria-labelledby": `case-${id}-heading` }, p.heading, p.facts.node, buttons, p.error, p.form));
    const card = { node, parts: p, busy: false, reporting: null };
    for (const status of PROGRESS) p.actions[status].button.addEventListener("click", () => openReport(card, status));
    p.cancel.addEventListener("click", () => closeReport(card, true));
    p.form.addEventListener("submit", (event) => sendReport(event, card));
    return card;
  }

  function fillCase(card) {
    const text = t();
    const { parts: p, data: entry } = card;
    setText(p.client, text.client(entry.client_ref));
    setText(p.badge, P.name("status", entry.status));
    card.node.dataset.status = entry.status;
    const { dt, dd } = p.facts;
    setText(dt.needs, text.needs);
    setText(dd.needs, P.names("service", entry.needs));
    setText(dt.language, text.language);
    setText(dd.language, P.name("language", entry.language));
    setText(dt.accessibility, text.accessibility_needs);
    setText(dd.accessibility, P.names("accessibility", entry.accessibility_needs));
    setText(dt.office, text.office);
    setText(dd.office, siteName(entry));
    setText(dt.referred_by, text.referred_by);
    setText(dd.referred_by, text.referred_by_value(entry.source));
    setText(dt.accepted_at, text.accepted_at);
    setText(dd.accepted_at, P.dateTime(entry.accepted_at));
    setText(dt.updated_at, text.updated_at);
    setText(dd.updated_at, P.dateTime(entry.updated_at));

    const allowed = NEXT[entry.status] || [];
    let focusLost = false;
    for (const status of PROGRESS) {
      const action = p.actions[status];
      setText(action.label, text[`act_${status}`]);
      setText(action.forClient, text.for_case(entry.client_ref));
      const hide = !allowed.includes(status);
      if (hide && !action.button.hidden && action.button.contains(document.activeElement)) focusLost = true;
      action.button.hidden = hide;
    }
    if (card.reporting && !allowed.includes(card.reporting)) {
      if (p.form.contains(document.activeElement)) focusLost = true;
      closeReport(card, false);
    }
    if (focusLost) p.heading.focus();
    setText(p.noteLabel, text.note);
    setText(p.noteHint, text.note_hint);
    setText(p.send, text.send_report);
    setText(p.cancel, text.cancel_report);
    if (card.reporting) labelReport(card);
  }

  /** The report form's heading, code label and options, in the page's language. */
  function labelReport(card) {
    const text = t();
    const p = card.parts;
    const status = card.reporting;
    setText(p.formHeading, text.report_heading(text[`act_${status}`]));
    const codes = window.EOTerms.progressCodes(status, P.lang);
    p.codeField.hidden = codes.length === 0;
    setText(p.codeLabel, status === "completed" ? text.outcome : text.reason);
    const chosen = p.code.value;
    const wanted = ["", ...codes.map((c) => c.code)];
    if (JSON.stringify([...p.code.options].map((o) => o.value)) !== JSON.stringify(wanted)) {
      p.code.replaceChildren(el("option", { value: "" }), ...codes.map((c) => el("option", { value: c.code })));
      p.code.value = wanted.includes(chosen) ? chosen : "";
    }
    setText(p.code.options[0], text.choose);
    codes.forEach((c, index) => setText(p.code.options[index + 1], c.name));
  }

  function openReport(card, status) {
    const p = card.parts;
    if (card.reporting === status && !p.form.hidden) {
      closeReport(card, true);
      return;
    }
    card.reporting = status;
    p.formError.textContent = "";
    p.code.removeAttribute("aria-invalid");
    labelReport(card);
    p.form.hidden = false;
    for (const s of PROGRESS) p.actions[s].button.setAttribute("aria-expanded", String(s === status));
    (p.codeField.hidden ? p.note : p.code).focus();
  }

  function closeReport(card, moveFocus) {
    const p = card.parts;
    const was = card.reporting;
    card.reporting = null;
    p.form.hidden = true;
    for (const s of PROGRESS) p.actions[s].button.setAttribute("aria-expanded", "false");
    if (moveFocus && was && !p.actions[was].button.hidden) p.actions[was].button.focus();
  }

  async function sendReport(event, card) {
    event.preventDefault();
    if (card.busy || !card.reporting) return;
    const p = card.parts;
    const entry = card.data;
    const status = card.reporting;
    p.formError.textContent = "";
    p.code.removeAttribute("aria-invalid");
    const body = { status };
    if (!p.codeField.hidden) {
      if (!p.code.value) {
        p.formError.textContent = t().code_missing(p.codeLabel.textContent);
        p.code.setAttribute("aria-invalid", "true");
        p.code.focus();
        return;
      }
      body.code = p.code.value;
    }
    const note = p.note.value.trim();
    if (note) body.note = note;
    busy(card, true);
    const result = await P.send(`/api/v1/referrals/${entry.referral_id}/progress`, body);
    busy(card, false);
    if (result.ok) {
      p.note.value = "";
      p.code.value = "";
      closeReport(card, false);
      p.heading.focus();
      done.set(entry.referral_id, { from: entry.status, text: () => t().report_done(entry.client_ref, P.name("status", status)) });
      setText($("status"), result.message);
      if (poller) poller.now();
    } else {
      p.formError.textContent = result.message;
    }
  }

  function renderCaseload(items) {
    P.syncList($("case-list"), items, (c) => c.referral_id, cases, caseCard, fillCase, $("caseload-heading"));
    $("caseload-empty").hidden = items.length > 0;
  }

  // -- refreshing --------------------------------------------------------------------------------

  async function refresh() {
    let found;
    try {
      found = await Promise.all([P.request("GET", "/api/v1/offers"), P.request("GET", "/api/v1/caseload")]);
    } catch (exc) {
      if (exc instanceof P.Unreachable) setText($("error"), t().service_down);
      throw exc;
    }
    const [open, caseload] = found;
    const failed = [open, caseload].find((r) => !r.ok);
    if (failed) {
      setText($("error"), P.problemText(failed.body, failed.status));
      return;
    }
    setText($("error"), "");
    renderOffers(open.body.items);
    renderCaseload(caseload.body.items);
    settle(open.body.items, caseload.body.items);
  }

  /** Says "done" for each write the router has now acted on. */
  function settle(openOffers, caseload) {
    const openIds = new Set(openOffers.map((o) => o.offer_id));
    const statusOf = new Map(caseload.map((c) => [c.referral_id, c.status]));
    for (const [key, write] of done) {
      const acted = write.offer ? !openIds.has(key) : statusOf.get(key) !== write.from;
      if (!acted) continue;
      setText($("status"), (write.unless && write.unless(statusOf)) || write.text());
      done.delete(key);
    }
  }

  function refreshLabels() {
    for (const card of offers.values()) fillOffer(card);
    for (const card of cases.values()) fillCase(card);
  }

  function clear() {
    if (poller) poller.stop();
    poller = null;
    offers.clear();
    cases.clear();
    done.clear();
    known = null;
    $("offer-list").replaceChildren();
    $("case-list").replaceChildren();
    for (const id of ["status", "error", "offers-news"]) $(id).textContent = "";
  }

  P.start({
    text: TEXT,
    roles: ["provider", "admin"],
    focusAfterSignIn: "offers-heading",
    onSignedIn() {
      clear();
      poller = P.poll(refresh, POLL_MS);
    },
    onSignedOut: clear,
    onLanguage: refreshLabels,
  });
})();
