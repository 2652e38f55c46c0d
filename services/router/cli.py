"""``eo referral``: act on the router as an OW system or a provider would, over NATS and HTTP.

As an OW system (its NATS user, the ``--system``): ``send`` publishes a referral request,
``cancel`` calls one off before acceptance and ``withdraw`` after it. As a provider (its user
``provider-<id>``): ``respond`` answers an offer, ``progress`` reports on an accepted referral.
As the operator: ``watch`` prints status events, offers, notices and dead letters. ``show`` asks
the router's HTTP API for a referral's state and history. Every party publishes on its own
subjects (contract v1.1, ``contracts.subjects``); the helpers are ``services.client``'s.
"""

import argparse
import asyncio
import datetime
import json
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from nats.aio.msg import Msg

from contracts.codec import decode_outbound
from contracts.common import ClientLocation
from contracts.referrals import (
    PROGRESS_CODES,
    ROUTING_OUTCOMES,
    TERMINAL_STATUSES,
    ProgressCode,
    ProgressStatus,
    ReferralStatusChanged,
)
from contracts.subjects import (
    DEAD,
    NOTICE_PREFIX,
    OFFERED_PREFIX,
    STATUS_PREFIX,
    all_of,
    cancel_subject,
    notice_subject,
    offered_subject,
    progress_subject,
    requested_subject,
    response_subject,
    status_subject,
)
from services import client
from services.client import ClientError
from services.infra.nats_auth import OPERATOR_USER, provider_user_name

SYSTEM_HELP = (
    "the OW system: source.system of the message, its NATS user, and the last token of its "
    "subjects (default eo-cli)"
)
#: Where ``send --wait`` stops: the referral was offered, or routing ended, or it is closed.
WAIT_UNTIL = frozenset({"offered"}) | ROUTING_OUTCOMES | TERMINAL_STATUSES
PROGRESS_STATUSES: tuple[str, ...] = ProgressStatus.__args__  # type: ignore[attr-defined]
ALL_CODES: tuple[str, ...] = ProgressCode.__args__  # type: ignore[attr-defined]


def _subject(make: Callable[[str], str], party: str) -> str:
    """``make(party)``; a party id that is not a slug is the user's to fix."""
    try:
        return make(party)
    except ValueError as exc:
        raise ClientError(str(exc)) from exc


def _location(args: argparse.Namespace) -> ClientLocation:
    if args.lat is not None or args.lon is not None:
        return ClientLocation(lat=args.lat, lon=args.lon)
    if args.postal_code:
        return ClientLocation(postal_code=args.postal_code)
    return ClientLocation(community=args.community)


async def _send(args: argparse.Namespace) -> int:
    subject = _subject(requested_subject, args.system)
    request = client.build_request(
        location=_location(args),
        needs=args.need,
        language=args.language,
        client_ref=args.client_ref,
        age=args.age,
        accessibility_needs=args.accessibility or (),
        eligibility=args.eligibility or ("ow_recipient",),
        max_distance_km=args.max_distance_km,
        preferred_provider_id=args.preferred_provider,
        exclude_provider_ids=args.exclude_provider,
        system=args.system,
    )
    nc = await client.connect_as(args.system)
    try:
        final = asyncio.Event()

        async def on_status(msg: Msg) -> None:
            event = decode_outbound(msg.data)
            if (
                isinstance(event, ReferralStatusChanged)
                and event.referral_id == request.referral_id
            ):
                print(client.describe(event), flush=True)
                if event.status in WAIT_UNTIL:
                    final.set()

        if args.wait:  # the system's own status events, subscribed before the request goes out
            await nc.subscribe(status_subject(args.system), cb=on_status)
        await client.publish(nc, subject, request)
        print(f"sent referral {request.referral_id}", flush=True)
        if args.wait:
            try:
                await asyncio.wait_for(final.wait(), args.timeout)
            except TimeoutError:
                print(
                    f"no offer or routing outcome within {args.timeout} s "
                    f"(on {status_subject(args.system)})",
                    file=sys.stderr,
                )
                return 1
    finally:
        await nc.close()
    return 0


