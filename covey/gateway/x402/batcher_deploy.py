"""Deploys the PaymentBatcher contract, which settles many x402 payments in one transaction."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from covey.chain import Chain


def deploy_batcher(chain: Chain, deployer: LocalAccount) -> str:
    """Deploy `PaymentBatcher` from `deployer`; return its checksum address."""
    return str(chain.deploy("PaymentBatcher", sender=deployer).address)
