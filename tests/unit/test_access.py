"""Who a token stands for and what of a referral each caller sees: pure, no servers."""

import datetime
import uuid

import pytest

from contracts.router import HistoryEntry, OfferView, ReferralView
from services.access.principal import OwnerError, Principal, check_owner
from services.client import router_token
from services.router.settings import RouterSettings
from services.router.visibility import visible_view

NOW = datetime.datetime(2026, 11, 27, 15, 0, tzinfo=datetime.UTC)
A, B = "provider-a", "provider-b"


@pytest.mark.parametrize(
    ("role", "provider_id", "system"),
    [("admin", None, None), ("staff", None, None), ("provider", A, None), ("ow", None, "ow-x")],
)
def test_each_role_names_its_own_kind_of_owner(role, provider_id, system) -> None:
    check_owner(role, provider_id=provider_id, system=system)


@pytest.mark.parametrize(
    ("role", "provider_id", "system", "field"),
    [
        ("provider", None, None, "provider_id"),  # a provider token without its provider
        ("admin", A, None, "provider_id"),
        ("ow", A, "ow-x", "provider_id"),
        ("ow", None, None, "system"),  # an ow token without its system
        ("staff", None, "ow-x", "system"),
        ("provider", A, "ow-x", "system"),
        ("ow", None, "OW Lanark", "system"),  # not a slug
        ("provider", "Not A Slug", None, "provider_id"),
    ],
)
def test_a_token_with_the_wrong_owner_names_the_field(role, provider_id, system, field) -> None:
    with pytest.raises(OwnerError) as refused:
        check_owner(role, provider_id=provider_id, system=system)
    assert refused.value.field == field


def offer(provider_id: str, state: str, attempt: int) -> OfferView:
    return OfferView(
        offer_id=uuid.uuid4(),
        attempt=attempt,
        provider_id=provider_id,
        site_id=f"{provider_id}-site",
        distance_km=10.0 * attempt,
        offered_at=NOW,
        expires_at=NOW,
        state=state,  # type: ignore[arg-type]
    )


def entry(event: str, status: str, provider_id: str | None = None, **more: object) -> HistoryEntry:
    site = None if provider_id is None else f"{provider_id}-site"
    return HistoryEntry(
        at=NOW,
        event=event,
        status=status,  # type: ignore[arg-type]
        attempt=1,
        provider_id=provider_id,
        site_id=site,
        **more,  # type: ignore[arg-type]
    )


def declined_by_a_accepted_by_b(*, open_at_b: bool = False) -> ReferralView:
    first, second = offer(A, "declined", 1), offer(B, "open" if open_at_b else "accepted", 2)
    return ReferralView(
        referral_id=uuid.uuid4(),
        status="offered" if open_at_b else "accepted",
        attempt=2,
        created_at=NOW,
        updated_at=NOW,
        source_system="ow-lanark",
        current_offer=second if open_at_b else None,
        offers=[first, second],
        history=[
            entry("receive", "received"),
            entry("offer", "offered", A),
            entry("decline", "offered", A, reason="A's private reason"),
            entry("offer", "offered", B),
            entry("accept", "accepted", B, refused=True, reason="an unattributed refusal"),
            entry("accept", "accepted", B),
        ],
    )


def test_the_admin_sees_everything() -> None:
    view = declined_by_a_accepted_by_b()
    assert visible_view(view, Principal(token_id="t", role="admin")) == view


def test_an_ow_system_sees_its_own_referrals_whole_and_no_others() -> None:
    view = declined_by_a_accepted_by_b()
    assert visible_view(view, Principal(token_id="t", role="ow", system="ow-lanark")) == view
    assert visible_view(view, Principal(token_id="t", role="ow", system="ow-other")) is None
    assert visible_view(view, Principal(token_id="t", role="ow")) is None


def test_staff_and_providers_never_offered_it_see_nothing() -> None:
    view = declined_by_a_accepted_by_b()
    assert visible_view(view, Principal(token_id="t", role="staff")) is None
    assert visible_view(view, Principal(token_id="t", role="provider", provider_id="c")) is None
    assert visible_view(view, Principal(token_id="t", role="provider")) is None


def test_a_provider_sees_only_its_own_offers_and_history() -> None:
    view = declined_by_a_accepted_by_b(open_at_b=True)
    seen_by_a = visible_view(view, Principal(token_id="t", role="provider", provider_id=A))
    assert seen_by_a is not None
    assert [o.provider_id for o in seen_by_a.offers] == [A]
    assert seen_by_a.current_offer is None  # B's open offer is not A's to see
    assert [(h.event, h.provider_id) for h in seen_by_a.history] == [
        ("receive", None),
        ("offer", A),
        ("decline", A),
    ]

    seen_by_b = visible_view(view, Principal(token_id="t", role="provider", provider_id=B))
    assert seen_by_b is not None
    assert [o.provider_id for o in seen_by_b.offers] == [B]
    assert seen_by_b.current_offer == view.current_offer
    assert [(h.event, h.provider_id) for h in seen_by_b.history] == [
        ("receive", None),
        ("offer", B),
        ("accept", B),
    ]
    assert all(h.reason != "A's private reason" for h in seen_by_b.history)
    assert all(not h.refused for h in seen_by_b.history)
    # The referral's own fields are the same for everyone who may see it.
    assert (seen_by_b.status, seen_by_b.referral_id) == (view.status, view.referral_id)


def test_the_router_s_admin_token_comes_from_its_environment() -> None:
    env = {"ROUTER_ADMIN_TOKEN": "s3cret"}
    assert RouterSettings.from_env("postgresql://x", "nats://x", env).admin_token == "s3cret"
    assert RouterSettings.from_env("postgresql://x", "nats://x", {}).admin_token is None


def test_eo_referral_sends_router_token_else_the_state_folder_s_admin_token(tmp_path) -> None:
    state = {"EO_STATE_DIR": str(tmp_path)}
    assert router_token(state) is None  # no `eo run` there: no token
    (tmp_path / "admin-token").write_text("from-eo-run\n")
    assert router_token(state) == "from-eo-run"
    assert router_token(state | {"ROUTER_TOKEN": "tok_0123456789ab.x"}) == "tok_0123456789ab.x"
