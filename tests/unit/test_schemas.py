"""The committed schema files: equal to what the Structs generate, standalone, and complete."""

import importlib
import inspect
import json
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import contracts
from contracts import export, subjects
from contracts.common import Message


def test_committed_schemas_match_the_structs() -> None:
    stale = export.drifted(export.generate())

    assert not stale, (
        f"contracts/schemas/ is out of date ({', '.join(stale)}): "
        "run `make schemas` and commit the result"
    )


def _modules_defining_public_structs() -> set[str]:
    found = set()
    for info in pkgutil.iter_modules(contracts.__path__, prefix="contracts."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                not name.startswith("_")
                and inspect.isclass(obj)
                and issubclass(obj, msgspec.Struct)
                and obj.__module__ == module.__name__
            ):
                found.add(module.__name__)
    return found


def test_every_module_of_wire_types_is_exported_to_schemas() -> None:
    missing = _modules_defining_public_structs() - set(export.SCHEMA_MODULES)

    assert not missing, f"add {sorted(missing)} to contracts.export.SCHEMA_MODULES"


def _resolve(doc: Any, pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    for token in pointer[2:].split("/"):
        doc = doc[token.replace("~1", "/").replace("~0", "~")]
    return doc


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


GENERATED = export.generate()


@pytest.mark.parametrize("name", sorted(set(GENERATED) - {export.ASYNCAPI_FILE}))
def test_each_schema_file_is_standalone(name: str) -> None:
    doc = json.loads(GENERATED[name])

    assert doc["title"] == name.removesuffix(".json")
    for ref in _refs(doc):
        assert isinstance(_resolve(doc, ref), dict), ref


def test_every_v1_1_type_has_its_schema_file() -> None:
    for name in ("ReferralProgress", "ProviderNotice", "ProgressTerm"):
        assert f"{name}.json" in GENERATED


def test_the_message_base_gets_no_schema_of_its_own() -> None:
    assert f"{Message.__name__}.json" not in GENERATED


ASYNCAPI = export.asyncapi_document()


def _with_parameter(subject_of: Callable[[str], str], parameter: str) -> str:
    return subject_of("party-id").replace("party-id", f"{{{parameter}}}")


def test_asyncapi_is_contract_v1_1() -> None:
    assert ASYNCAPI["info"]["version"] == "1.1.0"


def test_asyncapi_channels_are_the_per_party_subjects() -> None:
    addresses = {channel["address"] for channel in ASYNCAPI["channels"].values()}

    assert addresses == {
        _with_parameter(subjects.requested_subject, "system"),
        _with_parameter(subjects.cancel_subject, "system"),
        _with_parameter(subjects.status_subject, "system"),
        _with_parameter(subjects.offered_subject, "provider_id"),
        _with_parameter(subjects.notice_subject, "provider_id"),
        _with_parameter(subjects.response_subject, "provider_id"),
        _with_parameter(subjects.progress_subject, "provider_id"),
        subjects.DEAD,
    }


def test_asyncapi_channels_declare_the_parameter_of_their_address() -> None:
    for channel in ASYNCAPI["channels"].values():
        named = set(re.findall(r"{(\w+)}", channel["address"]))
        assert set(channel.get("parameters", {})) == named, channel["address"]
        for parameter in named:
            assert parameter in ASYNCAPI["components"]["parameters"]


def test_asyncapi_router_receives_what_it_consumes() -> None:
    channels = ASYNCAPI["channels"]
    received = {
        channels[operation["channel"]["$ref"].rsplit("/", 1)[1]]["address"]
        for operation in ASYNCAPI["operations"].values()
        if operation["action"] == "receive"
    }

    assert {
        address.replace("{system}", "*").replace("{provider_id}", "*") for address in received
    } == set(subjects.ROUTER_FILTER_SUBJECTS)


def test_asyncapi_lists_every_partys_consumer() -> None:
    jetstream = ASYNCAPI["x-nats-jetstream"]

    assert jetstream["stream"] == subjects.STREAM
    assert jetstream["consumers"] == {
        subjects.ROUTER_DURABLE: {"filter_subjects": list(subjects.ROUTER_FILTER_SUBJECTS)},
        "provider-{provider_id}": {
            "filter_subjects": [
                _with_parameter(subjects.offered_subject, "provider_id"),
                _with_parameter(subjects.notice_subject, "provider_id"),
            ]
        },
        "ow-{system}": {"filter_subjects": [_with_parameter(subjects.status_subject, "system")]},
    }


def test_asyncapi_references_resolve() -> None:
    for ref in _refs(ASYNCAPI):
        if ref.startswith("#/"):
            assert isinstance(_resolve(ASYNCAPI, ref), dict), ref
        else:
            assert ref in GENERATED, f"{ref} is not a generated schema file"


def test_asyncapi_names_every_message_by_its_tag() -> None:
    messages = ASYNCAPI["components"]["messages"]
    structs = export.public_structs(("contracts.referrals",)).values()
    sent = {cls.__name__: cls for cls in structs if issubclass(cls, Message)}

    assert set(messages) == set(sent)
    assert {"ReferralProgress", "ProviderNotice"} <= set(sent)
    for name, message in messages.items():
        assert message["name"] == sent[name].__struct_config__.tag
        assert message["payload"] == {"$ref": f"{name}.json"}


def test_asyncapi_operations_use_their_channels_messages() -> None:
    for operation in ASYNCAPI["operations"].values():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(f"{channel_ref}/messages/")


def test_check_lists_drifted_files_and_write_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    modules = ("contracts.referrals",)
    assert export.main([], modules=modules, schema_dir=tmp_path) == 0
    (tmp_path / "ReferralCancel.json").write_text("{}\n", encoding="utf-8")
    (tmp_path / "Source.json").unlink()
    (tmp_path / "Removed.json").write_text("{}\n", encoding="utf-8")
    capsys.readouterr()

    assert export.main(["--check"], modules=modules, schema_dir=tmp_path) == 1
    report = capsys.readouterr().err
    for name in ("ReferralCancel.json", "Source.json", "Removed.json"):
        assert name in report
    assert "make schemas" in report

    assert export.main([], modules=modules, schema_dir=tmp_path) == 0
    assert not (tmp_path / "Removed.json").exists()
    assert export.main(["--check"], modules=modules, schema_dir=tmp_path) == 0


def test_output_is_deterministic() -> None:
    assert export.generate(("contracts.referrals",)) == export.generate(("contracts.referrals",))
    for text in GENERATED.values():
        assert text.endswith("}\n")
        assert (
            json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            == text
        )
