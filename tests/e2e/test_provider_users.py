"""A provider added through the directory's API gets its own NATS user and reads its offers as
itself (DESIGN.md section 7): the sync of services/nats_users.py, run once here (``eo run``
runs it every EO_NATS_USER_SYNC_S), on the session's embedded nats-server.
"""

import uuid

import asyncpg
import nats
import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from contracts.codec import decode_outbound
from contracts.referrals import ReferralOffered
from contracts.subjects import STREAM, provider_durable
from services.infra.embedded import Servers
from services.infra.nats_auth import MissingCredentials, provider_user_name
from services.nats_users import add_provider_users
from tests.referrals import CORE_NEEDS, Observer, make_request, send_request

pytestmark = pytest.mark.e2e

#: Almonte, where make_request's clients live: a site here is nearer than any of the seed's.
ALMONTE = {"lat": 45.2299, "lon": -76.1959}


async def test_a_provider_added_through_the_api_reads_its_offer_as_itself(
    servers: Servers,
    client: AsyncTestClient,
    admin: dict[str, str],
    router: AsyncTestClient,
    observer: Observer,
    nc: NatsClient,
    fresh_database_url: str,
) -> None:
    # Unique on the session's nats-server, which keeps the users other tests added.
    provider_id = f"almonte-works-{uuid.uuid4().hex[:8]}"
    site_id = f"{provider_id}-mill-street"
    provider = {"id": provider_id, "name": "Almonte Works"}
    created = await client.post("/api/v1/providers", json=provider, headers=admin)
    assert created.status_code == 201, created.text
    site = {
        "id": site_id,
        "provider_id": provider_id,
        "name": "Almonte Works, Mill Street",
        "address": {"address_1": "1 Mill Street", "city": "Almonte"},
        **ALMONTE,
        "services": CORE_NEEDS,
    }
    created = await client.post("/api/v1/sites", json=site, headers=admin)
    assert created.status_code == 201, created.text
    user = provider_user_name(provider_id)
    with pytest.raises(MissingCredentials):
        servers.nats_connect_options(user)  # no login yet: nobody could read its offers

    assert servers.embedded_nats is not None
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await add_provider_users(servers.embedded_nats, conn) == [provider_id]
        assert await add_provider_users(servers.embedded_nats, conn) == []  # nothing new
    finally:
        await conn.close()

    request = make_request()
    await send_request(nc.jetstream(), request)
    seen = await observer.until_offer(request.referral_id, 1)
    assert (seen.provider_id, seen.site_id) == (provider_id, site_id)

    # The provider, as its own user, from its own consumer (the router created it before
    # publishing the offer).
    as_provider = await nats.connect(**servers.nats_connect_options(user))
    try:
        sub = await as_provider.jetstream().pull_subscribe_bind(
            durable=provider_durable(provider_id), stream=STREAM
        )
        [message] = await sub.fetch(1, timeout=5)
        offer = decode_outbound(message.data)
        assert isinstance(offer, ReferralOffered)
        assert (offer.referral_id, offer.offer_id) == (request.referral_id, seen.offer_id)
        assert offer.distance_km == pytest.approx(0, abs=0.1)
        await message.ack_sync(timeout=5)
    finally:
        await as_provider.close()
