"""Signing transactions fast: plain EIP-1559 transactions are RLP-encoded and signed here, the rest by eth-account."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from coincurve import PrivateKey as CurveKey
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount
from eth_utils import is_checksum_address, keccak
from hexbytes import HexBytes

from covey.chain._rlp import rlp_encode

_DYNAMIC_FEE_FIELDS = frozenset(
    {"type", "chainId", "nonce", "maxFeePerGas", "maxPriorityFeePerGas", "gas", "to", "value", "data"}
)
_REQUIRED_DYNAMIC_FEE_FIELDS = ("chainId", "nonce", "maxFeePerGas", "maxPriorityFeePerGas", "gas")


def sign_transaction(account: LocalAccount, tx: Mapping[str, Any]) -> SignedTransaction:
    """`account.sign_transaction(tx)`, ~15x faster for the common EIP-1559 transaction.

    eth-account spends ~1 ms per signature in formatters and validation; a plain type-2 dict
    (int fields, hex or bytes data, a checksummed `to`, no access list) is encoded and signed
    here directly, with the same key backend, into the same bytes. Anything else goes to
    eth-account.
    """
    fast = _sign_dynamic_fee(account.key, tx)
    return fast if fast is not None else account.sign_transaction(dict(tx))


class FastSigningAccount(LocalAccount):
    """A `LocalAccount` whose `sign_transaction` takes the fast path of `sign_transaction`."""

    def sign_transaction(self, transaction_dict: Any, blobs: Any = None) -> SignedTransaction:
        fast = _sign_dynamic_fee(self.key, transaction_dict) if blobs is None else None
        return fast if fast is not None else super().sign_transaction(transaction_dict, blobs)


def _uint(value: Any) -> bool:
    return type(value) is int and value >= 0


_cached_checksum_check = functools.lru_cache(maxsize=1024)(is_checksum_address)
_curve_key = functools.lru_cache(maxsize=64)(CurveKey)  # deriving the public key costs as much as signing


def _sign_dynamic_fee(private_key: bytes, tx: Any) -> SignedTransaction | None:
    """The signed type-2 transaction `tx`, or None if it is not the plain shape handled here."""
    if not isinstance(tx, Mapping) or tx.get("type", 2) not in (2, "0x2") or not _DYNAMIC_FEE_FIELDS.issuperset(tx):
        return None
    if not all(_uint(tx.get(field)) for field in _REQUIRED_DYNAMIC_FEE_FIELDS) or not _uint(tx.get("value", 0)):
        return None
    to = tx.get("to", b"")
    if isinstance(to, str):
        if not _cached_checksum_check(to):
            return None
        to = bytes.fromhex(to[2:])
    data = tx.get("data", b"")
    if isinstance(data, str):
        if data[:2] not in ("0x", "0X") or len(data) % 2:
            return None
        try:
            data = bytes.fromhex(data[2:])
        except ValueError:
            return None
    if not isinstance(to, bytes) or len(to) not in (0, 20) or not isinstance(data, bytes):
        return None
    fields = [
        tx["chainId"],
        tx["nonce"],
        tx["maxPriorityFeePerGas"],
        tx["maxFeePerGas"],
        tx["gas"],
        bytes(to),
        tx.get("value", 0),
        bytes(data),
        [],
    ]
    signature = _curve_key(private_key).sign_recoverable(keccak(b"\x02" + rlp_encode(fields)), hasher=None)
    r, s, y_parity = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    raw = b"\x02" + rlp_encode([*fields, y_parity, r, s])
    return SignedTransaction(HexBytes(raw), HexBytes(keccak(raw)), r, s, y_parity)
