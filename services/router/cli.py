"""``eo referral``: act on the router as an OW system or a provider would, over NATS and HTTP.

``send`` publishes a ``referral.requested``, ``respond`` answers an offer as a provider,
``cancel`` withdraws a referral, ``watch`` prints the status events, offers and dead letters,
``show`` asks the router's HTTP API for a referral's state and history. Each party connects as
its own NATS user; the wire is ``contracts``, the helpers are ``services.client``'s.
"""

import argparse
import asyncio
import json
import sys
import uuid

from nats.aio.msg import Msg

from contracts.codec import decode_outbound
from contracts.common import ClientLocation
from contracts.referrals import TERMINAL_STATUSES, ReferralStatusChanged
from contracts.subjects import (
    CANCEL,
    DEAD,
    OFFERED_ALL,
    REQUESTED,
    STATUS,
    offered_subject,
    response_subject,
)
from services import client
from services.client import ClientError
from services.infra.nats_auth import OPERATOR_USER, provider_user_name

SYSTEM_HELP = "the OW system: source.system of the message and the NATS user (default eo-cli)"


def _location(args: argparse.Namespace) -> ClientLocation:
    if args.lat is not None or args.lon is not None:
        return ClientLocation(lat=args.lat, lon=args.lon)
    if args.postal_code:
        return ClientLocation(postal_code=args.postal_code)
    return ClientLocation(community=args.community)


async def _send(args: argparse.Namespace) -> int:
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

        async def on_status(msg: object) -> None:
            event = decode_outbound(msg.data)  # type: ignore[attr-defined]
            if (
                isinstance(event, ReferralStatusChanged)
                and event.referral_id == request.referral_id
            ):
                print(client.describe(event), flush=True)
                if event.status in TERMINAL_STATUSES or event.status == "offered":
                    final.set()

        if args.wait:
            await nc.subscribe(STATUS, cb=on_status)
        await client.publish(nc, REQUESTED, request)
        print(f"sent referral {request.referral_id}", flush=True)
        if args.wait:
            try:
                await asyncio.wait_for(final.wait(), args.timeout)
            except TimeoutError:
                print(f"no offer or final state within {args.timeout} s", file=sys.stderr)
                return 1
    finally:
        await nc.close()
    return 0


async def _respond(args: argparse.Namespace) -> int:
    try:
        response_subject(args.provider)
    except ValueError as exc:
        raise ClientError(str(exc)) from exc
    offer_id = args.offer
    if offer_id is None:
        view = await client.fetch_referral(client.router_url(), args.referral)
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
        await client.publish(nc, response_subject(args.provider), message)
    finally:
        await nc.close()
    print(f"{args.provider} answered {decision} to offer {offer_id} of referral {args.referral}")
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    nc = await client.connect_as(args.system)
    try:
        await client.publish(nc, CANCEL, client.cancellation(args.referral, args.reason))
    finally:
        await nc.close()
    print(f"asked to cancel referral {args.referral}")
    return 0


async def _watch(args: argparse.Namespace) -> int:
    nc = await client.connect_as(OPERATOR_USER)  # every provider's offers and the dead letters

    async def on_event(msg: Msg) -> None:
        if args.json:
            line = {"subject": msg.subject, "message": json.loads(msg.data)}
            print(json.dumps(line), flush=True)
        else:
            print(client.describe(decode_outbound(msg.data)), flush=True)

    offered = offered_subject(args.provider) if args.provider else OFFERED_ALL
    for subject in (STATUS, offered, DEAD):
        await nc.subscribe(subject, cb=on_event)
    print(f"watching {STATUS}, {offered} and {DEAD} on {client.nats_url()} (Ctrl-C stops)")
    try:
        await asyncio.Event().wait()
    finally:
        await nc.close()
    return 0


async def _show(args: argparse.Namespace) -> int:
    view = await client.fetch_referral(client.router_url(), args.referral)
    print(json.dumps(view, indent=2))
    return 0


def cmd_referral(args: argparse.Namespace) -> int:
    action = {"send": _send, "respond": _respond, "cancel": _cancel, "watch": _watch}.get(
        args.action, _show
    )
    try:
        return asyncio.run(action(args))
    except ClientError as exc:
        print(f"eo: {exc}", file=sys.stderr)
        return 1


def add_referral_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    referral = commands.add_parser(
        "referral",
        help="act as an OW system or a provider: send, respond, cancel, watch, show",
        description="Talk to a running router over NATS (NATS_URL, default the `make run` "
        "server) and its HTTP API (ROUTER_URL, default http://127.0.0.1:8001).",
    )
    actions = referral.add_subparsers(dest="action", required=True, metavar="ACTION")
    referral.set_defaults(handler=cmd_referral)

    send = actions.add_parser(
        "send",
        help="publish a referral.requested, as an OW system would",
        epilog="example: eo referral send --community Almonte --need resume_writing --wait",
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
        "--wait", action="store_true", help="print status events until offered or final"
    )
    send.add_argument("--timeout", type=float, default=30.0, help="seconds --wait waits (30)")

    respond = actions.add_parser(
        "respond",
        help="answer an offer, as a provider would (as its NATS user, provider-<PROVIDER_ID>)",
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

    cancel = actions.add_parser("cancel", help="withdraw a referral, as OW would")
    cancel.add_argument("referral", type=uuid.UUID, metavar="REFERRAL_ID")
    cancel.add_argument("--reason", default="withdrawn by the caseworker")
    cancel.add_argument("--system", default="eo-cli", help=SYSTEM_HELP)

    watch = actions.add_parser(
        "watch", help="print status events, offers and dead letters (as the NATS operator)"
    )
    watch.add_argument("--provider", metavar="PROVIDER_ID", help="only this provider's offers")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")

    show = actions.add_parser("show", help="a referral's state and full history (router HTTP)")
    show.add_argument("referral", type=uuid.UUID, metavar="REFERRAL_ID")
