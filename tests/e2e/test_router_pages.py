"""The router's pages in a real browser (issue 15, items 3-5): the provider inbox and the OW
referral tracker, on Debian's Chromium driven by Playwright, against the router served by
uvicorn on a free port, with referrals sent over real JetStream.

Screenshots go to ``test-artifacts/router-pages/`` (ignored by git): each page, in English and
French, at desktop width and at 375 px, as the tests saw it.
"""

import datetime
import json
import re
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
from playwright.async_api import BrowserContext, Page, Route, ViewportSize, expect

from contracts.referrals import ReferralOffered, ReferralStatus, Source
from contracts.vocabulary import PROGRESS_TERMS
from services.access.tokens import TokenStore
from services.directory.app import create_app as create_directory_app
from services.directory.settings import DirectorySettings
from services.infra.embedded import free_port
from services.router.app import create_app as create_router_app
from services.router.settings import RouterSettings
from tests.e2e.test_office_finder import APOSTROPHE, axe_violations, browser, describe, serving
from tests.referrals import (
    CCA,
    CCA_SITE,
    CES,
    SYSTEM,
    Observer,
    answer,
    make_request,
    progress,
    send_progress,
    send_request,
    send_response,
)
from tests.waits import until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "router-pages"
SEED = Path(__file__).parents[2] / "services" / "directory" / "seed" / "seed.json"
PHONE = ViewportSize(width=375, height=740)
DESKTOP = ViewportSize(width=1100, height=900)
#: The issue's promise: a change shows in the browser within 2 s, without a reload.
LIVE_MS = 2_000
DECLINE_REASON = "No evening intake at Carleton Place this month"
ONTARIO = zoneinfo.ZoneInfo("America/Toronto")

Issue = Callable[..., Awaitable[str]]


@pytest.fixture
async def pages(router_settings: RouterSettings, observer: Observer) -> AsyncIterator[str]:
    """The router (API, pages and its loops) under uvicorn on a free port: its URL."""
    async with serving(create_router_app(router_settings)) as (url, _stop):
        yield url


@pytest.fixture
async def tokens(issue_token: Issue) -> dict[str, str]:
    """Tokens of Canadian Career Academy, Community Employment Services and the OW system."""
    return {
        CCA: await issue_token("provider", CCA),
        CES: await issue_token("provider", CES),
        SYSTEM: await issue_token("ow", system=SYSTEM),
    }


# -- helpers --------------------------------------------------------------------------------------


async def open_page(context: BrowserContext, url: str) -> Page:
    """A new tab at ``url`` (its own sessionStorage), collecting script errors."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None
        ),
    )
    await page.goto(url)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def sign_in(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#sign-in-button")
    await expect(page.locator("#signed-in")).to_be_visible()
    # Everything the polite status line says, in order: some messages last only as long as
    # the router takes to act, too short to catch by looking.
    await page.evaluate(
        "window.__said = []; const status = document.getElementById('status');"
        " new MutationObserver(() => window.__said.push(status.textContent))"
        ".observe(status, {childList: true, characterData: true, subtree: true})"
    )


SENT = "Sent; waiting for the router…"


async def said(page: Page, text: str) -> list[str]:
    """What the status line has said, once it has said ``text``."""

    async def check() -> list[str] | None:
        found: list[str] = await page.evaluate("window.__said")
        return found if text in found else None

    return await until(check, what=f"the status line to say {text!r}")


async def focused_id(page: Page) -> str:
    return str(await page.evaluate("document.activeElement && document.activeElement.id"))


async def tab_to(page: Page, element_id: str, limit: int = 80) -> None:
    """Tab (forwards) until ``element_id`` has the focus, checking each stop shows it."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await focused_id(page) == element_id:
            style = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert style != "none", f"#{element_id} has the focus but shows no outline"
            return
    raise AssertionError(f"Tab never reached #{element_id} (last: #{await focused_id(page)})")


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def no_violations(page: Page, state: str) -> None:
    violations = await axe_violations(page)
    assert violations == [], f"{state}:\n{describe(violations)}"


async def fits(page: Page, width: int = PHONE["width"]) -> None:
    """Nothing is wider than the screen: no sideways scrolling."""
    scroll = await page.evaluate("document.scrollingElement.scrollWidth")
    assert scroll <= width, f"the page is {scroll} px wide at {width} px"


async def within_screen(page: Page, selector: str, width: int = PHONE["width"]) -> None:
    """``selector`` can be scrolled to and lies inside the screen's width."""
    target = page.locator(selector)
    await target.scroll_into_view_if_needed()
    box = await target.bounding_box()
    assert box is not None, f"{selector} is not displayed"
    assert box["x"] >= 0, (selector, box)
    assert box["x"] + box["width"] <= width, (selector, box)


