"""The chain layer: contracts, compilation, deployment, wallets and the `Chain` connection."""

# First: it imports py_ecc (as web3 will) and puts back the recursion limit that import raises.
from covey.chain import _recursion  # noqa: F401  # isort: skip
from covey.chain.chain import Chain, dev_accounts
from covey.chain.compiler import CompiledContract, compile_contract

__all__ = ["Chain", "CompiledContract", "compile_contract", "dev_accounts"]
