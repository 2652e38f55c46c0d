"""Privacy: a full `eo run` with referrals whose senders wrongly add personal data in fields the
contract does not have. Nothing the system publishes, and no log line, carries any of it.

Events carry only the opaque ``client_ref`` (DESIGN.md section 3). Unknown fields are ignored
on decode, so personal data an OW system adds by mistake must die at the router's edge.
(Dead letters are the exception by design: they carry an invalid message's original bytes,
for operators only; this run sends no invalid message.)
"""

import asyncio
import datetime
import json
import re
import shutil
import signal
import subprocess
import uuid
from typing import Any

import httpx
import nats
import nats.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.subjects import STREAM, requested_subject
from services.infra.nats_auth import OPERATOR_USER, load_login, provider_user_name
from tests.e2e.test_run_command import EO, eo_run_environment, wait_ready
from tests.referrals import CCA
from tests.waits import until

pytestmark = pytest.mark.e2e

NAMES = ["Marie Tremblay", "Jean-Luc Gagnon", "Aiyana Whitehorse", "Priya Raman"]
SIN = "046 454 286"  # passes the Luhn check (the public example SIN of Service Canada)
BIRTH_DATE = "1985-03-14"
EMAIL = "marie.tremblay@example.com"
PHONE = "613-555-0147"

PATTERNS = {
    # A domain ending in letters: postgresql://postgres@127.0.0.1 is not an address.
    "email": re.compile(r"[\w.+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"),
    "phone": re.compile(r"(?<![\w.-])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])"),
    # Birth dates, not the timestamps every event and log line carries (this decade's).
    "date of birth": re.compile(r"\b(?:19\d\d|200\d|201[0-5])-[01]\d-[0-3]\d\b"),
    "name": re.compile("|".join(re.escape(n) for n in NAMES), re.IGNORECASE),
}
SIN_SHAPE = re.compile(r"(?<![\w-])\d{3}[ -]?\d{3}[ -]?\d{3}(?![\w-])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            value -= 9 if value > 9 else 0
        total += value
    return total % 10 == 0


def personal_data(text: str) -> list[str]:
    """Every match of a personal-data pattern in ``text``."""
    found = [f"{kind}: {m.group(0)}" for kind, rx in PATTERNS.items() for m in rx.finditer(text)]
    for match in SIN_SHAPE.finditer(text):
        digits = re.sub(r"\D", "", match.group(0))
        if luhn_valid(digits):
            found.append(f"SIN: {match.group(0)}")
    return found


def careless_request(community: str) -> dict[str, Any]:
    """A valid request plus personal data in fields the contract does not define."""
    return {
        "type": "referral.requested.v1",
        "message_id": str(uuid.uuid4()),
        "referral_id": str(uuid.uuid4()),
        "requested_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "source": {"system": "ow-lanark", "office_id": "smiths-falls"},
        "client": {
            "client_ref": f"c-{uuid.uuid4().hex[:8]}",
            "location": {"community": community},
            "language": "en",
            "eligibility": ["ow_recipient"],
            "name": NAMES[0],
            "sin": SIN,
            "date_of_birth": BIRTH_DATE,
            "email": EMAIL,
            "phone": PHONE,
        },
        "needs": ["resume_writing"],
        "caseworker_note": f"{NAMES[1]} called from {PHONE}; born {BIRTH_DATE}; {EMAIL}",
    }


def test_the_scanner_finds_each_kind_of_personal_data() -> None:
    found = personal_data(json.dumps(careless_request("Almonte")))
    kinds = {item.split(":")[0] for item in found}
    assert kinds == {"email", "phone", "date of birth", "name", "SIN"}
    assert not personal_data("2026-11-21T15:04:05Z 0b8e2f4a-6c1d-4f3e-8a7b-9d2c1e0f5a64 11.33")
    assert not personal_data("postgresql://postgres@127.0.0.1:55432/eo")
    assert not luhn_valid("046454287")


async def read_stream(url: str, login: Any) -> list[tuple[str, bytes]]:
    nc = await nats.connect(url, **login.connect_options())
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            "referral.>",
            stream=STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
        )
        found: list[tuple[str, bytes]] = []
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                return found
            found.extend((m.subject, m.data) for m in msgs)
    finally:
        await nc.close()