async def offer_to(
    nc: Any, observer: Observer, office: str | None = None, **request: Any
) -> ReferralOffered:
    """A new referral of ``SYSTEM`` (client in Almonte unless said, from the office
    ``office``), and its first offer."""
    sent = make_request(**request)
    if office is not None:
        sent = msgspec.structs.replace(sent, source=Source(system=SYSTEM, office_id=office))
    await send_request(nc.jetstream(), sent)
    return await observer.until_offer(sent.referral_id, 1)


async def accepted(nc: Any, observer: Observer, *, in_service: bool = False) -> ReferralOffered:
    """A referral CCA has accepted (and started, when ``in_service``), over NATS."""
    offer = await offer_to(nc, observer)
    assert offer.provider_id == CCA
    await send_response(nc.jetstream(), CCA, answer(offer, "accept"))
    await observer.until_status(offer.referral_id, "accepted")
    if in_service:
        await send_progress(nc.jetstream(), CCA, progress(offer.referral_id, "in_service"))
        await observer.until_status(offer.referral_id, "in_service")
    return offer


async def reserved(settings: RouterSettings, site_id: str) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        count: int = await conn.fetchval(
            "SELECT reserved FROM directory.site WHERE id = $1", site_id
        )
    finally:
        await conn.close()
    return count


def offer_card(page: Page, offer: ReferralOffered) -> Any:
    return page.locator(f"#offer-{offer.offer_id}")


def case_card(page: Page, referral_id: uuid.UUID) -> Any:
    return page.locator(f"#case-{referral_id}")


def referral_card(page: Page, referral_id: uuid.UUID) -> Any:
    return page.locator(f"#referral-{referral_id}")


def ontario_today() -> datetime.date:
    return datetime.datetime.now(ONTARIO).date()


# -- signing in -----------------------------------------------------------------------------------


async def test_signed_out_pages_in_both_languages_pass_axe(pages: str) -> None:
    async with browser() as context:
        for name, heading_en, heading_fr in (
            ("inbox", "Provider inbox", "Boîte de réception des fournisseurs"),
            ("tracker", "Referral tracker", "Suivi des aiguillages"),
        ):
            page = await open_page(context, f"{pages}/{name}")
            await expect(page.locator("h1")).to_have_text(heading_en)
            await expect(page.locator("h1")).to_have_count(1)
            await expect(page.get_by_label("Access token")).to_have_attribute("type", "password")
            await no_violations(page, f"{name} signed out, English")
            await screenshot(page, f"{name}-signed-out-en-desktop")
            # A wrong token: a clear error, announced, on the field.
            await sign_in_fails(page, "tok_000000000000.not-a-token")
            await expect(page.locator("#token-error")).to_contain_text("was not accepted")
            await expect(page.locator("#token")).to_have_attribute("aria-invalid", "true")
            await no_violations(page, f"{name} wrong token, English")
            await page.click("#language-toggle")
            await expect(page.locator("html")).to_have_attribute("lang", "fr")
            await expect(page.locator("h1")).to_have_text(heading_fr)
            await expect(page.get_by_label(f"Jeton d{APOSTROPHE}accès")).to_be_visible()
            await no_violations(page, f"{name} signed out, French")
            await screenshot(page, f"{name}-signed-out-fr-desktop")
            await page.set_viewport_size(PHONE)
            await fits(page)
            await within_screen(page, "#sign-in-button")
            await screenshot(page, f"{name}-signed-out-fr-phone")
            await page.click("#language-toggle")
            await expect(page.locator("html")).to_have_attribute("lang", "en")
            await screenshot(page, f"{name}-signed-out-en-phone")
            assert page.errors == [], page.errors  # type: ignore[attr-defined]
            await page.close()


async def sign_in_fails(page: Page, token: str) -> None:
    await page.fill("#token", token)
    await page.click("#sign-in-button")
    await expect(page.locator("#token-error")).not_to_be_empty()
    await expect(page.locator("#signed-in")).to_be_hidden()


