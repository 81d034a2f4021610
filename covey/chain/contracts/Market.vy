# pragma version ~=0.4.3
"""
@title Covey Market (compute)
@custom:contract-name Market
@license Apache-2.0
@notice A market for idle CPU/GPU with checked work. Staked providers
        (Staking role 3) register an offer: capacity and a price per
        unit-second in the USD token. A buyer posts a job of `units`
        deterministic units, each `secondsPerUnit` long, and escrows
        `maxPricePerUnitSecond * units * secondsPerUnit` USD. Providers bid
        during the bid window (a reverse auction); `award` picks the cheapest
        bid whose provider still meets the needs and the minimum stake (ties:
        higher stake, then earlier bid) and refunds the escrow above the
        winning price. The provider sends heartbeats and commits one result
        hash per unit, in order. Once the units are committed, a sample of
        them is drawn from the hash of a block mined after the last commit
        (it carries that block's PREVRANDAO, which the provider could not
        know when committing). The buyer or a registered verifier re-runs
        each sampled unit: if all match, every committed unit is paid; a
        wrong unit slashes the provider, and its units are re-posted as a
        new job funded by the escrow. A missed heartbeat (reported by
        anyone) slashes the provider, re-posts the uncommitted units and
        sends the committed ones to verification, so the buyer pays only for
        verified work. A provider may not bid on the re-post of work it
        failed. A verifier that never shows up lets anyone `settle` after
        the verification window (optimistic settlement).
        Functions:
        - providers: `registerOffer`, `retireOffer`, `bid`, `heartbeat`,
          `commitResult`,
        - buyers: `postJob`, `cancelJob`,
        - anyone: `award`, `reportMissedHeartbeat`, `drawSample`, `settle`,
        - verifiers (and the job's buyer): `verifyUnit`, `verifyUnitHash`,
        - owner: `setVerifier`, `setParams`, `transfer_ownership`,
          `renounce_ownership`,
        - views: `offer`, `offers`, `providerCount`, `providerAt`, `job`,
          `jobCount`, `bids`, `unitResult`, `sampledUnits`,
          `heartbeatDeadline`, `clock`, `escrowFor`, `totalEscrow`, `usd`,
          `staking`, `minProviderStake`, `heartbeatSlash`,
          `wrongResultSlash`, `sampleRateBps`, `verifyWindow`, `isVerifier`,
          `owner`, and the constants (`MAX_UNITS`, `STATUS_*`, ...).
@dev Every job holds its own escrow (`Job.escrow`); their sum is
     `totalEscrow`, which always equals the Market's USD balance. All state
     is written before any token transfer or Staking call, except the
     slashed amount Staking reports back, recorded after the call under the
     reentrancy lock.
"""


from ethereum.ercs import IERC20

from snekmate.auth import ownable
initializes: ownable

exports: (
    ownable.owner,
    ownable.transfer_ownership,
    ownable.renounce_ownership,
)


# ------------------------------------------------------------------ interfaces


interface IStaking:
    def effectiveStake(operator: address, role: uint8) -> uint256: view
    def slash(account: address, role: uint8, amount: uint256, reason: String[64]) -> uint256: nonpayable


# ------------------------------------------------------------------ constants


# @dev The Staking role providers stake for (`covey.chain.roles.Role.PROVIDER`).
ROLE_PROVIDER: public(constant(uint8)) = 3

# @dev The most units one job may have; the sample is a bit mask in one uint256.
MAX_UNITS: public(constant(uint256)) = 256

# @dev The most bids one job accepts; bounds `award`'s loop.
MAX_BIDS: public(constant(uint256)) = 16

# @dev The most offers `offers` returns per call.
MAX_PAGE: public(constant(uint256)) = 64

# @dev The longest bid window, heartbeat interval and verification window a job may have.
MAX_BID_WINDOW: public(constant(uint256)) = 7 * 86_400
MAX_HEARTBEAT_INTERVAL: public(constant(uint256)) = 86_400
MAX_VERIFY_WINDOW: public(constant(uint256)) = 30 * 86_400

# @dev Blocks between the last commit and the block whose hash seeds the sample.
SAMPLE_DELAY_BLOCKS: public(constant(uint256)) = 1

# @dev The EVM keeps the hashes of the last 256 blocks only.
_BLOCKHASH_WINDOW: constant(uint256) = 256

# @dev The denominator of `sampleRateBps`.
BPS: public(constant(uint256)) = 10_000

# @dev Job states, in the order they happen.
STATUS_OPEN: public(constant(uint8)) = 1
STATUS_RUNNING: public(constant(uint8)) = 2
STATUS_VERIFYING: public(constant(uint8)) = 3
STATUS_SETTLED: public(constant(uint8)) = 4
STATUS_FAILED: public(constant(uint8)) = 5
STATUS_REJECTED: public(constant(uint8)) = 6
STATUS_CANCELLED: public(constant(uint8)) = 7

# @dev A unit's verdict: not checked, matched, did not match.
VERDICT_NONE: public(constant(uint8)) = 0
VERDICT_OK: public(constant(uint8)) = 1
VERDICT_WRONG: public(constant(uint8)) = 2

# @dev Slash reasons passed to `Staking.slash`.
REASON_MISSED_HEARTBEAT: constant(String[64]) = "market: missed heartbeat"
REASON_WRONG_RESULT: constant(String[64]) = "market: wrong result"


# ------------------------------------------------------------------ structs


