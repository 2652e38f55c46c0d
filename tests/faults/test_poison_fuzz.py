"""1,000 fuzzed payloads of every inbound message type, with valid traffic beside them: each
invalid one reaches ``referral.dead`` with a reason, once; the valid referrals are routed.
"""

import collections
import copy
import json
import time
import uuid
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from nats.aio.client import Client as NatsClient

from contracts.subjects import cancel_subject, requested_subject, response_subject
from services.router.consumer import InvalidMessage, parse
from tests.faults.harness import HEADER, Figures
from tests.referrals import CCA, SYSTEM, Observer, cancel, make_request, publish, send_request

pytestmark = pytest.mark.faults

FUZZED = 1000
VALID = 20

BASES: dict[str, Any] = {
    requested_subject(SYSTEM): msgspec.to_builtins(make_request()),
    cancel_subject(SYSTEM): msgspec.to_builtins(cancel(uuid.uuid4())),
    response_subject(CCA): {
        "type": "referral.response.v1",
        "message_id": str(uuid.uuid4()),
        "referral_id": str(uuid.uuid4()),
        "offer_id": str(uuid.uuid4()),
        "decision": "accept",
    },
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def key_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend(key_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(key_paths(value, (*prefix, index)))
    return found


@st.composite
def fuzzed(draw: st.DrawFn) -> tuple[str, bytes]:
    subject = draw(st.sampled_from(sorted(BASES)))
    base = BASES[subject]
    how = draw(st.sampled_from(["garbage", "truncate", "drop", "replace", "retag"]))
    if how == "garbage":
        return subject, draw(st.binary(max_size=300))
    text = json.dumps(base).encode()
    if how == "truncate":
        return subject, text[: draw(st.integers(0, len(text) - 1))]
    doc = copy.deepcopy(base)
    if how == "retag":
        doc["type"] = draw(st.text(max_size=30))
        return subject, json.dumps(doc).encode()
    path = draw(st.sampled_from(key_paths(doc)))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    if how == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values)
    return subject, json.dumps(doc).encode()


def invalid(subject: str, payload: bytes) -> bool:
    try:
        parse(subject, payload)
    except InvalidMessage:
        return True
    return False


def generate(count: int) -> list[tuple[str, bytes]]:
    """``count`` fuzzed payloads the router must refuse (hypothesis drives the generation)."""
    found: list[tuple[str, bytes]] = []

    @settings(
        max_examples=count * 3,
        database=None,
        deadline=None,
        derandomize=True,  # the same 1,000 cases on every run (CI must not be a lottery)
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzzed())
    def collect(case: tuple[str, bytes]) -> None:
        if len(found) < count and invalid(*case):
            found.append(case)

    collect()
    return found


async def test_fuzzed_poison_all_reach_the_dead_letter_subject(
    router: Any, observer: Observer, nc: NatsClient
) -> None:
    started = time.monotonic()
    poison = generate(FUZZED)
    assert len(poison) == FUZZED
    kinds = {subject for subject, _ in poison}
    assert len(kinds) == 3  # every inbound message type
    js = nc.jetstream()
    valid = [make_request() for _ in range(VALID)]
    every = len(poison) // VALID
    for index, (subject, payload) in enumerate(poison):
        if index % every == 0 and index // every < VALID:
            await send_request(js, valid[index // every])
        await publish(js, subject, payload, msg_id=str(uuid.uuid4()))

    dead = await observer.until_dead(FUZZED, within=300)
    for request in valid:
        await observer.until_offer(request.referral_id, 1, within=60)
    sent = collections.Counter([payload for _, payload in poison])
    letters = collections.Counter([letter.payload for letter in dead])
    without_reason = [letter for letter in dead if not letter.error.strip()]
    figures = Figures(
        test="1,000 fuzzed poison messages",
        sent=FUZZED + VALID,
        terminal=len(dead) + VALID,
        lost=sum(max(n - letters[p], 0) for p, n in sent.items()),
        duplicated=sum(max(n - sent[p], 0) for p, n in letters.items()),
        accepted=0,
        unmatched=0,
        offers=sum(len(observer.offers(r.referral_id)) for r in valid),
        seconds=time.monotonic() - started,
        note=f"{len(dead)} dead letters; {VALID} valid referrals all offered",
    )
    print(f"\n{HEADER}\n{figures.line()}", flush=True)
    assert not without_reason
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.offers == VALID