async def test_sign_in_by_keyboard_wrong_roles_sign_out_and_revoked_token(
    pages: str, tokens: dict[str, str], fresh_database_url: str
) -> None:
    async with browser() as context:
        inbox = await open_page(context, f"{pages}/inbox")
        # Keyboard alone: the skip link, the language switch, then the token field.
        await tab_to(inbox, "skip-link")
        await tab_to(inbox, "language-toggle")
        await tab_to(inbox, "token")
        # The OW system's token is not a provider's: said plainly.
        await inbox.keyboard.type(tokens[SYSTEM])
        await inbox.keyboard.press("Enter")
        await expect(inbox.locator("#token-error")).to_have_text(
            "This token is for an Ontario Works system. "
            "This page needs the token of an Employment Ontario provider."
        )
        await inbox.fill("#token", "")
        await inbox.focus("#token")
        await inbox.keyboard.type(tokens[CCA])
        await inbox.keyboard.press("Enter")
        await expect(inbox.locator("#who")).to_have_text("Signed in for Canadian Career Academy.")
        assert await focused_id(inbox) == "offers-heading"
        # The token is kept for this tab's session only.
        kept = await inbox.evaluate(
            "[sessionStorage.getItem('eo-router-token'), JSON.stringify(localStorage)]"
        )
        assert kept[0] == tokens[CCA]
        assert tokens[CCA] not in kept[1]
        await inbox.reload()
        await expect(inbox.locator("#signed-in")).to_be_visible()  # a reload keeps the session
        await tab_to(inbox, "sign-out")
        await inbox.keyboard.press("Enter")
        await expect(inbox.locator("#sign-in-status")).to_have_text("You are signed out.")
        assert await inbox.evaluate("sessionStorage.getItem('eo-router-token')") is None

        tracker = await open_page(context, f"{pages}/tracker")
        await sign_in_fails(tracker, tokens[CCA])
        await expect(tracker.locator("#token-error")).to_have_text(
            "This token is for an Employment Ontario provider. "
            "This page needs the token of an Ontario Works system."
        )
        await sign_in(tracker, tokens[SYSTEM])
        await expect(tracker.locator("#who")).to_have_text(
            f"Signed in for the Ontario Works system {SYSTEM}."
        )
        # The token is revoked while the page is open: back to signing in, told why.
        conn = await asyncpg.connect(fresh_database_url)
        try:
            await TokenStore(conn).revoke(tokens[SYSTEM].split(".")[0])
        finally:
            await conn.close()
        await expect(tracker.locator("#sign-in")).to_be_visible(timeout=5_000)
        await expect(tracker.locator("#token-error")).to_have_text(
            "You were signed out: the router no longer accepts your token. Sign in again."
        )
        assert await focused_id(tracker) == "token"
        assert inbox.errors == tracker.errors == []  # type: ignore[attr-defined]


# -- the provider inbox ---------------------------------------------------------------------------


async def test_a_new_offer_appears_within_2_s_and_is_announced_once(
    pages: str, tokens: dict[str, str], nc: Any, observer: Observer
) -> None:
    async with browser() as context:
        page = await open_page(context, f"{pages}/inbox")
        await sign_in(page, tokens[CCA])
        await expect(page.locator("#offers-empty")).to_be_visible()
        await page.focus("#sign-out")
        offer = await offer_to(nc, observer)
        assert offer.provider_id == CCA
        card = offer_card(page, offer)
        await expect(card).to_be_visible(timeout=LIVE_MS)
        await expect(page.locator("#offers-news")).to_have_text(
            f"New offer: client {offer.client_ref}."
        )
        await expect(card.locator(".time-left")).to_have_text(re.compile(r"^\d+ min left$"))
        await expect(card).to_contain_text("Resume writing, Interview skills")
        await expect(card).to_contain_text("Canadian Career Academy")
        await expect(card).to_contain_text("11.3 km")
        await expect(card).to_contain_text("Ontario Works office smiths-falls (ow-test)")
        # Refreshing every second neither moves the focus nor repeats the announcement.
        await page.evaluate(
            "window.__news = 0; new MutationObserver(() => window.__news++).observe("
            "document.getElementById('offers-news'), {childList: true, characterData: true,"
            " subtree: true})"
        )
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if "/api/v1/offers" in r.url else None)
        await until(lambda: len(polls) >= 3, what="three more polls of the offers")
        assert await focused_id(page) == "sign-out"
        assert await page.evaluate("window.__news") == 0
        second = await offer_to(nc, observer)
        await expect(offer_card(page, second)).to_be_visible(timeout=LIVE_MS)
        assert await focused_id(page) == "sign-out"
        assert await page.evaluate("window.__news") == 1  # one announcement, for the new offer
        assert page.errors == []  # type: ignore[attr-defined]


