"""Each provider's own durable pull consumer on the stream: ``provider-<id>``, filtered on its
``referral.offered.<id>`` (DESIGN.md section 7).

A provider's NATS user may read its offers only there (or live, on the core subject): it may
not create, change or delete consumers, so the router creates them at start, one per provider
of the directory (the providers that get a NATS user; a provider without one never reads its
consumer). Creating is idempotent: an existing consumer with this configuration is left as it
is, with its position. A provider added later gets its consumer at the next router start.
"""

import asyncpg
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import STREAM, offered_subject, provider_durable

log = structlog.get_logger("router")

__all__ = ["ensure_provider_consumers", "provider_consumer_config"]


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


async def ensure_provider_consumers(js: JetStreamContext, pool: asyncpg.Pool) -> list[str]:
    """Create ``provider-<id>`` for every provider of the directory; the ids it holds now."""
    try:
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT id FROM directory.provider ORDER BY id")
    except asyncpg.UndefinedTableError:
        log.warning("provider_consumers.skipped", reason="the directory is not migrated")
        return []
    done: list[str] = []
    for row in rows:
        provider_id: str = row["id"]
        try:
            await js.add_consumer(STREAM, provider_consumer_config(provider_id))
        except nats.js.errors.BadRequestError as exc:  # e.g. changed by hand: leave it, say so
            log.warning("provider_consumer.not_updated", provider_id=provider_id, error=str(exc))
            continue
        done.append(provider_id)
    log.info("provider_consumers.ready", providers=len(done))
    return done
