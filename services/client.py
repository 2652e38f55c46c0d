"""The OW and provider side of the wire, for people: send, answer, report on, cancel or
withdraw, watch and show referrals.

What an OW system or a provider integration does, as small functions the ``eo referral``
commands and the ``make run`` demo share. Everything goes through ``contracts``; each party
publishes on its own subjects (contract v1.1, ``contracts.subjects``).
"""

import asyncio
import contextlib
import datetime
import functools
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from contracts.codec import encode
from contracts.common import ClientLocation, Message
from contracts.referrals import (
    DeadLetter,
    OutboundEvent,
    ProviderNotice,
    ReferralCancel,
    ReferralOffered,
    ReferralProgress,
    ReferralRequested,
    ReferralResponse,
    ReferralStatusChanged,
)
from services.infra.nats_auth import (
    MissingCredentials,
    client_connect_options,
    redact,
    strip_login,
)
from services.infra.settings import DEFAULT_NATS_PORT, InfraSettings

DEFAULT_ROUTER_URL = "http://127.0.0.1:8001"
DEFAULT_DIRECTORY_PORT = 8000


class ClientError(Exception):
    """Something the user can fix: say what, and how."""


def nats_url(env: Mapping[str, str] | None = None) -> str:
    """NATS_URL (without its login, if it has one), or the embedded server `make run` starts."""
    env = os.environ if env is None else env
    url = env.get("NATS_URL") or f"nats://127.0.0.1:{env.get('EO_NATS_PORT', DEFAULT_NATS_PORT)}"
    return strip_login(url)