# @dev A provider's standing offer: capacity and the price it asks per unit-second (USD units).
struct Offer:
    provider: address
    cpuCores: uint256
    memoryMb: uint256
    gpus: uint256
    pricePerUnitSecond: uint256
    active: bool
    updatedAt: uint256


# @dev A job and everything that happened to it. `firstUnit` is the index of
# its unit 0 in the job spec (non-zero for re-posted work); `parentJob` and
# `childJob` link a job to the job it re-posts and the job that re-posts it.
struct Job:
    buyer: address
    specHash: bytes32
    cpuCores: uint256
    memoryMb: uint256
    gpus: uint256
    maxPricePerUnitSecond: uint256
    units: uint256
    secondsPerUnit: uint256
    bidWindow: uint256
    heartbeatInterval: uint256
    firstUnit: uint256
    parentJob: uint256
    childJob: uint256
    status: uint8
    bidDeadline: uint256
    escrow: uint256
    provider: address
    pricePerUnitSecond: uint256
    awardedAt: uint256
    lastHeartbeat: uint256
    committedUnits: uint256
    sampleBlock: uint256
    sampleDrawn: bool
    sampleMask: uint256
    sampleSize: uint256
    verifiedUnits: uint256
    verifyDeadline: uint256
    paidUnits: uint256
    paid: uint256
    refunded: uint256
    slashed: uint256


# @dev One bid: the provider, its price and its effective stake when it bid.
struct Bid:
    provider: address
    pricePerUnitSecond: uint256
    stake: uint256
    placedAt: uint256


# @dev A unit's committed result hash and, once checked, the verdict and the verifier's own hash.
struct UnitResult:
    resultHash: bytes32
    committedAt: uint256
    sampled: bool
    verdict: uint8
    recomputedHash: bytes32
    verifier: address


# ------------------------------------------------------------------ events


# @dev A provider registered or changed its offer.
event OfferRegistered:
    provider: indexed(address)
    cpuCores: uint256
    memoryMb: uint256
    gpus: uint256
    pricePerUnitSecond: uint256


# @dev A provider withdrew its offer; it can no longer bid.
event OfferRetired:
    provider: indexed(address)


# @dev A buyer posted a job (or a failed job's work was re-posted, `parentJob` != 0); `escrow` USD is held.
event JobPosted:
    jobId: indexed(uint256)
    buyer: indexed(address)
    specHash: indexed(bytes32)
    cpuCores: uint256
    memoryMb: uint256
    gpus: uint256
    maxPricePerUnitSecond: uint256
    units: uint256
    secondsPerUnit: uint256
    bidDeadline: uint256
    heartbeatInterval: uint256
    firstUnit: uint256
    parentJob: uint256
    escrow: uint256


# @dev A provider bid on an open job.
event BidPlaced:
    jobId: indexed(uint256)
    provider: indexed(address)
    pricePerUnitSecond: uint256
    stake: uint256


# @dev A job went to `provider` at `pricePerUnitSecond`; `refund` USD above that price went back to the buyer.
event JobAwarded:
    jobId: indexed(uint256)
    provider: indexed(address)
    pricePerUnitSecond: uint256
    escrow: uint256
    refund: uint256


# @dev The buyer cancelled an open job and got its escrow back.
event JobCancelled:
    jobId: indexed(uint256)
    buyer: indexed(address)
    refund: uint256


# @dev The provider is alive; the next heartbeat is due by `lastHeartbeat + heartbeatInterval`.
event Heartbeat:
    jobId: indexed(uint256)
    provider: indexed(address)
    timestamp: uint256


# @dev The provider committed the result of a unit (the job's own index, from 0).
event ResultCommitted:
    jobId: indexed(uint256)
    provider: indexed(address)
    unit: uint256
    resultHash: bytes32


# @dev The job's `committedUnits` await verification; the sample comes from block `sampleBlock`'s hash.
event VerificationOpened:
    jobId: indexed(uint256)
    committedUnits: uint256
    sampleBlock: uint256
    verifyDeadline: uint256


# @dev The sample block fell out of the EVM's 256-block window before anyone drew; a new one was chosen.
event SampleReanchored:
    jobId: indexed(uint256)
    sampleBlock: uint256


# @dev The verification sample: bit i of `mask` set means unit i must be re-run.
event SampleDrawn:
    jobId: indexed(uint256)
    seed: bytes32
    mask: uint256
    size: uint256


# @dev A verifier judged a sampled unit (`recomputedHash` is zero when it judged by tolerance, not hash).
event UnitVerified:
    jobId: indexed(uint256)
    unit: indexed(uint256)
    verifier: indexed(address)
    ok: bool
    recomputedHash: bytes32


# @dev Nobody reported a heartbeat in time; `reporter` noticed. Committed units go to verification.
event HeartbeatMissed:
    jobId: indexed(uint256)
    provider: indexed(address)
    reporter: indexed(address)
    committedUnits: uint256


# @dev `provider`'s stake was cut by `slashed` COV (of `requested`) for `reason`.
event ProviderSlashed:
    jobId: indexed(uint256)
    provider: indexed(address)
    requested: uint256
    slashed: uint256
    reason: String[64]


# @dev Work of `jobId` was re-posted as `newJobId`; `topUp` USD came from the buyer to restore the max price.
event JobReposted:
    jobId: indexed(uint256)
    newJobId: indexed(uint256)
    firstUnit: uint256
    units: uint256
    maxPricePerUnitSecond: uint256
    escrow: uint256
    topUp: uint256


