"""Decodes raw `eth_getLogs` entries with a contract's ABI into plain JSON-ready values, fast.

web3's event processing builds AttributeDicts and re-validates every log; the indexer decodes thousands
per poll, so it keys each ABI event by its topic and calls `eth_abi` directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address

MAX_REF = 2**63 - 1  # SQLite integers are signed 64-bit; larger ids are not "subjects" people type


@dataclass(frozen=True)
class DecodedLog:
    """One log as the index stores it: the event's name, its arguments, and the ids and accounts it names."""

    event: str
    args: dict[str, Any]
    refs: tuple[int | None, int | None]  # the first two indexed uint256 args (task/alliance/job id, round)
    accounts: frozenset[str]  # lower-case addresses among the args


@dataclass(frozen=True)
class _EventSpec:
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data: tuple[tuple[str, str], ...]  # (name, type) in data order
    order: tuple[tuple[str, str], ...]  # (name, type) in declaration order


def canonical_type(entry: Mapping[str, Any]) -> str:
    """The ABI type as it appears in an event signature (tuples expanded)."""
    kind = str(entry["type"])
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(component) for component in entry.get("components", []))
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def event_topic(entry: Mapping[str, Any]) -> str:
    """topic0 of an ABI event entry: keccak of `Name(type,...)`, as 0x-hex."""
    signature = f"{entry['name']}({','.join(canonical_type(i) for i in entry['inputs'])})"
    return "0x" + keccak(text=signature).hex()


class EventDecoder:
    """Decodes the logs of one contract ABI; unknown topics decode to a raw `?` event instead of failing."""

    def __init__(self, abi: Iterable[Mapping[str, Any]]) -> None:
        self._specs: dict[str, _EventSpec] = {}
        for entry in abi:
            if entry.get("type") != "event" or entry.get("anonymous"):
                continue
            inputs = entry["inputs"]
            self._specs[event_topic(entry)] = _EventSpec(
                name=str(entry["name"]),
                indexed=tuple((i["name"], canonical_type(i)) for i in inputs if i.get("indexed")),
                data=tuple((i["name"], canonical_type(i)) for i in inputs if not i.get("indexed")),
                order=tuple((i["name"], canonical_type(i)) for i in inputs),
            )

    @property
    def event_names(self) -> list[str]:
        return sorted({spec.name for spec in self._specs.values()})

    def decode(self, topics: Sequence[str], data: str) -> DecodedLog:
        """Decode one log given its hex topics and hex data."""
        spec = self._specs.get(topics[0].lower()) if topics else None
        if spec is None or len(topics) != len(spec.indexed) + 1:
            return DecodedLog("?", {"topics": list(topics), "data": data}, (None, None), frozenset())
        values: dict[str, Any] = {}
        for (name, kind), topic in zip(spec.indexed, topics[1:], strict=True):
            raw = bytes.fromhex(topic[2:])
            # Indexed dynamic values (strings, arrays) are only their hash in the topic.
            values[name] = "0x" + raw.hex() if _is_dynamic(kind) else abi_decode([kind], raw)[0]
        if spec.data:
            decoded = abi_decode([kind for _, kind in spec.data], bytes.fromhex(data[2:]))
            values.update(zip((name for name, _ in spec.data), decoded, strict=True))
        refs = [int(values[name]) for name, kind in spec.indexed if kind == "uint256" and values[name] <= MAX_REF]
        accounts: set[str] = set()
        args = {name: _plain(values[name], kind, accounts) for name, kind in spec.order}
        return DecodedLog(spec.name, args, (_at(refs, 0), _at(refs, 1)), frozenset(accounts))


def _at(items: list[int], index: int) -> int | None:
    return items[index] if index < len(items) else None


def _is_dynamic(kind: str) -> bool:
    return kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")


@lru_cache(maxsize=65_536)
def checksum(address: str) -> str:
    """EIP-55 checksum address (cached: the same few hundred accounts recur in every log)."""
    return str(to_checksum_address(address))


def _plain(value: Any, kind: str, accounts: set[str]) -> Any:
    """A JSON-ready value of ABI type `kind`: checksummed addresses (noted in `accounts`), 0x-hex bytes, lists."""
    if kind == "address":
        accounts.add(str(value).lower())
        return checksum(str(value))
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        # An array's items share the element type; a tuple's components are not worth typing here.
        item_kind = kind[: kind.rindex("[")] if kind.endswith("]") else ""
        return [_plain(item, item_kind, accounts) for item in value]
    return value
