"""Generates ``contracts/schemas/``: a JSON Schema per public Struct and the AsyncAPI document.

``python -m contracts.export`` (``make schemas``) rewrites the folder from the Structs;
``python -m contracts.export --check`` changes nothing and exits 1 listing the files that
differ. The output is deterministic (sorted keys, 2-space indent, trailing newline), so the
committed files are a reviewable diff of every wire change.
"""

import argparse
import importlib
import inspect
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec

from contracts import subjects
from contracts.common import Message
from contracts.referrals import (
    DeadLetter,
    ProviderNotice,
    ReferralCancel,
    ReferralOffered,
    ReferralProgress,
    ReferralRequested,
    ReferralResponse,
    ReferralStatusChanged,
)

__all__ = [
    "ASYNCAPI_FILE",
    "SCHEMA_DIR",
    "SCHEMA_MODULES",
    "asyncapi_document",
    "drifted",
    "generate",
    "main",
    "public_structs",
    "struct_schema",
    "write",
]

#: Every module whose ``__all__`` names wire types; each public Struct there gets a schema file.
SCHEMA_MODULES: tuple[str, ...] = (
    "contracts.common",
    "contracts.referrals",
    "contracts.directory",
    "contracts.router",
)
SCHEMA_DIR = Path(__file__).parent / "schemas"
ASYNCAPI_FILE = "asyncapi.json"

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# The base of every NATS message: only its tagged subclasses are ever sent.
_NOT_SENT_ALONE: frozenset[type[msgspec.Struct]] = frozenset({Message})

Json = dict[str, Any]


def public_structs(modules: Iterable[str] = SCHEMA_MODULES) -> dict[str, type[msgspec.Struct]]:
    """The Struct classes named in each module's ``__all__``, by class name."""
    found: dict[str, type[msgspec.Struct]] = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in vars(module)["__all__"]:
            obj = getattr(module, name)
            if not (isinstance(obj, type) and issubclass(obj, msgspec.Struct)):
                continue
            if obj in _NOT_SENT_ALONE:
                continue
            # Schema files are named by class, so two classes of one name would overwrite.
            if found.get(obj.__name__, obj) is not obj:
                raise ValueError(f"two public Structs are named {obj.__name__}")
            found[obj.__name__] = obj
    return dict(sorted(found.items()))


def _clean_descriptions(node: Any) -> Any:
    # msgspec copies class docstrings verbatim, and Python 3.13 strips their indentation at
    # compile time while 3.11 does not; cleandoc makes the output the same on both.
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def struct_schema(cls: type[msgspec.Struct]) -> Json:
    """A standalone JSON Schema (2020-12) of ``cls``: its own schema at the root, nested types
    under ``$defs``."""
    name = cls.__name__
    _, components = msgspec.json.schema_components([cls], ref_template="#/$defs/{name}")
    root = components[name]
    defs = {key: value for key, value in components.items() if key != name}
    # A type that refers to itself still needs its own entry for those references to resolve.
    if f'"#/$defs/{name}"' in json.dumps(components):
        defs[name] = root
    doc: Json = {
        "$schema": _DIALECT,
        "$comment": f"Generated from {cls.__module__}.{name} by `python -m contracts.export`.",
        **root,
    }
    if defs:
        doc["$defs"] = defs
    cleaned: Json = _clean_descriptions(doc)
    return cleaned


class _Channel(NamedTuple):
    key: str
    address: str
    message: type[Message]
    publisher: str
    subscriber: str
    #: What the router does on the channel; the AsyncAPI document describes the router.
    action: Literal["send", "receive"]
    description: str


