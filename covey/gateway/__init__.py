"""The Gateway: paid inference for agents. Today: the x402 payment layer (paywall, facilitator, settlement)."""

from covey.gateway.x402.batcher_deploy import deploy_batcher
from covey.gateway.x402.errors import Reason, X402Error
from covey.gateway.x402.facilitator_app import create_facilitator_app
from covey.gateway.x402.facilitator_client import HttpFacilitatorClient, LocalFacilitatorClient
from covey.gateway.x402.interfaces import FacilitatorClient, VerifiedPayment
from covey.gateway.x402.mechanisms.evm.exact import ExactEvmClient, ExactEvmFacilitator, ExactEvmServer
from covey.gateway.x402.paywall import Paywall
from covey.gateway.x402.settlement import BatchedSettlement, StrictSettlement

__all__ = [
    "BatchedSettlement",
    "ExactEvmClient",
    "ExactEvmFacilitator",
    "ExactEvmServer",
    "FacilitatorClient",
    "HttpFacilitatorClient",
    "LocalFacilitatorClient",
    "Paywall",
    "Reason",
    "StrictSettlement",
    "VerifiedPayment",
    "X402Error",
    "create_facilitator_app",
    "deploy_batcher",
]
