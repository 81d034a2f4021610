"""The x402 `exact` scheme on EVM chains (EIP-3009 `transferWithAuthorization`): the server and facilitator sides.

Payers use the official x402 SDK (`x402.mechanisms.evm.exact.ExactEvmScheme`); the tests' own client, which can
also build payments a well-behaved client never would, lives in `tests/x402_scaffolding/client.py`.
"""

from covey.gateway.x402.mechanisms.evm.exact.facilitator import ExactEvmFacilitator
from covey.gateway.x402.mechanisms.evm.exact.server import ExactEvmServer

__all__ = ["ExactEvmFacilitator", "ExactEvmServer"]
