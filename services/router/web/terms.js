// The names, in English and French, of the codes the router's pages show. Copied here so the
// pages need nothing from the directory's origin; tests/e2e/test_router_pages.py holds them
// equal to their sources: services and accessibility in services/directory/seed/seed.json,
// progress codes in contracts/vocabulary.py, statuses in contracts/referrals.py.
"use strict";

window.EOTerms = (() => {
  const NAMES = {
    service: {
      employment_counselling: ["Employment counselling", "Counseling d'emploi"],
      resume_writing: ["Resume writing", "Rédaction de curriculum vitæ"],
      interview_skills: ["Interview skills", "Préparation aux entrevues"],
      job_search: ["Job search", "Recherche d'emploi"],
      job_matching_placement: ["Job matching and placement", "Jumelage et placement professionnels"],
      work_experience: ["Work experience", "Expérience de travail"],
      job_retention: ["Job retention", "Maintien en emploi"],
      skills_training: ["Skills training", "Formation professionnelle"],
      literacy_basic_skills: ["Literacy and basic skills", "Alphabétisation et formation de base"],
      disability_supports: ["Disability-related supports", "Soutiens liés au handicap"],
      self_employment: ["Self-employment", "Travail autonome"],
      language_training: ["Language training", "Formation linguistique"],
      youth_job_connection: ["Youth Job Connection", "Connexion Emploi jeunesse"],
      better_jobs_ontario: ["Better Jobs Ontario (formerly Second Career)", "Meilleurs emplois Ontario (anciennement Deuxième carrière)"],
      canada_ontario_job_grant: ["Canada-Ontario Job Grant", "Subvention Canada-Ontario pour l'emploi"],
      apprenticeship: ["Apprenticeship", "Apprentissage"],
    },
    accessibility: {
      wheelchair_access: ["Wheelchair access", "Accès en fauteuil roulant"],
      accessible_washroom: ["Accessible washroom", "Toilettes accessibles"],
      asl_interpretation: ["ASL interpretation", "Interprétation en ASL"],
      lsq_interpretation: ["LSQ interpretation", "Interprétation en LSQ"],
      large_print: ["Large print", "Gros caractères"],
      virtual_service: ["Virtual service", "Service virtuel"],
    },
    language: { en: ["English", "anglais"], fr: ["French", "français"] },
    // What a referral is at (ReferralStatus).
    status: {
      received: ["Received", "Reçu"],
      offered: ["Offered", "Offert"],
      accepted: ["Accepted", "Accepté"],
      declined: ["Declined", "Refusé"],
      expired: ["Offer expired", "Offre expirée"],
      unmatched: ["No suitable office", "Aucun bureau convenable"],
      cancelled: ["Cancelled", "Annulé"],
      rejected: ["Rejected", "Rejeté"],
      in_service: ["In service", "En service"],
      completed: ["Completed", "Terminé"],
      not_started: ["Not started", "Non commencé"],
      ended_early: ["Ended early", "Terminé avant la fin"],
      withdrawn: ["Withdrawn", "Retiré"],
    },
    // Progress codes by status (contracts/vocabulary.py PROGRESS_TERMS).
    progress: {
      completed: {
        employed: ["Employed", "En emploi"],
        in_training: ["In training", "En formation"],
        in_education: ["In education", "Aux études"],
        plan_completed: ["Action plan completed", "Plan d'action terminé"],
        other: ["Other outcome", "Autre résultat"],
      },
      not_started: {
        could_not_contact: ["Could not contact the client", "Impossible de joindre la personne"],
        no_show: ["Client did not attend", "La personne ne s'est pas présentée"],
        client_declined: ["Client declined the service", "La personne a refusé le service"],
        not_eligible: ["Client not eligible", "La personne n'est pas admissible"],
        other: ["Other reason", "Autre motif"],
      },
      ended_early: {
        client_withdrew: ["Client withdrew", "La personne s'est retirée"],
        moved: ["Client moved away", "La personne a déménagé"],
        could_not_contact: ["Could not contact the client", "Impossible de joindre la personne"],
        other: ["Other reason", "Autre motif"],
      },
    },
    // What happened to a referral (a history entry's event).
    event: {
      receive: ["Received", "Reçu"],
      offer: ["Offered to an office", "Offert à un bureau"],
      accept: ["Accepted by the provider", "Accepté par le fournisseur"],
      decline: ["Declined by the provider", "Refusé par le fournisseur"],
      expire: ["No answer in time", "Pas de réponse à temps"],
      no_site_left: ["No suitable office left", "Plus aucun bureau convenable"],
      cancel: ["Cancelled by Ontario Works", "Annulé par Ontario au travail"],
      reject: ["Rejected as invalid", "Rejeté comme non valide"],
      start: ["Service started", "Service commencé"],
      complete: ["Completed", "Terminé"],
      not_start: ["Not started", "Non commencé"],
      end_early: ["Ended early", "Terminé avant la fin"],
      withdraw: ["Withdrawn by Ontario Works", "Retiré par Ontario au travail"],
    },
    // Which rule chose the office (Explanation.rule) and what each suitability rule excluded.
    rule: {
      preferred_provider: ["Preferred provider", "Fournisseur privilégié"],
      nearest: ["Nearest suitable office", "Bureau convenable le plus proche"],
      tie_lower_load: ["Tie, fewer referrals in hand", "Égalité, moins d'aiguillages en cours"],
      tie_site_id: ["Tie, broken by office id", "Égalité, départagée par l'identifiant du bureau"],
      no_suitable_site: ["No suitable office", "Aucun bureau convenable"],
    },
    excluded: {
      inactive: ["inactive", "inactif"],
      not_accepting_or_full: ["not accepting or full", "n'accepte pas ou complet"],
      services: ["services", "services"],
      language: ["language", "langue"],
      accessibility: ["accessibility", "accessibilité"],
      eligibility: ["eligibility", "admissibilité"],
      distance: ["too far", "trop loin"],
      excluded_provider: ["excluded by Ontario Works", "exclu par Ontario au travail"],
      already_offered: ["already offered", "déjà offert"],
    },
    offer_state: {
      open: ["Open", "Ouverte"],
      accepted: ["Accepted", "Acceptée"],
      declined: ["Declined", "Refusée"],
      expired: ["Expired", "Expirée"],
      withdrawn: ["Withdrawn", "Retirée"],
    },
    role: {
      admin: ["an administrator", "administrateur"],
      staff: ["directory staff", "personnel du répertoire"],
      provider: ["an Employment Ontario provider", "fournisseur d'Emploi Ontario"],
      ow: ["an Ontario Works system", "système d'Ontario au travail"],
    },
  };

  /** The name of `code` of `kind` ("service", "status", ...) in `lang`; the code when unknown. */
  function name(kind, code, lang) {
    const names = NAMES[kind] && NAMES[kind][code];
    return names ? names[lang === "fr" ? 1 : 0] : code;
  }

  /** The progress codes `status` takes, in order, with their names in `lang`. */
  function progressCodes(status, lang) {
    return Object.entries(NAMES.progress[status] || {}).map(([code, names]) => ({ code, name: names[lang === "fr" ? 1 : 0] }));
  }

  return Object.freeze({ NAMES, name, progressCodes });
})();
