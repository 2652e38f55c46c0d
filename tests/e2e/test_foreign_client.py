"""A client no one on the project wrote: plain JSON and nats-py, the published JSON Schemas
(``contracts/schemas/``) and the subjects of the AsyncAPI document, connected with the parties'
own NATS logins, runs the whole loop against the running router, and every message it
receives validates against the published schemas (issue 14's "done when").

Nothing here imports ``contracts`` or ``services`` message types: what an integrator has is
the schema files, the AsyncAPI document and a login.
"""

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from services.infra.embedded import Servers
from tests.waits import until

pytestmark = pytest.mark.e2e

SCHEMAS = Path(__file__).parents[2] / "contracts" / "schemas"
SYSTEM = "ow-lanark"  # an OW system the embedded server has a login for
CCA = "canadian-career-academy"
CES = "community-employment-services"


def schema_for(message_type: str) -> dict[str, Any]:
    """The published schema of a message, found the way an integrator would: the AsyncAPI
    document's message named ``message_type``, and the schema file its payload refers to."""
    asyncapi = json.loads((SCHEMAS / "asyncapi.json").read_text())
    for message in asyncapi["components"]["messages"].values():
        if message["name"] == message_type:
            schema: dict[str, Any] = json.loads((SCHEMAS / message["payload"]["$ref"]).read_text())
            return schema
    raise AssertionError(f"no published schema for {message_type}")


def subject_of(channel: str, **parameters: str) -> str:
    """The address of the AsyncAPI document's ``referral<Channel>`` with its parameters."""
    asyncapi = json.loads((SCHEMAS / "asyncapi.json").read_text())
    address: str = asyncapi["channels"][f"referral{channel.title()}"]["address"]
    for name, value in parameters.items():
        address = address.replace("{" + name + "}", value)
    assert "{" not in address, address
    return address