# @dev A job ended: the provider got `paid` USD for `paidUnits` units and the buyer `refunded` USD.
event JobSettled:
    jobId: indexed(uint256)
    provider: indexed(address)
    status: uint8
    paidUnits: uint256
    paid: uint256
    refunded: uint256


# @dev The owner allowed (`enabled`) or disallowed an account to verify units of any job.
event VerifierSet:
    verifier: indexed(address)
    enabled: bool


# @dev The owner changed the market's parameters (COV amounts, basis points, seconds).
event ParamsSet:
    minProviderStake: uint256
    heartbeatSlash: uint256
    wrongResultSlash: uint256
    sampleRateBps: uint256
    verifyWindow: uint256


# ------------------------------------------------------------------ storage


# @dev The payment token (6-decimal USD).
usd: public(immutable(IERC20))

# @dev The Staking contract that holds providers' COV; the Market must be one of its modules.
staking: public(immutable(IStaking))

# @dev The provider-role effective stake (COV) needed to offer, bid and be awarded.
minProviderStake: public(uint256)

# @dev COV slashed for a missed heartbeat.
heartbeatSlash: public(uint256)

# @dev COV slashed for a wrong result.
wrongResultSlash: public(uint256)

# @dev The share of committed units sampled for verification (at least one unit).
sampleRateBps: public(uint256)

# @dev Seconds verifiers have, from the end of a job's run, before anyone may settle it unchecked.
verifyWindow: public(uint256)

# @dev Accounts allowed to verify any job (a job's buyer may always verify its own).
isVerifier: public(HashMap[address, bool])

# @dev Each provider's offer.
_offers: HashMap[address, Offer]

# @dev How many providers ever registered; `providerAt` lists them in order.
providerCount: public(uint256)

# @dev The i-th provider to register.
providerAt: public(HashMap[uint256, address])

# @dev The number of jobs; ids run from 1.
jobCount: public(uint256)

# @dev Jobs by id.
_jobs: HashMap[uint256, Job]

# @dev Each job's bids, in arrival order.
_bids: HashMap[uint256, DynArray[Bid, MAX_BIDS]]

# @dev Whether a provider has bid on a job.
_hasBid: HashMap[uint256, HashMap[address, bool]]

# @dev Each job's unit results by the job's own unit index.
_results: HashMap[uint256, HashMap[uint256, UnitResult]]

# @dev USD held for all jobs; equals the Market's USD balance.
totalEscrow: public(uint256)


# ------------------------------------------------------------------ setup


@deploy
def __init__(
    usd_: IERC20,
    staking_: IStaking,
    min_provider_stake: uint256,
    heartbeat_slash: uint256,
    wrong_result_slash: uint256,
    sample_rate_bps: uint256,
    verify_window_s: uint256,
):
    """
    @notice Deploy the Market; register it as a Staking module afterwards so it can slash.
    @param usd_ The USD token escrow is held in.
    @param staking_ The Staking contract.
    @param min_provider_stake COV of provider-role stake needed to offer and bid.
    @param heartbeat_slash COV slashed for a missed heartbeat.
    @param wrong_result_slash COV slashed for a wrong result.
    @param sample_rate_bps The share of units verified, in basis points.
    @param verify_window_s Seconds verifiers have before optimistic settlement.
    """
    assert usd_.address != empty(address), "market: usd is the zero address"
    assert staking_.address != empty(address), "market: staking is the zero address"
    ownable.__init__()
    usd = usd_
    staking = staking_
    self._set_params(min_provider_stake, heartbeat_slash, wrong_result_slash, sample_rate_bps, verify_window_s)


# ------------------------------------------------------------------ owner


@external
def setVerifier(verifier: address, enabled: bool):
    """
    @notice Allow or disallow `verifier` to judge sampled units of any job.
    """
    ownable._check_owner()
    assert verifier != empty(address), "market: verifier is the zero address"
    self.isVerifier[verifier] = enabled
    log VerifierSet(verifier=verifier, enabled=enabled)


@external
def setParams(
    min_provider_stake: uint256,
    heartbeat_slash: uint256,
    wrong_result_slash: uint256,
    sample_rate_bps: uint256,
    verify_window_s: uint256,
):
    """
    @notice Change stake, slashing and verification parameters (jobs already running keep their windows).
    """
    ownable._check_owner()
    self._set_params(min_provider_stake, heartbeat_slash, wrong_result_slash, sample_rate_bps, verify_window_s)


# ------------------------------------------------------------------ providers


@external
def registerOffer(cpuCores: uint256, memoryMb: uint256, gpus: uint256, pricePerUnitSecond: uint256):
    """
    @notice Offer capacity at a price per unit-second (USD units); calling again replaces the offer.
    """
    assert cpuCores > 0 or gpus > 0, "market: no capacity"
    assert pricePerUnitSecond > 0, "market: zero price"
    assert self._stake(msg.sender) >= self.minProviderStake, "market: stake too low"
    if self._offers[msg.sender].provider == empty(address):
        index: uint256 = self.providerCount
        self.providerAt[index] = msg.sender
        self.providerCount = index + 1
    self._offers[msg.sender] = Offer(
        provider=msg.sender,
        cpuCores=cpuCores,
        memoryMb=memoryMb,
        gpus=gpus,
        pricePerUnitSecond=pricePerUnitSecond,
        active=True,
        updatedAt=block.timestamp,
    )
    log OfferRegistered(
        provider=msg.sender, cpuCores=cpuCores, memoryMb=memoryMb, gpus=gpus, pricePerUnitSecond=pricePerUnitSecond
    )


