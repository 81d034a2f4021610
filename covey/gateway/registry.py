"""`HostRegistryClient`: the HostRegistry contract through its ABI, for gateways and hosts (blocking calls).

Reads: registered hosts with price, heartbeat and stake; the subsidy rate; which gateways are allowed.
Writes: a host's register / heartbeat / deregister; a gateway's `payHosts` and `reportMismatch`.
Callers on an event loop run these on a worker thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.logs import DISCARD

from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.gateway.models import find_contract

HOST_REGISTRY = "HostRegistry"
GATEWAY_CACHE_S = 30.0


@dataclass(frozen=True)
class HostInfo:
    """One registered host as the chain knows it."""

    address: str
    model_id: str
    endpoint: str
    price_per_1k_atomic: int
    registered_at: int
    last_heartbeat: int
    stake: int


@dataclass(frozen=True)
class Payout:
    """One `HostPaid` event: the payment passed on, and the Treasury's subsidy on top."""

    host: str
    amount: int
    subsidy: int


class HostRegistryClient:
    """A handle on one deployed HostRegistry."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = Web3.to_checksum_address(address)
        self.contract = chain.contract(HOST_REGISTRY, self.address)
        self._gateways: dict[str, tuple[bool, float]] = {}

    @classmethod
    def from_deployment(cls, chain: Chain, deployment: Deployment) -> HostRegistryClient | None:
        """The suite's HostRegistry (manifest or on-chain Registry), or `None` when it has none."""
        address = find_contract(chain, deployment, HOST_REGISTRY)
        return cls(chain, address) if address else None

    # -- reads ----------------------------------------------------------------------------------------

    def hosts(self) -> list[HostInfo]:
        """Every registered host (live or not)."""
        return [
            HostInfo(
                address=Web3.to_checksum_address(row[0]),
                model_id=str(row[1]),
                endpoint=str(row[2]).rstrip("/"),
                price_per_1k_atomic=int(row[3]),
                registered_at=int(row[4]),
                last_heartbeat=int(row[5]),
                stake=int(row[6]),
            )
            for row in self.contract.functions.hosts().call()
        ]

    def live_hosts(self) -> list[HostInfo]:
        """Registered hosts with a recent heartbeat (by chain time) and enough stake."""
        now = self.chain.timestamp()
        timeout_s = int(self.contract.functions.heartbeatTimeout().call())
        min_stake = int(self.contract.functions.minStake().call())
        return [h for h in self.hosts() if now <= h.last_heartbeat + timeout_s and h.stake >= min_stake]

    def subsidy_bps(self) -> int:
        return int(self.contract.functions.subsidyBps().call())

    def heartbeat_timeout_s(self) -> int:
        return int(self.contract.functions.heartbeatTimeout().call())

    def is_gateway(self, address: str) -> bool:
        """Whether `address` is an allowed gateway (remembered for half a minute: hosts ask per request)."""
        key = Web3.to_checksum_address(address)
        cached = self._gateways.get(key)
        if cached is not None and time.monotonic() - cached[1] < GATEWAY_CACHE_S:
            return cached[0]
        allowed = bool(self.contract.functions.isGateway(key).call())
        self._gateways[key] = (allowed, time.monotonic())
        return allowed

    def is_registered(self, address: str) -> bool:
        return bool(self.contract.functions.isRegistered(Web3.to_checksum_address(address)).call())

    def usd_balance(self) -> int:
        """The paid-in USD the registry holds, not yet passed on to hosts."""
        usd = self.chain.contract("USDToken", self.contract.functions.usd().call())
        return int(usd.functions.balanceOf(self.address).call())

    # -- hosts ----------------------------------------------------------------------------------------

    def register(self, account: LocalAccount, model_id: str, endpoint: str, price_per_1k_atomic: int) -> None:
        self.chain.transact(self.contract.functions.register(model_id, endpoint, price_per_1k_atomic), account)

    def heartbeat(self, account: LocalAccount) -> None:
        self.chain.transact(self.contract.functions.heartbeat(), account)

    def deregister(self, account: LocalAccount) -> None:
        self.chain.transact(self.contract.functions.deregister(), account)

    # -- gateways -------------------------------------------------------------------------------------

    def pay_hosts(self, account: LocalAccount, amounts: dict[str, int]) -> list[Payout]:
        """Pass `amounts` (host -> atomic USD) on to the hosts with the subsidy; the payouts as mined."""
        hosts = list(amounts)
        receipt = self.chain.transact(self.contract.functions.payHosts(hosts, [amounts[h] for h in hosts]), account)
        events = self.contract.events.HostPaid().process_receipt(receipt, errors=DISCARD)
        return [Payout(str(e["args"]["host"]), int(e["args"]["amount"]), int(e["args"]["subsidy"])) for e in events]

    def report_mismatch(
        self, account: LocalAccount, host: str, request: bytes, expected: bytes, observed: bytes, signature: str
    ) -> int:
        """Report a host's signed wrong answer; return the COV slashed."""
        fn = self.contract.functions.reportMismatch(
            Web3.to_checksum_address(host), request, expected, observed, bytes.fromhex(signature.removeprefix("0x"))
        )
        receipt = self.chain.transact(fn, account)
        events = self.contract.events.MismatchReported().process_receipt(receipt, errors=DISCARD)
        return int(events[0]["args"]["slashed"]) if events else 0

    def events(self, name: str, from_block: int = 0, *, with_tx: bool = False) -> list[dict[str, Any]]:
        """Decoded events `name` (e.g. "HostPaid") since `from_block`; `with_tx` adds each one's `transaction`."""
        logs = getattr(self.contract.events, name)().get_logs(from_block=from_block)
        if not with_tx:
            return [dict(log["args"]) for log in logs]
        return [{**log["args"], "transaction": "0x" + bytes(log["transactionHash"]).hex()} for log in logs]