async def _respond(args: argparse.Namespace) -> int:
    subject = _subject(response_subject, args.provider)
    offer_id = args.offer
    if offer_id is None:
        view = await client.fetch_referral(
            client.router_url(), args.referral, client.router_token()
        )
        current = view.get("current_offer")
        if not current:
            raise ClientError(
                f"referral {args.referral} has no open offer (it is {view['status']})"
            )
        offer_id = uuid.UUID(current["offer_id"])
    decision = "accept" if args.accept else "decline"
    message = client.response(args.referral, offer_id, decision, args.reason)
    nc = await client.connect_as(provider_user_name(args.provider))
    try:
        await client.publish(nc, subject, message)
    finally:
        await nc.close()
    print(f"{args.provider} answered {decision} to offer {offer_id} of referral {args.referral}")
    return 0


def _occurred_at(text: str | None) -> datetime.datetime | None:
    if text is None:
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ClientError(
            f"--occurred-at {text!r} is not an ISO 8601 time (e.g. 2026-11-21T09:30-05:00, "
            "or 2026-11-21 for local midnight)"
        ) from exc
    return when.astimezone(datetime.UTC)  # a time without an offset is local time


async def _progress(args: argparse.Namespace) -> int:
    subject = _subject(progress_subject, args.provider)
    try:
        message = client.progress(
            args.referral,
            args.status,
            code=args.code,
            note=args.note,
            occurred_at=_occurred_at(args.occurred_at),
        )
    except msgspec.ValidationError as exc:
        raise ClientError(f"not a valid progress report: {exc}") from exc
    nc = await client.connect_as(provider_user_name(args.provider))
    try:
        await client.publish(nc, subject, message)
    finally:
        await nc.close()
    code = f" ({message.code})" if message.code else ""
    print(
        f"{args.provider} reported {message.status}{code} for referral {args.referral}; "
        f"a refusal would come as a notice on {notice_subject(args.provider)}"
    )
    return 0


async def _call_off(args: argparse.Namespace, verb: str) -> int:
    subject = _subject(cancel_subject, args.system)
    try:
        message = client.cancellation(args.referral, args.reason)
    except msgspec.ValidationError as exc:
        raise ClientError(f"not a valid --reason: {exc}") from exc
    nc = await client.connect_as(args.system)
    try:
        await client.publish(nc, subject, message)
    finally:
        await nc.close()
    status = status_subject(args.system)
    print(f"asked to {verb} referral {args.referral} (its status events: {status})")
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    return await _call_off(args, "cancel")


async def _withdraw(args: argparse.Namespace) -> int:
    return await _call_off(args, "withdraw")


def watched_subjects(system: str | None, provider: str | None) -> list[str]:
    """What ``watch`` subscribes to: the status events of one system or all, the offers and
    notices of one provider or all, and the dead letters."""
    status = all_of(STATUS_PREFIX) if system is None else _subject(status_subject, system)
    if provider is None:
        to_providers = [all_of(OFFERED_PREFIX), all_of(NOTICE_PREFIX)]
    else:
        to_providers = [_subject(offered_subject, provider), notice_subject(provider)]
    return [status, *to_providers, DEAD]


async def _watch(args: argparse.Namespace) -> int:
    subjects = watched_subjects(args.system, args.provider)
    nc = await client.connect_as(OPERATOR_USER)  # every party's subjects and the dead letters

    async def on_event(msg: Msg) -> None:
        if args.json:
            line = {"subject": msg.subject, "message": json.loads(msg.data)}
            print(json.dumps(line), flush=True)
            return
        try:
            print(client.describe(decode_outbound(msg.data), msg.subject), flush=True)
        except msgspec.DecodeError as exc:
            print(f"?        {msg.subject}: not a message of this contract ({exc})", flush=True)

    for subject in subjects:
        await nc.subscribe(subject, cb=on_event)
    print(f"watching {', '.join(subjects)} on {client.nats_url()} (Ctrl-C stops)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await nc.close()
    return 0


async def _show(args: argparse.Namespace) -> int:
    view = await client.fetch_referral(client.router_url(), args.referral, client.router_token())
    print(json.dumps(view, indent=2))
    return 0


ACTIONS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "send": _send,
    "cancel": _cancel,
    "withdraw": _withdraw,
    "respond": _respond,
    "progress": _progress,
    "watch": _watch,
    "show": _show,
}