@external
def retireOffer():
    """
    @notice Withdraw your offer; jobs you already won keep running.
    """
    assert self._offers[msg.sender].active, "market: no offer"
    self._offers[msg.sender].active = False
    self._offers[msg.sender].updatedAt = block.timestamp
    log OfferRetired(provider=msg.sender)


@external
def bid(jobId: uint256, pricePerUnitSecond: uint256):
    """
    @notice Bid on an open job during its bid window; one bid per provider.
    @param jobId The job.
    @param pricePerUnitSecond The price asked, at most the job's maximum.
    """
    self._check_job(jobId)
    assert self._jobs[jobId].status == STATUS_OPEN, "market: not open"
    assert block.timestamp < self._jobs[jobId].bidDeadline, "market: bidding closed"
    parent: uint256 = self._jobs[jobId].parentJob
    assert parent == 0 or self._jobs[parent].provider != msg.sender, "market: failed this work before"
    assert pricePerUnitSecond > 0, "market: zero price"
    assert pricePerUnitSecond <= self._jobs[jobId].maxPricePerUnitSecond, "market: price above max"
    assert self._offers[msg.sender].active, "market: no offer"
    assert self._fits(self._offers[msg.sender], jobId), "market: offer too small"
    stake: uint256 = self._stake(msg.sender)
    assert stake >= self.minProviderStake, "market: stake too low"
    assert not self._hasBid[jobId][msg.sender], "market: already bid"
    assert len(self._bids[jobId]) < MAX_BIDS, "market: too many bids"

    self._hasBid[jobId][msg.sender] = True
    self._bids[jobId].append(
        Bid(provider=msg.sender, pricePerUnitSecond=pricePerUnitSecond, stake=stake, placedAt=block.timestamp)
    )
    log BidPlaced(jobId=jobId, provider=msg.sender, pricePerUnitSecond=pricePerUnitSecond, stake=stake)


@external
def heartbeat(jobId: uint256):
    """
    @notice Prove the awarded provider is alive; due every `heartbeatInterval` seconds while running.
    """
    self._check_running_provider(jobId)
    self._jobs[jobId].lastHeartbeat = block.timestamp
    log Heartbeat(jobId=jobId, provider=msg.sender, timestamp=block.timestamp)


@external
def commitResult(jobId: uint256, unit: uint256, resultHash: bytes32):
    """
    @notice Commit the result hash of the next unit (units are committed in
            order); it also counts as a heartbeat. The last unit opens verification.
    @param jobId The job.
    @param unit The job's unit index, equal to the number of units committed so far.
    @param resultHash The hash of the unit's outputs (for Covey jobs: the sha256 of its output manifest).
    """
    self._check_running_provider(jobId)
    committed: uint256 = self._jobs[jobId].committedUnits
    assert unit == committed, "market: unit out of order"
    assert resultHash != empty(bytes32), "market: empty result"

    self._results[jobId][unit].resultHash = resultHash
    self._results[jobId][unit].committedAt = block.timestamp
    self._jobs[jobId].committedUnits = committed + 1
    self._jobs[jobId].lastHeartbeat = block.timestamp
    log ResultCommitted(jobId=jobId, provider=msg.sender, unit=unit, resultHash=resultHash)
    if committed + 1 == self._jobs[jobId].units:
        self._open_verification(jobId, committed + 1)


# ------------------------------------------------------------------ buyers


@external
@nonreentrant
def postJob(
    specHash: bytes32,
    cpuCores: uint256,
    memoryMb: uint256,
    gpus: uint256,
    maxPricePerUnitSecond: uint256,
    units: uint256,
    secondsPerUnit: uint256,
    bidWindow: uint256,
    heartbeatInterval: uint256,
) -> uint256:
    """
    @notice Post a job and escrow `maxPricePerUnitSecond * units * secondsPerUnit`
            USD from the caller (approve the Market first). A short balance
            or allowance refuses the job before any work starts.
    @param specHash The sha256 of the job spec in the artifact store.
    @param cpuCores CPU cores each unit needs.
    @param memoryMb Memory each unit needs, in MiB.
    @param gpus GPUs each unit needs.
    @param maxPricePerUnitSecond The most the buyer pays per unit-second (USD units).
    @param units How many units of work (1 to `MAX_UNITS`).
    @param secondsPerUnit The length of one unit in seconds, what a unit is billed for.
    @param bidWindow Seconds providers may bid, from now.
    @param heartbeatInterval The longest silence allowed from the provider while it runs, in seconds.
    @return uint256 The new job's id.
    """
    assert specHash != empty(bytes32), "market: empty spec"
    assert maxPricePerUnitSecond > 0, "market: zero price"
    assert units > 0 and units <= MAX_UNITS, "market: bad unit count"
    assert secondsPerUnit > 0, "market: zero seconds per unit"
    assert bidWindow > 0 and bidWindow <= MAX_BID_WINDOW, "market: bad bid window"
    assert heartbeatInterval > 0 and heartbeatInterval <= MAX_HEARTBEAT_INTERVAL, "market: bad heartbeat interval"
    escrow: uint256 = maxPricePerUnitSecond * units * secondsPerUnit
    assert staticcall usd.balanceOf(msg.sender) >= escrow, "market: escrow short"
    assert staticcall usd.allowance(msg.sender, self) >= escrow, "market: escrow short"

    job_id: uint256 = self._open_job(
        msg.sender,
        specHash,
        cpuCores,
        memoryMb,
        gpus,
        maxPricePerUnitSecond,
        units,
        secondsPerUnit,
        bidWindow,
        heartbeatInterval,
        0,
        0,
        escrow,
    )
    assert extcall usd.transferFrom(msg.sender, self, escrow, default_return_value=True), "market: transfer failed"
    return job_id


