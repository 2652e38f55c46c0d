"""Privacy of the provider inbox and the referral tracker (issue 15): everything the pages
send and receive in a real browser, while a provider accepts a careless referral and OW follows
it, carries no personal data, goes nowhere but the router, and never puts the token in a URL.

The referral is sent with personal data in fields the contract does not have (as
``test_privacy`` does for events and logs); the router drops them at its edge, so the pages can
only show the opaque ``client_ref``. The scan is the same as ``test_privacy``'s.
"""

import json
import uuid
from typing import Any

import pytest
from playwright.async_api import Error as PlaywrightError, Page, Request, expect

from contracts.subjects import requested_subject
from tests.e2e.test_office_finder import browser
from tests.e2e.test_privacy import EMAIL, NAMES, PHONE, careless_request, personal_data
from tests.e2e.test_router_pages import (  # noqa: F401 (fixtures)
    case_card,
    open_page,
    pages,
    referral_card,
    sign_in,
    tokens,
)
from tests.referrals import CCA, SYSTEM, Observer, publish

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


class Traffic:
    """Every request a page made: its URL, headers and body, and the response's body."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []

    def watch(self, page: Page) -> None:
        page.on("requestfinished", self._finished)

    async def _finished(self, request: Request) -> None:
        response = await request.response()
        body = b""
        if response is not None:
            try:
                body = await response.body()
            except PlaywrightError:  # a redirect or an aborted load has no body
                body = b""
        self.exchanges.append(
            {
                "url": request.url,
                "method": request.method,
                "headers": await request.all_headers(),
                "sent": request.post_data or "",
                "received": body.decode(errors="replace"),
            }
        )

    def text(self) -> str:
        return json.dumps([{k: v for k, v in e.items() if k != "headers"} for e in self.exchanges])


async def test_the_pages_traffic_carries_no_personal_data(
    pages: str,  # noqa: F811 (fixture)
    tokens: dict[str, str],  # noqa: F811 (fixture)
    nc: Any,
    observer: Observer,
) -> None:
    careless = careless_request("Almonte")
    careless["source"]["system"] = SYSTEM
    await publish(
        nc.jetstream(),
        requested_subject(SYSTEM),
        json.dumps(careless).encode(),
        msg_id=careless["message_id"],
    )
    referral_id = careless["referral_id"]
    offer = await observer.until_offer(uuid.UUID(referral_id), 1)
    assert offer.provider_id == CCA

    traffic = Traffic()
    async with browser() as context:
        inbox = await open_page(context, f"{pages}/inbox")
        traffic.watch(inbox)
        await sign_in(inbox, tokens[CCA])
        await inbox.click(f"#accept-{offer.offer_id}")
        await expect(case_card(inbox, offer.referral_id)).to_be_visible()

        tracker = await open_page(context, f"{pages}/tracker")
        traffic.watch(tracker)
        await sign_in(tracker, tokens[SYSTEM])
        row = referral_card(tracker, offer.referral_id)
        await expect(row).to_have_attribute("data-status", "accepted")
        await row.get_by_role("button", name="Show history").click()
        await expect(row).to_contain_text("Accepted")

    text = traffic.text()
    # The scan saw the pages' data (the client_ref, the offer), so finding nothing means
    # something: the personal data sent in the careless fields never reached a page.
    assert careless["client"]["client_ref"] in text
    assert str(offer.offer_id) in text
    assert len(traffic.exchanges) > 5
    assert personal_data(text) == []
    for value in (*NAMES, EMAIL, PHONE):
        assert value not in text
    # Only the router is asked (no third party, no CDN), and the token travels only in the
    # Authorization header: never in a URL, a body or a response.
    assert {e["url"].split("/")[2] for e in traffic.exchanges} == {pages.split("/")[2]}
    for token in tokens.values():
        assert token not in text
    authorized = [e for e in traffic.exchanges if "authorization" in e["headers"]]
    assert authorized
    assert all(e["url"].startswith(f"{pages}/api/v1/") for e in authorized)