#: The parameter of a channel's last token: the party the subject belongs to (DESIGN.md 3).
_SYSTEM = "{system}"
_PROVIDER_ID = "{provider_id}"
_OW_SYSTEM = "the OW system named in the subject"
_PROVIDER = "the provider named in the subject"
_CHANNELS: tuple[_Channel, ...] = (
    _Channel(
        "referralRequested",
        f"{subjects.REQUESTED_PREFIX}.{_SYSTEM}",
        ReferralRequested,
        _OW_SYSTEM,
        "router",
        "receive",
        "An OW caseworker's system asks for an EO provider for a client who is ready. "
        "The same referral_id sent again is the same referral. source.system must equal the "
        "subject's system, else the referral is `rejected`.",
    ),
    _Channel(
        "referralCancel",
        f"{subjects.CANCEL_PREFIX}.{_SYSTEM}",
        ReferralCancel,
        _OW_SYSTEM,
        "router",
        "receive",
        "The OW system that requested a referral calls it off: before acceptance it is "
        "`cancelled`, after it (accepted or in_service) `withdrawn`, and the provider holding "
        "it gets a notice. A system cannot cancel another's referrals.",
    ),
    _Channel(
        "referralStatus",
        f"{subjects.STATUS_PREFIX}.{_SYSTEM}",
        ReferralStatusChanged,
        "router",
        _OW_SYSTEM,
        "send",
        "Every state change of the system's own referrals, published once. Routing: received "
        "-> offered -> accepted; offered -> declined or expired -> offered (the next site); "
        "unmatched when no suitable site is left; cancelled; rejected when the request was "
        "invalid. After acceptance, as the provider reports: accepted -> in_service -> "
        "completed (with an outcome code); accepted -> not_started and in_service -> "
        "ended_early (with a reason code); accepted or in_service -> withdrawn (by OW). "
        "Closed: completed, not_started, ended_early, withdrawn, unmatched, cancelled, "
        "rejected.",
    ),
    _Channel(
        "referralOffered",
        f"{subjects.OFFERED_PREFIX}.{_PROVIDER_ID}",
        ReferralOffered,
        "router",
        _PROVIDER,
        "send",
        "The router offers a referral to the nearest suitable site of one provider. "
        "No response before expires_at counts as a decline with reason `timeout`.",
    ),
    _Channel(
        "referralNotice",
        f"{subjects.NOTICE_PREFIX}.{_PROVIDER_ID}",
        ProviderNotice,
        "router",
        _PROVIDER,
        "send",
        "The router tells a provider what happened to something of its own: an offer "
        "withdrawn (cancelled by OW, expired), an accepted referral withdrawn, or a response "
        "or progress report refused (and why; a refused message changes nothing).",
    ),
    _Channel(
        "referralResponse",
        f"{subjects.RESPONSE_PREFIX}.{_PROVIDER_ID}",
        ReferralResponse,
        _PROVIDER,
        "router",
        "receive",
        "A provider accepts or declines an offer it received.",
    ),
    _Channel(
        "referralProgress",
        f"{subjects.PROGRESS_PREFIX}.{_PROVIDER_ID}",
        ReferralProgress,
        _PROVIDER,
        "router",
        "receive",
        "The provider holding an accepted referral reports on it: in_service (no code), "
        "completed (an outcome code), not_started or ended_early (a reason code). The codes' "
        "English and French names are served by the directory at GET /api/v1/taxonomy.",
    ),
    _Channel(
        "referralDead",
        subjects.DEAD,
        DeadLetter,
        "router",
        "operators",
        "send",
        "Messages the router could not accept (undecodable or invalid), with the reason; "
        "an invalid request also makes its referral `rejected`.",
    ),
)


def _summary(cls: type) -> str:
    # The docstring's first paragraph, on one line: a first line alone may stop mid-sentence.
    paragraph = inspect.cleandoc(cls.__doc__ or cls.__name__).split("\n\n")[0]
    return " ".join(paragraph.split())


