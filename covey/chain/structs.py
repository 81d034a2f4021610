"""Contract structs as Python values: web3 decodes them as named tuples, `struct_as` turns one into a dataclass.

Web3's `decode_tuples` names a struct's fields as the ABI does (camelCase); the clients keep frozen dataclasses
with the same fields in snake_case, so one rule maps every struct of every contract.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from enum import IntEnum
from typing import Any, TypeVar

from web3.contract import Contract

T = TypeVar("T")

_WORD_START = re.compile(r"(?<!^)(?=[A-Z])")


def with_named_structs(contract: Contract) -> Contract:
    """The same contract, whose calls return structs as named tuples (web3's `decode_tuples`).

    Call only views that return a struct (or an array of them) through it: web3 8 keys a function's outputs by
    name under `decode_tuples`, and a Vyper function returning a tuple names none of them, so its outputs
    collapse into the last one.
    """
    return contract.w3.eth.contract(address=contract.address, abi=contract.abi, decode_tuples=True)


def snake_case(name: str) -> str:
    """`initialModelHash` -> `initial_model_hash`."""
    return _WORD_START.sub("_", name).lower()


def struct_as(cls: type[T], struct: Any, **known: Any) -> T:
    """Dataclass `cls` from a struct decoded as a named tuple.

    Each field takes the struct field of the same name in camelCase, converted to the field's type (an
    `IntEnum`, `bytes`, `bool`, `int` or `str`), unless `known` gives it (fields the struct does not hold,
    such as the id it was read by, or values built from several struct fields).
    """
    values = {snake_case(name): value for name, value in struct._asdict().items()}
    fields: dict[str, Any] = {}
    for name, kind in _field_types(cls).items():
        fields[name] = known[name] if name in known else _convert(kind, values[name])
    return cls(**fields)


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type) -> dict[str, Any]:
    """The dataclass's fields and their types (resolved once: annotations are strings until asked)."""
    if cls not in _FIELD_TYPES:
        hints = typing.get_type_hints(cls)
        _FIELD_TYPES[cls] = {field.name: hints[field.name] for field in dataclasses.fields(cls) if field.init}
    return _FIELD_TYPES[cls]


def _convert(kind: Any, value: Any) -> Any:
    if isinstance(kind, type) and issubclass(kind, IntEnum):
        return kind(int(value))
    if kind in (bytes, bool, int, str):
        return kind(value)
    return value
