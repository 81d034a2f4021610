"""`MarketClient`: a typed wrapper over the Market contract: offers, jobs, bids, heartbeats, results, verdicts.

Amounts are token units: USD prices in micro-dollars per unit-second (6 decimals), stakes and slashes in COV
wei. Views return the frozen dataclasses of `covey.compute.records` (re-exported here); transactions return
receipts and raise `ChainError` with the contract's `market: ...` reason when they revert. Below the client,
what a buyer reads about a job's work across its re-posts (`job_lineage`, `delivered_units`,
`wait_for_units`); renting a training job in one call lives in `covey.compute.rental`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3Exception
from web3.logs import DISCARD
from web3.types import TxReceipt

from covey.chain import Chain
from covey.chain.deploy import Deployment
from covey.chain.market_deploy import MARKET
from covey.chain.roles import Role
from covey.chain.structs import struct_as, with_named_structs
from covey.compute.errors import ComputeTimeout, NoBids
from covey.compute.records import (
    USD,
    ZERO_ADDRESS,
    Bid,
    Job,
    JobStatus,
    JobTerms,
    MarketParams,
    Offer,
    UnitResult,
    Verdict,
)
from covey.compute.resources import Resources

__all__ = [
    "USD",
    "ZERO_ADDRESS",
    "Bid",
    "Job",
    "JobStatus",
    "JobTerms",
    "MarketClient",
    "MarketParams",
    "Offer",
    "Resources",
    "UnitOutput",
    "UnitResult",
    "Verdict",
    "delivered_units",
    "job_lineage",
    "wait_for_units",
]


class MarketClient:
    """Transactions and views of one deployed Market, plus the USD token and Staking it works with."""

    def __init__(self, chain: Chain, market: Contract, usd: Contract, staking: Contract) -> None:
        self.chain = chain
        self.market = market
        self._structs = with_named_structs(market)  # for the views that return structs
        self.usd = usd
        self.staking = staking

    @classmethod
    def from_deployment(cls, chain: Chain, deployment: Deployment, address: str | None = None) -> MarketClient:
        """A client for the suite's Market (or the Market at `address`, for a deployment that predates it)."""
        market = chain.contract(MARKET, address) if address else deployment.contract(chain, MARKET)
        return cls(chain, market, deployment.contract(chain, "USDToken"), deployment.contract(chain, "Staking"))

    @property
    def address(self) -> str:
        return str(self.market.address)

    # -- providers ------------------------------------------------------------------------------------

    def register_offer(self, provider: LocalAccount, resources: Resources, price_per_unit_second: int) -> TxReceipt:
        fn = self.market.functions.registerOffer(
            resources.cpu_cores, resources.memory_mb, resources.gpus, price_per_unit_second
        )
        return self.chain.transact(fn, provider)

    def retire_offer(self, provider: LocalAccount) -> TxReceipt:
        return self.chain.transact(self.market.functions.retireOffer(), provider)

    def stake_provider(self, provider: LocalAccount, cov: Contract, amount: int) -> TxReceipt:
        """Approve and stake `amount` COV wei for the provider role (the account must hold the COV)."""
        self.chain.transact(cov.functions.approve(self.staking.address, amount), provider)
        return self.chain.transact(self.staking.functions.stake(int(Role.PROVIDER), amount), provider)

    def bid(self, provider: LocalAccount, job_id: int, price_per_unit_second: int) -> TxReceipt:
        return self.chain.transact(self.market.functions.bid(job_id, price_per_unit_second), provider)

    def heartbeat(self, provider: LocalAccount, job_id: int) -> TxReceipt:
        return self.chain.transact(self.market.functions.heartbeat(job_id), provider)

    def commit_result(self, provider: LocalAccount, job_id: int, unit: int, result_hash: bytes) -> TxReceipt:
        return self.chain.transact(self.market.functions.commitResult(job_id, unit, result_hash), provider)

    # -- buyers ---------------------------------------------------------------------------------------

    def post_job(self, buyer: LocalAccount, terms: JobTerms, *, extra_allowance: int = 0) -> int:
        """Approve the escrow (plus `extra_allowance` for re-posting at the same max price) and post; return the id.

        A buyer whose balance is short gets `ChainError("... market: escrow short")` and no job exists.
        """
        self.chain.transact(self.usd.functions.approve(self.market.address, terms.escrow + extra_allowance), buyer)
        fn = self.market.functions.postJob(
            terms.spec_hash,
            terms.needs.cpu_cores,
            terms.needs.memory_mb,
            terms.needs.gpus,
            terms.max_price_per_unit_second,
            terms.units,
            terms.seconds_per_unit,
            terms.bid_window_s,
            terms.heartbeat_interval_s,
        )
        receipt = self.chain.transact(fn, buyer)
        return int(self.events("JobPosted", receipt)[0]["jobId"])

    def cancel_job(self, buyer: LocalAccount, job_id: int) -> TxReceipt:
        return self.chain.transact(self.market.functions.cancelJob(job_id), buyer)

    # -- anyone ---------------------------------------------------------------------------------------

    def award(self, sender: LocalAccount, job_id: int) -> TxReceipt:
        self.catch_up_clock()
        return self.chain.transact(self.market.functions.award(job_id), sender)

    def report_missed_heartbeat(self, sender: LocalAccount, job_id: int) -> int:
        """Report a silent provider; returns the id of the job that re-posts the remaining units (0 if none)."""
        self.catch_up_clock()
        receipt = self.chain.transact(self.market.functions.reportMissedHeartbeat(job_id), sender)
        reposted = self.events("JobReposted", receipt)
        return int(reposted[0]["newJobId"]) if reposted else 0

    def draw_sample(self, sender: LocalAccount, job_id: int) -> list[int]:
        """Draw a job's verification sample and return the sampled units.

        On a local chain that mines only on demand, a block is mined first when the sample block is not
        there yet; elsewhere that case raises `ChainError` (try again after the next block).
        """
        job = self.job(job_id)
        if self.chain.block_number() <= job.sample_block and self.chain.is_local:
            while self.chain.block_number() <= job.sample_block:
                self.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        self.chain.transact(self.market.functions.drawSample(job_id), sender)
        return self.sampled_units(job_id)

    def verify_unit(self, verifier: LocalAccount, job_id: int, unit: int, ok: bool) -> TxReceipt:
        return self.chain.transact(self.market.functions.verifyUnit(job_id, unit, ok), verifier)

    def verify_unit_hash(self, verifier: LocalAccount, job_id: int, unit: int, recomputed: bytes) -> TxReceipt:
        return self.chain.transact(self.market.functions.verifyUnitHash(job_id, unit, recomputed), verifier)

    def settle(self, sender: LocalAccount, job_id: int) -> TxReceipt:
        self.catch_up_clock()
        return self.chain.transact(self.market.functions.settle(job_id), sender)

    # -- owner ----------------------------------------------------------------------------------------

    def set_verifier(self, owner: LocalAccount, verifier: str, enabled: bool = True) -> TxReceipt:
        fn = self.market.functions.setVerifier(Web3.to_checksum_address(verifier), enabled)
        return self.chain.transact(fn, owner)

    # -- views ----------------------------------------------------------------------------------------

    def now(self) -> int:
        """Chain time as the next transaction will see it (the Market's `clock` run on the pending block).

        On a dev chain that mines only on demand the latest block's timestamp stays behind while nothing
        happens, so deadlines read against it would seem never to pass.
        """
        try:
            return int(self.market.functions.clock().call(block_identifier="pending"))
        except (ContractLogicError, Web3Exception, ValueError):
            return self.chain.timestamp()

    def catch_up_clock(self) -> None:
        """On a dev chain that mines only on demand, mine an empty block when the clock has moved on.

        Gas estimates run against the latest block, so after a quiet spell a deadline that has passed on
        the wall clock has not passed for them; a fresh block makes them see the time transactions will.
        """
        if self.chain.is_local and self.now() > self.chain.timestamp():
            self.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def params(self) -> MarketParams:
        fns = self.market.functions
        return MarketParams(
            min_provider_stake=int(fns.minProviderStake().call()),
            heartbeat_slash=int(fns.heartbeatSlash().call()),
            wrong_result_slash=int(fns.wrongResultSlash().call()),
            sample_rate_bps=int(fns.sampleRateBps().call()),
            verify_window=int(fns.verifyWindow().call()),
        )

    def offer(self, provider: str) -> Offer | None:
        """A provider's offer, or None if it never registered."""
        raw = self._structs.functions.offer(Web3.to_checksum_address(provider)).call()
        return None if raw.provider == ZERO_ADDRESS else _offer(raw)

    def offers(self, *, active_only: bool = False) -> list[Offer]:
        """Every registered offer, in registration order."""
        total = int(self.market.functions.providerCount().call())
        page_size = int(self.market.functions.MAX_PAGE().call())
        found: list[Offer] = []
        for start in range(0, total, page_size):
            rows = self._structs.functions.offers(start, page_size).call()
            found += [_offer(row) for row in rows]
        return [offer for offer in found if offer.active or not active_only]

    def job_count(self) -> int:
        return int(self.market.functions.jobCount().call())

    def job(self, job_id: int) -> Job:
        raw = self.chain.call(self._structs.functions.job(job_id))
        return struct_as(Job, raw, job_id=job_id, needs=Resources(raw.cpuCores, raw.memoryMb, raw.gpus))

    def jobs(self, *, since: int = 1, statuses: set[JobStatus] | None = None) -> list[Job]:
        """Jobs with id >= `since`, optionally only those in `statuses`."""
        found = [self.job(job_id) for job_id in range(max(1, since), self.job_count() + 1)]
        return [job for job in found if statuses is None or job.status in statuses]

    def bids(self, job_id: int) -> list[Bid]:
        return [struct_as(Bid, row) for row in self.chain.call(self._structs.functions.bids(job_id))]

    def unit_result(self, job_id: int, unit: int) -> UnitResult:
        return struct_as(UnitResult, self.chain.call(self._structs.functions.unitResult(job_id, unit)), unit=unit)

    def unit_results(self, job_id: int) -> list[UnitResult]:
        job = self.job(job_id)
        return [self.unit_result(job_id, unit) for unit in range(job.units)]

    def sampled_units(self, job_id: int) -> list[int]:
        return [int(unit) for unit in self.chain.call(self.market.functions.sampledUnits(job_id))]

    def is_verifier(self, address: str) -> bool:
        return bool(self.market.functions.isVerifier(Web3.to_checksum_address(address)).call())

    def provider_stake(self, provider: str) -> int:
        fn = self.staking.functions.effectiveStake(Web3.to_checksum_address(provider), int(Role.PROVIDER))
        return int(fn.call())

    def usd_balance(self, address: str) -> int:
        return int(self.usd.functions.balanceOf(Web3.to_checksum_address(address)).call())

    def total_escrow(self) -> int:
        return int(self.market.functions.totalEscrow().call())

    def events(self, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
        """The decoded Market `name` events in `receipt`, as dicts of their arguments."""
        logs = getattr(self.market.events, name)().process_receipt(receipt, errors=DISCARD)
        return [dict(log["args"]) for log in logs]


def _offer(row: Any) -> Offer:
    return struct_as(Offer, row, resources=Resources(row.cpuCores, row.memoryMb, row.gpus))


# -- a job's deliveries, across its re-posts ---------------------------------------------------------------


@dataclass(frozen=True)
class UnitOutput:
    """One unit of a buyer's work as delivered: the spec unit index, the job that ran it and its result."""

    unit: int
    job_id: int
    provider: str
    result_hash: bytes
    verified: bool


def job_lineage(client: MarketClient, job_id: int) -> list[Job]:
    """The job and every job that re-posted its work, in order (each failed job re-posts at most once)."""
    lineage = [client.job(job_id)]
    while lineage[-1].child_job:
        lineage.append(client.job(lineage[-1].child_job))
    return lineage


def delivered_units(client: MarketClient, job_id: int, *, verified_only: bool = True) -> dict[int, UnitOutput]:
    """The units of a job's work that have a usable result, by spec unit index, across its re-posts.

    A unit counts when its job settled (sampled and verified, or unchallenged past the window), or,
    with `verified_only=False`, as soon as it is committed by a provider not caught cheating.
    """
    delivered: dict[int, UnitOutput] = {}
    for job in job_lineage(client, job_id):
        if job.status in (JobStatus.REJECTED, JobStatus.CANCELLED):
            continue
        settled = job.status == JobStatus.SETTLED
        if verified_only and not settled:
            continue
        for unit in range(job.committed_units):
            result = client.unit_result(job.job_id, unit)
            delivered[job.first_unit + unit] = UnitOutput(
                job.first_unit + unit, job.job_id, job.provider, result.result_hash, settled
            )
    return delivered


def wait_for_units(
    client: MarketClient,
    job_id: int,
    units: int,
    *,
    verified_only: bool = True,
    timeout_s: float = 600.0,
    poll_s: float = 0.5,
) -> dict[int, UnitOutput]:
    """Block until all `units` spec units of a job (and its re-posts) are delivered; `ComputeTimeout` if not."""
    deadline = time.monotonic() + timeout_s
    while True:
        delivered = delivered_units(client, job_id, verified_only=verified_only)
        if len(delivered) >= units:
            return delivered
        unbid = _closed_without_bids(client, job_id)
        if unbid is not None:
            raise NoBids(
                f"no provider bid on job {unbid.job_id} before its bid window closed: none offers "
                f"{_describe_needs(unbid.needs)} at up to {unbid.max_price_per_unit_second} µUSD/unit-s "
                "(`covey market offers` lists offers and prices)"
            )
        if time.monotonic() > deadline:
            lineage = ", ".join(f"job {job.job_id} {job.status.label}" for job in job_lineage(client, job_id))
            raise ComputeTimeout(
                f"job {job_id}: {len(delivered)}/{units} units delivered after {timeout_s:.0f}s ({lineage}); "
                "is a provider running (`covey provider run`)?"
            )
        time.sleep(poll_s)


def _closed_without_bids(client: MarketClient, job_id: int) -> Job | None:
    """The newest job of a lineage if its bid window closed with no bid (nobody can ever award it), else None."""
    newest = job_lineage(client, job_id)[-1]
    if newest.status != JobStatus.OPEN or client.now() < newest.bid_deadline:
        return None
    return None if client.bids(newest.job_id) else newest


def _describe_needs(needs: Resources) -> str:
    return f"{needs.cpu_cores} CPU, {needs.memory_mb} MiB, {needs.gpus} GPU"