async def test_accept_by_keyboard_shows_accepted_in_the_tracker_within_2_s(
    pages: str, tokens: dict[str, str], nc: Any, observer: Observer
) -> None:
    offer = await offer_to(nc, observer)
    async with browser() as context:
        tracker = await open_page(context, f"{pages}/tracker")
        await sign_in(tracker, tokens[SYSTEM])
        row = referral_card(tracker, offer.referral_id)
        await expect(row).to_have_attribute("data-status", "offered")
        await expect(row.locator(".status-label")).to_have_text("Offered")

        inbox = await open_page(context, f"{pages}/inbox")
        await sign_in(inbox, tokens[CCA])
        await expect(offer_card(inbox, offer)).to_be_visible()
        posted: list[dict[str, str]] = []
        inbox.on("request", lambda r: posted.append(r.headers) if r.method == "POST" else None)
        await tab_to(inbox, f"accept-{offer.offer_id}")
        await inbox.keyboard.press("Enter")
        await said(inbox, SENT)
        # The tracker, polling on its own, shows the new status within 2 s.
        await expect(row).to_have_attribute("data-status", "accepted", timeout=LIVE_MS)
        await expect(row.locator(".status-label")).to_have_text("Accepted")
        await expect(row).to_contain_text("Canadian Career Academy, Carleton Place")
        # In the inbox the offer has become a case, and the status says so.
        await expect(case_card(inbox, offer.referral_id)).to_be_visible(timeout=LIVE_MS)
        await expect(offer_card(inbox, offer)).to_have_count(0)
        await expect(inbox.locator("#status")).to_have_text(
            f"Accepted: client {offer.client_ref} is now in your caseload."
        )
        assert len(posted) == 1
        uuid.UUID(posted[0]["idempotency-key"])  # one key per action, a UUID
        assert observer.statuses(offer.referral_id).count("accepted") == 1
        await screenshot(inbox, "inbox-accepted-en-desktop")
        assert inbox.errors == tracker.errors == []  # type: ignore[attr-defined]


async def test_a_retry_and_a_double_click_are_one_message(
    pages: str, tokens: dict[str, str], nc: Any, observer: Observer
) -> None:
    offer = await offer_to(nc, observer)
    async with browser() as context:
        inbox = await open_page(context, f"{pages}/inbox")
        await sign_in(inbox, tokens[CCA])
        keys: list[str] = []
        inbox.on(
            "request",
            lambda r: keys.append(r.headers["idempotency-key"]) if r.method == "POST" else None,
        )

        # The first try gets no answer (the network drops it): it may or may not have arrived.
        dropped: list[str] = []

        async def lost(route: Route) -> None:
            if dropped:
                await route.continue_()
                return
            dropped.append(route.request.url)
            await route.abort()

        await inbox.route("**/accept", lost)
        await inbox.click(f"#accept-{offer.offer_id}")
        await expect(inbox.locator(f"#offer-error-{offer.offer_id}")).to_have_text(
            "The router is not answering right now. This page will catch up when it does."
        )
        # The person tries again, with a double click: one more request, with the same key.
        await inbox.dblclick(f"#accept-{offer.offer_id}")
        await expect(case_card(inbox, offer.referral_id)).to_be_visible(timeout=LIVE_MS)
        assert len(keys) == 2, keys
        assert keys[0] == keys[1]
        view = await inbox.evaluate(
            "(path) => fetch(path, {headers: {Authorization: 'Bearer '"
            " + sessionStorage.getItem('eo-router-token')}}).then(r => r.json())",
            f"/api/v1/referrals/{offer.referral_id}",
        )
        assert [h["event"] for h in view["history"]] == ["receive", "offer", "accept"]


