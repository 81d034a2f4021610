"""The chain layer: contracts, compilation, deployment, wallets and the `Chain` connection."""

from covey.chain.chain import Chain, dev_accounts
from covey.chain.compiler import CompiledContract, compile_contract

__all__ = ["Chain", "CompiledContract", "compile_contract", "dev_accounts"]
