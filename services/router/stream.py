"""The REFERRALS stream and the router's durable consumer: their configuration and set-up."""

import asyncio

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from contracts.subjects import ROUTER_DURABLE, ROUTER_FILTER_SUBJECTS, STREAM, STREAM_SUBJECTS
from services.router.settings import RouterSettings

log = structlog.get_logger("router")


def stream_config(settings: RouterSettings) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=list(STREAM_SUBJECTS),
        storage=StorageType.FILE,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.stream_replicas,
        # The router publishes a batch's outbox as one atomic batch: one store write (and one
        # fsync) for the lot (nats-server 2.12+).
        allow_atomic=True,
    )


def consumer_config(settings: RouterSettings) -> ConsumerConfig:
    return ConsumerConfig(
        name=ROUTER_DURABLE,
        durable_name=ROUTER_DURABLE,
        filter_subjects=list(ROUTER_FILTER_SUBJECTS),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        max_deliver=settings.max_deliver,
        # Redelivery delays of a message nobody acked (a router died holding it).
        backoff=list(settings.backoff_s),
        max_ack_pending=settings.batch_size * 10,
    )


async def ensure_stream_and_consumer(js: JetStreamContext, settings: RouterSettings) -> None:
    """Create the stream and the router's durable consumer, or bring them to this config."""
    try:
        await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(stream_config(settings))
    else:
        await js.update_stream(stream_config(settings))
    # Named consumer creation is create-or-update on nats-server 2.10+.
    await js.add_consumer(STREAM, consumer_config(settings))


async def set_up_stream(
    js: JetStreamContext, settings: RouterSettings, *, within: float = 60.0
) -> None:
    """``ensure_stream_and_consumer``, retried while JetStream is not ready or busy: a cluster
    that has just elected its leaders, or replicas creating the stream at the same moment,
    answer with a timeout or an error for a few seconds. The last error after ``within`` s.
    """
    deadline = asyncio.get_running_loop().time() + within
    delay = 0.2
    while True:
        try:
            await ensure_stream_and_consumer(js, settings)
            return
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("stream.setup_failed", error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