async def test_decline_with_a_reason_reroutes_to_the_next_provider(
    pages: str, tokens: dict[str, str], nc: Any, observer: Observer
) -> None:
    offer = await offer_to(nc, observer)
    async with browser() as context:
        cca = await open_page(context, f"{pages}/inbox")
        await sign_in(cca, tokens[CCA])
        ces = await open_page(context, f"{pages}/inbox")
        await sign_in(ces, tokens[CES])
        await expect(ces.locator("#offers-empty")).to_be_visible()

        # Keyboard alone: Decline opens the reason field, which is required.
        await tab_to(cca, f"decline-{offer.offer_id}")
        await cca.keyboard.press("Space")
        assert await focused_id(cca) == f"decline-reason-{offer.offer_id}"
        await expect(cca.locator(f"#decline-{offer.offer_id}")).to_have_attribute(
            "aria-expanded", "true"
        )
        await tab_to(cca, f"decline-send-{offer.offer_id}")
        await cca.keyboard.press("Enter")
        await expect(cca.locator(f"#decline-error-{offer.offer_id}")).to_have_text(
            "Give a reason for declining."
        )
        assert await focused_id(cca) == f"decline-reason-{offer.offer_id}"
        await no_violations(cca, "inbox, decline form with its error")
        await screenshot(cca, "inbox-decline-en-desktop")
        await cca.keyboard.type(DECLINE_REASON)
        await tab_to(cca, f"decline-send-{offer.offer_id}")
        await cca.keyboard.press("Enter")
        await said(cca, SENT)
        await expect(offer_card(cca, offer)).to_have_count(0, timeout=LIVE_MS)
        await expect(cca.locator("#status")).to_have_text(
            f"Declined: the offer for client {offer.client_ref} is closed."
        )

        second = await observer.until_offer(offer.referral_id, 2)
        assert second.provider_id == CES
        # The next provider's inbox shows it, without a reload.
        await expect(offer_card(ces, second)).to_be_visible(timeout=LIVE_MS)
        await expect(offer_card(ces, second)).to_contain_text(offer.client_ref)

        # The tracker tells the story: the decline with its reason, each decision explained.
        tracker = await open_page(context, f"{pages}/tracker")
        await sign_in(tracker, tokens[SYSTEM])
        row = referral_card(tracker, offer.referral_id)
        await tab_to(tracker, f"referral-{offer.referral_id}-toggle")
        await tracker.keyboard.press("Enter")
        history = tracker.locator(f"#referral-{offer.referral_id}-history > li")
        await expect(history).to_have_count(4)
        await expect(history.nth(2)).to_contain_text("Declined by the provider")
        await expect(history.nth(2)).to_contain_text("Reason: declined by")
        await expect(history.nth(2)).to_contain_text(DECLINE_REASON)
        await expect(history.nth(1)).to_contain_text("Why: Nearest suitable office.")
        await expect(history.nth(3)).to_contain_text("community-employment-services-perth")
        await expect(history.nth(3).locator(".explanation").first).to_contain_text("Why:")
        offers = tracker.locator(f"#referral-{offer.referral_id}-offers > li")
        await expect(offers).to_have_count(2)
        await expect(offers.nth(0)).to_have_attribute("data-state", "declined")
        await expect(offers.nth(1)).to_have_attribute("data-state", "open")
        await expect(row.locator(".status-label")).to_have_text("Offered")
        await no_violations(tracker, "tracker with a referral's history open")
        await screenshot(tracker, "tracker-history-en-desktop")
        for page in (cca, ces, tracker):
            assert page.errors == []  # type: ignore[attr-defined]


async def test_progress_to_completed_shows_in_the_tracker_and_frees_the_place(
    pages: str,
    tokens: dict[str, str],
    nc: Any,
    observer: Observer,
    router_settings: RouterSettings,
) -> None:
    before = await reserved(router_settings, CCA_SITE)
    offer = await accepted(nc, observer)
    assert await reserved(router_settings, CCA_SITE) == before + 1
    rid = offer.referral_id
    async with browser() as context:
        inbox = await open_page(context, f"{pages}/inbox")
        await sign_in(inbox, tokens[CCA])
        case = case_card(inbox, rid)
        await expect(case).to_have_attribute("data-status", "accepted")
        # Accepted: "Started" or "Not started"; "Completed" comes once started.
        await expect(inbox.locator(f"#progress-completed-{rid}")).to_be_hidden()
        await tab_to(inbox, f"progress-in_service-{rid}")
        await inbox.keyboard.press("Enter")
        assert await focused_id(inbox) == f"progress-note-{rid}"  # no code to choose
        await tab_to(inbox, f"progress-send-{rid}")
        await inbox.keyboard.press("Enter")
        await expect(case).to_have_attribute("data-status", "in_service", timeout=LIVE_MS)
        await expect(inbox.locator("#status")).to_have_text(
            f"Recorded for client {offer.client_ref}: In service."
        )

        tracker = await open_page(context, f"{pages}/tracker")
        await sign_in(tracker, tokens[SYSTEM])
        row = referral_card(tracker, rid)
        await expect(row).to_have_attribute("data-status", "in_service")

        await tab_to(inbox, f"progress-completed-{rid}")
        await inbox.keyboard.press("Space")
        assert await focused_id(inbox) == f"progress-code-{rid}"
        # Without an outcome the report is not sent.
        await tab_to(inbox, f"progress-send-{rid}")
        await inbox.keyboard.press("Enter")
        await expect(inbox.locator(f"#progress-error-{rid}")).to_have_text("Choose the outcome.")
        assert await focused_id(inbox) == f"progress-code-{rid}"
        await inbox.keyboard.press("ArrowDown")  # a select is keyboard-operable: first outcome
        await expect(inbox.locator(f"#progress-code-{rid}")).to_have_value("employed")
        await tab_to(inbox, f"progress-note-{rid}")
        await inbox.keyboard.type("Full-time role from week three")
        await no_violations(inbox, "inbox, progress form filled")
        await screenshot(inbox, "inbox-progress-en-desktop")
        await tab_to(inbox, f"progress-send-{rid}")
        await inbox.keyboard.press("Enter")
        # Completed leaves the caseload; the tracker shows it; the place is given back.
        await expect(case).to_have_count(0, timeout=LIVE_MS)
        await expect(row).to_have_attribute("data-status", "completed", timeout=LIVE_MS)
        await expect(row.locator(".status-label")).to_have_text("Completed")
        await tracker.click(f"#referral-{rid}-toggle")
        last = tracker.locator(f"#referral-{rid}-history > li").last
        await expect(last).to_contain_text("Completed")
        await expect(last).to_contain_text("Outcome or reason: Employed")
        assert await reserved(router_settings, CCA_SITE) == before
        # Closed: nothing left to cancel.
        await expect(tracker.locator(f"#cancel-{rid}")).to_be_hidden()
        assert inbox.errors == tracker.errors == []  # type: ignore[attr-defined]


