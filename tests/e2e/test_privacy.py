"""Privacy: a full `eo run` with referrals whose senders wrongly add personal data in fields the
contract does not have. Nothing the system publishes, and no log line, carries any of it.

Events carry only the opaque ``client_ref`` (DESIGN.md section 3). Unknown fields are ignored
on decode, so personal data an OW system adds by mistake must die at the router's edge.
(Dead letters are the exception by design: they carry an invalid message's original bytes,
for operators only; this run sends no invalid message.)

The run answers HTTP too, with tokens the test issues (`eo token issue`): the OW system lists
its referrals, with personal data in the query string, and sends a careless intake; the
provider lists its offers and accepts one. Each request is one access-log line (method, path,
status, time, role), which the scan covers like every other line; no line holds a query string,
a token or a body.
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


def issue_token(env: dict[str, str], *args: str) -> str:
    """``eo token issue *args`` against the run's database; the token's text."""
    issued = subprocess.run(
        [str(EO), "token", "issue", *args, "--name", "privacy scan"],
        env=env | {"EO_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    return issued.stdout.split("token: ", 1)[1].split()[0]


def access_lines(logs: str) -> list[dict[str, Any]]:
    """The HTTP access-log lines (JSON) of the run's log."""
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "http.request"]


async def ask_as_parties(
    router: str, ow_token: str, provider_token: str, offer_ids: set[str]
) -> set[str]:
    """What an OW system and a provider do over HTTP, personal data in the query strings and
    an intake body; the provider accepts one of ``offer_ids`` (listed first). Returns it."""
    ow = {"Authorization": f"Bearer {ow_token}"}
    cca = {"Authorization": f"Bearer {provider_token}"}
    async with httpx.AsyncClient(base_url=router) as http:
        listed = await http.get("/api/v1/referrals", params={"status": "offered"}, headers=ow)
        assert listed.status_code == 200, listed.text
        for params in ({"office": NAMES[3]}, {"cursor": PHONE}, {"office": EMAIL}):
            refused = await http.get("/api/v1/referrals", params=params, headers=ow)
            assert refused.status_code == 422, refused.text
        careless = careless_request("Almonte")
        for key in ("type", "message_id"):
            careless.pop(key)
        intake = await http.post("/api/v1/referrals", json=careless, headers=ow)
        assert intake.status_code == 422, intake.text  # a field the contract does not have
        offers = await http.get("/api/v1/offers", headers=cca)
        assert offers.status_code == 200, offers.text
        open_ids = {o["offer_id"] for o in offers.json()["items"]}
        assert offer_ids <= open_ids
        chosen = sorted(offer_ids)[0]
        accepted = await http.post(
            f"/api/v1/offers/{chosen}/accept",
            headers=cca | {"Idempotency-Key": str(uuid.uuid4())},
        )
        assert accepted.status_code == 202, accepted.text
    return {chosen}


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
        ow_token = issue_token(env, "--role", "ow", "--system", "ow-lanark")
        provider_token = issue_token(env, "--role", "provider", "--provider", CCA)
        try:
            sent = []
            for community in ("Almonte", "Perth", "Lanark", "Almonte"):
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
            assert len(to_cca) >= 2  # Almonte's go to Canadian Career Academy
            await until(lambda: to_cca <= {o["referral_id"] for o in offers}, within=30, every=0.1)
            ours = [o for o in offers if o["referral_id"] in to_cca]
            # One is accepted over HTTP; CCA answers the others over NATS, with personal data
            # in unknown fields.
            over_http = await ask_as_parties(
                router, ow_token, provider_token, {o["offer_id"] for o in ours}
            )
            for offer in (o for o in ours if o["offer_id"] not in over_http):
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
    assert len(inbound) >= 8  # the demo's 4 and our 4
    assert any(personal_data(d.decode()) for d in inbound)  # the control: it was sent
    assert len(published) >= 20
    answered = [s for s, d in published if s.startswith("referral.status.") and b'"accepted"' in d]
    assert len(answered) >= 4  # the demo's three, and ours
    leaks = [(s, hit) for s, d in published for hit in personal_data(d.decode())]
    log_leaks = [hit for line in logs.splitlines() for hit in personal_data(line)]
    access = access_lines(logs)
    print(
        f"\nprivacy scan: {len(published)} published events, {len(logs.splitlines())} log "
        f"lines ({len(access)} HTTP access lines): {len(leaks)} and {len(log_leaks)} "
        "personal-data matches",
        flush=True,
    )
    assert leaks == []
    assert log_leaks == []
    # The parties' requests are there, each one line of what it was and who asked; no line
    # holds a query string, a token or a body.
    requests = {(a["method"], a["path"], a["status"], a.get("role")) for a in access}
    accept_path = f"/api/v1/offers/{next(iter(over_http))}/accept"
    assert {
        ("GET", "/api/v1/referrals", 200, "ow"),
        ("GET", "/api/v1/referrals", 422, "ow"),
        ("POST", "/api/v1/referrals", 422, "ow"),
        ("GET", "/api/v1/offers", 200, "provider"),
        ("POST", accept_path, 202, "provider"),
        ("GET", "/ready", 200, None),
    } <= requests
    assert any(a["path"].startswith("/api/v1/referrals/") and a.get("role") == "admin"
               for a in access)  # fmt: skip
    fields = {"event", "service", "method", "path", "status", "duration_ms", "role"}
    assert all(set(a) - {"level", "timestamp"} <= fields for a in access)
    assert not [a for a in access if "?" in a["path"]]
    for token in (ow_token, provider_token, admin):  # the secret part of an issued token
        assert (token.partition(".")[2] or token) not in logs
    # (The banner says how to send a token; no log line holds a header.)
    assert not [line for line in logs.splitlines() if line.startswith("{") and "Bearer" in line]
