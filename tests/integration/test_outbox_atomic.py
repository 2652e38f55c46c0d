"""The outbox published as JetStream atomic batches (issue 16), against the real nats-server:
one batch's rows are stored together and in order, a repeat is dropped by its Nats-Msg-Id, and
a stream that refuses atomic batches still gets every row, one publish each."""

import uuid
from typing import Any

import pytest
from nats.js.api import StreamConfig

from contracts.subjects import STREAM, offered_subject, status_subject
from services.router.model import OutboxRow
from services.router.publisher import OutboxPublisher
from services.router.settings import RouterSettings
from services.router.stream import set_up_stream, stream_config
from tests.referrals import delete_stream

pytestmark = pytest.mark.integration


def rows(n: int) -> list[OutboxRow]:
    subjects = [status_subject("ow-test"), offered_subject("canadian-career-academy")]
    return [
        OutboxRow(
            id=i,
            message_id=uuid.uuid4(),
            subject=subjects[i % 2],
            payload=f'{{"n": {i}}}'.encode(),
        )
        for i in range(1, n + 1)
    ]


async def stored(js: Any) -> list[tuple[str, bytes, str]]:
    """Every message in the stream, in order: subject, payload, Nats-Msg-Id."""
    info = await js.stream_info(STREAM)
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM, seq)
        found.append((msg.subject, msg.data, (msg.headers or {}).get("Nats-Msg-Id", "")))
    return found


async def test_a_batch_is_stored_in_order_and_a_repeat_is_dropped(
    nc: Any, router_settings: RouterSettings
) -> None:
    await delete_stream(nc)
    js = nc.jetstream()
    await set_up_stream(js, router_settings)
    assert (await js.stream_info(STREAM)).config.allow_atomic is True
    batch = rows(7)
    publisher = OutboxPublisher(js, nc)
    assert await publisher.publish_atomic(batch) == [row.id for row in batch]
    expected = [(row.subject, row.payload, str(row.message_id)) for row in batch]
    assert await stored(js) == expected
    # The relay, or a retry after a lost ack, sends them again: JetStream keeps one of each.
    await publisher.publish_atomic(batch)
    await publisher.publish_atomic(batch[2:5])
    assert await stored(js) == expected


async def test_without_atomic_batches_every_row_is_still_published(
    nc: Any, router_settings: RouterSettings
) -> None:
    await delete_stream(nc)
    js = nc.jetstream()
    config = stream_config(router_settings)
    config.allow_atomic = None  # an older stream, or a server that refuses them
    await js.add_stream(StreamConfig.from_response(config.as_dict()))
    batch = rows(4)
    ids = await OutboxPublisher(js, nc).publish_atomic(batch)
    assert sorted(ids) == [row.id for row in batch]
    assert sorted(await stored(js)) == sorted(
        (row.subject, row.payload, str(row.message_id)) for row in batch
    )
