"""`MarketClient`: a typed wrapper over the Market contract: offers, jobs, bids, heartbeats, results, verdicts.

Amounts are token units: USD prices in micro-dollars per unit-second (6 decimals), stakes and slashes in COV
wei. Views return frozen dataclasses; transactions return receipts and raise `ChainError` with the
contract's `market: ...` reason when they revert.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
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
from covey.errors import ChainError, CoveyError, ValidationError
from covey.storage import ArtifactRef, ArtifactStore, bytes32_to_digest, parse_digest, sha256_hex

USD = 10**6
ZERO_ADDRESS = "0x" + "00" * 20
SAMPLE_BLOCK_NOT_MINED = "market: sample block not mined"


class JobStatus(IntEnum):
    """A job's state as the contract stores it."""

    OPEN = 1
    RUNNING = 2
    VERIFYING = 3
    SETTLED = 4
    FAILED = 5
    REJECTED = 6
    CANCELLED = 7

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def finished(self) -> bool:
        return self >= JobStatus.SETTLED


class Verdict(IntEnum):
    """A sampled unit's verification verdict."""

    NONE = 0
    OK = 1
    WRONG = 2


@dataclass(frozen=True)
class Resources:
    """Capacity an offer has or a job needs."""

    cpu_cores: int = 1
    memory_mb: int = 1024
    gpus: int = 0

    def fits(self, needs: Resources) -> bool:
        """Whether this capacity covers `needs`."""
        return self.cpu_cores >= needs.cpu_cores and self.memory_mb >= needs.memory_mb and self.gpus >= needs.gpus


@dataclass(frozen=True)
class Offer:
    """A provider's standing offer."""

    provider: str
    resources: Resources
    price_per_unit_second: int
    active: bool
    updated_at: int


@dataclass(frozen=True)
class JobTerms:
    """What a buyer posts: the job spec's hash, the needs, the price ceiling and the shape of the work."""

    spec_hash: bytes
    units: int
    max_price_per_unit_second: int
    seconds_per_unit: int
    needs: Resources = Resources()
    bid_window_s: int = 30
    heartbeat_interval_s: int = 60

    @property
    def escrow(self) -> int:
        """The USD units `postJob` escrows: max price x units x seconds per unit."""
        return self.max_price_per_unit_second * self.units * self.seconds_per_unit


@dataclass(frozen=True)
class Job:
    """A job's terms, state and money, as the contract reports it."""

    job_id: int
    buyer: str
    spec_hash: bytes
    needs: Resources
    max_price_per_unit_second: int
    units: int
    seconds_per_unit: int
    bid_window: int
    heartbeat_interval: int
    first_unit: int
    parent_job: int
    child_job: int
    status: JobStatus
    bid_deadline: int
    escrow: int
    provider: str
    price_per_unit_second: int
    awarded_at: int
    last_heartbeat: int
    committed_units: int
    sample_block: int
    sample_drawn: bool
    sample_mask: int
    sample_size: int
    verified_units: int
    verify_deadline: int
    paid_units: int
    paid: int
    refunded: int
    slashed: int

    @property
    def spec_digest(self) -> str:
        """The job spec's sha256 in the artifact store."""
        return bytes32_to_digest(self.spec_hash)

    @property
    def heartbeat_deadline(self) -> int:
        return self.last_heartbeat + self.heartbeat_interval

    @property
    def sampled_units(self) -> list[int]:
        return [unit for unit in range(self.units) if self.sample_mask >> unit & 1]

    def unit_price(self) -> int:
        """USD units one unit of this job pays at the awarded price."""
        return self.price_per_unit_second * self.seconds_per_unit


@dataclass(frozen=True)
class Bid:
    provider: str
    price_per_unit_second: int
    stake: int
    placed_at: int


@dataclass(frozen=True)
class UnitResult:
    """A unit's committed hash and, once checked, its verdict and the verifier's hash."""

    unit: int
    result_hash: bytes
    committed_at: int
    sampled: bool
    verdict: Verdict
    recomputed_hash: bytes
    verifier: str

    @property
    def committed(self) -> bool:
        return self.result_hash != b"\x00" * 32


@dataclass(frozen=True)
class MarketParams:
    """The Market's current owner-set parameters."""

    min_provider_stake: int
    heartbeat_slash: int
    wrong_result_slash: int
    sample_rate_bps: int
    verify_window: int


