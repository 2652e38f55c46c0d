"""Each provider's own durable pull consumer on the stream: ``provider-<id>``, filtered on its
``referral.offered.<id>`` (DESIGN.md section 7).

A provider's NATS user may read its offers only there (or live, on the core subject): it may
not create, change or delete consumers, so the router creates them. It does so just before it
publishes a provider's first offer (once per provider per router process): every offer lands
on a consumer, and only providers that have something to read get one. (Creating one for every
provider of the directory at start cost 250,000 JetStream calls, and kept the router from
routing, in the 1,000,000-site benchmark.) Creating is idempotent: an existing consumer with
this configuration is left as it is, with its position. A consumer created late still holds
every offer, since it starts from the beginning of the stream.
"""

import asyncio

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import OFFERED_PREFIX, STREAM, offered_subject, provider_durable

log = structlog.get_logger("router")

__all__ = ["ProviderConsumers", "provider_consumer_config"]


def provider_consumer_config(provider_id: str) -> ConsumerConfig:
    durable = provider_durable(provider_id)
    return ConsumerConfig(
        name=durable,
        durable_name=durable,
        filter_subject=offered_subject(provider_id),
        # Offers made before the provider first connects are waiting for it.
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
    )


def offered_provider(subject: str) -> str | None:
    """The provider an outbox subject offers to (``referral.offered.<id>``), else None."""
    prefix = f"{OFFERED_PREFIX}."
    return subject[len(prefix) :] if subject.startswith(prefix) else None


class ProviderConsumers:
    """Makes sure ``provider-<id>`` exists before the router publishes an offer to ``id``."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        #: Providers whose consumer this process has created or found.
        self.ready: set[str] = set()

    async def ensure(self, subjects: list[str]) -> None:
        """Create the consumers of the providers these subjects offer to, if not done yet.

        A failure is logged and retried at the provider's next offer: the offer is published
        anyway (a consumer created later still holds it).
        """
        wanted = {p for s in subjects if (p := offered_provider(s)) and p not in self.ready}
        await asyncio.gather(*(self._create(provider_id) for provider_id in sorted(wanted)))

    async def _create(self, provider_id: str) -> None:
        try:
            await self.js.add_consumer(STREAM, provider_consumer_config(provider_id))
        except nats.js.errors.BadRequestError as exc:  # e.g. changed by hand: leave it, say so
            log.warning("provider_consumer.not_updated", provider_id=provider_id, error=str(exc))
        except (nats.errors.Error, OSError) as exc:
            log.warning("provider_consumer.create_failed", provider_id=provider_id, error=repr(exc))
            return
        else:
            log.info("provider_consumer.ready", provider_id=provider_id)
        self.ready.add(provider_id)
