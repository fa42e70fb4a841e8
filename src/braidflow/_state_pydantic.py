"""What braidflow asks of pydantic for a model state: a field's validation
as an assignment validates it, and a model made of its fields by name.

pydantic is an optional extra: each function imports it when called (only
a model state calls them).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["field_adapter", "fields_validator", "model_from_fields"]


def fields_validator(cls: Any) -> Any:
    """pydantic's validator of a model's fields, without its model validators:
    its ``validate_assignment(values, key, value)`` validates one field as
    pydantic validates an assignment (field validators and config included)
    and copies ``values``, a dict of the fields by name, with the new value.
    ``None`` for a model with no such validator (a ``RootModel``, a model
    validator in ``"plain"`` mode).

    Taken from the model's core schema: its fields' schema is wrapped by
    its model validators (``function-*``), its ``model`` schema, and
    definition references.
    """
    import pydantic_core

    schema = cls.__pydantic_core_schema__
    definitions = []
    if schema["type"] == "definitions":
        definitions = schema["definitions"]
        schema = schema["schema"]
    by_ref = {definition["ref"]: definition for definition in definitions}
    config = None
    while schema["type"] != "model-fields":
        kind = schema["type"]
        if kind == "definition-ref" and schema["schema_ref"] in by_ref:
            schema = by_ref[schema["schema_ref"]]
        elif kind in ("function-before", "function-after", "function-wrap"):
            schema = schema["schema"]  # a model validator (a field's are inside)
        elif kind == "model" and schema["cls"] is cls:
            config = schema.get("config")
            schema = schema["schema"]
        else:
            return None
    if definitions:  # (the fields may refer to them: a nested or recursive model)
        schema = {"type": "definitions", "schema": schema, "definitions": definitions}
    return pydantic_core.SchemaValidator(schema, config)


def field_adapter(cls: Any, key: str) -> Any:
    """A pydantic TypeAdapter for one field of a model: its type and constraints
    (for a model `fields_validator` finds none of).

    Made of what a field's ``FieldInfo`` says of its values (its metadata:
    constraints, validators, ``strict``; its discriminator), not of the
    ``FieldInfo`` itself: pydantic warns of the rest (an alias, a default,
    ``frozen``, ``repr``...) given outside a model.
    """
    import pydantic

    field = cls.model_fields[key]
    metadata = list(field.metadata)
    if field.discriminator is not None:
        metadata.append(pydantic.Field(discriminator=field.discriminator))
    annotated: Any = (
        typing.Annotated[(field.annotation, *metadata)] if metadata else field.annotation
    )
    return pydantic.TypeAdapter(annotated)


def model_from_fields(cls: Any, data: Mapping[str, Any]) -> Any:
    """``cls.model_validate(data)``, ``data`` keyed by field name (as
    ``model_dump()`` gives it and ``instance.__dict__`` holds it), whatever
    the fields' aliases and whether the model populates by name (pydantic
    2.11's ``by_name=``: the extra asks for it)."""
    return cls.model_validate(data, by_alias=False, by_name=True)
