"""Keccak-256 through pysha3 for the process, chosen when a chain is opened, never on import.

py-evm, web3, eth-account and covey all hash through eth-hash, which picks its backend on first use:
`ETH_HASH_BACKEND` if set, else pycryptodome. pycryptodome costs 9.5 us of CPU per 64-byte hash
against pysha3's 3.1 us (measured here), and the chain hashes on every storage access, address,
signature and block, so pysha3 saves ~20% of the CPU of a signed ERC-20 transfer on the embedded
chain. `use_fast_keccak` points eth-hash at pysha3 when a `Chain` or an embedded node is opened, so
that importing covey changes nothing; an explicit `ETH_HASH_BACKEND` is left to eth-hash.
"""

from __future__ import annotations

import os

import eth_hash.auto


def use_fast_keccak() -> None:
    """Make eth-hash hash with pysha3 from now on (idempotent); a no-op if ETH_HASH_BACKEND names a backend."""
    if os.environ.get("ETH_HASH_BACKEND"):
        return
    try:
        from eth_hash.backends.pysha3 import keccak256, preimage
    except ImportError:  # pysha3 is a dependency, but eth-hash's own choice still works without it
        return
    # eth-hash's `Keccak256` calls `hasher` and `preimage`, and sets them itself once its first use has
    # picked a backend; setting them here skips that pick, whether or not it already ran. (Only the
    # parameter names differ from the declared types, hence the ignores.)
    keccak = eth_hash.auto.keccak
    if keccak.hasher != keccak256:
        keccak.hasher = keccak256  # type: ignore[assignment]
        keccak.preimage = preimage  # type: ignore[assignment]