def connect_options(user: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """How to connect as NATS user ``user`` (an OW system, ``provider-<id>``, ``operator``).

    The login comes from NATS_CREDENTIALS_DIR, else from NATS_URL, else from the embedded
    server's credentials in the state folder (EO_STATE_DIR); see nats_auth.client_connect_options.
    """
    settings = InfraSettings.from_env(env)
    try:
        return client_connect_options(user, settings)
    except MissingCredentials as exc:
        raise ClientError(
            f"{exc}. Is `make run` running with this EO_STATE_DIR? With a NATS_URL of your own, "
            "set NATS_CREDENTIALS_DIR to the folder of the users' <user>.json files."
        ) from exc


def router_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("ROUTER_URL") or DEFAULT_ROUTER_URL


def router_token(env: Mapping[str, str] | None = None) -> str | None:
    """The token to send the router: ROUTER_TOKEN, else the admin token `eo run` keeps in the
    state folder (EO_STATE_DIR/admin-token) when there is one, else none."""
    env = os.environ if env is None else env
    if token := env.get("ROUTER_TOKEN"):
        return token.strip()
    path = InfraSettings.from_env(env).state_dir / "admin-token"
    return path.read_text().strip() if path.is_file() else None


def directory_url(env: Mapping[str, str] | None = None) -> str:
    """DIRECTORY_URL, or where ``eo run`` serves the directory (DIRECTORY_HOST, DIRECTORY_PORT)."""
    env = os.environ if env is None else env
    if url := env.get("DIRECTORY_URL"):
        return url.rstrip("/")
    host = env.get("DIRECTORY_HOST") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # listening on all: use loopback
    return f"http://{host}:{env.get('DIRECTORY_PORT') or DEFAULT_DIRECTORY_PORT}"


async def connect(options: str | Mapping[str, Any], *, name: str = "eo-cli") -> NatsClient:
    """Connect with ``nats.connect(**options)`` (or to a URL); ClientError says what failed.

    What the server refuses later (a permissions violation) is printed on stderr.
    """
    options = {"servers": options} if isinstance(options, str) else dict(options)
    where = redact(str(options["servers"]))
    as_user = f" as {options['user']}" if "user" in options else ""

    async def on_error(exc: Exception) -> None:
        if nc.is_connected:  # a failed connection is reported below, once
            print(f"eo: NATS{as_user}: {exc}", file=sys.stderr, flush=True)

    nc = NatsClient()
    try:
        await nc.connect(
            **options,
            name=name,
            connect_timeout=2,
            allow_reconnect=False,
            error_cb=on_error,
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        with contextlib.suppress(Exception):
            await nc.close()
        if isinstance(exc, nats.errors.AuthorizationError) or "authorization" in str(exc).lower():
            raise ClientError(
                f"NATS at {where} refused the login{as_user} ({exc}); are the credentials "
                "those of this server?"
            ) from exc
        raise ClientError(
            f"cannot reach NATS at {where} ({exc!r}); is `make run` running? (or set NATS_URL)"
        ) from exc
    return nc


async def connect_as(user: str) -> NatsClient:
    """Connect as NATS user ``user``, its login found as ``connect_options`` says."""
    return await connect(connect_options(user), name=f"eo-cli ({user})")


def build_request(
    *,
    location: ClientLocation,
    needs: Sequence[Any],
    language: Any,
    client_ref: str | None = None,
    referral_id: uuid.UUID | None = None,
    system: str = "eo-cli",
    office_id: str = "cli",
    age: int | None = None,
    accessibility_needs: Sequence[Any] = (),
    eligibility: Sequence[Any] = ("ow_recipient",),
    **optional: Any,
) -> ReferralRequested:
    """A ``referral.requested`` message; ``msgspec.ValidationError`` when a value is invalid."""
    raw = {
        "message_id": str(uuid.uuid4()),
        "referral_id": str(referral_id or uuid.uuid4()),
        "requested_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "source": {"system": system, "office_id": office_id},
        "client": {
            "client_ref": client_ref or f"c-{uuid.uuid4().hex[:8]}",
            "location": msgspec.to_builtins(location),
            "language": language,
            "age": age,
            "accessibility_needs": list(accessibility_needs),
            "eligibility": list(eligibility),
        },
        "needs": list(needs),
        **{key: value for key, value in optional.items() if value not in (None, [], ())},
    }
    # Converting from builtins runs every constraint of the contract, as decoding would.
    return msgspec.convert(raw, ReferralRequested)


def response(
    referral_id: uuid.UUID, offer_id: uuid.UUID, decision: Any, reason: str | None = None
) -> ReferralResponse:
    return ReferralResponse(
        message_id=uuid.uuid4(),
        referral_id=referral_id,
        offer_id=offer_id,
        decision=decision,
        reason=reason,
    )


def cancellation(referral_id: uuid.UUID, reason: str) -> ReferralCancel:
    """A ``referral.cancel``: before acceptance the router cancels, after it withdraws."""
    return msgspec.convert(
        {"message_id": str(uuid.uuid4()), "referral_id": str(referral_id), "reason": reason},
        ReferralCancel,
    )


def progress(
    referral_id: uuid.UUID,
    status: Any,
    *,
    code: Any = None,
    note: str | None = None,
    occurred_at: datetime.datetime | None = None,
) -> ReferralProgress:
    """A ``referral.progress`` (default: it happened now); ``msgspec.ValidationError`` when a
    value is invalid or the code does not fit the status (``contracts.PROGRESS_CODES``)."""
    when = occurred_at or datetime.datetime.now(datetime.UTC)
    raw = {
        "message_id": str(uuid.uuid4()),
        "referral_id": str(referral_id),
        "status": status,
        "code": code,
        "note": note,
        "occurred_at": when.astimezone(datetime.UTC).isoformat(),
    }
    # From builtins, so every constraint of the contract runs (the note's length too).
    return msgspec.convert({k: v for k, v in raw.items() if v is not None}, ReferralProgress)


async def publish(nc: NatsClient, subject: str, message: Message) -> None:
    """Publish into the REFERRALS stream, with the message id JetStream de-duplicates on."""
    headers = {"Nats-Msg-Id": str(message.message_id)}
    try:
        await nc.jetstream().publish(subject, encode(message), headers=headers, timeout=5)
    except (nats.errors.Error, TimeoutError) as exc:
        raise ClientError(
            f"NATS did not store the message on {subject} ({exc!r}); is the router running?"
        ) from exc


def short(referral_id: uuid.UUID) -> str:
    return str(referral_id)[:8]


#: What a status event's ``code`` is, by status: an outcome or a reason (contract v1.1).
_CODE_LABEL = {"completed": "outcome", "not_started": "reason", "ended_early": "reason"}


def describe(event: OutboundEvent, subject: str | None = None) -> str:
    """One line for a person watching the stream; ``subject`` (where it was received) names
    the provider a notice is for."""
    match event:
        case ReferralStatusChanged():
            parts = [f"referral {short(event.referral_id)}", f"{event.status:<11}"]
            if event.site_id:
                distance = "" if event.distance_km is None else f" ({event.distance_km:.1f} km)"
                parts.append(f"{event.site_id}{distance}")
            if event.code:
                parts.append(f"{_CODE_LABEL.get(event.status, 'code')} {event.code}")
            if event.explanation is not None and event.status in ("offered", "unmatched"):
                parts.append(f"- {event.explanation.text}")
            elif event.reason:
                parts.append(f"- {event.reason}")
            return "  ".join(parts)
        case ProviderNotice():
            provider = f" to {subject.rpartition('.')[2]}" if subject else ""
            offer = "" if event.offer_id is None else f" (offer_id {event.offer_id})"
            return (
                f"notice   {short(event.referral_id)}{provider}  {event.kind}{offer}: "
                f"{event.reason}"
            )
        case ReferralOffered():
            return (
                f"offer    {short(event.referral_id)}  to {event.provider_id} "
                f"(site {event.site_id}, attempt {event.attempt}, offer_id {event.offer_id}, "
                f"answer by {event.expires_at:%Y-%m-%d %H:%M}Z)"
            )
        case DeadLetter():
            which = "" if event.referral_id is None else f" (referral {short(event.referral_id)})"
            return f"dead     {event.subject}{which}: {event.error}"


def get_bytes(
    url: str,
    *,
    server: str = "the server",
    not_found: str | None = None,
    token: str | None = None,
) -> bytes:
    """The body of a GET (with ``token`` as its bearer token, if given); ClientError says what
    failed (``not_found`` for a 404, if given)."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=5
        ) as reply:
            body: bytes = reply.read()
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and not_found:
            raise ClientError(f"{not_found} ({url})") from exc
        if exc.code == 401:
            raise ClientError(
                f"{server} wants a valid token ({url}): set ROUTER_TOKEN (eo token issue), or "
                "run with the EO_STATE_DIR of `make run`, whose admin-token is used"
            ) from exc
        raise ClientError(f"{url} answered {exc.code}: {exc.read().decode()[:300]}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ClientError(
            f"cannot reach {server} at {url} ({exc}); is `make run` running?"
        ) from exc


def get_json(
    url: str, *, server: str = "the server", not_found: str | None = None, token: str | None = None
) -> Any:
    return json.loads(get_bytes(url, server=server, not_found=not_found, token=token))


async def fetch_referral(base_url: str, referral_id: uuid.UUID, token: str | None) -> Any:
    """The router's view of a referral (GET /api/v1/referrals/{id}) as JSON, as ``token``'s
    holder sees it (see ``router_token``)."""
    return await asyncio.to_thread(
        functools.partial(
            get_json,
            f"{base_url}/api/v1/referrals/{referral_id}",
            server="the router (or set ROUTER_URL)",
            not_found="the router does not know that referral, or not for this token",
            token=token,
        )
    )