@external
@nonreentrant
def cancelJob(jobId: uint256):
    """
    @notice Cancel your job before it is awarded and take the escrow back.
    """
    self._check_job(jobId)
    assert self._jobs[jobId].buyer == msg.sender, "market: not the buyer"
    assert self._jobs[jobId].status == STATUS_OPEN, "market: not open"
    refund: uint256 = self._jobs[jobId].escrow
    self._jobs[jobId].status = STATUS_CANCELLED
    self._jobs[jobId].escrow = 0
    self._jobs[jobId].refunded += refund
    self.totalEscrow -= refund
    log JobCancelled(jobId=jobId, buyer=msg.sender, refund=refund)
    self._pay(msg.sender, refund)


# ------------------------------------------------------------------ anyone


@external
@nonreentrant
def award(jobId: uint256):
    """
    @notice After the bid window, give the job to the cheapest bid whose
            provider still has an active offer that fits and enough stake
            (ties: the higher stake now, then the earlier bid), and refund
            the escrow above the winning price. Anyone may call.
    """
    self._check_job(jobId)
    assert self._jobs[jobId].status == STATUS_OPEN, "market: not open"
    assert block.timestamp >= self._jobs[jobId].bidDeadline, "market: bidding open"
    best: address = empty(address)
    best_price: uint256 = max_value(uint256)
    best_stake: uint256 = 0
    for b: Bid in self._bids[jobId]:
        if not self._offers[b.provider].active or not self._fits(self._offers[b.provider], jobId):
            continue
        stake: uint256 = self._stake(b.provider)
        if stake < self.minProviderStake:
            continue
        if b.pricePerUnitSecond < best_price or (b.pricePerUnitSecond == best_price and stake > best_stake):
            best = b.provider
            best_price = b.pricePerUnitSecond
            best_stake = stake
    assert best != empty(address), "market: no eligible bid"

    cost: uint256 = best_price * self._jobs[jobId].units * self._jobs[jobId].secondsPerUnit
    refund: uint256 = self._jobs[jobId].escrow - cost
    buyer: address = self._jobs[jobId].buyer
    self._jobs[jobId].status = STATUS_RUNNING
    self._jobs[jobId].provider = best
    self._jobs[jobId].pricePerUnitSecond = best_price
    self._jobs[jobId].awardedAt = block.timestamp
    self._jobs[jobId].lastHeartbeat = block.timestamp
    self._jobs[jobId].escrow = cost
    self._jobs[jobId].refunded += refund
    self.totalEscrow -= refund
    log JobAwarded(jobId=jobId, provider=best, pricePerUnitSecond=best_price, escrow=cost, refund=refund)
    self._pay(buyer, refund)


@external
@nonreentrant
def reportMissedHeartbeat(jobId: uint256) -> uint256:
    """
    @notice Report a running job whose provider went silent for longer than
            its heartbeat interval. Slashes the provider, sends the units it
            committed to verification (they are paid only if verified), and
            re-posts the uncommitted units as a new job. Anyone may call.
    @return uint256 The id of the job holding the re-posted units (0 if none).
    """
    self._check_job(jobId)
    assert self._jobs[jobId].status == STATUS_RUNNING, "market: not running"
    assert block.timestamp > self._jobs[jobId].lastHeartbeat + self._jobs[jobId].heartbeatInterval, (
        "market: heartbeat not missed"
    )
    provider: address = self._jobs[jobId].provider
    committed: uint256 = self._jobs[jobId].committedUnits
    remaining: uint256 = self._jobs[jobId].units - committed
    held: uint256 = self._jobs[jobId].pricePerUnitSecond * remaining * self._jobs[jobId].secondsPerUnit
    self._jobs[jobId].escrow -= held
    log HeartbeatMissed(jobId=jobId, provider=provider, reporter=msg.sender, committedUnits=committed)
    if committed > 0:
        self._open_verification(jobId, committed)
    else:
        self._jobs[jobId].status = STATUS_FAILED
    child: uint256 = 0
    top_up: uint256 = 0
    refund: uint256 = 0
    child, top_up, refund = self._repost(jobId, self._jobs[jobId].firstUnit + committed, remaining, held)
    if committed == 0:
        log JobSettled(jobId=jobId, provider=provider, status=STATUS_FAILED, paidUnits=0, paid=0, refunded=refund)

    self._slash(jobId, provider, self.heartbeatSlash, REASON_MISSED_HEARTBEAT)
    self._collect_top_up(jobId, top_up)
    self._pay(self._jobs[jobId].buyer, refund)
    return child


