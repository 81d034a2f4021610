"""Imports that raise the interpreter's recursion limit, done here so that the limit is put back after them.

`py_ecc` (reached through `eth_account`, web3 and py-evm's precompiles) sets the limit to 100,000 when
imported, and py-evm (`eth`) to 12,288. At 100,000 a JSON body nested 100,000 deep (195 KB) overflowed
the C stack of `covey chain serve` (SIGSEGV) instead of raising `RecursionError`. `covey.chain` imports
`py_ecc` through `keeping_recursion_limit` (cheap: ~60 ms, and web3 imports it anyway); the embedded
chain imports py-evm the same way. Nothing else about the interpreter changes.

With the default limit of 1,000 py-evm runs contracts nested ~160 calls deep (about six Python frames
per EVM call); the engine enforces a lower, fixed depth so that the outcome never depends on how deep
the caller's stack is (see `engine.MAX_CALL_DEPTH`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from covey.bounds import SANE_RECURSION_LIMIT

CPYTHON_DEFAULT_RECURSION_LIMIT = 1000
# What the two libraries set; a limit at exactly one of these values, above the sane bound, was set by
# them in an import that ran before covey's (e.g. `import eth_account` first) and goes back to the default.
_SET_BY_IMPORTS = frozenset({100_000, 1024 * 12})


@contextmanager
def keeping_recursion_limit() -> Iterator[None]:
    """Run imports, then put the recursion limit back where it was before them."""
    before = sys.getrecursionlimit()
    try:
        yield
    finally:
        after = sys.getrecursionlimit()
        target = min(before, after)
        if target > SANE_RECURSION_LIMIT and target in _SET_BY_IMPORTS:
            target = CPYTHON_DEFAULT_RECURSION_LIMIT
        if target != after:
            sys.setrecursionlimit(target)


with keeping_recursion_limit():
    import py_ecc  # noqa: F401  # imported here, once, so that later imports of it change nothing
