"""The router's pure edges: parsing inbound bytes, settings, stream/consumer config, SQL shape."""

import asyncio
import uuid
from typing import Any

import msgspec
import pytest

from contracts.codec import encode
from contracts.common import ClientLocation
from contracts.referrals import ReferralRequested, ReferralStatusChanged
from services.client import build_request, describe
from services.directory.candidates import Criteria
from services.directory.site_query import exclusions_query
from services.router.consumer import BatchFlow, Consumer, InvalidMessage, parse
from services.router.settings import RouterSettings
from services.router.stream import consumer_config, stream_config
from services.router.transient import nak_delay
from tests.referrals import cancel, make_request

REQUEST = make_request()
VALID = encode(REQUEST)


def test_parse_accepts_each_message_on_its_subject() -> None:
    assert parse("referral.requested.ow-test", VALID) == (REQUEST, "ow-test")
    message = cancel(REQUEST.referral_id)
    assert parse("referral.cancel.ow-test", encode(message)) == (message, "ow-test")
    response = msgspec.json.encode(
        {
            "type": "referral.response.v1",
            "message_id": str(uuid.uuid4()),
            "referral_id": str(REQUEST.referral_id),
            "offer_id": str(uuid.uuid4()),
            "decision": "decline",
        }
    )
    event, provider = parse("referral.response.ontrac-employment-resource-services", response)
    assert provider == "ontrac-employment-resource-services"
    assert event.referral_id == REQUEST.referral_id


@pytest.mark.parametrize(
    ("subject", "payload", "error"),
    [
        ("referral.requested.ow-test", b"{not json", "not a JSON message"),
        ("referral.requested.ow-test", b'{"type": "referral.unknown.v9"}', "Invalid value"),
        ("referral.requested.ow-test", VALID.replace(b'"needs":', b'"wants":'), "`needs`"),
        (
            "referral.requested.ow-test",
            VALID.replace(b'"resume_writing"', b'"juggling"'),
            "needs[0]",
        ),
        ("referral.requested.ow-test", encode(cancel(uuid.uuid4())), "does not belong on"),
        ("referral.cancel.ow-test", VALID, "does not belong on"),
        ("referral.requested", VALID, "not an inbound subject"),
        ("referral.progress.ow-test", VALID, "does not belong on"),
        ("referral.requested.ow-test", VALID.replace(b'"Almonte"', b'"Alm\\u0000onte"'), "NUL"),
        ("referral.response.Bad_Id", VALID, "not a provider id"),
        ("referral.response", VALID, "not an inbound subject"),
    ],
)
def test_parse_names_what_is_wrong(subject: str, payload: bytes, error: str) -> None:
    with pytest.raises(InvalidMessage) as raised:
        parse(subject, payload)
    assert error in str(raised.value)


def test_out_of_range_values_are_invalid() -> None:
    far_north = encode(make_request(location=ClientLocation(lat=45.0, lon=-76.0))).replace(
        b'"lat":45.0', b'"lat":91.0'
    )
    with pytest.raises(InvalidMessage, match=r"client\.location\.lat"):
        parse("referral.requested.ow-test", far_north)


def test_stream_and_consumer_follow_the_design() -> None:
    settings = RouterSettings(database_url="postgresql://x", nats_url="nats://x")
    stream = stream_config(settings)
    assert stream.subjects == ["referral.>"]
    assert stream.storage is not None
    assert stream.storage.value == "file"
    assert stream.duplicate_window >= 120
    consumer = consumer_config(settings)
    assert consumer.durable_name == "router"
    assert consumer.filter_subjects == [
        "referral.requested.*",
        "referral.cancel.*",
        "referral.response.*",
        "referral.progress.*",
    ]
    assert consumer.ack_policy is not None
    assert consumer.ack_policy.value == "explicit"
    assert consumer.max_deliver == 200
    assert consumer.backoff == [2.0, 5.0, 10.0, 30.0, 60.0]


def test_stream_replicas_default_to_one_and_follow_router_stream_replicas() -> None:
    single = RouterSettings(database_url="postgresql://x", nats_url="nats://x")
    assert stream_config(single).num_replicas == 1  # one nats-server: unchanged
    cluster = RouterSettings.from_env(
        "postgresql://x", "nats://x", env={"ROUTER_STREAM_REPLICAS": "3"}
    )
    assert cluster.stream_replicas == 3
    assert stream_config(cluster).num_replicas == 3
    assert stream_config(cluster).storage is not None
    for wrong in ("0", "6", "three"):
        with pytest.raises(msgspec.ValidationError, match="stream_replicas"):
            RouterSettings.from_env(
                "postgresql://x", "nats://x", env={"ROUTER_STREAM_REPLICAS": wrong}
            )