@external
@nonreentrant
def drawSample(jobId: uint256):
    """
    @notice Draw the verification sample of a job whose units are committed,
            from the hash of the sample block (mined after the last commit).
            If that block is older than the EVM's 256-block memory, a new
            sample block is chosen instead. Anyone may call.
    """
    self._check_job(jobId)
    assert self._jobs[jobId].status == STATUS_VERIFYING, "market: not verifying"
    assert not self._jobs[jobId].sampleDrawn, "market: sample already drawn"
    sample_block: uint256 = self._jobs[jobId].sampleBlock
    assert block.number > sample_block, "market: sample block not mined"
    if block.number - sample_block > _BLOCKHASH_WINDOW:
        self._jobs[jobId].sampleBlock = block.number + SAMPLE_DELAY_BLOCKS
        log SampleReanchored(jobId=jobId, sampleBlock=block.number + SAMPLE_DELAY_BLOCKS)
        return

    seed: bytes32 = keccak256(concat(blockhash(sample_block), convert(jobId, bytes32)))
    count: uint256 = self._jobs[jobId].committedUnits
    size: uint256 = self._jobs[jobId].sampleSize
    # A partial Fisher-Yates shuffle: the first `size` slots end up a uniform sample without repeats.
    pool: DynArray[uint256, MAX_UNITS] = []
    for i: uint256 in range(count, bound=MAX_UNITS):
        pool.append(i)
    mask: uint256 = 0
    for k: uint256 in range(size, bound=MAX_UNITS):
        draw: uint256 = convert(keccak256(concat(seed, convert(k, bytes32))), uint256)
        j: uint256 = k + draw % (count - k)
        picked: uint256 = pool[j]
        pool[j] = pool[k]
        pool[k] = picked
        mask |= 1 << picked
        self._results[jobId][picked].sampled = True
    self._jobs[jobId].sampleDrawn = True
    self._jobs[jobId].sampleMask = mask
    self._jobs[jobId].sampleSize = size
    log SampleDrawn(jobId=jobId, seed=seed, mask=mask, size=size)


@external
@nonreentrant
def settle(jobId: uint256):
    """
    @notice After the verification window, pay a job whose sample nobody
            finished checking as if it passed (optimistic settlement). Anyone may call.
    """
    self._check_job(jobId)
    assert self._jobs[jobId].status == STATUS_VERIFYING, "market: not verifying"
    assert block.timestamp > self._jobs[jobId].verifyDeadline, "market: verification open"
    self._settle(jobId)


# ------------------------------------------------------------------ verifiers


@external
@nonreentrant
def verifyUnit(jobId: uint256, unit: uint256, ok: bool):
    """
    @notice Judge a sampled unit after re-running it (for outputs compared
            within a tolerance). A wrong unit slashes the provider and
            re-posts the job's work; the last passing unit settles the job.
    """
    self._verify(jobId, unit, ok, empty(bytes32))


@external
@nonreentrant
def verifyUnitHash(jobId: uint256, unit: uint256, recomputedHash: bytes32):
    """
    @notice Judge a sampled unit by the hash of its re-run outputs: it passes
            if and only if the hash equals the committed one (bitwise-reproducible jobs).
    """
    assert recomputedHash != empty(bytes32), "market: empty result"
    self._verify(jobId, unit, recomputedHash == self._results[jobId][unit].resultHash, recomputedHash)


# ------------------------------------------------------------------ views


@external
@view
def offer(provider: address) -> Offer:
    """
    @notice A provider's offer (all zero if it never registered).
    """
    return self._offers[provider]


@external
@view
def offers(start: uint256, count: uint256) -> DynArray[Offer, MAX_PAGE]:
    """
    @notice Up to `count` (at most `MAX_PAGE`) offers from the `start`-th registered provider, retired ones included.
    """
    page: DynArray[Offer, MAX_PAGE] = []
    for i: uint256 in range(min(count, MAX_PAGE), bound=MAX_PAGE):
        if start + i >= self.providerCount:
            break
        page.append(self._offers[self.providerAt[start + i]])
    return page


@external
@view
def job(jobId: uint256) -> Job:
    """
    @notice A job's terms, state and money.
    """
    self._check_job(jobId)
    return self._jobs[jobId]


@external
@view
def bids(jobId: uint256) -> DynArray[Bid, MAX_BIDS]:
    """
    @notice A job's bids in arrival order.
    """
    self._check_job(jobId)
    return self._bids[jobId]


@external
@view
def unitResult(jobId: uint256, unit: uint256) -> UnitResult:
    """
    @notice A unit's committed hash, whether it was sampled, and its verdict.
    """
    self._check_job(jobId)
    return self._results[jobId][unit]


@external
@view
def sampledUnits(jobId: uint256) -> DynArray[uint256, MAX_UNITS]:
    """
    @notice The job's sampled unit indexes in increasing order (empty before the draw).
    """
    self._check_job(jobId)
    mask: uint256 = self._jobs[jobId].sampleMask
    units: DynArray[uint256, MAX_UNITS] = []
    for i: uint256 in range(MAX_UNITS):
        if mask == 0:
            break
        if mask & 1 == 1:
            units.append(i)
        mask >>= 1
    return units


@external
@view
def heartbeatDeadline(jobId: uint256) -> uint256:
    """
    @notice The last second the running provider's next heartbeat (or commit) is accepted.
    """
    self._check_job(jobId)
    return self._jobs[jobId].lastHeartbeat + self._jobs[jobId].heartbeatInterval


@external
@view
def clock() -> uint256:
    """
    @notice The block timestamp this call runs at. Called on the pending
            block, it is the time the next transaction will see, even on a
            dev chain that mines only on demand.
    """
    return block.timestamp


@external
@pure
def escrowFor(maxPricePerUnitSecond: uint256, units: uint256, secondsPerUnit: uint256) -> uint256:
    """
    @notice The USD `postJob` escrows for these terms.
    """
    return maxPricePerUnitSecond * units * secondsPerUnit


# ------------------------------------------------------------------ internals


