"""The x402 `exact` scheme on EVM chains (EIP-3009 `transferWithAuthorization`)."""

from covey.gateway.x402.mechanisms.evm.exact.client import ExactEvmClient
from covey.gateway.x402.mechanisms.evm.exact.facilitator import ExactEvmFacilitator
from covey.gateway.x402.mechanisms.evm.exact.server import ExactEvmServer

__all__ = ["ExactEvmClient", "ExactEvmFacilitator", "ExactEvmServer"]
