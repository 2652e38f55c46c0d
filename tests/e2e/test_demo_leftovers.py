"""`make run` on a kept state folder: the demo calls off the referrals an earlier run left open
(listed through the router's API with the eo-demo token, called off on eo-demo's cancel
subject), so the sample sites' places do not fill up run after run."""

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import nats
import pytest

from contracts.referrals import Source
from contracts.subjects import requested_subject
from services.demo import DEMO_SYSTEM, call_off_leftovers
from services.infra.embedded import Servers
from services.router.app import create_app
from services.router.settings import RouterSettings
from tests.e2e.test_office_finder import serving
from tests.referrals import Observer, make_request, publish

pytestmark = pytest.mark.e2e


async def test_an_earlier_runs_open_referrals_are_called_off(
    router_settings: RouterSettings,
    observer: Observer,
    nc: Any,
    servers: Servers,
    issue_token: Callable[..., Awaitable[str]],
) -> None:
    token = await issue_token("ow", system=DEMO_SYSTEM)
    left = [
        msgspec.structs.replace(
            make_request(), source=Source(system=DEMO_SYSTEM, office_id="lanark")
        )
        for _ in range(2)
    ]
    async with serving(create_app(router_settings)) as (url, _stop):
        for request in left:
            await publish(nc.jetstream(), requested_subject(DEMO_SYSTEM), request)
            await observer.until_offer(request.referral_id, 1)
        # Another system's open referral is not the demo's to call off (nor to see).
        other = make_request()
        await publish(nc.jetstream(), requested_subject(other.source.system), other)
        await observer.until_offer(other.referral_id, 1)

        ow = await nats.connect(**servers.nats_connect_options(DEMO_SYSTEM))
        try:
            note = await call_off_leftovers(ow, url, token)
            assert note is not None
            assert "called off 2 referrals" in note
            for request in left:
                assert (await observer.until_terminal(request.referral_id)).status == "cancelled"
            # Nothing is left open: a second call has nothing to do.
            assert await call_off_leftovers(ow, url, token) is None
        finally:
            await ow.close()
        assert observer.last_status(other.referral_id).status == "offered"  # type: ignore[union-attr]