@internal
@view
def _check_job(jobId: uint256):
    assert jobId >= 1 and jobId <= self.jobCount, "market: unknown job"


@internal
@view
def _check_running_provider(jobId: uint256):
    self._check_job(jobId)
    assert self._jobs[jobId].status == STATUS_RUNNING, "market: not running"
    assert self._jobs[jobId].provider == msg.sender, "market: not the provider"
    assert block.timestamp <= self._jobs[jobId].lastHeartbeat + self._jobs[jobId].heartbeatInterval, (
        "market: heartbeat missed"
    )


@internal
@view
def _stake(provider: address) -> uint256:
    return staticcall staking.effectiveStake(provider, ROLE_PROVIDER)


@internal
@view
def _fits(offer_: Offer, jobId: uint256) -> bool:
    return (
        offer_.cpuCores >= self._jobs[jobId].cpuCores
        and offer_.memoryMb >= self._jobs[jobId].memoryMb
        and offer_.gpus >= self._jobs[jobId].gpus
    )


@internal
def _open_job(
    buyer: address,
    spec_hash: bytes32,
    cpu_cores: uint256,
    memory_mb: uint256,
    gpus: uint256,
    max_price: uint256,
    units: uint256,
    seconds_per_unit: uint256,
    bid_window: uint256,
    heartbeat_interval: uint256,
    first_unit: uint256,
    parent: uint256,
    escrow: uint256,
) -> uint256:
    """
    @dev Record a new open job holding `escrow` USD (already in, or about to come into, the Market).
    """
    job_id: uint256 = self.jobCount + 1
    self.jobCount = job_id
    bid_deadline: uint256 = block.timestamp + bid_window
    self._jobs[job_id].buyer = buyer
    self._jobs[job_id].specHash = spec_hash
    self._jobs[job_id].cpuCores = cpu_cores
    self._jobs[job_id].memoryMb = memory_mb
    self._jobs[job_id].gpus = gpus
    self._jobs[job_id].maxPricePerUnitSecond = max_price
    self._jobs[job_id].units = units
    self._jobs[job_id].secondsPerUnit = seconds_per_unit
    self._jobs[job_id].bidWindow = bid_window
    self._jobs[job_id].heartbeatInterval = heartbeat_interval
    self._jobs[job_id].firstUnit = first_unit
    self._jobs[job_id].parentJob = parent
    self._jobs[job_id].status = STATUS_OPEN
    self._jobs[job_id].bidDeadline = bid_deadline
    self._jobs[job_id].escrow = escrow
    self.totalEscrow += escrow
    log JobPosted(
        jobId=job_id,
        buyer=buyer,
        specHash=spec_hash,
        cpuCores=cpu_cores,
        memoryMb=memory_mb,
        gpus=gpus,
        maxPricePerUnitSecond=max_price,
        units=units,
        secondsPerUnit=seconds_per_unit,
        bidDeadline=bid_deadline,
        heartbeatInterval=heartbeat_interval,
        firstUnit=first_unit,
        parentJob=parent,
        escrow=escrow,
    )
    return job_id