class MarketClient:
    """Transactions and views of one deployed Market, plus the USD token and Staking it works with."""

    def __init__(self, chain: Chain, market: Contract, usd: Contract, staking: Contract) -> None:
        self.chain = chain
        self.market = market
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
        raw = self._struct("offer", self.market.functions.offer(Web3.to_checksum_address(provider)).call())
        return None if raw["provider"] == ZERO_ADDRESS else _offer(raw)

    def offers(self, *, active_only: bool = False) -> list[Offer]:
        """Every registered offer, in registration order."""
        total = int(self.market.functions.providerCount().call())
        page_size = int(self.market.functions.MAX_PAGE().call())
        found: list[Offer] = []
        for start in range(0, total, page_size):
            rows = self.market.functions.offers(start, page_size).call()
            found += [_offer(self._struct("offers", row)) for row in rows]
        return [offer for offer in found if offer.active or not active_only]

    def job_count(self) -> int:
        return int(self.market.functions.jobCount().call())

    def job(self, job_id: int) -> Job:
        raw = self._struct("job", self.chain.call(self.market.functions.job(job_id)))
        return Job(
            job_id=job_id,
            buyer=raw["buyer"],
            spec_hash=bytes(raw["specHash"]),
            needs=Resources(raw["cpuCores"], raw["memoryMb"], raw["gpus"]),
            max_price_per_unit_second=raw["maxPricePerUnitSecond"],
            units=raw["units"],
            seconds_per_unit=raw["secondsPerUnit"],
            bid_window=raw["bidWindow"],
            heartbeat_interval=raw["heartbeatInterval"],
            first_unit=raw["firstUnit"],
            parent_job=raw["parentJob"],
            child_job=raw["childJob"],
            status=JobStatus(raw["status"]),
            bid_deadline=raw["bidDeadline"],
            escrow=raw["escrow"],
            provider=raw["provider"],
            price_per_unit_second=raw["pricePerUnitSecond"],
            awarded_at=raw["awardedAt"],
            last_heartbeat=raw["lastHeartbeat"],
            committed_units=raw["committedUnits"],
            sample_block=raw["sampleBlock"],
            sample_drawn=raw["sampleDrawn"],
            sample_mask=raw["sampleMask"],
            sample_size=raw["sampleSize"],
            verified_units=raw["verifiedUnits"],
            verify_deadline=raw["verifyDeadline"],
            paid_units=raw["paidUnits"],
            paid=raw["paid"],
            refunded=raw["refunded"],
            slashed=raw["slashed"],
        )

    def jobs(self, *, since: int = 1, statuses: set[JobStatus] | None = None) -> list[Job]:
        """Jobs with id >= `since`, optionally only those in `statuses`."""
        found = [self.job(job_id) for job_id in range(max(1, since), self.job_count() + 1)]
        return [job for job in found if statuses is None or job.status in statuses]

    def bids(self, job_id: int) -> list[Bid]:
        rows = self.chain.call(self.market.functions.bids(job_id))
        return [
            Bid(raw["provider"], raw["pricePerUnitSecond"], raw["stake"], raw["placedAt"])
            for raw in (self._struct("bids", row) for row in rows)
        ]

    def unit_result(self, job_id: int, unit: int) -> UnitResult:
        raw = self._struct("unitResult", self.chain.call(self.market.functions.unitResult(job_id, unit)))
        return UnitResult(
            unit=unit,
            result_hash=bytes(raw["resultHash"]),
            committed_at=raw["committedAt"],
            sampled=raw["sampled"],
            verdict=Verdict(raw["verdict"]),
            recomputed_hash=bytes(raw["recomputedHash"]),
            verifier=raw["verifier"],
        )

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

    def _struct(self, function: str, row: Any) -> dict[str, Any]:
        """A struct returned by view `function` as a dict keyed by its field names."""
        fields = _struct_fields(self.market.abi, function)
        if isinstance(row, dict):
            return dict(row)
        return dict(zip(fields, row, strict=True))


def _struct_fields(abi: Sequence[Any], function: str) -> list[str]:
    entry = next((item for item in abi if item.get("name") == function and item.get("type") == "function"), None)
    if entry is None:
        raise ChainError(f"the Market ABI has no view {function!r}: is the deployment out of date?")
    return [component["name"] for component in entry["outputs"][0]["components"]]


def _offer(raw: dict[str, Any]) -> Offer:
    return Offer(
        provider=raw["provider"],
        resources=Resources(raw["cpuCores"], raw["memoryMb"], raw["gpus"]),
        price_per_unit_second=raw["pricePerUnitSecond"],
        active=raw["active"],
        updated_at=raw["updatedAt"],
    )


