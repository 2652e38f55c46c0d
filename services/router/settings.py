"""The router service's settings, read from the environment (``ROUTER_*``) in one place."""

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec


class RouterSettings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str
    nats_url: str
    host: str = "127.0.0.1"
    port: int = 8001
    #: Bootstrap admin token of the HTTP API (``eo run``: the directory's, from .state/admin-token
    #: unless set); other tokens are ``eo token``'s. Unset: only issued tokens are accepted.
    admin_token: str | None = None
    #: Ontario business days a provider has to answer an offer before it counts as declined
    #: (timeout); weekends and Ontario's public holidays do not count (deadlines.py).
    offer_business_days: Annotated[int, msgspec.Meta(ge=1)] = 2
    #: When set, a plain number of seconds instead of business days (tests use fractions).
    offer_timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    #: How often expired offers and unsent outbox rows are looked for.
    sweep_interval_s: float = 1.0
    #: Outbox rows older than this that are still unsent are re-published by the relay
    #: (younger ones are being published by the worker that wrote them).
    relay_grace_s: float = 2.0
    #: Messages fetched from JetStream at once, and how long an empty fetch waits.
    batch_size: int = 100
    fetch_timeout_s: float = 1.0
    #: Deliveries of one message before the router gives up on it (dead letter).
    max_deliver: int = 200
    #: Seconds JetStream drops a repeated Nats-Msg-Id within.
    duplicate_window_s: float = 300.0
    #: Copies of the REFERRALS stream (and of its consumers): 1 on a single nats-server, 3 on a
    #: 3-node JetStream cluster (DESIGN.md section 7; deploy/OPERATIONS.md). The router creates
    #: the stream, or updates it to this, at start.
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    #: Delays between redeliveries of a message that failed for a transient reason.
    backoff_s: tuple[float, ...] = (2.0, 5.0, 10.0, 30.0, 60.0)
    #: How a fetched batch is handled: ``batch``, one PostgreSQL transaction for the whole
    #: batch, planned in memory on a snapshot read set-based and written set-based, one commit,
    #: its outbox published as JetStream atomic batches and its messages acked together (the
    #: next batch read and planned meanwhile); ``message``, one transaction per message,
    #: ``concurrency`` at once (the path before issue 16, kept to compare: README
    #: "Performance").
    transaction: Literal["batch", "message"] = "batch"
    #: ``message``: referrals handled at once, each on its own connection (one referral's
    #: messages always in stream order); keep it below pool_max_size.
    concurrency: int = 8
    #: Candidates fetched per matching round (re-ranked by geodesic distance).
    candidates: int = 5
    pool_min_size: int = 2
    pool_max_size: int = 10
    #: The longest one SQL statement may take, and one message's whole handling (connection,
    #: transaction, publish, ack): past it the work is abandoned and the message retried, so
    #: a connection left broken by a database restart cannot hold up the consumer for good.
    db_command_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    message_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    apply_migrations: bool = True
    #: The office finder's public address (the directory serves it), for the links back to it
    #: from the provider inbox and the referral tracker.
    finder_url: str = "http://127.0.0.1:8000/"

    @classmethod
    def from_env(
        cls, database_url: str, nats_url: str, env: Mapping[str, str] | None = None
    ) -> "RouterSettings":
        env = os.environ if env is None else env
        prefix = "ROUTER_"
        raw: dict[str, object] = {
            name.removeprefix(prefix).lower(): value
            for name, value in env.items()
            if name.startswith(prefix) and value
        }
        if isinstance(backoff := raw.get("backoff_s"), str):
            raw["backoff_s"] = [part.strip() for part in backoff.split(",") if part.strip()]
        raw["database_url"] = database_url
        raw["nats_url"] = nats_url
        return msgspec.convert(raw, cls, strict=False)
