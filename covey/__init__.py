"""Covey: a decentralised AI network on an EVM chain (token economy, Arena, Alliance, Gateway, Compute)."""

import os

# Keccak through pysha3 is ~5x faster than eth-hash's default pycryptodome backend, and the chain hashes a
# lot; eth-hash picks its backend once, on first use, from this variable.
os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")

__version__ = "0.1.0"
