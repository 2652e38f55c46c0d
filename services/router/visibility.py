"""What of a referral each caller of the router's HTTP API may see (DESIGN.md section 3d). Pure.

- ``admin``: all of it.
- ``ow``: all of it when the referral is its system's (``source_system``), else nothing.
- ``provider``: only when it has or had an offer of the referral, and then only what is its
  own: its own offers, and the history without the entries of other providers, so no other
  provider's site, distance, decline reason or progress shows. Entries of no provider (the
  request, a cancellation, a routing outcome) stay; refusals do not: they name no party, and
  the provider whose message was refused was told why in a notice.
- anyone else (``staff``, whose token is for the directory): nothing.

Nothing means the API answers 404, as for a referral that does not exist: another party's
referral is not confirmed to exist.
"""

import msgspec

from contracts.router import ReferralView
from services.access.principal import Principal


def visible_view(view: ReferralView, caller: Principal) -> ReferralView | None:
    """The part of ``view`` that ``caller`` may see, or None when it may see none of it."""
    match caller.role:
        case "admin":
            return view
        case "ow":
            mine = caller.system is not None and view.source_system == caller.system
            return view if mine else None
        case "provider" if caller.provider_id is not None:
            return provider_view(view, caller.provider_id)
        case _:
            return None


def provider_view(view: ReferralView, provider_id: str) -> ReferralView | None:
    """``view`` as ``provider_id`` sees it: None unless it has or had an offer of it."""
    offers = [offer for offer in view.offers if offer.provider_id == provider_id]
    if not offers:
        return None
    current = view.current_offer
    return msgspec.structs.replace(
        view,
        offers=offers,
        current_offer=current
        if current is not None and current.provider_id == provider_id
        else None,
        history=[
            entry
            for entry in view.history
            if not entry.refused and entry.provider_id in (None, provider_id)
        ],
    )