@internal
def _open_verification(jobId: uint256, committed: uint256):
    """
    @dev Fix the sample block and the sample size (ceil(committed x rate), at
         least one) now, so a later change of the rate cannot touch this job.
    """
    sample_block: uint256 = block.number + SAMPLE_DELAY_BLOCKS
    deadline: uint256 = block.timestamp + self.verifyWindow
    size: uint256 = min(committed, max(1, (committed * self.sampleRateBps + BPS - 1) // BPS))
    self._jobs[jobId].status = STATUS_VERIFYING
    self._jobs[jobId].sampleSize = size
    self._jobs[jobId].sampleBlock = sample_block
    self._jobs[jobId].verifyDeadline = deadline
    log VerificationOpened(jobId=jobId, committedUnits=committed, sampleBlock=sample_block, verifyDeadline=deadline)


@internal
def _verify(jobId: uint256, unit: uint256, ok: bool, recomputed: bytes32):
    self._check_job(jobId)
    assert self._jobs[jobId].status == STATUS_VERIFYING, "market: not verifying"
    assert self.isVerifier[msg.sender] or msg.sender == self._jobs[jobId].buyer, "market: not a verifier"
    assert self._jobs[jobId].sampleDrawn, "market: sample not drawn"
    assert self._results[jobId][unit].sampled, "market: unit not sampled"
    assert self._results[jobId][unit].verdict == VERDICT_NONE, "market: unit already verified"

    self._results[jobId][unit].recomputedHash = recomputed
    self._results[jobId][unit].verifier = msg.sender
    log UnitVerified(jobId=jobId, unit=unit, verifier=msg.sender, ok=ok, recomputedHash=recomputed)
    if ok:
        self._results[jobId][unit].verdict = VERDICT_OK
        verified: uint256 = self._jobs[jobId].verifiedUnits + 1
        self._jobs[jobId].verifiedUnits = verified
        if verified == self._jobs[jobId].sampleSize:
            self._settle(jobId)
        return

    # A wrong unit voids the whole job: none of its units is paid, all are re-posted.
    self._results[jobId][unit].verdict = VERDICT_WRONG
    provider: address = self._jobs[jobId].provider
    held: uint256 = self._jobs[jobId].escrow
    self._jobs[jobId].escrow = 0
    self._jobs[jobId].status = STATUS_REJECTED
    child: uint256 = 0
    top_up: uint256 = 0
    refund: uint256 = 0
    child, top_up, refund = self._repost(
        jobId, self._jobs[jobId].firstUnit, self._jobs[jobId].committedUnits, held
    )
    log JobSettled(jobId=jobId, provider=provider, status=STATUS_REJECTED, paidUnits=0, paid=0, refunded=refund)
    self._slash(jobId, provider, self.wrongResultSlash, REASON_WRONG_RESULT)
    self._collect_top_up(jobId, top_up)
    self._pay(self._jobs[jobId].buyer, refund)


@internal
def _settle(jobId: uint256):
    """
    @dev Pay the provider for every committed unit and refund what is left of the escrow.
    """
    committed: uint256 = self._jobs[jobId].committedUnits
    payout: uint256 = self._jobs[jobId].pricePerUnitSecond * committed * self._jobs[jobId].secondsPerUnit
    refund: uint256 = self._jobs[jobId].escrow - payout
    provider: address = self._jobs[jobId].provider
    buyer: address = self._jobs[jobId].buyer
    self._jobs[jobId].status = STATUS_SETTLED
    self._jobs[jobId].escrow = 0
    self._jobs[jobId].paidUnits = committed
    self._jobs[jobId].paid += payout
    self._jobs[jobId].refunded += refund
    self.totalEscrow -= payout + refund
    log JobSettled(
        jobId=jobId, provider=provider, status=STATUS_SETTLED, paidUnits=committed, paid=payout, refunded=refund
    )
    self._pay(provider, payout)
    self._pay(buyer, refund)


@internal
def _repost(jobId: uint256, first_unit: uint256, units: uint256, held: uint256) -> (uint256, uint256, uint256):
    """
    @dev Re-post `units` units (from spec index `first_unit`) of a failed job,
         funded by `held` USD taken out of its escrow. The new job keeps the
         old maximum price when the buyer's balance and allowance cover the
         difference (`top_up`, collected by the caller); otherwise its maximum
         falls to what `held` pays for. Returns (new job id or 0, top_up,
         refund owed to the buyer). Writes state only: the caller moves tokens.
    """
    self.totalEscrow -= held
    if units == 0:
        self._jobs[jobId].refunded += held
        return 0, 0, held
    buyer: address = self._jobs[jobId].buyer
    seconds_per_unit: uint256 = self._jobs[jobId].secondsPerUnit
    max_price: uint256 = self._jobs[jobId].maxPricePerUnitSecond
    need: uint256 = max_price * units * seconds_per_unit
    top_up: uint256 = 0
    if need > held:
        short: uint256 = need - held
        if staticcall usd.balanceOf(buyer) >= short and staticcall usd.allowance(buyer, self) >= short:
            top_up = short
        else:
            max_price = held // (units * seconds_per_unit)
            need = max_price * units * seconds_per_unit
    if max_price == 0:
        self._jobs[jobId].refunded += held
        return 0, 0, held
    refund: uint256 = held + top_up - need
    child: uint256 = self._open_job(
        buyer,
        self._jobs[jobId].specHash,
        self._jobs[jobId].cpuCores,
        self._jobs[jobId].memoryMb,
        self._jobs[jobId].gpus,
        max_price,
        units,
        seconds_per_unit,
        self._jobs[jobId].bidWindow,
        self._jobs[jobId].heartbeatInterval,
        first_unit,
        jobId,
        need,
    )
    self._jobs[jobId].childJob = child
    self._jobs[jobId].refunded += refund
    log JobReposted(
        jobId=jobId,
        newJobId=child,
        firstUnit=first_unit,
        units=units,
        maxPricePerUnitSecond=max_price,
        escrow=need,
        topUp=top_up,
    )
    return child, top_up, refund


@internal
def _slash(jobId: uint256, provider: address, amount: uint256, reason: String[64]):
    if amount == 0:
        return
    taken: uint256 = extcall staking.slash(provider, ROLE_PROVIDER, amount, reason)
    # Written after the call: only Staking knows how much the pool held. `@nonreentrant` guards it.
    self._jobs[jobId].slashed += taken
    log ProviderSlashed(jobId=jobId, provider=provider, requested=amount, slashed=taken, reason=reason)


@internal
def _collect_top_up(jobId: uint256, amount: uint256):
    if amount > 0:
        buyer: address = self._jobs[jobId].buyer
        assert extcall usd.transferFrom(buyer, self, amount, default_return_value=True), "market: transfer failed"


@internal
def _pay(to: address, amount: uint256):
    if amount > 0:
        assert extcall usd.transfer(to, amount, default_return_value=True), "market: transfer failed"


@internal
def _set_params(
    min_provider_stake: uint256,
    heartbeat_slash: uint256,
    wrong_result_slash: uint256,
    sample_rate_bps: uint256,
    verify_window_s: uint256,
):
    assert sample_rate_bps > 0 and sample_rate_bps <= BPS, "market: sample rate out of bounds"
    assert verify_window_s > 0 and verify_window_s <= MAX_VERIFY_WINDOW, "market: verify window out of bounds"
    self.minProviderStake = min_provider_stake
    self.heartbeatSlash = heartbeat_slash
    self.wrongResultSlash = wrong_result_slash
    self.sampleRateBps = sample_rate_bps
    self.verifyWindow = verify_window_s
    log ParamsSet(
        minProviderStake=min_provider_stake,
        heartbeatSlash=heartbeat_slash,
        wrongResultSlash=wrong_result_slash,
        sampleRateBps=sample_rate_bps,
        verifyWindow=verify_window_s,
    )