class Party:
    """One party's live subscriptions; every message it receives is checked against the
    published schema of its ``type``."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.invalid: list[str] = []

    async def on(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        try:
            jsonschema.validate(body, schema_for(body["type"]))
        except (jsonschema.ValidationError, AssertionError) as exc:
            self.invalid.append(f"{msg.subject}: {exc}")
        self.received.append(body)

    def find(self, **fields: Any) -> dict[str, Any] | None:
        return next(
            (m for m in self.received if all(m.get(k) == v for k, v in fields.items())), None
        )


@pytest.fixture
async def connect(servers: Servers) -> AsyncIterator[Any]:
    opened: list[NatsClient] = []

    async def as_user(user: str) -> NatsClient:
        connection = await nats.connect(**servers.nats_connect_options(user))
        opened.append(connection)
        return connection

    yield as_user
    for connection in opened:
        await connection.close()


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")


def request(community: str) -> dict[str, Any]:
    return {
        "type": "referral.requested.v1",
        "message_id": str(uuid.uuid4()),
        "referral_id": str(uuid.uuid4()),
        "requested_at": now(),
        "source": {"system": SYSTEM, "office_id": "smiths-falls"},
        "client": {
            "client_ref": f"c-{uuid.uuid4().hex[:6]}",
            "location": {"community": community},
            "language": "en",
            "eligibility": ["ow_recipient"],
        },
        "needs": ["resume_writing", "interview_skills"],
    }


async def send(nc: NatsClient, subject: str, body: dict[str, Any]) -> None:
    schema = schema_for(body["type"])
    jsonschema.validate(body, schema)  # what we send is what the contract says
    headers = {"Nats-Msg-Id": body["message_id"]}
    await nc.jetstream().publish(subject, json.dumps(body).encode(), headers=headers)


async def test_a_foreign_client_runs_the_whole_loop_from_the_published_contract(
    router, connect
) -> None:
    ow, cca, ces = (
        await connect(SYSTEM),
        await connect(f"provider-{CCA}"),
        await connect(f"provider-{CES}"),
    )
    parties = {"ow": Party(), CCA: Party(), CES: Party()}
    await ow.subscribe(subject_of("status", system=SYSTEM), cb=parties["ow"].on)
    for provider, nc in ((CCA, cca), (CES, ces)):
        for channel in ("offered", "notice"):
            await nc.subscribe(subject_of(channel, provider_id=provider), cb=parties[provider].on)
    await ow.flush()

    async def answer(nc: NatsClient, provider: str, offer: dict[str, Any], decision: str) -> None:
        body = {
            "type": "referral.response.v1",
            "message_id": str(uuid.uuid4()),
            "referral_id": offer["referral_id"],
            "offer_id": offer["offer_id"],
            "decision": decision,
        }
        await send(nc, subject_of("response", provider_id=provider), body)

    async def report(nc: NatsClient, provider: str, rid: str, status: str, code: Any) -> None:
        body = {
            "type": "referral.progress.v1",
            "message_id": str(uuid.uuid4()),
            "referral_id": rid,
            "status": status,
            "occurred_at": now(),
        }
        if code is not None:
            body["code"] = code
        await send(nc, subject_of("progress", provider_id=provider), body)

    async def status(rid: str, value: str) -> dict[str, Any]:
        found = await until(
            lambda: parties["ow"].find(referral_id=rid, status=value),
            within=20,
            what=f"status {value} of {rid}",
        )
        assert found is not None
        return found

    async def offer_to(provider: str, rid: str) -> dict[str, Any]:
        found = await until(
            lambda: parties[provider].find(type="referral.offered.v1", referral_id=rid),
            within=20,
            what=f"an offer of {rid} to {provider}",
        )
        assert found is not None
        return found

    # 1. request, offer, accept, in service, completed
    first = request("Almonte")
    await send(ow, subject_of("requested", system=SYSTEM), first)
    rid = first["referral_id"]
    offer = await offer_to(CCA, rid)
    assert offer["source"] == first["source"]
    await answer(cca, CCA, offer, "accept")
    await status(rid, "accepted")
    await report(cca, CCA, rid, "in_service", None)
    await status(rid, "in_service")
    await report(cca, CCA, rid, "completed", "employed")
    assert (await status(rid, "completed"))["code"] == "employed"

    # 2. decline and re-route to the next site
    second = request("Almonte")
    await send(ow, subject_of("requested", system=SYSTEM), second)
    await answer(cca, CCA, await offer_to(CCA, second["referral_id"]), "decline")
    rerouted = await offer_to(CES, second["referral_id"])
    assert rerouted["attempt"] == 2

    # 3. cancel before acceptance: the provider holding the offer is told
    cancel = {
        "type": "referral.cancel.v1",
        "message_id": str(uuid.uuid4()),
        "referral_id": second["referral_id"],
        "reason": "the client found work",
    }
    await send(ow, subject_of("cancel", system=SYSTEM), cancel)
    await status(second["referral_id"], "cancelled")
    told = await until(
        lambda: parties[CES].find(type="referral.notice.v1", kind="offer_cancelled"), within=20
    )
    assert told is not None

    # 4. withdraw after acceptance: the provider holding the referral is told
    third = request("Perth")
    await send(ow, subject_of("requested", system=SYSTEM), third)
    await answer(ces, CES, await offer_to(CES, third["referral_id"]), "accept")
    await status(third["referral_id"], "accepted")
    withdraw = dict(cancel, message_id=str(uuid.uuid4()), referral_id=third["referral_id"])
    await send(ow, subject_of("cancel", system=SYSTEM), withdraw)
    await status(third["referral_id"], "withdrawn")
    assert await until(
        lambda: parties[CES].find(type="referral.notice.v1", kind="referral_withdrawn"),
        within=20,
    )

    await asyncio.sleep(0)  # let the last callbacks finish before counting
    assert [p.invalid for p in parties.values()] == [[], [], []]
    assert len(parties["ow"].received) >= 12  # every status event of the four referrals
    assert len(parties[CCA].received) >= 2  # two offers
    assert len(parties[CES].received) >= 4  # two offers, two notices
