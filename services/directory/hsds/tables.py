"""The HSDS tabular form: nested HSDS JSON flattened into tables, and CSV datapackages.

Both import paths meet here: HSDS JSON (one object, a list, an API page or the official
``tabular.json``) is flattened into the same tables a CSV datapackage holds, one row per
record with its parent's id filled in, so one mapping (``importer``) reads both. The export
flattens the directory's objects the same way and writes the official layout: the official
``datapackage.json`` and one CSV per resource, columns in the descriptor's order.
"""

import csv
import functools
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from services.directory.hsds import DATAPACKAGE

Row = dict[str, Any]
Tables = dict[str, list[Row]]

#: Nested property -> the HSDS table its items belong to.
CHILDREN: Final[dict[str, str]] = {
    "phones": "phone", "schedules": "schedule", "service_areas": "service_area",
    "service_at_locations": "service_at_location", "languages": "language",
    "organization": "organization", "funding": "funding", "cost_options": "cost_option",
    "program": "program", "programs": "program", "required_documents": "required_document",
    "contacts": "contact", "attributes": "attribute", "metadata": "metadata",
    "location": "location", "locations": "location", "addresses": "address",
    "accessibility": "accessibility", "organization_identifiers": "organization_identifier",
    "taxonomy_term": "taxonomy_term", "taxonomy_detail": "taxonomy", "service": "service",
    "services": "service",
}  # fmt: skip
_TAXONOMY_KEYS = {"id", "name", "description", "uri", "version", "metadata"}


@functools.cache
def descriptor() -> dict[str, Any]:
    """The official datapackage descriptor (bundled copy)."""
    loaded: dict[str, Any] = json.loads(DATAPACKAGE.read_text())
    return loaded


@functools.cache
def columns() -> dict[str, tuple[str, ...]]:
    """Table -> its columns, in the official order."""
    return {
        resource["name"]: tuple(field["name"] for field in resource["schema"]["fields"])
        for resource in descriptor()["resources"]
    }


@functools.cache
def paths() -> dict[str, str]:
    """Table -> its CSV file name."""
    return {resource["name"]: resource["path"] for resource in descriptor()["resources"]}


class Flattener:
    """Collects rows table by table; a record met twice (nested in two parents) is kept once."""

    def __init__(self) -> None:
        self.tables: Tables = {name: [] for name in columns()}
        self._seen: dict[tuple[str, str], Row] = {}

    def add(self, kind: str, obj: Row, parent: tuple[str, str] | None = None) -> None:
        row = {key: value for key, value in obj.items() if key not in CHILDREN}
        if parent is not None:
            self._link(kind, row, *parent)
        for key, child_kind in CHILDREN.items():
            value = obj.get(key)
            linked = isinstance(value, dict) and isinstance(value.get("id"), str)
            if linked and f"{child_kind}_id" in columns()[kind]:
                assert isinstance(value, dict)
                row.setdefault(f"{child_kind}_id", value["id"])
        self._store(kind, row)
        own_id = obj.get("id")
        for key, child_kind in CHILDREN.items():
            value = obj.get(key)
            items = [value] if isinstance(value, dict) else value
            if not isinstance(items, list):
                continue
            for item in items:
                if isinstance(item, dict):
                    one_to_many = isinstance(value, list)
                    link = (kind, own_id) if one_to_many and isinstance(own_id, str) else None
                    self.add(child_kind, item, link)

    @staticmethod
    def _link(kind: str, row: Row, parent_kind: str, parent_id: str) -> None:
        if kind == "attribute":
            row.setdefault("link_id", parent_id)
            row.setdefault("link_entity", parent_kind)
        elif kind == "metadata":
            row.setdefault("resource_id", parent_id)
            row.setdefault("resource_type", parent_kind)
        elif f"{parent_kind}_id" in columns()[kind]:
            row.setdefault(f"{parent_kind}_id", parent_id)

    def _store(self, kind: str, row: Row) -> None:
        key = row.get("id")
        if not isinstance(key, str):
            self.tables[kind].append(row)
            return
        known = self._seen.get((kind, key))
        if known is None:
            self._seen[(kind, key)] = row
            self.tables[kind].append(row)
        else:
            for name, value in row.items():
                known.setdefault(name, value)


