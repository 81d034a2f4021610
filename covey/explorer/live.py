"""Live chain views the index cannot hold (balances, supplies, stakes right now), cached per block.

Pages call these through `queries.Explorer`; every figure is memoised by the head block the indexer last
saw, so a page costs no chain call until the chain moves, and the indexer thread warms the overview
after each new block.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3Exception

from covey.chain import Chain, compile_contract
from covey.chain.roles import Role
from covey.errors import ChainError

T = TypeVar("T")
MEMO_SIZE = 512


@dataclass(frozen=True)
class ChainFigures:
    """The overview's live numbers; None where the contract is not deployed."""

    cov_supply: int | None = None
    cov_cap: int | None = None
    usd_supply: int | None = None
    staked: dict[str, int] = field(default_factory=dict)  # role name -> bonded COV
    treasury_cov: int | None = None
    treasury_usd: int | None = None
    emission_per_epoch: int | None = None
    epoch_length_s: int | None = None
    emission_due: int | None = None
    last_emission_at: int | None = None
    unbonding_delay_s: int | None = None
    commission_delay_s: int | None = None


@dataclass(frozen=True)
class Unbonding:
    operator: str
    role: str
    tokens: int
    release_at: int


@dataclass(frozen=True)
class AccountFigures:
    """An account's live balances and stakes."""

    eth_wei: int
    cov: int | None
    usd: int | None
    is_contract: bool
    self_stake: dict[str, int]  # role -> own bonded stake
    effective_stake: dict[str, int]  # role -> own plus delegated, bonded
    commission_bps: int | None
    pending_commission: tuple[int, int] | None  # (rate bps, effective at)
    unbondings: list[Unbonding]


