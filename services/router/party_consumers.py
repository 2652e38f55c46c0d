"""Each party's own durable pull consumer on the stream (DESIGN.md sections 3 and 7): a
provider's ``provider-<id>`` on its offers and notices, an OW system's ``ow-<system>`` on its
status events.

A party's NATS user may read its messages only there (or live, on the core subjects): it may
not create, change or delete consumers, so the router creates them. It does so just before it
publishes the first message a consumer would hold (once per party per router process): every
message lands on a consumer, a party that was offline catches up from it, and only parties that
have something to read get one. (Creating one for every provider of the directory at start cost
250,000 JetStream calls, and kept the router from routing, in the 1,000,000-site benchmark.)
Creating is idempotent: an existing consumer with this configuration is left as it is, with its
position. A consumer created late still holds every message, since it starts from the beginning
of the stream.
"""

import asyncio
import functools

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import (
    NOTICE_PREFIX,
    OFFERED_PREFIX,
    STATUS_PREFIX,
    STREAM,
    notice_subject,
    offered_subject,
    ow_durable,
    provider_durable,
    status_subject,
)

log = structlog.get_logger("router")

__all__ = ["PartyConsumers", "consumer_for", "ow_consumer_config", "provider_consumer_config"]


def _config(durable: str, subjects: list[str]) -> ConsumerConfig:
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subjects=subjects,
        # Messages published before the party first connects are waiting for it.
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
    )


def provider_consumer_config(provider_id: str) -> ConsumerConfig:
    return _config(
        provider_durable(provider_id), [offered_subject(provider_id), notice_subject(provider_id)]
    )


def ow_consumer_config(system: str) -> ConsumerConfig:
    return _config(ow_durable(system), [status_subject(system)])


@functools.lru_cache(maxsize=65_536)
def consumer_for(subject: str) -> ConsumerConfig | None:
    """The party consumer an outbox subject lands on, if any (dead letters have none).
    Cached: asked for every published row, and a party's subjects do not change."""
    prefix, _, token = subject.rpartition(".")
    if prefix in (OFFERED_PREFIX, NOTICE_PREFIX):
        return provider_consumer_config(token)
    if prefix == STATUS_PREFIX:
        return ow_consumer_config(token)
    return None


class PartyConsumers:
    """Makes sure a party's consumer exists before the router publishes the first message it
    holds."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        #: Consumers this process has created or found.
        self.ready: set[str] = set()

    async def ensure(self, subjects: list[str]) -> None:
        """Create the consumers these subjects land on, if not done yet.

        A failure is logged and retried at the party's next message: the message is published
        anyway (a consumer created later still holds it).
        """
        wanted: dict[str, ConsumerConfig] = {}
        for subject in subjects:
            config = consumer_for(subject)
            if config is not None and config.durable_name not in self.ready:
                wanted[str(config.durable_name)] = config
        await asyncio.gather(*(self._create(wanted[name]) for name in sorted(wanted)))

    async def _create(self, config: ConsumerConfig) -> None:
        durable = str(config.durable_name)
        try:
            await self.js.add_consumer(STREAM, config)
        except nats.js.errors.BadRequestError as exc:  # e.g. changed by hand: leave it, say so
            log.warning("party_consumer.not_updated", consumer=durable, error=str(exc))
        except (nats.errors.Error, OSError) as exc:
            log.warning("party_consumer.create_failed", consumer=durable, error=repr(exc))
            return
        else:
            log.info("party_consumer.ready", consumer=durable)
        self.ready.add(durable)