def kind_of(obj: Row) -> str | None:
    """Which HSDS object a JSON object is, from its shape (files do not say)."""
    keys = set(obj)
    if "location_type" in keys or "latitude" in keys:
        return "location"
    if "status" in keys:
        return "service"
    if keys & {"service", "location"} or {"service_id", "location_id"} <= keys:
        return "service_at_location"
    if keys & {"taxonomy", "taxonomy_detail", "parent_id", "term_uri", "code"}:
        return "taxonomy_term"
    if keys <= _TAXONOMY_KEYS and "name" in keys:
        return "taxonomy"
    if "name" in keys:
        return "organization"
    return None


def flatten_json(document: Any) -> tuple[Tables, list[str]]:
    """HSDS JSON as tables, and what could not be recognised (for the report)."""
    flat = Flattener()
    unknown: list[str] = []
    by_path = {path: name for name, path in paths().items()}

    def visit(item: Any, where: str) -> None:
        if isinstance(item, list):
            for n, element in enumerate(item):
                visit(element, f"{where}[{n}]")
            return
        if not isinstance(item, dict):
            unknown.append(f"{where}: not an HSDS object")
            return
        if isinstance(item.get("contents"), list):
            visit(item["contents"], f"{where}.contents")
            return
        if any(key in by_path for key in item):
            for key, rows in item.items():
                if key in by_path and isinstance(rows, list):
                    for row in rows:
                        if isinstance(row, dict):
                            flat.add(by_path[key], row)
            return
        if {"version", "openapi_url"} <= set(item):
            return  # the API's base document: no records
        kind = kind_of(item)
        if kind is None:
            unknown.append(f"{where}: not an HSDS object (no id/name/status/location_type)")
            return
        flat.add(kind, item)

    visit(document, "$")
    return flat.tables, unknown


def flatten_objects(objects: Iterable[tuple[str, Row]]) -> Tables:
    flat = Flattener()
    for kind, obj in objects:
        flat.add(kind, obj)
    return flat.tables


def cell(value: Any) -> str:
    """A CSV cell: empty for a missing value, JSON numbers and text as written."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(table: str, rows: Iterable[Row]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns()[table])
    for row in rows:
        writer.writerow([cell(row.get(name)) for name in columns()[table]])
    return out.getvalue()


def write_datapackage(tables: Tables, folder: Path) -> list[Path]:
    """The official ``datapackage.json`` and one CSV per resource (header only when empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "datapackage.json"]
    written[0].write_text(json.dumps(descriptor(), indent=2, ensure_ascii=False) + "\n")
    for table, path in paths().items():
        target = folder / path
        target.write_text(to_csv(table, tables.get(table, [])), encoding="utf-8")
        written.append(target)
    return written


def read_datapackage(folder: Path) -> Tables:
    """The CSVs of a datapackage folder, by its own descriptor when it has a full one (the
    official example's ``datapackage.json`` only points at the spec's), else the official one."""
    resources = descriptor()["resources"]
    own = folder / "datapackage.json"
    if own.is_file():
        try:
            loaded = json.loads(own.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get("resources"), list):
            resources = loaded["resources"]
    tables: Tables = {name: [] for name in columns()}
    for resource in resources:
        name, path = resource.get("name"), resource.get("path")
        if name not in tables or not isinstance(path, str) or not (folder / path).is_file():
            continue
        with (folder / path).open(newline="", encoding="utf-8-sig") as f:
            tables[name] = [
                {key: value for key, value in row.items() if key is not None and value != ""}
                for row in csv.DictReader(f)
            ]
    return tables
