"""Covey: a decentralised AI network on an EVM chain (token economy, Arena, Alliance, Gateway, Compute)."""

import os
import sys

# Keccak through pysha3 is ~5x faster than eth-hash's default pycryptodome backend, and the chain hashes a
# lot; eth-hash picks its backend once, on first use, from this variable.
os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")

# py_ecc (which eth_account imports through eth_keyfile) raises the recursion limit to 100,000 on first import:
# past what the C stack takes, so a deeply nested input would crash the process (SIGSEGV) instead of raising
# RecursionError. Import it here, before anything else can, and put the limit back (see covey.bounds).
_recursion_limit = sys.getrecursionlimit()
import py_ecc  # noqa: E402, F401

sys.setrecursionlimit(_recursion_limit)

__version__ = "0.1.0"
