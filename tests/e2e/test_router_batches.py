"""The batch-native router (issue 16): a fetched batch is one transaction, and a message that
fails does not fail its neighbours; it is retried alone, with the later messages of its
referral held back so one referral's messages stay in stream order."""

import uuid
from typing import Any

import msgspec
import pytest

from contracts.referrals import ReferralRequested
from services.router import consumer, handlers
from services.router.settings import RouterSettings
from services.router.stream import set_up_stream
from tests.conftest import router_client
from tests.referrals import Observer, cancel, make_request, send_cancel, send_request

pytestmark = pytest.mark.e2e


async def test_a_failing_message_is_retried_alone_and_its_referral_keeps_its_order(
    router_settings: RouterSettings,
    observer: Observer,
    nc: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = msgspec.structs.replace(router_settings, transaction="batch", backoff_s=(0.5,))
    js = nc.jetstream()
    await set_up_stream(js, settings)
    first, unlucky, last = make_request(), make_request(), make_request()
    failures: list[uuid.UUID] = []
    handle_request = handlers.on_requested

    async def once_broken(msg: ReferralRequested, system: str, **kw: Any) -> Any:
        if msg.referral_id == unlucky.referral_id and not failures:
            failures.append(msg.referral_id)
            raise RuntimeError("a bug that strikes once")
        return await handle_request(msg, system, **kw)

    monkeypatch.setattr(consumer, "on_requested", once_broken)
    # All four wait in the stream before the router starts, so one fetch takes them together.
    for request in (first, unlucky):
        await send_request(js, request)
    await send_cancel(js, cancel(unlucky.referral_id, "the client found work"))
    await send_request(js, last)

    async with router_client(settings):
        # The neighbours were handled in the batch the failure was in...
        for request in (first, last):
            offered = await observer.until_status(request.referral_id, "offered")
            assert offered.attempt == 1
        # ...and the unlucky referral, retried alone, was offered and then cancelled, in its
        # stream order (the cancel was held back with it, not handled before the request).
        assert (await observer.until_terminal(unlucky.referral_id)).status == "cancelled"
    assert failures == [unlucky.referral_id]
    assert observer.statuses(unlucky.referral_id) == ["received", "offered", "cancelled"]
    for request in (first, last):
        assert observer.statuses(request.referral_id) == ["received", "offered"]