# -- the referral tracker -------------------------------------------------------------------------


async def smaller_pages(route: Route) -> None:
    """The tracker with pages of 2 referrals, so "More" shows with few referrals."""
    response = await route.fetch()
    body = (await response.text()).replace('data-page-size="50"', 'data-page-size="2"')
    await route.fulfill(response=response, body=body)


async def test_tracker_filters_pages_and_cancels_by_keyboard(
    pages: str, tokens: dict[str, str], nc: Any, observer: Observer
) -> None:
    first = await offer_to(nc, observer)
    second = await offer_to(nc, observer)
    elsewhere = await offer_to(nc, observer, office="perth")
    async with browser() as context:
        await context.route("**/tracker", smaller_pages)
        page = await open_page(context, f"{pages}/tracker")
        await sign_in(page, tokens[SYSTEM])
        cards = page.locator("#referral-list > li")
        # Newest first, two at a time.
        await expect(cards).to_have_count(2)
        await expect(cards.nth(0)).to_have_id(f"referral-{elsewhere.referral_id}")
        await tab_to(page, "more")
        await page.keyboard.press("Enter")
        await expect(cards).to_have_count(3)
        await expect(cards.nth(2)).to_have_id(f"referral-{first.referral_id}")
        await expect(page.locator("#more")).to_be_hidden()
        await expect(page.locator("#status")).to_have_text("3 referrals shown.")

        # Filter by office, keyboard alone.
        await tab_to(page, "filter-office")
        await page.keyboard.type("perth")
        await page.keyboard.press("Enter")
        await expect(cards).to_have_count(1)
        await expect(cards.first).to_have_id(f"referral-{elsewhere.referral_id}")
        await expect(cards.first).to_contain_text("perth (ow-test)")
        # By status: none is accepted yet.
        await page.fill("#filter-office", "")
        await page.focus("#filter-status")
        await page.keyboard.press("ArrowDown")  # received
        await page.keyboard.press("ArrowDown")  # offered
        await expect(page.locator("#filter-status")).to_have_value("offered")
        await tab_to(page, "apply-filters")
        await page.keyboard.press("Enter")
        await expect(cards).to_have_count(2)  # two per page
        await page.select_option("#filter-status", "accepted")
        await page.click("#apply-filters")
        await expect(page.locator("#referrals-empty")).to_be_visible()
        # By the day they were referred (Ontario's day): today has them, tomorrow none.
        await page.select_option("#filter-status", "")
        today = ontario_today()
        await page.fill("#filter-from", today.isoformat())
        await page.fill("#filter-to", today.isoformat())
        await page.click("#apply-filters")
        await expect(cards).to_have_count(2)
        await page.fill("#filter-from", (today + datetime.timedelta(days=1)).isoformat())
        await page.fill("#filter-to", (today + datetime.timedelta(days=1)).isoformat())
        await page.click("#apply-filters")
        await expect(page.locator("#referrals-empty")).to_be_visible()
        await tab_to(page, "clear-filters")
        await page.keyboard.press("Enter")
        await expect(cards).to_have_count(2)

        # Cancel, keyboard alone, with its required reason.
        rid = second.referral_id
        await expect(cards.nth(1)).to_have_id(f"referral-{rid}")
        await tab_to(page, f"referral-{rid}-toggle")
        await page.keyboard.press("Enter")
        await expect(page.locator(f"#cancel-send-{rid}")).to_have_text("Cancel the referral")
        await tab_to(page, f"cancel-send-{rid}")
        await page.keyboard.press("Enter")
        await expect(page.locator(f"#cancel-error-{rid}")).to_have_text("Give a reason.")
        assert await focused_id(page) == f"cancel-reason-{rid}"
        await page.keyboard.type("Client found work on their own")
        await tab_to(page, f"cancel-send-{rid}")
        await page.keyboard.press("Enter")
        await said(page, SENT)
        row = referral_card(page, rid)
        await expect(row).to_have_attribute("data-status", "cancelled", timeout=LIVE_MS)
        await expect(page.locator("#status")).to_have_text(
            f"Client {second.client_ref}: the referral is now cancelled."
        )
        last = page.locator(f"#referral-{rid}-history > li").last
        await expect(last).to_contain_text("Cancelled by Ontario Works")
        await expect(last).to_contain_text("Client found work on their own")
        await expect(page.locator(f"#cancel-{rid}")).to_be_hidden()
        assert (await observer.until_terminal(rid)).status == "cancelled"
        assert page.errors == []  # type: ignore[attr-defined]