# -- the buyer's side -------------------------------------------------------------------------------------


class ComputeTimeout(CoveyError):
    """A job did not reach the wanted state in time (no provider running, or nobody verifying)."""


class RentalError(CoveyError):
    """Renting compute failed before any usable result: escrow short, no bid, or the rented unit failed."""


class NoBids(RentalError):
    """A job's bid window closed without a single bid: no provider fits its needs at its price."""


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


@dataclass(frozen=True)
class RentedTraining:
    """What `rent_training` returns: the job, the first unit's weights, and every unit's weights.

    The weights were sealed to the buyer: `unit_weights` describes the opened plaintext (digest and size; the
    URI is empty because nobody but the buyer holds it until the buyer publishes it) and `unit_bytes` holds it.
    """

    job_id: int
    weights: bytes
    weights_ref: ArtifactRef
    unit_weights: dict[int, ArtifactRef]
    units: dict[int, UnitOutput]
    unit_bytes: dict[int, bytes]


_TRAIN_UNIT_KEYS = frozenset({"epochs", "lr", "batch_size", "max_steps", "weight_decay"})
_IGNORED_KEYS = frozenset({"num_threads"})  # units always train at one thread, so results are checkable


def rent_training(
    chain: Chain,
    deployment: Deployment,
    store: ArtifactStore,
    spec_digest: str,
    hyperparams: Mapping[str, Any],
    buyer: LocalAccount,
    *,
    seeds: Sequence[int] | None = None,
    max_price_per_unit_second: int = 100,
    seconds_per_unit: int = 60,
    needs: Resources = Resources(1, 2048, 0),
    bid_window_s: int = 10,
    heartbeat_interval_s: int = 30,
    wait_verified: bool = False,
    timeout_s: float = 900.0,
    market_address: str | None = None,
) -> RentedTraining:
    """Rent a provider to train an Arena task's model instead of training locally; return the weights.

    `spec_digest` is the task's spec hash (an Arena manifest or a bare `TaskSpec` in the store);
    `hyperparams` may hold `epochs`, `lr`, `batch_size`, `max_steps`, `weight_decay`, `seed` and
    `architecture` (None values keep the task's hints). One unit per seed (default: `hyperparams["seed"]`
    or 0). The buyer escrows `max_price_per_unit_second * units * seconds_per_unit` µUSD and gets the
    weights as soon as every unit is committed, or, with `wait_verified`, once the sample is verified.
    The weights are sealed to the buyer's key on the provider, so nobody watching the store can take (or
    commit to the Arena) what the buyer paid for. The caller (the trainer) submits the weights itself.
    `post_training` and `collect_training` are the two halves, for a caller that must remember the job between them.
    """
    client = MarketClient.from_deployment(chain, deployment, market_address)
    job_id = post_training(
        client,
        store,
        spec_digest,
        hyperparams,
        buyer,
        seeds=seeds,
        max_price_per_unit_second=max_price_per_unit_second,
        seconds_per_unit=seconds_per_unit,
        needs=needs,
        bid_window_s=bid_window_s,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    return collect_training(client, store, job_id, buyer, wait_verified=wait_verified, timeout_s=timeout_s)


def post_training(
    client: MarketClient,
    store: ArtifactStore,
    spec_digest: str,
    hyperparams: Mapping[str, Any],
    buyer: LocalAccount,
    *,
    seeds: Sequence[int] | None = None,
    max_price_per_unit_second: int = 100,
    seconds_per_unit: int = 60,
    needs: Resources = Resources(1, 2048, 0),
    bid_window_s: int = 10,
    heartbeat_interval_s: int = 30,
) -> int:
    """Publish a training job (one unit per seed) and post it with escrow; return the job id.

    The job seals its weights to `buyer` (`sealed_to`): only the buyer's key opens what the provider publishes.
    A buyer whose USD balance is below the escrow gets `RentalError` and no job is posted.
    """
    from covey.compute.jobs import TrainingJob, TrainUnit, publish_job
    from covey.compute.sealing import recipient_of

    params = {key: value for key, value in dict(hyperparams).items() if value is not None}
    unknown = set(params) - _TRAIN_UNIT_KEYS - _IGNORED_KEYS - {"seed", "architecture"}
    if unknown:
        raise ValidationError(f"unknown hyper-parameters {sorted(unknown)} for a rented training job")
    chosen_seeds = list(seeds) if seeds is not None else [int(params.get("seed", 0))]
    unit_params = {key: params[key] for key in _TRAIN_UNIT_KEYS if key in params}
    job_spec = TrainingJob(
        task=parse_digest(spec_digest),
        units=[TrainUnit(seed=seed, **unit_params) for seed in chosen_seeds],
        architecture=dict(params.get("architecture") or {}),
        sealed_to=recipient_of(buyer.key),
    )
    escrow = max_price_per_unit_second * job_spec.unit_count * seconds_per_unit

    def escrow_short(balance: int) -> RentalError:
        return RentalError(
            f"escrow short: {job_spec.unit_count} unit(s) x {seconds_per_unit} s at up to "
            f"{max_price_per_unit_second} µUSD/unit-s needs {escrow} µUSD escrowed, but {buyer.address} holds "
            f"{balance} µUSD; lower the max price or the units, or get USD"
        )

    if client.usd_balance(buyer.address) < escrow:
        raise escrow_short(client.usd_balance(buyer.address))
    terms = JobTerms(
        spec_hash=publish_job(store, job_spec).bytes32,
        units=job_spec.unit_count,
        max_price_per_unit_second=max_price_per_unit_second,
        seconds_per_unit=seconds_per_unit,
        needs=needs,
        bid_window_s=bid_window_s,
        heartbeat_interval_s=heartbeat_interval_s,
    )
    try:
        # Enough allowance to re-post every unit once at the same price if a provider fails.
        return client.post_job(buyer, terms, extra_allowance=terms.escrow)
    except ChainError as exc:
        if exc.reason == "market: escrow short":  # the balance moved since we looked
            raise escrow_short(client.usd_balance(buyer.address)) from exc
        raise


def collect_training(
    client: MarketClient,
    store: ArtifactStore,
    job_id: int,
    buyer: LocalAccount | None = None,
    *,
    wait_verified: bool = False,
    timeout_s: float = 900.0,
) -> RentedTraining:
    """Wait for a posted training job's units, fetch their weights (hash-checked by the store) and open them.

    Raises `NoBids` (after cancelling the job, refunding the `buyer`) when nobody bid, `ComputeTimeout`
    when the units are not in by `timeout_s` (the job stays: collect it again later), and `RentalError`
    when a unit failed on the provider (out of memory, out of time...), with the unit's own error, or when
    its weights do not open with the `buyer`'s key (the job was sealed to someone else).
    """
    from covey.compute.jobs import fetch_job, fetch_result
    from covey.compute.sealing import SealError, sealing_key, unit_context, unseal

    spec_digest = client.job(job_id).spec_digest
    spec = fetch_job(store, spec_digest)
    units_wanted = spec.unit_count
    key = None
    if spec.sealed_to is not None:
        if buyer is None:
            raise RentalError(f"job {job_id}'s weights are sealed to its buyer: collect them with the buyer's account")
        key = sealing_key(buyer.key)
    try:
        units = wait_for_units(client, job_id, units_wanted, verified_only=wait_verified, timeout_s=timeout_s)
    except NoBids:
        unbid = job_lineage(client, job_id)[-1]
        if buyer is not None and unbid.buyer == buyer.address:
            client.cancel_job(buyer, unbid.job_id)  # the escrow comes back; nobody can ever win it
        raise
    unit_weights: dict[int, ArtifactRef] = {}
    unit_bytes: dict[int, bytes] = {}
    for index, output in sorted(units.items()):
        manifest = fetch_result(store, output.result_hash)
        digest = manifest["outputs"].get("weights.safetensors")
        if manifest.get("exit_code") != 0 or digest is None:
            why = manifest.get("error") or f"exit code {manifest.get('exit_code')}, no weights"
            raise RentalError(f"job {output.job_id} unit {index} failed on provider {output.provider}: {why}")
        data = store.get(digest)  # hash-checked: what the provider committed is what the trainer gets
        if key is not None:
            try:
                data = unseal(data, key, unit_context(spec_digest, index, "weights.safetensors"))
            except SealError as exc:
                raise RentalError(f"job {output.job_id} unit {index}: {exc}") from exc
            unit_weights[index] = ArtifactRef(sha256_hex(data), "", len(data))
        else:
            unit_weights[index] = ArtifactRef(digest, store.uri_for(digest), len(data))
        unit_bytes[index] = data
    first = min(unit_weights)
    return RentedTraining(job_id, unit_bytes[first], unit_weights[first], unit_weights, units, unit_bytes)
