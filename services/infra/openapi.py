"""What both services' OpenAPI documents share: the bearer scheme, problem responses (RFC 9457)
for each status an operation can give, and request bodies that take no fields beyond their own.

``tests/faults/test_*_api_schemathesis.py`` hold each service to its document.
"""

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Components, Schema, SecurityScheme
from litestar.typing import FieldDefinition

from contracts.directory import Problem
from services.infra.http import PROBLEM_JSON

#: ``security`` of every operation that needs a token.
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def bearer_components(description: str) -> Components:
    """``components`` declaring the ``bearer`` scheme that ``BEARER`` names."""
    return Components(
        security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer", description=description)
        }
    )


def problem_responses(when: Mapping[int, str], *statuses: int) -> dict[int, ResponseSpec]:
    """``responses`` of an operation: an RFC 9457 problem document for each status, described
    by ``when[status]``."""
    return {
        status: ResponseSpec(
            Problem, description=when[status], media_type=PROBLEM_JSON, generate_examples=False
        )
        for status in statuses
    }


class ClosedStructSchemaPlugin(StructSchemaPlugin):
    """Structs with ``forbid_unknown_fields`` get ``additionalProperties: false``.

    Litestar leaves it out, so the document would promise that a body may carry extra fields
    which the service then refuses with 422. (Subclasses Litestar's own, private, plugin:
    litestar is pinned below 3.)
    """

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType) and info.forbid_unknown_fields:
            schema.additional_properties = False
        return schema