async def test_a_refused_write_shows_the_problem(
    pages: str, tokens: dict[str, str], nc: Any, observer: Observer
) -> None:
    """A 409 from the API (the offer closed meanwhile) is shown where the person acted."""
    offer = await offer_to(nc, observer)
    async with browser() as context:
        inbox = await open_page(context, f"{pages}/inbox")
        await sign_in(inbox, tokens[CCA])
        await expect(offer_card(inbox, offer)).to_be_visible()

        # The offer closes (answered elsewhere) before the page polls again.
        async def stale(route: Route) -> None:
            await route.fulfill(
                status=409,
                content_type="application/problem+json",
                body=json.dumps(
                    {
                        "title": "Conflict",
                        "status": 409,
                        "detail": "the offer is no longer open (it was declined)",
                        "errors": [],
                    }
                ),
            )

        await inbox.route("**/accept", stale)
        await inbox.click(f"#accept-{offer.offer_id}")
        error = inbox.locator(f"#offer-error-{offer.offer_id}")
        await expect(error).to_have_text("the offer is no longer open (it was declined)")
        await expect(error).to_have_attribute("role", "alert")


# -- every page, both languages, desktop and phone --------------------------------------------


async def test_every_page_with_data_in_both_languages_desktop_and_phone(
    pages: str, tokens: dict[str, str], nc: Any, observer: Observer
) -> None:
    """axe-core finds nothing, nothing overflows at 375 px, the actions are reachable; one
    screenshot of each state."""
    open_offer = await offer_to(nc, observer, needs=["job_search"], language="en")
    started = await accepted(nc, observer, in_service=True)
    async with browser() as context:
        inbox = await open_page(context, f"{pages}/inbox")
        await sign_in(inbox, tokens[CCA])
        await expect(offer_card(inbox, open_offer)).to_be_visible()
        await expect(case_card(inbox, started.referral_id)).to_be_visible()
        tracker = await open_page(context, f"{pages}/tracker")
        await sign_in(tracker, tokens[SYSTEM])
        await expect(referral_card(tracker, started.referral_id)).to_be_visible()
        await tracker.click(f"#referral-{started.referral_id}-toggle")
        history = tracker.locator(f"#referral-{started.referral_id}-history > li")
        await expect(history).to_have_count(4)  # received, offered, accepted, started
        await expect(tracker.locator(f"#cancel-send-{started.referral_id}")).to_have_text(
            "Withdraw the referral"
        )
        # The forms open, so they are checked too.
        await inbox.click(f"#decline-{open_offer.offer_id}")
        await inbox.click(f"#progress-completed-{started.referral_id}")

        for lang in ("en", "fr"):
            for page, name in ((inbox, "inbox"), (tracker, "tracker")):
                if await page.locator("html").get_attribute("lang") != lang:
                    await page.click("#language-toggle")
                await expect(page.locator("html")).to_have_attribute("lang", lang)
                await page.set_viewport_size(DESKTOP)
                await no_violations(page, f"{name} with data, {lang}, desktop")
                await screenshot(page, f"{name}-{lang}-desktop")
                await page.set_viewport_size(PHONE)
                await fits(page)
                await no_violations(page, f"{name} with data, {lang}, 375 px")
                await screenshot(page, f"{name}-{lang}-phone")
            for selector in (
                f"#accept-{open_offer.offer_id}",
                f"#decline-send-{open_offer.offer_id}",
                f"#progress-send-{started.referral_id}",
                "#sign-out",
            ):
                await within_screen(inbox, selector)
            for selector in (
                f"#cancel-send-{started.referral_id}",
                "#apply-filters",
                "#language-toggle",
            ):
                await within_screen(tracker, selector)

        # French, all the way through: labels from the shared tables.
        case = case_card(inbox, started.referral_id)
        await expect(inbox.locator("h1")).to_have_text("Boîte de réception des fournisseurs")
        await expect(case.locator(".badge")).to_have_text("En service")
        await expect(offer_card(inbox, open_offer)).to_contain_text("Recherche d'emploi")
        await expect(offer_card(inbox, open_offer).locator(".time-left")).to_have_text(
            re.compile(r"^Il reste \d+ min$")
        )
        outcomes = inbox.locator(f"#progress-code-{started.referral_id} option")
        await expect(outcomes.nth(1)).to_have_text("En emploi")
        await expect(referral_card(tracker, started.referral_id).locator(".badge")).to_have_text(
            "En service"
        )
        for page in (inbox, tracker):
            assert page.errors == []  # type: ignore[attr-defined]


