"""The Gateway: paid inference for agents.

- The x402 payment layer (paywall, facilitator, strict and batched settlement), imported eagerly.
- The OpenAI-compatible inference API over the Arena's consensus models, routed across staked hosts:
  `build_gateway` / `create_gateway_app`, `ModelCatalog`, `LocalBackend`, `HostRouter`, `SpotChecker`,
  `HostPayouts`, `HostRegistryClient`, `create_host_app`, `quote`. These load torch, so they are imported on
  first use (`from covey.gateway import build_gateway`), not by `import covey.gateway`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from covey.gateway.errors import (
    GatewayError,
    HostError,
    InvalidRequestError,
    ModelNotFoundError,
    NoHostAvailableError,
)
from covey.gateway.x402.batcher_deploy import deploy_batcher
from covey.gateway.x402.errors import Reason, X402Error
from covey.gateway.x402.facilitator_app import create_facilitator_app
from covey.gateway.x402.facilitator_client import HttpFacilitatorClient, LocalFacilitatorClient
from covey.gateway.x402.interfaces import FacilitatorClient, VerifiedPayment
from covey.gateway.x402.mechanisms.evm.exact import ExactEvmFacilitator, ExactEvmServer
from covey.gateway.x402.paywall import Paywall
from covey.gateway.x402.settlement import BatchedSettlement, StrictSettlement

_LAZY = {
    "Gateway": "covey.gateway.app",
    "GatewayConfig": "covey.gateway.app",
    "PaymentOptions": "covey.gateway.app",
    "build_gateway": "covey.gateway.app",
    "create_gateway_app": "covey.gateway.app",
    "GenerationRequest": "covey.gateway.backend",
    "LocalBackend": "covey.gateway.backend",
    "HostConfig": "covey.gateway.host",
    "create_host_app": "covey.gateway.host",
    "Completion": "covey.gateway.inference",
    "SamplingParams": "covey.gateway.inference",
    "GatewayMetrics": "covey.gateway.metrics",
    "ModelCatalog": "covey.gateway.models",
    "ServedModel": "covey.gateway.models",
    "HostPayouts": "covey.gateway.payouts",
    "Quote": "covey.gateway.pricing",
    "quote": "covey.gateway.pricing",
    "HostRegistryClient": "covey.gateway.registry",
    "HostRouter": "covey.gateway.router",
    "SpotChecker": "covey.gateway.spot_check",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'covey.gateway' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "BatchedSettlement",
    "ExactEvmFacilitator",
    "ExactEvmServer",
    "FacilitatorClient",
    "GatewayError",
    "HostError",
    "HttpFacilitatorClient",
    "InvalidRequestError",
    "LocalFacilitatorClient",
    "ModelNotFoundError",
    "NoHostAvailableError",
    "Paywall",
    "Reason",
    "StrictSettlement",
    "VerifiedPayment",
    "X402Error",
    "create_facilitator_app",
    "deploy_batcher",
    *_LAZY,
]
