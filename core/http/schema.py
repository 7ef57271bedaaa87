"""A small JSON Schema checker for request bodies: the subset our OpenAPI spec uses.

Supported: ``type`` (one or a list), ``properties``, ``required``,
``additionalProperties: false``, ``minLength``/``maxLength``, ``pattern``,
``minimum``/``maximum``, ``enum``, ``items``/``maxItems``, ``minProperties``/
``maxProperties`` and ``additionalProperties`` as a schema. The first problem
is reported with its JSON path, e.g. ``$.scores.empathy: must be an integer``,
so a client sees what to fix. Anything else in a schema is documentation only.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["SchemaError", "validate"]


class SchemaError(ValueError):
    """The value does not match the schema; the message names where and why."""


_TYPE_NAMES = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _is(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):  # JSON true is not the number 1
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int | float)
    raise ValueError(f"unsupported schema type {kind!r}")


@lru_cache(maxsize=256)
def _pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """Return if ``value`` matches ``schema``; raise ``SchemaError`` naming the first mismatch."""
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, k) for k in kinds):
            raise SchemaError(f"{path}: must be {' or '.join(_TYPE_NAMES[k] for k in kinds)}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(f"{path}: must be at least {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(f"{path}: must be at most {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            raise SchemaError(f"{path}: does not match {schema['pattern']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{path}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: must be at most {schema['maximum']}")
    if isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{path}: must have at most {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                raise SchemaError(f"{path}.{name}: is required")
        if len(value) < schema.get("minProperties", 0):
            raise SchemaError(f"{path}: must have at least {schema['minProperties']} members")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            raise SchemaError(f"{path}: must have at most {schema['maxProperties']} members")
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in properties:
                validate(item, properties[name], f"{path}.{name}")
            elif extra is False:
                raise SchemaError(f"{path}.{name}: is not a known field")
            elif isinstance(extra, dict):
                validate(item, extra, f"{path}.{name}")