async def views(router: str, referral_ids: list[str], statuses: set[str], token: str) -> list[Any]:
    """The router's views of the referrals (as ``token`` sees them) once all are in
    ``statuses``, else []."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=router, headers=headers) as http:
        found = [(await http.get(f"/api/v1/referrals/{rid}")) for rid in referral_ids]
    ready = all(r.status_code == 200 and r.json()["status"] in statuses for r in found)
    return [r.json() for r in found] if ready else []


async def test_no_personal_data_leaves_in_events_or_logs() -> None:
    state, ports, env = eo_run_environment("eo-test-privacy-")
    log_file = state.parent / f"{state.name}.log"
    with log_file.open("w") as log:
        process = await asyncio.to_thread(
            subprocess.Popen, [str(EO), "run"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"nats://127.0.0.1:{ports['EO_NATS_PORT']}"
    try:
        await asyncio.to_thread(
            wait_ready, process, f"http://127.0.0.1:{ports['ROUTER_PORT']}/ready"
        )
        credentials = state / "credentials"
        ow = await nats.connect(url, **load_login(credentials, "ow-lanark").connect_options())
        provider = await nats.connect(
            url, **load_login(credentials, provider_user_name(CCA)).connect_options()
        )
        offers: list[dict[str, Any]] = []

        async def on_offer(msg: Any) -> None:
            offers.append(json.loads(msg.data))

        await provider.subscribe(f"referral.offered.{CCA}", cb=on_offer)
        router = f"http://127.0.0.1:{ports['ROUTER_PORT']}"
        admin = (state / "admin-token").read_text().strip()  # what `eo run` generated
        try:
            sent = []
            for community in ("Almonte", "Perth", "Lanark"):
                request = careless_request(community)
                sent.append(request["referral_id"])
                await ow.jetstream().publish(
                    requested_subject(request["source"]["system"]),
                    json.dumps(request).encode(),
                    headers={"Nats-Msg-Id": request["message_id"]},
                )
            # Routed (the demo's sample provider answers its own referrals, not these), and
            # the offers to CCA delivered to its subscription.
            routed = await until(
                lambda: views(router, sent, {"offered", "unmatched"}, admin), within=30, every=0.1
            )
            to_cca = {
                v["referral_id"]
                for v in routed
                if v["current_offer"] and v["current_offer"]["provider_id"] == CCA
            }
            assert to_cca  # Almonte's goes to Canadian Career Academy
            await until(lambda: to_cca <= {o["referral_id"] for o in offers}, within=30, every=0.1)
            ours = [o for o in offers if o["referral_id"] in to_cca]
            for offer in ours:  # CCA answers ours, with personal data in unknown fields
                reply = {
                    "type": "referral.response.v1",
                    "message_id": str(uuid.uuid4()),
                    "referral_id": offer["referral_id"],
                    "offer_id": offer["offer_id"],
                    "decision": "accept",
                    "client_name": NAMES[2],
                    "contact": f"{EMAIL} / {PHONE}",
                }
                await provider.jetstream().publish(
                    f"referral.response.{CCA}",
                    json.dumps(reply).encode(),
                    headers={"Nats-Msg-Id": reply["message_id"]},
                )
            await until(
                lambda: views(router, sorted(to_cca), {"accepted"}, admin), within=30, every=0.1
            )
        finally:
            await ow.close()
            await provider.close()
        stored = await read_stream(url, load_login(credentials, OPERATOR_USER))
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.to_thread(process.wait, 60)
    logs = log_file.read_text()
    log_file.unlink()
    shutil.rmtree(state, ignore_errors=True)

    # What the router publishes (the stream also holds what OW systems and providers sent).
    outbound = ("referral.status.", "referral.offered.", "referral.notice.", "referral.dead")
    published = [(s, d) for s, d in stored if s.startswith(outbound)]
    inbound = [d for s, d in stored if s.startswith("referral.requested.")]
    assert len(inbound) >= 7  # the demo's 4 and our 3
    assert any(personal_data(d.decode()) for d in inbound)  # the control: it was sent
    assert len(published) >= 20
    answered = [s for s, d in published if s.startswith("referral.status.") and b'"accepted"' in d]
    assert len(answered) >= 4  # the demo's three, and ours
    leaks = [(s, hit) for s, d in published for hit in personal_data(d.decode())]
    log_leaks = [hit for line in logs.splitlines() for hit in personal_data(line)]
    print(
        f"\nprivacy scan: {len(published)} published events, {len(logs.splitlines())} log "
        f"lines: {len(leaks)} and {len(log_leaks)} personal-data matches",
        flush=True,
    )
    assert leaks == []
    assert log_leaks == []