class LiveViews:
    """Reads contract views through their ABIs; `contracts()` gives the suite's current name -> address."""

    def __init__(self, chain: Chain, contracts: Callable[[], dict[str, str]]) -> None:
        self.chain = chain
        self._contracts = contracts
        self._handles: dict[tuple[str, str], Contract] = {}
        self._memo: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def contract(self, name: str) -> Contract | None:
        """A handle on the suite's `name`, or None when the suite has no such contract."""
        address = self._contracts().get(name)
        if address is None:
            return None
        key = (name, address)
        handle = self._handles.get(key)
        if handle is None:
            handle = self._handles[key] = self.chain.contract(name, address)
        return handle

    def memo(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """`compute()` once per key (keys carry the head block, so a new block recomputes)."""
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return value

    # -- figures --------------------------------------------------------------------------------------

    def figures(self, head_block: int) -> ChainFigures:
        """Supplies, stakes per role, the Treasury and the emission schedule at `head_block`."""
        return self.memo(("figures", head_block), self._figures)

    def _figures(self) -> ChainFigures:
        cov, usd = self.contract("CoveyToken"), self.contract("USDToken")
        staking, treasury = self.contract("Staking"), self.contract("Treasury")
        values: dict[str, Any] = {}
        if cov is not None:
            values["cov_supply"] = _call(cov, "totalSupply")
            values["cov_cap"] = _call(cov, "cap")
        if usd is not None:
            values["usd_supply"] = _call(usd, "totalSupply")
        if staking is not None:
            values["staked"] = {role.name.lower(): _call(staking, "totalStaked", int(role)) or 0 for role in Role}
            values["unbonding_delay_s"] = _call(staking, "unbondingDelay")
            values["commission_delay_s"] = _call(staking, "commissionDelay")
        if treasury is not None:
            if cov is not None:
                values["treasury_cov"] = _call(cov, "balanceOf", treasury.address)
            if usd is not None:
                values["treasury_usd"] = _call(usd, "balanceOf", treasury.address)
            values["emission_per_epoch"] = _call(treasury, "emissionPerEpoch")
            values["epoch_length_s"] = _call(treasury, "epochLength")
            values["emission_due"] = _call(treasury, "emissionDue")
            values["last_emission_at"] = _call(treasury, "lastEmissionAt")
        return ChainFigures(**values)

    def account(self, address: str, head_block: int) -> AccountFigures:
        """`address`'s balances, stakes per role, commission and unbonding entries at `head_block`."""
        return self.memo(("account", address, head_block), lambda: self._account(address))

    def _account(self, address: str) -> AccountFigures:
        eth = self.chain.w3.eth
        cov, usd, staking = self.contract("CoveyToken"), self.contract("USDToken"), self.contract("Staking")
        self_stake: dict[str, int] = {}
        effective: dict[str, int] = {}
        commission: int | None = None
        pending: tuple[int, int] | None = None
        unbondings: list[Unbonding] = []
        if staking is not None:
            for role in Role:
                own = _call(staking, "stakeOf", address, int(role)) or 0
                total = _call(staking, "effectiveStake", address, int(role)) or 0
                if own or total:
                    self_stake[role.name.lower()], effective[role.name.lower()] = own, total
            rates = _call(staking, "commissionOf", address)
            if rates is not None:
                commission = int(rates[0])
                pending = (int(rates[1]), int(rates[2])) if int(rates[2]) else None
            for entry in _call(staking, "pendingUnbonds", address) or []:
                operator, role, _shares, tokens, release_at = entry
                unbondings.append(Unbonding(str(operator), _role_name(int(role)), int(tokens), int(release_at)))
        return AccountFigures(
            eth_wei=int(eth.get_balance(address)),  # type: ignore[arg-type]
            cov=_call(cov, "balanceOf", address) if cov is not None else None,
            usd=_call(usd, "balanceOf", address) if usd is not None else None,
            is_contract=len(eth.get_code(address)) > 0,  # type: ignore[arg-type]
            self_stake=self_stake,
            effective_stake=effective,
            commission_bps=commission,
            pending_commission=pending,
            unbondings=unbondings,
        )

    def delegation(self, delegator: str, operator: str, role: int, head_block: int) -> tuple[int, int]:
        """(bonded COV, claimable rewards) of `delegator` with `operator` for `role`."""

        def compute() -> tuple[int, int]:
            staking = self.contract("Staking")
            if staking is None:
                return (0, 0)
            bonded = _call(staking, "delegationOf", delegator, operator, role) or 0
            rewards = _call(staking, "pendingRewards", delegator, operator, role) or 0
            return (bonded, rewards)

        return self.memo(("delegation", delegator, operator, role, head_block), compute)

    def view(self, name: str, function: str, *args: Any, head_block: int) -> Any:
        """Any view of a suite contract (None when absent or reverting), memoised per block."""

        def compute() -> Any:
            handle = self.contract(name)
            return None if handle is None else _call(handle, function, *args)

        return self.memo(("view", name, function, args, head_block), compute)

    def constants(self, name: str, prefix: str) -> dict[int, str]:
        """A contract's `PREFIX_*` constants as value -> lower-case label (e.g. Market's `STATUS_*`).

        Read from the contract itself, so the labels follow its code rather than a copy kept here.
        """

        def compute() -> dict[int, str]:
            handle = self.contract(name)
            if handle is None:
                return {}
            labels: dict[int, str] = {}
            for entry in compile_contract(name).abi:
                fn_name = str(entry.get("name", ""))
                if entry.get("type") == "function" and not entry["inputs"] and fn_name.startswith(prefix):
                    value = _call(handle, fn_name)
                    if value is not None:
                        labels[int(value)] = fn_name[len(prefix) :].lower().replace("_", " ")
            return labels

        address = self._contracts().get(name, "")
        return self.memo(("constants", name, address, prefix), compute)

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """A transaction with its receipt's status and gas, or None if the chain does not know it."""

        def compute() -> dict[str, Any] | None:
            eth = self.chain.w3.eth
            try:
                tx = eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                receipt = eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except (Web3Exception, ValueError):
                return None
            return {
                "hash": tx_hash,
                "from": str(tx["from"]),
                "to": str(tx.get("to") or receipt.get("contractAddress") or ""),
                "block": int(receipt["blockNumber"]),
                "status": int(receipt["status"]),
                "gas_used": int(receipt["gasUsed"]),
                "value_wei": int(tx.get("value", 0)),
                "nonce": int(tx["nonce"]),
            }

        return self.memo(("tx", tx_hash), compute)


def _call(contract: Contract, function: str, *args: Any) -> Any:
    """A view's result, or None when it reverts (a view that fails must not fail the page)."""
    try:
        return contract.functions[function](*args).call()
    except (ContractLogicError, ChainError, Web3Exception, ValueError):
        return None


def _role_name(value: int) -> str:
    try:
        return Role(value).name.lower()
    except ValueError:
        return f"role {value}"