def asyncapi_document() -> Json:
    """The AsyncAPI 3.0 document of the referral subjects, from the router's point of view.

    Message payloads are ``$ref`` s to the schema files next to it.
    """
    channels: Json = {}
    operations: Json = {}
    messages: Json = {}
    for channel in _CHANNELS:
        msg_name = channel.message.__name__
        entry: Json = {
            "address": channel.address,
            "title": msg_name,
            "description": (
                f"{channel.description}\n\nPublished by: {channel.publisher}. "
                f"Received by: {channel.subscriber}."
            ),
            "messages": {msg_name: {"$ref": f"#/components/messages/{msg_name}"}},
        }
        for parameter in ("system", "provider_id"):
            if f"{{{parameter}}}" in channel.address:
                entry["parameters"] = {parameter: {"$ref": f"#/components/parameters/{parameter}"}}
        channels[channel.key] = entry
        operations[f"{channel.action}{msg_name}"] = {
            "action": channel.action,
            "channel": {"$ref": f"#/channels/{channel.key}"},
            "messages": [{"$ref": f"#/channels/{channel.key}/messages/{msg_name}"}],
        }
        messages[msg_name] = {
            "name": channel.message.__struct_config__.tag,
            "title": msg_name,
            "summary": _summary(channel.message),
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/NatsHeaders"},
            "correlationId": {"$ref": "#/components/correlationIds/referralId"},
            "payload": {"$ref": f"{msg_name}.json"},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "EO referral routing",
            "version": "1.1.0",
            "description": (
                "Routes Ontario Works clients to Employment Ontario provider sites over NATS "
                "JetStream (DESIGN.md section 3).\n\n"
                "Every message is UTF-8 JSON with a `type` tag (e.g. `referral.requested.v1`) "
                "and a `message_id` that is also sent as the `Nats-Msg-Id` header, so "
                "JetStream drops duplicates. Times are RFC 3339 UTC. Unknown fields are "
                "ignored, so fields may be added without a new version; a breaking change "
                "gets a new `type` tag.\n\n"
                "Every subject names the party it belongs to in its last token, an OW "
                "system's id or a provider's id; NATS permissions tie each party's user to its "
                "own token, so the router trusts the subject, never the body, for who sent a "
                "message. contracts/CHANGELOG.md records every change of the contract."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "parameters": {
                "system": {
                    "description": (
                        "The OW system's id, a slug (`[a-z0-9][a-z0-9-]*`, no dots). Each OW "
                        "system's NATS user may publish only its own requests and cancels and "
                        "read only its own status events."
                    ),
                    "examples": ["ow-lanark"],
                },
                "provider_id": {
                    "description": (
                        "The provider's id, a slug (`[a-z0-9][a-z0-9-]*`, no dots). Each "
                        "provider's NATS user may read only its own offers and notices and "
                        "publish only its own responses and progress reports."
                    ),
                    "examples": ["canadian-career-academy", "community-employment-services"],
                },
            },
            "correlationIds": {
                "referralId": {
                    "description": "Every message about one referral carries its id.",
                    "location": "$message.payload#/referral_id",
                },
            },
            "schemas": {
                "NatsHeaders": {
                    "type": "object",
                    "properties": {
                        "Nats-Msg-Id": {
                            "type": "string",
                            "format": "uuid",
                            "description": "The payload's message_id; JetStream dedupes on it.",
                        },
                    },
                    "required": ["Nats-Msg-Id"],
                },
            },
        },
        "x-nats-jetstream": {
            "stream": subjects.STREAM,
            "subjects": list(subjects.STREAM_SUBJECTS),
            "consumers": {
                subjects.ROUTER_DURABLE: {
                    "filter_subjects": list(subjects.ROUTER_FILTER_SUBJECTS),
                },
                f"{subjects.PROVIDER_DURABLE_PREFIX}-{_PROVIDER_ID}": {
                    "filter_subjects": [
                        f"{subjects.OFFERED_PREFIX}.{_PROVIDER_ID}",
                        f"{subjects.NOTICE_PREFIX}.{_PROVIDER_ID}",
                    ],
                },
                f"{subjects.OW_DURABLE_PREFIX}-{_SYSTEM}": {
                    "filter_subjects": [f"{subjects.STATUS_PREFIX}.{_SYSTEM}"],
                },
            },
        },
    }


def _render(doc: Json) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(modules: Iterable[str] = SCHEMA_MODULES) -> dict[str, str]:
    """Every file of the schema folder, by file name, as it should read."""
    files = {
        f"{name}.json": _render(struct_schema(cls)) for name, cls in public_structs(modules).items()
    }
    files[ASYNCAPI_FILE] = _render(asyncapi_document())
    return files


def drifted(files: dict[str, str], schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """File names that differ from ``files``: changed, missing, or no longer generated."""
    on_disk = {path.name for path in schema_dir.glob("*.json")}
    names = sorted(on_disk | files.keys())
    return [
        name
        for name in names
        if name not in files
        or name not in on_disk
        or (schema_dir / name).read_text(encoding="utf-8") != files[name]
    ]


def write(files: dict[str, str], schema_dir: Path = SCHEMA_DIR) -> list[str]:
    """Make the folder hold exactly ``files``; returns the names written or removed."""
    changed = drifted(files, schema_dir)
    schema_dir.mkdir(parents=True, exist_ok=True)
    for name in changed:
        path = schema_dir / name
        if name in files:
            path.write_text(files[name], encoding="utf-8")
        else:
            path.unlink()
    return changed


def main(
    argv: Sequence[str] | None = None,
    *,
    modules: Iterable[str] = SCHEMA_MODULES,
    schema_dir: Path = SCHEMA_DIR,
) -> int:
    """The command line; ``modules`` and ``schema_dir`` are for tests of the command itself."""
    parser = argparse.ArgumentParser(
        prog="python -m contracts.export",
        description="Write contracts/schemas/ from the contracts' Structs.",
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if any file would change"
    )
    args = parser.parse_args(argv)
    files = generate(modules)
    if args.check:
        stale = drifted(files, schema_dir)
        for name in stale:
            print(f"drifted: {schema_dir / name}", file=sys.stderr)
        if stale:
            print("run `make schemas` (python -m contracts.export) and commit", file=sys.stderr)
            return 1
        return 0
    for name in write(files, schema_dir):
        print(f"{'wrote' if name in files else 'removed'} {schema_dir / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