def test_nak_delay_walks_the_backoff_and_stays_at_its_end() -> None:
    settings = RouterSettings(database_url="x", nats_url="x", backoff_s=(1.0, 3.0))
    assert [nak_delay(settings, n) for n in (1, 2, 3, 50)] == [1.0, 3.0, 3.0, 3.0]


def test_settings_from_environment() -> None:
    env = {"ROUTER_PORT": "9001", "ROUTER_BACKOFF_S": "1, 2.5", "ROUTER_OFFER_TIMEOUT_S": "3"}
    settings = RouterSettings.from_env("postgresql://db", "nats://n", env)
    assert settings.port == 9001
    assert settings.backoff_s == (1.0, 2.5)
    assert settings.offer_timeout_s == 3.0
    with pytest.raises(msgspec.ValidationError, match="port"):
        RouterSettings.from_env("db", "n", {"ROUTER_PORT": "eighty"})


def test_exclusion_counts_attribute_each_site_to_its_first_failed_rule() -> None:
    where = Criteria(
        needs=["job_search"], language="fr", max_distance_km=10, exclude_sites=["a"]
    ).site_filter()
    sql, args = exclusions_query(45.0, -76.0, where, within_km=12.0, scan=1000)
    order = [sql.index(f"'{rule}'") for rule in ("inactive", "not_accepting_or_full", "services")]
    assert order == sorted(order)
    assert sql.index("'distance'") < sql.index("'already_offered'")
    assert "LIMIT $" in sql
    assert args[-1] == 1000


def test_build_request_validates_like_the_wire() -> None:
    request = build_request(
        location=ClientLocation(community="Almonte"), needs=["job_search"], language="en"
    )
    assert request.client.location.community == "Almonte"
    with pytest.raises(msgspec.ValidationError, match="needs"):
        build_request(location=ClientLocation(community="Almonte"), needs=["x"], language="en")


def test_describe_says_where_and_why() -> None:
    offer = msgspec.convert(
        {
            "type": "referral.status.v1",
            "message_id": str(uuid.uuid4()),
            "referral_id": "0b8e2f4a-6c1d-4f3e-8a7b-9d2c1e0f5a64",
            "status": "declined",
            "at": "2026-11-21T15:04:05Z",
            "attempt": 1,
            "site_id": "canadian-career-academy-carleton-place",
            "distance_km": 11.33,
            "reason": "declined by canadian-career-academy: full",
        },
        type=ReferralStatusChanged,
    )
    line = describe(offer)
    assert line.startswith("referral 0b8e2f4a  declined")
    assert "(11.3 km)" in line
    assert line.endswith("- declined by canadian-career-academy: full")


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    text = VALID.replace(b'"Almonte"', b'"Alm\\\\u0000onte"')  # the text is Alm\u0000onte
    event, _ = parse("referral.requested.ow-test", text)
    assert isinstance(event, ReferralRequested)
    assert event.client.location.community == "Alm\\u0000onte"


async def test_the_consume_loop_outlives_a_batch_that_fails() -> None:
    """A batch that raises (a bug, a connection broken mid-way by a database restart) is
    logged and left to JetStream's redelivery; the loop goes on fetching. It used to end the
    consumer task for good while /ready still said ready."""
    stop = asyncio.Event()

    class Subscription:
        async def fetch(self, batch: int, timeout: float) -> list[object]:  # noqa: ASYNC109 (nats-py's signature)
            return [object()]

        async def unsubscribe(self) -> None:
            pass

    class JetStream:
        async def pull_subscribe_bind(self, **_: object) -> Subscription:
            return Subscription()

    class Failing(Consumer):
        batches = 0

        async def handle_batch(self, msgs: object, flow: object) -> bool:
            self.batches += 1
            if self.batches == 1:
                raise RuntimeError("cannot switch to state 15; another operation is in progress")
            stop.set()
            return True

    settings = RouterSettings(database_url="postgresql://x", nats_url="nats://x")
    consumer = Failing(None, JetStream(), settings, None, None, None)  # type: ignore[arg-type]
    await asyncio.wait_for(consumer.consume(stop), timeout=10)
    assert consumer.batches == 2


async def test_a_committed_batch_is_finished_without_waiting_for_the_next() -> None:
    """The batch path publishes and settles a batch as soon as it commits (after the batch
    before it), not when the consumer next comes round: a lone referral's offer would
    otherwise wait for the next fetch (up to ``fetch_timeout_s``)."""
    finished: list[str] = []
    each = asyncio.Event()

    class Finisher:
        async def finish(self, batch: object) -> None:
            finished.append(str(batch))
            each.set()

    async def close(name: str) -> Any:
        await asyncio.sleep(0)
        return name

    flow = BatchFlow()
    for name in ("first", "second"):
        each.clear()
        flow.close(Finisher(), close(name))  # type: ignore[arg-type]
        await asyncio.wait_for(each.wait(), timeout=5)
        assert flow.committing is not None  # nobody asked for it: it finished by itself
    assert finished == ["first", "second"]