def cmd_referral(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(ACTIONS[args.action](args))
    except ClientError as exc:
        print(f"eo: {exc}", file=sys.stderr)
        return 1


def _codes_help() -> str:
    by_status = "; ".join(
        f"{status}: {', '.join(codes)}" for status, codes in PROGRESS_CODES.items() if codes
    )
    return f"the outcome or reason code the status needs ({by_status}); none for in_service"


def add_referral_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    referral = commands.add_parser(
        "referral",
        help="act as an OW system or a provider: send, cancel, withdraw, respond, progress, "
        "watch, show",
        description="Talk to a running router over NATS (NATS_URL, default the `make run` "
        "server) and its HTTP API (ROUTER_URL, default http://127.0.0.1:8001; with ROUTER_TOKEN "
        "as bearer token, else the admin token `make run` keeps in EO_STATE_DIR). Each party "
        "uses its own NATS user and its own subjects (contract v1.1): an OW system "
        "referral.requested.<system>, referral.cancel.<system> and referral.status.<system>; "
        "a provider referral.offered.<id>, referral.notice.<id>, referral.response.<id> and "
        "referral.progress.<id>.",
        epilog="A referral's life: eo referral send ... --wait; eo referral respond --provider "
        "P --referral R --accept; eo referral progress --provider P --referral R --status "
        "in_service; then --status completed --code employed (or not_started / ended_early "
        "with a reason code); eo referral withdraw R --reason ... if OW calls it off.",
    )
    actions = referral.add_subparsers(dest="action", required=True, metavar="ACTION")
    referral.set_defaults(handler=cmd_referral)

    send = actions.add_parser(
        "send",
        help="publish a referral request on referral.requested.<system>, as an OW system would",
        epilog="example: eo referral send --community Almonte --need resume_writing --wait "
        "(--system ow-lanark to send as that system, with its login)",
    )
    where = send.add_mutually_exclusive_group(required=True)
    where.add_argument("--postal-code", help="the client's postal code, e.g. 'K7A 1A1'")
    where.add_argument("--community", help="the client's community, e.g. Almonte")
    where.add_argument("--lat", type=float, help="latitude (give --lon too)")
    send.add_argument("--lon", type=float, help="longitude (with --lat)")
    send.add_argument(
        "--need", action="append", required=True, metavar="SERVICE",
        help="a service code the client needs (repeatable), e.g. resume_writing; "
        "see GET /api/v1/taxonomy on the directory",
    )  # fmt: skip
    send.add_argument("--language", choices=["en", "fr"], default="en")
    send.add_argument("--age", type=int)
    send.add_argument("--accessibility", action="append", metavar="CODE")
    send.add_argument("--eligibility", action="append", metavar="CODE", help="default ow_recipient")
    send.add_argument("--max-distance-km", type=float)
    send.add_argument("--preferred-provider", metavar="PROVIDER_ID")
    send.add_argument("--exclude-provider", action="append", metavar="PROVIDER_ID")
    send.add_argument("--client-ref", help="opaque client reference (default: random)")
    send.add_argument("--system", default="eo-cli", help=SYSTEM_HELP)
    send.add_argument(
        "--wait", action="store_true",
        help="print the referral's status events (referral.status.<system>) until it is "
        "offered, or routing ends (unmatched, cancelled, rejected)",
    )  # fmt: skip
    send.add_argument("--timeout", type=float, default=30.0, help="seconds --wait waits (30)")

    for name, when in (
        ("cancel", "before acceptance it is cancelled, after it withdrawn"),
        ("withdraw", "the same message as cancel, by its name after acceptance"),
    ):
        call_off = actions.add_parser(
            name,
            help=f"{name} a referral on referral.cancel.<system>, as the OW system that sent "
            f"it would ({when})",
            description=f"Publish a referral.cancel on referral.cancel.<system>: {when}. The "
            "provider holding it gets a notice on referral.notice.<provider_id>. Only the "
            "system that sent the referral may call it off.",
            epilog=f"example: eo referral {name} 0b8e2f4a-6c1d-4f3e-8a7b-9d2c1e0f5a64 "
            "--reason 'client found work' --system eo-cli",
        )
        call_off.add_argument("referral", type=uuid.UUID, metavar="REFERRAL_ID")
        call_off.add_argument(
            "--reason",
            default="the caseworker called it off",
            help="why (shown to the provider; up to 500 characters)",
        )
        call_off.add_argument("--system", default="eo-cli", help=SYSTEM_HELP)

    respond = actions.add_parser(
        "respond",
        help="answer an offer on referral.response.<PROVIDER_ID>, as a provider would (as its "
        "NATS user, provider-<PROVIDER_ID>)",
        epilog="example: eo referral respond --provider canadian-career-academy --referral "
        "REFERRAL_ID --decline --reason 'no intake until next month'",
    )
    respond.add_argument("--provider", required=True, metavar="PROVIDER_ID")
    respond.add_argument("--referral", required=True, type=uuid.UUID, metavar="REFERRAL_ID")
    respond.add_argument(
        "--offer", type=uuid.UUID, metavar="OFFER_ID",
        help="default: the referral's open offer, asked from the router",
    )  # fmt: skip
    decision = respond.add_mutually_exclusive_group(required=True)
    decision.add_argument("--accept", action="store_true")
    decision.add_argument("--decline", action="store_true")
    respond.add_argument("--reason", help="why (shown to OW)")

    report = actions.add_parser(
        "progress",
        help="report on an accepted referral on referral.progress.<PROVIDER_ID>, as the "
        "provider holding it would (in_service, completed, not_started, ended_early)",
        description="Publish a referral.progress as the provider's NATS user. Only the "
        "provider holding the accepted referral may report, along accepted -> in_service -> "
        "completed | ended_early, or accepted -> not_started; the router refuses anything "
        "else with a notice on referral.notice.<PROVIDER_ID> (eo referral watch --provider "
        "shows it).",
        epilog="examples: eo referral progress --provider canadian-career-academy --referral "
        "REFERRAL_ID --status in_service; ... --status completed --code employed; ... --status "
        "not_started --code could_not_contact --note 'three calls, no answer'",
    )
    report.add_argument("--provider", required=True, metavar="PROVIDER_ID")
    report.add_argument("--referral", required=True, type=uuid.UUID, metavar="REFERRAL_ID")
    report.add_argument("--status", required=True, choices=PROGRESS_STATUSES)
    report.add_argument("--code", choices=ALL_CODES, metavar="CODE", help=_codes_help())
    report.add_argument(
        "--note", help="at most 200 characters, never a name, contact or case detail"
    )
    report.add_argument(
        "--occurred-at", metavar="ISO_TIME",
        help="when it happened, e.g. 2026-11-21T09:30-05:00 (default now; without an offset, "
        "local time); not in the future, not before acceptance",
    )  # fmt: skip

    watch = actions.add_parser(
        "watch",
        help="print status events, offers, notices and dead letters (as the NATS operator)",
        epilog="examples: eo referral watch; eo referral watch --system eo-cli --provider "
        "canadian-career-academy; eo referral watch --json",
    )
    watch.add_argument(
        "--system", metavar="SYSTEM", help="only this OW system's status events (default all)"
    )
    watch.add_argument(
        "--provider", metavar="PROVIDER_ID",
        help="only this provider's offers and notices (default all)",
    )  # fmt: skip
    watch.add_argument("--json", action="store_true", help="one JSON object per line")

    show = actions.add_parser(
        "show",
        help="a referral's state and full history (router HTTP; what ROUTER_TOKEN may see)",
        epilog="example: eo referral show 0b8e2f4a-6c1d-4f3e-8a7b-9d2c1e0f5a64",
    )
    show.add_argument("referral", type=uuid.UUID, metavar="REFERRAL_ID")
