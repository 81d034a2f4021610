"""The dev faucet: gas money, USD and COV for any address, on local chains only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from web3 import Web3

from covey.chain.chain import Chain, dev_accounts
from covey.chain.units import COV, ETH, USD
from covey.errors import ChainError

if TYPE_CHECKING:
    from covey.chain.manifest import Deployment

FAUCET_AMOUNTS = {
    "eth_wei": 10 * ETH,
    "usd_units": 1_000 * USD,
    "cov_units": 10_000 * COV,
}


def fund(chain: Chain, deployment: Deployment, address: str, *, scale: int = 1) -> dict[str, int]:
    """Send ETH, USD and COV from the dev treasury account (dev0) to `address`; refused off local chains."""
    if not chain.is_local:
        raise ChainError(f"the faucet only runs on local dev chains, not chain {chain.chain_id}")
    to = Web3.to_checksum_address(address)
    source = dev_accounts(1)[0]
    amounts = {key: value * scale for key, value in FAUCET_AMOUNTS.items()}
    cov = deployment.contract(chain, "CoveyToken")
    if int(cov.functions.balanceOf(source.address).call()) < amounts["cov_units"]:
        raise ChainError("the faucet account dev0 has run out of COV: redeploy with `covey chain deploy`")
    chain.send_eth(source, to, amounts["eth_wei"])
    usd = deployment.contract(chain, "USDToken")
    chain.transact(usd.functions.faucet(to, amounts["usd_units"]), source)
    chain.transact(cov.functions.transfer(to, amounts["cov_units"]), source)
    return amounts