# -- the shared language switch, the links and the labels -----------------------------------


async def test_language_travels_between_the_three_pages(
    router_settings: RouterSettings, observer: Observer, fresh_database_url: str
) -> None:
    """The office finder links to the router's pages and they link back, each link carrying
    the language; ?lang= wins over what the browser prefers."""
    router_port = free_port()
    directory = DirectorySettings(
        database_url=fresh_database_url, router_url=f"http://127.0.0.1:{router_port}/"
    )
    async with serving(create_directory_app(directory)) as (finder_url, _):
        router = msgspec.structs.replace(router_settings, finder_url=f"{finder_url}/")
        async with (
            serving(create_router_app(router), port=router_port) as (router_url, _),
            browser(locale="fr-CA") as context,
        ):
            finder = await open_page(context, finder_url)
            await expect(finder.locator("html")).to_have_attribute("lang", "fr")
            inbox_link = finder.locator("#inbox-link")
            assert await inbox_link.get_attribute("href") == f"{router_url}/inbox?lang=fr"
            await finder.click("#language-toggle")
            assert await inbox_link.get_attribute("href") == f"{router_url}/inbox?lang=en"
            await inbox_link.click()
            await finder.wait_for_url(f"{router_url}/inbox?lang=en")
            # The browser prefers French; the link said English.
            await expect(finder.locator("html")).to_have_attribute("lang", "en")
            await expect(finder.locator("h1")).to_have_text("Provider inbox")
            await finder.click("#language-toggle")
            await expect(finder.locator("h1")).to_have_text("Boîte de réception des fournisseurs")
            assert finder.url == f"{router_url}/inbox?lang=fr"  # a reload keeps it
            await finder.click("#tracker-link")
            await finder.wait_for_url(f"{router_url}/tracker?lang=fr")
            await expect(finder.locator("h1")).to_have_text("Suivi des aiguillages")
            await finder.click("#finder-link")
            await finder.wait_for_url(f"{finder_url}/?lang=fr")
            await expect(finder.locator("#search-button")).to_have_text("Rechercher")


async def test_the_pages_labels_match_their_sources(pages: str) -> None:
    """The code names copied into terms.js are those of the seed, contracts/vocabulary.py and
    contracts/referrals.py, so a new code or a renamed label cannot drift unnoticed."""
    seed = json.loads(SEED.read_text())
    async with browser() as context:
        page = await open_page(context, f"{pages}/inbox")
        names = await page.evaluate("window.EOTerms.NAMES")
    for kind, table in (("services", "service"), ("accessibility", "accessibility")):
        expected = {term["code"]: [term["name_en"], term["name_fr"]] for term in seed[kind]}
        assert names[table] == expected, kind
    assert list(names["status"]) == list(ReferralStatus.__args__)  # type: ignore[attr-defined]
    for status, terms in PROGRESS_TERMS.items():
        expected = {term.code: [term.name_en, term.name_fr] for term in terms}
        assert names["progress"].get(status, {}) == expected, status


async def test_pages_are_public_static_and_locked_down(pages: str) -> None:
    async with browser() as context:
        page = await context.new_page()
        for path in ("/inbox", "/tracker", "/common/eo.css", "/common/lang.js", "/static/inbox.js"):
            response = await page.request.get(f"{pages}{path}")
            assert response.status == 200, path
        response = await page.request.get(f"{pages}/inbox")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "connect-src 'self'" in csp
        assert "__FINDER_URL__" not in await response.text()
        assert 'href="http://127.0.0.1:8000/"' in await response.text()
        # No referral data without a token.
        assert (await page.request.get(f"{pages}/api/v1/offers")).status == 401
