"""Frozen dataclasses to and from JSON objects, every field checked against its annotation.

The messages spotrun's processes pass each other (the callback's progress report, the agent's
heartbeat, the controller's stop request and spending horizon) are read from files and objects
that something else wrote, so each is parsed once, here, into its dataclass: a value that does
not fit is a ``FieldError`` naming the field, never a ``KeyError`` or a wrong value found three
modules later. Parsing follows the dataclass itself, so a field added to a message is read and
written without a parser to keep in step.

The annotations it reads:

- ``int``: a JSON integer (not ``true``, not ``1.0``); ``bool``: ``true``/``false``; ``str``;
- ``float``: any JSON number, read as a float; finite, unless the field's metadata is
  ``NON_FINITE`` (a diverged loss is NaN, and is still worth reporting);
- an ``enum.Enum``: by its value; a nested dataclass: a JSON object; ``dict[str, X]``: an object of X;
- ``X | None``: ``null`` or an X.

A field missing from the object takes its default; one without a default reads as ``null``.
Keys that name no field are ignored, so a newer writer may add some.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_Message = TypeVar("_Message", bound="DataclassInstance")

NON_FINITE: Mapping[str, bool] = types.MappingProxyType({"non_finite": True})  # field(metadata=NON_FINITE): NaN, inf allowed


class FieldError(ValueError):
    """A JSON value that does not fit its field: the message names the field, the value and what was expected."""


def from_json(kind: type[_Message], data: object, *, path: str = "") -> _Message:
    """``data`` as a ``kind``; ``path`` names where ``data`` sits in a larger message (for the error)."""
    if not isinstance(data, dict):
        raise FieldError(f"{path or 'the message'} is {_shown(data)}, expected an object")
    hints = _hints(kind)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        if not field.init or (field.name not in data and _has_default(field)):
            continue
        finite = not field.metadata.get("non_finite", False)
        values[field.name] = _value(hints[field.name], data.get(field.name), f"{path}{field.name}", finite=finite)
    return kind(**values)


def to_json(message: DataclassInstance) -> dict[str, Any]:
    """``message`` as a JSON object: fields in their declared order, enums as their values, nested dataclasses as objects."""
    return {field.name: _plain(getattr(message, field.name)) for field in dataclasses.fields(message)}


def _plain(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


@functools.cache
def _hints(kind: type[Any]) -> dict[str, Any]:
    """The resolved annotations of ``kind``'s fields (modules use ``from __future__ import annotations``)."""
    return typing.get_type_hints(kind)


def _has_default(field: dataclasses.Field[Any]) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _value(annotation: Any, value: object, path: str, *, finite: bool, nullable: bool = False) -> Any:
    """``value`` checked (and, for enums and dataclasses, built) as ``annotation``; FieldError when it does not fit."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        options = [option for option in typing.get_args(annotation) if option is not type(None)]
        if len(options) != 1 or len(typing.get_args(annotation)) != 2:
            raise TypeError(f"{path}: only `X | None` unions are supported, not {annotation}")
        return None if value is None else _value(options[0], value, path, finite=finite, nullable=True)
    if origin is dict:
        if isinstance(value, dict):
            item_type = typing.get_args(annotation)[1]
            return {str(key): _value(item_type, item, f"{path}[{key!r}]", finite=finite) for key, item in value.items()}
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            choices = ", ".join(str(member.value) for member in annotation)
            raise FieldError(f"{path} is {_shown(value)}, expected one of {choices}{' or null' if nullable else ''}") from None
    elif isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if isinstance(value, dict):
            return from_json(annotation, value, path=f"{path}.")
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _fits_float(value, finite=finite):
            return float(value)
        expected = "float" if not finite else "finite float"
        raise FieldError(f"{path} is {_shown(value)}, expected {expected}{' or null' if nullable else ''}")
    elif annotation in (bool, int, str):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
    else:
        raise TypeError(f"{path}: typed_json cannot read fields annotated {annotation}")
    raise FieldError(f"{path} is {_shown(value)}, expected {_name(annotation)}{' or null' if nullable else ''}")


def _fits_float(value: int | float, *, finite: bool) -> bool:
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return False
    return not finite or math.isfinite(number)


def _name(annotation: Any) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _shown(value: object) -> str:
    """A value for a message, cut short: it may be huge or nested deep."""
    return reprlib.repr(value)
